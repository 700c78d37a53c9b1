//! Memory with a million placed sessions: the RSS of this process (which loads the balancer and
//! holds the sessions in a `Snapshot`, as the daemon does) and each BPF map's memory as the
//! kernel accounts it (`memlock` in `/proc/self/fdinfo/<map fd>`).

use std::{
    os::fd::{AsFd, AsRawFd},
    time::Instant,
};

use aya::maps::{HashMap, MapData};
use serde_json::{json, Map as JsonMap, Value};
use shardline_common::maps::{SessionKey, ShardSet};

use super::{io, loaded_balancer, open_pinned, round, BenchError};

/// Sessions loaded into the SESSIONS map.
pub const SESSIONS: u64 = 1_000_000;

const MAPS: [&str; 9] = [
    "SERVICES",
    "BACKENDS",
    "SESSIONS",
    "MAGLEV",
    "GLOBALS",
    "REASONS",
    "BACKEND_STATS",
    "SESSION_STATS",
    "SESSION_SLOT_STATS",
];

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    round(kib as f64 / 1024.0, 1)
}

/// `key: value` lines of `/proc/self/fdinfo/<fd>`.
fn fdinfo(fd: i32) -> Result<std::collections::HashMap<String, String>, BenchError> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .map_err(io(format!("reading /proc/self/fdinfo/{fd}")))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect())
}

/// Runs the memory benchmark.
pub fn run() -> Result<Value, BenchError> {
    let rss_start = status_kib("VmRSS");
    let lb = loaded_balancer()?;
    let rss_loaded = status_kib("VmRSS");

    let set = super::swap::placement(&[1, 2], 1);
    let mut snapshot = lb.tables.clone();
    for i in 0..SESSIONS {
        snapshot.sessions.insert(
            SessionKey {
                service: 1,
                _pad: 0,
                session: 10_000_000 + i,
            },
            set,
        );
    }
    let rss_snapshot = status_kib("VmRSS");

    let mut sessions: HashMap<MapData, SessionKey, ShardSet> =
        open_pinned(&lb.pin_dir, "SESSIONS")?;
    let t = Instant::now();
    for (k, v) in &snapshot.sessions {
        sessions.insert(k, v, 0).map_err(|source| BenchError::Map {
            what: "inserting into SESSIONS".into(),
            source,
        })?;
    }
    let insert_s = t.elapsed().as_secs_f64();
    let rss_loaded_sessions = status_kib("VmRSS");

    let mut maps = JsonMap::new();
    let mut total: u64 = 0;
    for name in MAPS {
        let data = MapData::from_pin(lb.pin_dir.join(name)).map_err(|source| BenchError::Map {
            what: format!("opening pinned map {name}"),
            source,
        })?;
        let info = fdinfo(data.fd().as_fd().as_raw_fd())?;
        let memlock: u64 = info
            .get("memlock")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        total += memlock;
        maps.insert(
            name.to_owned(),
            json!({
                "memlock_mib": round(memlock as f64 / 1048576.0, 2),
                "max_entries": info.get("max_entries").and_then(|v| v.parse::<u64>().ok()),
                "map_type": info.get("map_type").and_then(|v| v.parse::<u64>().ok()),
            }),
        );
    }
    let sessions_memlock = maps
        .get("SESSIONS")
        .and_then(|m| m["memlock_mib"].as_f64())
        .unwrap_or(0.0);
    Ok(json!({
        "sessions": SESSIONS,
        "sessions_in_map": snapshot.sessions.len(),
        "insert_seconds": round(insert_s, 2),
        "rss_mib": {
            "start": mib(rss_start),
            "balancer_loaded": mib(rss_loaded),
            "with_1m_sessions_in_snapshot": mib(rss_snapshot),
            "after_loading_sessions_into_map": mib(rss_loaded_sessions),
            "peak": mib(status_kib("VmHWM")),
        },
        "bpf_maps_memlock_mib_total": round(total as f64 / 1048576.0, 1),
        "sessions_map_bytes_per_session": round(
            sessions_memlock * 1048576.0 / snapshot.sessions.len() as f64,
            1
        ),
        "bpf_maps": maps,
        "notes": "RSS is this bench process standing in for the daemon: it loads the balancer and \
                  holds the sessions in a Snapshot as the daemon does. Map memory is the kernel's \
                  memlock accounting from /proc/self/fdinfo (per-CPU maps count every CPU).",
    }))
}
