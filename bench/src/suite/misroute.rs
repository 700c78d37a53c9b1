//! Packets misrouted while the tables swap: a second thread flips the Maglev halves (one
//! table over backends 1–4, the other over 1–3) and re-places a session back and forth as
//! fast as it can, while this thread runs packets of placed and unplaced sessions through the
//! balancer (`BPF_PROG_TEST_RUN`). A packet is misrouted when the backend it was encapsulated
//! to is one that neither the tables before nor after a swap name for it.

use std::{
    collections::HashMap as StdHashMap,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use aya::maps::{Array, HashMap, MapData};
use serde_json::{json, Value};
use shardline_common::{
    maps::{Globals, SessionKey, ShardSet},
    route::decide,
    verdict::Action,
};

use super::{
    loaded_balancer, map_err,
    per_packet::header_frame_v4,
    swap::{placement, table_over, write_half},
    BenchError,
};
use shardline::snapshot::Snapshot;

/// The bench configuration's placed `kv` session.
const PLACED: SessionKey = SessionKey {
    service: 1,
    _pad: 0,
    session: 42,
};
/// Unplaced sessions in the traffic mix (routed by the default table).
const UNPLACED: u64 = 1_000;

/// The backend an IPIP-encapsulated frame goes to, by its outer destination address.
fn outer_backend(frame: &[u8], by_addr: &StdHashMap<[u8; 4], u32>) -> Option<u32> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    if ethertype != 0x0800 || *frame.get(23)? != 4 {
        return None;
    }
    let dst: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
    by_addr.get(&dst).copied()
}

/// Runs the benchmark: `quick` sends 20,000 packets, else 100,000.
pub fn run(quick: bool) -> Result<Value, BenchError> {
    let packets: u64 = if quick { 20_000 } else { 100_000 };
    let mut lb = loaded_balancer()?;

    // Both halves hold a complete table, so every flip is between two valid tables.
    let tables = [table_over(4), table_over(3)];
    let sets = [placement(&[1, 2, 3], 1_000), placement(&[2, 4], 1_001)];
    let mut maglev_map: Array<MapData, u32> = super::open_pinned(&lb.pin_dir, "MAGLEV")?;
    for (half, t) in tables.iter().enumerate() {
        write_half(&mut maglev_map, half as u32, t)?;
    }
    let mut globals_map: Array<MapData, Globals> = super::open_pinned(&lb.pin_dir, "GLOBALS")?;
    let globals = globals_map.get(&0, 0).map_err(map_err("reading GLOBALS"))?;
    globals_map
        .set(0, globals.with_live_half(0), 0)
        .map_err(map_err("writing GLOBALS"))?;
    let mut sessions: HashMap<MapData, SessionKey, ShardSet> =
        super::open_pinned(&lb.pin_dir, "SESSIONS")?;
    // Keep the session's counters slot: the daemon's writes do.
    let slot = sessions
        .get(&PLACED, 0)
        .map_err(map_err("reading SESSIONS"))?
        .stats_slot;
    let sets = sets.map(|s| ShardSet {
        stats_slot: slot,
        ..s
    });
    sessions
        .insert(PLACED, sets[0], 0)
        .map_err(map_err("writing SESSIONS"))?;
    // Bumped after every SESSIONS write, as the daemon does (the dataplane's fronts).
    let epoch = shardline::maps::FrontEpoch::open(&lb.pin_dir)
        .map_err(|e| BenchError::Check(format!("opening FRONT_EPOCH: {e}")))?;
    epoch.bump();

    // Every combination of the two tables and the two placements a packet may meet.
    let replays: Vec<Snapshot> = tables
        .iter()
        .flat_map(|t| {
            let base = &lb.tables;
            sets.iter().map(move |s| {
                let mut snap = base.clone();
                snap.maglev = t.clone();
                snap.sessions.insert(PLACED, *s);
                snap
            })
        })
        .collect();
    let by_addr: StdHashMap<[u8; 4], u32> = lb
        .tables
        .backends
        .iter()
        .map(|(id, b)| (b.addr4, *id))
        .collect();

    let stop = AtomicBool::new(false);
    let flips = AtomicU64::new(0);
    let mut misrouted = 0u64;
    let mut not_forwarded = 0u64;
    let mut placed_packets = 0u64;
    let swapper = |globals_map: &mut Array<MapData, Globals>,
                   sessions: &mut HashMap<MapData, SessionKey, ShardSet>|
     -> Result<(), BenchError> {
        let mut live = 0usize;
        while !stop.load(Ordering::Relaxed) {
            live ^= 1;
            globals_map
                .set(0, globals.with_live_half(live as u32), 0)
                .map_err(map_err("flipping GLOBALS"))?;
            sessions
                .insert(PLACED, sets[live], 0)
                .map_err(map_err("re-placing a session"))?;
            epoch.bump();
            flips.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    };
    let sent = std::thread::scope(|scope| -> Result<(), BenchError> {
        let handle = scope.spawn(|| swapper(&mut globals_map, &mut sessions));
        let result = (|| {
            for i in 0..packets {
                let placed = i % 4 == 0;
                let session = if placed {
                    PLACED.session
                } else {
                    10_000 + i % UNPLACED
                };
                let frame = header_frame_v4(session, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let run = lb.run(&frame).map_err(super::program_err("shardline_lb"))?;
                placed_packets += u64::from(placed);
                if run.action != Action::Tx {
                    not_forwarded += 1;
                    continue;
                }
                let got = outer_backend(&run.output, &by_addr);
                let allowed = replays
                    .iter()
                    .any(|t| Some(decide(frame.as_slice(), t).backend_id) == got);
                misrouted += u64::from(!allowed);
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let swapped = handle
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("the swapping thread panicked".into())));
        result.and(swapped)
    });
    sent?;
    let flips = flips.into_inner();
    if flips == 0 {
        return Err(BenchError::Check(
            "no swap happened while packets ran: nothing was measured".into(),
        ));
    }
    Ok(json!({
        "packets": packets,
        "placed_session_packets": placed_packets,
        "swaps": flips,
        "misrouted": misrouted,
        "not_forwarded": not_forwarded,
        "notes": "One thread flips the Maglev halves (backends 1-4 / 1-3) and re-places a \
                  session ([1,2,3] / [2,4]) in a loop while another runs header-mode packets \
                  (a quarter of them the placed session, the rest 1,000 unplaced sessions) \
                  through the balancer with BPF_PROG_TEST_RUN; misrouted = encapsulated to a \
                  backend that no combination of the tables before and after a swap names for \
                  the packet; not_forwarded = anything but XDP_TX.",
    }))
}
