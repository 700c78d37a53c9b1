//! Re-sharding swap cost on the loaded (unattached) balancer's maps: building a 65,537-slot
//! Maglev table in memory, writing it into the idle half, the flip (one globals write), the
//! whole `DataplaneMaps::swap_maglev`, and writing 10,000 session placements.

use std::time::Instant;

use aya::maps::{Array, HashMap, MapData};
use serde_json::{json, Value};
use shardline::snapshot::delta::TableDelta;
use shardline_common::{
    consts::MAGLEV_SIZE,
    maglev::{self, Weighted},
    maps::{maglev_index, scheme, Globals, SessionKey, ShardSet},
};

use super::{loaded_balancer, map_err, median, open_pinned, round, BenchError};

/// Backends of the table the swap benchmark builds.
pub const SWAP_BACKENDS: u32 = 100;
/// Session placements written per update run.
pub const SESSION_UPDATES: u64 = 10_000;
/// Flips timed one by one for the distribution.
pub const FLIPS: usize = 1_000;

fn millis(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn micros(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// A hash-scheme shard set over `backends` (1 to 16 distinct) at `generation`.
pub(super) fn placement(backends: &[u32], generation: u64) -> ShardSet {
    ShardSet::from_members(backends, scheme::HASH, generation).expect("a valid shard set")
}

/// The Maglev table over backends `1..=backends`, all of weight 1.
pub(super) fn table_over(backends: u32) -> Vec<u32> {
    let weighted: Vec<Weighted> = (1..=backends)
        .map(|id| Weighted { id, weight: 1 })
        .collect();
    maglev::build(&weighted, MAGLEV_SIZE)
}

/// Writes `table` into half `half` of the MAGLEV array, one update syscall per slot (the
/// cost the memory-mapped table avoids).
pub(super) fn write_half(
    maglev_map: &mut Array<MapData, u32>,
    half: u32,
    table: &[u32],
) -> Result<(), BenchError> {
    for (slot, id) in table.iter().enumerate() {
        let index = maglev_index(half, slot as u32).ok_or_else(|| {
            BenchError::Check(format!("a table of {} slots overflows a half", table.len()))
        })?;
        maglev_map
            .set(index, id, 0)
            .map_err(map_err("writing MAGLEV"))?;
    }
    Ok(())
}

/// Runs the swap benchmark.
pub fn run(quick: bool) -> Result<Value, BenchError> {
    let iters = if quick { 3 } else { 10 };
    let mut lb = loaded_balancer()?;

    let mut build_ms = Vec::new();
    let mut table = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        table = table_over(SWAP_BACKENDS);
        build_ms.push(millis(t));
    }

    let mut maglev_map: Array<MapData, u32> = open_pinned(&lb.pin_dir, "MAGLEV")?;
    let mut globals_map: Array<MapData, Globals> = open_pinned(&lb.pin_dir, "GLOBALS")?;
    let mut write_ms = Vec::new();
    let mut flip_us = Vec::new();
    for _ in 0..iters {
        let g = globals_map.get(&0, 0).map_err(map_err("reading GLOBALS"))?;
        let t = Instant::now();
        write_half(&mut maglev_map, g.idle_half(), &table)?;
        write_ms.push(millis(t));
        let t = Instant::now();
        globals_map
            .set(0, g.with_live_half(g.idle_half()), 0)
            .map_err(map_err("writing GLOBALS"))?;
        flip_us.push(micros(t));
    }
    // Both halves now hold a complete table, so flipping back and forth is always valid.
    for _ in 0..FLIPS {
        let g = globals_map.get(&0, 0).map_err(map_err("reading GLOBALS"))?;
        let next = g.with_live_half(g.idle_half());
        let t = Instant::now();
        globals_map
            .set(0, next, 0)
            .map_err(map_err("writing GLOBALS"))?;
        flip_us.push(micros(t));
    }
    let mut sorted = flip_us.clone();
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    let max = sorted[sorted.len() - 1];

    // The daemon's write of a new default table: fill the idle half, flip.
    let mut whole_ms = Vec::new();
    for i in 0..iters {
        let next = TableDelta {
            maglev: Some(table_over(SWAP_BACKENDS - 1 - (i as u32 % 2))),
            ..TableDelta::default()
        };
        let t = Instant::now();
        lb.maps.write_delta(&next)?;
        whole_ms.push(millis(t));
    }

    let mut sessions: HashMap<MapData, SessionKey, ShardSet> =
        open_pinned(&lb.pin_dir, "SESSIONS")?;
    let key = |i: u64| SessionKey {
        service: 1,
        _pad: 0,
        session: 5_000_000 + i,
    };
    let t = Instant::now();
    for i in 0..SESSION_UPDATES {
        sessions
            .insert(key(i), placement(&[1, 2], 1), 0)
            .map_err(map_err("inserting into SESSIONS"))?;
        // What the daemon does after each write (the dataplane's fronts).
        lb.maps.front_epoch().bump();
    }
    let insert_ms = millis(t);
    let t = Instant::now();
    for i in 0..SESSION_UPDATES {
        sessions
            .insert(key(i), placement(&[2, 3], 2), 0)
            .map_err(map_err("updating SESSIONS"))?;
        // What the daemon does after each write (the dataplane's fronts).
        lb.maps.front_epoch().bump();
    }
    let update_ms = millis(t);

    let flip_median = median(&mut flip_us);
    Ok(json!({
        "maglev_slots": MAGLEV_SIZE,
        "backends": SWAP_BACKENDS,
        "build_ms": round(median(&mut build_ms), 2),
        "idle_half_write_ms": round(median(&mut write_ms), 2),
        "flip_us": round(flip_median, 2),
        "flip_us_p99": round(p99, 2),
        "flip_us_max": round(max, 2),
        "flips_timed": sorted.len(),
        "swap_maglev_total_ms": round(median(&mut whole_ms), 2),
        "sessions_insert_10k_ms": round(insert_ms, 2),
        "sessions_update_10k_ms": round(update_ms, 2),
        "target_flip_ms": 1.0,
        "meets_target": p99 < 1000.0,
        "notes": "build = maglev::build in memory; idle_half_write = 65,537 BPF array updates; \
                  flip = one GLOBALS update (what packets see change); swap_maglev_total = the \
                  daemon's write of a changed default table (DataplaneMaps::write_delta: fills \
                  the memory-mapped idle half, flips). Medians. meets_target is judged on the p99 flip; the slowest flip is \
                  reported too and includes any time the process was descheduled on the shared cores.",
    }))
}
