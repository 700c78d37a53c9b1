//! Cluster-wide load (issue 20 §3): three daemons with the predictive loop, one session's load
//! counted on two of them (the leader and one follower, as ECMP would split it); the leader's
//! loop must sample and forecast the sum, not its own part, while the follower forecasts its
//! own part (warm for when it leads).
//!
//! The load is written into each node's pinned `SESSION_STATS` counters, the map the sampler
//! reads every tick, as the XDP program would count it: the cluster harness runs its daemons
//! on `lo` without VIPs or backends to send real packets through. Everything after the
//! counters (sampler, peer report, summing, forecast, API) is the daemons' own.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
use serde_json::Value;
use shardline_common::maps::{Counter, SessionKey};

use crate::cluster::harness::{Node, TestCluster};

const BOOT: Duration = Duration::from_secs(60);
/// The loop's tick in this test.
const TICK_MS: u64 = 500;
/// `kv` (the first service of the test tables), session 77: unplaced, so counted in the
/// `SESSION_STATS` LRU.
const KEY: SessionKey = SessionKey {
    service: 1,
    _pad: 0,
    session: 77,
};

/// GET `path` on node `node`'s operator API (its default `127.0.0.1:7900`, inside its
/// namespace): the JSON answer, or why not.
fn api_get(node: &Node, path: &str) -> Result<Value, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            node.ns.enter_current_thread().map_err(|e| e.to_string())?;
            let reply = reqwest::blocking::Client::new()
                .get(format!("http://127.0.0.1:7900{path}"))
                .timeout(Duration::from_secs(5))
                .send()
                .map_err(|e| e.to_string())?;
            if !reply.status().is_success() {
                return Err(format!("{path}: {}", reply.status()));
            }
            reply.json().map_err(|e| e.to_string())
        })
        .join()
        .expect("http thread")
    })
}

/// Node `node`'s session counters map, pinned by its daemon.
fn session_stats(node: &Node) -> PerCpuHashMap<MapData, SessionKey, Counter> {
    let data = MapData::from_pin(node.pin_dir.join("SESSION_STATS")).expect("pinned SESSION_STATS");
    PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).expect("a per-CPU hash map")
}

/// Counts `pps` packets per second of 100 bytes for [`KEY`] in each map until `stop`, every
/// 10 ms (the total so far, on CPU 0), bounded by `limit`.
fn count(
    maps: &mut [(PerCpuHashMap<MapData, SessionKey, Counter>, f64)],
    stop: &AtomicBool,
    limit: Duration,
) {
    let cpus = aya::util::nr_cpus().expect("CPU count");
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        let secs = start.elapsed().as_secs_f64();
        for (map, pps) in maps.iter_mut() {
            let packets = (secs * *pps) as u64;
            let mut per_cpu = vec![Counter::default(); cpus];
            per_cpu[0] = Counter {
                packets,
                bytes: packets * 100,
            };
            let values = PerCpuValues::try_from(per_cpu).expect("per-CPU values");
            map.insert(KEY, values, 0).expect("writing SESSION_STATS");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The session's insight (rate, forecast) on node `id`'s API, if it has one.
fn insight(c: &TestCluster, id: u64) -> Option<(f64, f64)> {
    let detail = api_get(c.node(id), "/v1/sessions/kv/77").ok()?;
    let i = &detail["insight"];
    Some((i["rate"].as_f64()?, i["forecast"].as_f64()?))
}

fn near(x: f64, want: f64) -> bool {
    (x - want).abs() <= want * 0.15
}

#[test]
fn a_3_node_cluster_with_traffic_sent_to_two_nodes_forecasts_from_the_summed_rate() {
    crate::support::require_root();
    let mut c = TestCluster::new(3, 0, 5000);
    for id in 1..=3 {
        c.wait_ready(id, BOOT);
    }
    // The harness's nodes run without the loop: add it, restart them.
    for id in 1..=3 {
        c.kill(id);
        let config = &c.node(id).config;
        let mut text = std::fs::read_to_string(config).expect("node config");
        text.push_str(&format!("\n[control]\ntick_ms = {TICK_MS}\n"));
        std::fs::write(config, text).expect("node config");
    }
    for id in 1..=3 {
        c.start(id);
    }
    for id in 1..=3 {
        c.wait_ready(id, BOOT);
    }
    let leader = c.leader(&[1, 2, 3], BOOT);
    let follower = if leader == 1 { 2 } else { 1 };
    let idle = 6 - leader - follower;
    let (leader_pps, follower_pps) = (100.0, 300.0);
    let sum = leader_pps + follower_pps;

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut maps = vec![
            (session_stats(c.node(leader)), leader_pps),
            (session_stats(c.node(follower)), follower_pps),
        ];
        let stop = &stop;
        s.spawn(move || count(&mut maps, stop, Duration::from_secs(120)));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The leader forecasts the sum: rate and forecast near 400 for three polls in a
            // row (never its own 100, nor the follower's 300).
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut streak = 0;
            let mut seen = Vec::new();
            while streak < 3 {
                let got = insight(&c, leader);
                seen.push(got);
                streak = match got {
                    Some((rate, forecast)) if near(rate, sum) && near(forecast, sum) => streak + 1,
                    _ => 0,
                };
                assert!(
                    Instant::now() < deadline,
                    "leader {leader} never forecast the summed {sum} pps; (rate, forecast) seen: {:?}\n{}",
                    &seen[seen.len().saturating_sub(10)..],
                    c.log(leader)
                );
                std::thread::sleep(Duration::from_millis(TICK_MS));
            }
            // The follower forecasts its own part, warm for when it leads.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match insight(&c, follower) {
                    Some((rate, _)) if near(rate, follower_pps) => break,
                    got => assert!(
                        Instant::now() < deadline,
                        "follower {follower} does not forecast its own {follower_pps} pps: {got:?}"
                    ),
                }
                std::thread::sleep(Duration::from_millis(TICK_MS));
            }
            // Both followers' reports are fresh on the leader; the freshness is in /metrics.
            let view = c
                .call(leader, "/cluster/rates", None)
                .expect("GET /cluster/rates");
            let mut fresh: Vec<u64> = view["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .filter(|n| n["fresh"] == true)
                .filter_map(|n| n["node"].as_u64())
                .collect();
            fresh.sort_unstable();
            let mut want = vec![follower, idle];
            want.sort_unstable();
            assert_eq!(fresh, want, "{view}");
            let metrics = std::thread::scope(|s| {
                s.spawn(|| {
                    c.node(leader)
                        .ns
                        .enter_current_thread()
                        .expect("enter namespace");
                    reqwest::blocking::get("http://127.0.0.1:7900/metrics")
                        .and_then(|r| r.text())
                        .expect("GET /metrics")
                })
                .join()
                .expect("metrics thread")
            });
            for node in [follower, idle] {
                let series = format!("shardline_peer_report_age_seconds{{node=\"{node}\"}}");
                assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}
