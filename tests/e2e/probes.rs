//! Service probes on the data path in the netns lab: the lab's backends serve the services on
//! the VIP alone (their echo binds the VIP, not their own address), so only a probe
//! encapsulated to the backend with the VIP as inner destination can pass. A backend whose
//! decapsulator stops fails its probes and leaves the probed services' pools (every lab
//! service has a pool), while its agent's `/health` still answers. [`http`] does the same for
//! `http` probes, whose whole TCP connection the daemon's tc program encapsulates, and
//! [`four_in_six`] for an IPv4 VIP's backends with only IPv6 (IPv4-in-IPv6).

mod four_in_six;
mod http;

use std::time::{Duration, Instant};

use serde_json::Value;
use shardline::config::{Protocol, ServiceProbe, SessionMode};
use shardline_lab::{
    predict::PredictOptions,
    topology::{backend4, backend6},
    Lab, LabOptions,
};

/// Backends of the lab.
const BACKENDS: u32 = 3;
/// The backend whose decapsulator is stopped.
const VICTIM: u64 = 2;

fn start_lab() -> Lab {
    crate::support::require_root();
    let opts = LabOptions {
        tag: crate::support::unique_tag("p"),
        backends: BACKENDS,
        sessions: 2,
        bins: crate::support::bins(),
    };
    Lab::start_with(&opts, Some(PredictOptions::default()))
        .unwrap_or_else(|e| panic!("starting the lab: {e}"))
}

/// `shardline ARGS --json` in the load balancer's namespace.
fn list(lab: &Lab, args: &[&str]) -> Vec<Value> {
    crate::support::cli::json(lab, args)
        .as_array()
        .expect("a list")
        .clone()
}

/// The pool members of the services named `probed`: (service, member) pairs.
fn members(lab: &Lab, probed: &[String]) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for s in list(lab, &["services"]) {
        let name = s["name"].as_str().unwrap_or_default().to_owned();
        if probed.contains(&name) {
            for m in s["pool"].as_array().expect("a pooled service").iter() {
                all.push((name.clone(), m.clone()));
            }
        }
    }
    all
}

/// Polls until `ok` holds of the probed services' members (at most `limit`); panics with the
/// last view.
fn until(
    lab: &Lab,
    probed: &[String],
    what: &str,
    limit: Duration,
    ok: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let start = Instant::now();
    loop {
        let view = members(lab, probed);
        if ok(&view) {
            return view;
        }
        if start.elapsed() > limit {
            panic!(
                "{what}: not within {limit:?}; members: {view:#?}\ndaemon log tail:\n{}",
                tail(&lab.daemon_log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn healthy(b: &Value) -> bool {
    b["healthy"].as_bool() == Some(true)
}

/// Whether this node's probes of `b` have passed at least `n` times in a row.
fn probes_passed(b: &Value, n: u64) -> bool {
    b["probe"]["consecutive_successes"].as_u64().unwrap_or(0) >= n
}

/// A backend's id in a listing.
fn id(m: &Value) -> Option<u64> {
    m["id"].as_u64()
}

/// Checks `view` once the victim left: on each of its services its last probe error names
/// `path` (how the probe travelled), its address on the VIP's family (an IPv6 VIP's probe goes
/// to the backend's IPv6 address, as every probe does with `ipv6_only` backends) and each of
/// `also`, and it carries no weight; every other member is healthy with no failure counted.
fn only_the_victim_left(view: &[(String, Value)], path: &str, also: &[&str], ipv6_only: bool) {
    for (service, m) in view {
        if id(m) != Some(VICTIM) {
            assert!(healthy(m), "{service}: only the victim leaves: {m}");
            assert_eq!(
                m["probe"]["consecutive_failures"].as_u64(),
                Some(0),
                "{service}: {m}"
            );
            continue;
        }
        let error = m["probe"]["last_error"].as_str().unwrap_or("");
        let backend = if service.ends_with('6') || ipv6_only {
            backend6(VICTIM as u32).to_string()
        } else {
            backend4(VICTIM as u32).to_string()
        };
        assert!(
            error.contains(path) && error.contains(&backend),
            "{service}: the probe's error names {path} and the backend {backend}: {error:?}"
        );
        for word in also {
            assert!(error.contains(word), "{service}: {word:?} in {error:?}");
        }
        assert_eq!(m["effective_weight"].as_u64(), Some(0), "{service}: {m}");
    }
}

#[test]
fn data_path_probes_pass_through_decapsulation_and_take_down_a_backend_that_stops_it() {
    let mut lab = start_lab();
    let mut config = lab.config.clone();
    let mut probed = Vec::new();
    for s in config.services.iter_mut() {
        match (s.mode, s.protocol) {
            (SessionMode::Header, Protocol::Udp) => s.probe = Some(ServiceProbe::Udp),
            (SessionMode::Flow, Protocol::Tcp) => s.probe = Some(ServiceProbe::Tcp),
            _ => continue,
        }
        assert!(
            s.probes_on_data_path(),
            "{}: the default takes the data path",
            s.name
        );
        probed.push(s.name.clone());
    }
    assert_eq!(
        probed.len(),
        3,
        "udp over IPv4 and IPv6 and a tcp service probed: {probed:?}"
    );
    lab.reload_config(&config)
        .unwrap_or_else(|e| panic!("reloading with probes: {e}"));

    // Health runs every 500 ms over 3 falls: a probe every ~170 ms. Ten passes in a row on
    // every member of every probed service, which a direct probe cannot pass here.
    let interval = Duration::from_millis(PredictOptions::default().tick_ms);
    let view = until(
        &lab,
        &probed,
        "every member passes its data-path probes",
        interval * 20,
        |v| {
            v.len() == probed.len() * BACKENDS as usize
                && v.iter().all(|(_, m)| healthy(m) && probes_passed(m, 10))
        },
    );
    assert!(view
        .iter()
        .all(|(_, m)| !m["probe_failing"].as_bool().unwrap_or(true)));

    lab.kill(&format!("decap on backend {VICTIM}"));
    let started = Instant::now();
    let view = until(
        &lab,
        &probed,
        "the backend without decapsulation leaves every probed pool",
        interval * 10,
        |v| {
            v.iter()
                .filter(|(_, m)| id(m) == Some(VICTIM))
                .all(|(_, m)| !healthy(m) && m["probe_failing"].as_bool() == Some(true))
        },
    );
    let took = started.elapsed();
    only_the_victim_left(&view, "data-path", &[], false);
    // Its agent still answers: it serves the services it is not probed for.
    let backends = list(&lab, &["backends", "list"]);
    let victim = backends
        .iter()
        .find(|b| id(b) == Some(VICTIM))
        .expect("listed");
    assert!(healthy(victim), "the backend itself stays up: {victim}");
    eprintln!("backend {VICTIM} left every probed pool {took:?} after its decapsulator stopped");
}
