//! The lab's main job end to end: `shardline-lab run`'s default configuration (backends,
//! sessions, duration, the predictive loop with its hook, the shaped load and the migrating QUIC
//! connection) loses no request without a reported reason. A backend that refuses a request
//! over its capacity limit says so in its answer; anything else lost fails the test. Every
//! service runs on a pool of its own: the QUIC ones on backends 1 and 2 only, the others on
//! every backend, the ones the autoscale hook adds included (they register for exactly those).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use shardline::maps::DataplaneMaps;
use shardline_lab::{
    config::QUIC_POOL_SERVICES,
    predict::HOOK_BACKEND_SERVICES,
    run::{default_predict, drive_default, DEFAULT_BACKENDS, DEFAULT_DURATION, DEFAULT_SESSIONS},
    Lab, LabOptions,
};

#[test]
fn the_default_lab_run_loses_no_request_without_a_reason() {
    crate::support::require_root();
    let opts = LabOptions {
        tag: format!("r{}", std::process::id() % 100_000),
        backends: DEFAULT_BACKENDS,
        sessions: DEFAULT_SESSIONS,
        bins: crate::support::bins(),
    };
    let lab = Lab::start_with(&opts, Some(default_predict()))
        .unwrap_or_else(|e| panic!("starting the lab: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let report = drive_default(&lab, DEFAULT_DURATION, &stop, &mut |_, _, _, _| {})
        .unwrap_or_else(|e| panic!("driving the lab: {e}"));
    stop.store(true, Ordering::Relaxed);
    check_pools(&lab);
    let requests = &report.requests;
    let summary = requests.lost_summary();
    eprintln!(
        "default lab run: {} answers, {summary}; shaped: {:?} sent, {} refused, {} lost; quic {:?}",
        requests.observations.len(),
        report.load.sent,
        report.load_refused(),
        report.load_lost(),
        report.quic.answers
    );
    assert!(
        requests.observations.len() > 1000,
        "only {} requests answered in {DEFAULT_DURATION} s",
        requests.observations.len()
    );
    let unexplained: Vec<String> = requests
        .losses
        .iter()
        .filter(|(_, loss)| !loss.reason.explained())
        .take(10)
        .map(|(at, loss)| {
            let session = &lab.sessions[loss.session].label;
            format!("{session} at {at:?}: {}", loss.reason.label())
        })
        .collect();
    assert_eq!(
        requests.unexplained(),
        0,
        "{summary}; first ones: {unexplained:#?}; daemon log:\n{}",
        lab.daemon_log()
    );
    assert_eq!(
        report.load_lost(),
        0,
        "shaped requests neither answered nor refused: {:?}; the client's send errors: {:?}; \
         UDP drops by namespace: {:?}",
        report.load.lost(),
        report.load.send_errors,
        lab.udp_drops()
    );
    assert_eq!(report.quic.error, None, "the QUIC connection stopped early");
    assert!(
        report.quic.answers.values().sum::<u64>() > 0,
        "the QUIC connection got no answer"
    );
}

/// The live dataplane's pools after the run: the QUIC services on backends 1 and 2, every
/// other service on the lab's backends and every backend the hook added, and no backend the
/// hook added in a QUIC pool.
fn check_pools(lab: &Lab) {
    let snap = DataplaneMaps::open(&lab.pin_dir)
        .and_then(|m| m.read_snapshot())
        .unwrap_or_else(|e| panic!("reading the lab's maps: {e}"));
    let all: Vec<u32> = snap.backends.keys().copied().collect();
    let added: Vec<u32> = all
        .iter()
        .copied()
        .filter(|id| *id > DEFAULT_BACKENDS)
        .collect();
    eprintln!(
        "default lab run: backends {all:?}, {} added by the hook",
        added.len()
    );
    for (i, s) in lab.config.services.iter().enumerate() {
        let mut pool = snap
            .pools
            .get(&(i as u32 + 1))
            .unwrap_or_else(|| panic!("service {} has no pool in the maps", s.name))
            .clone();
        pool.sort_unstable();
        let name = s.name.as_str();
        if QUIC_POOL_SERVICES.contains(&name) {
            assert_eq!(pool, vec![1, 2], "{name}'s pool");
        } else {
            assert!(HOOK_BACKEND_SERVICES.contains(&name), "{name}: which pool?");
            let mut want = all.clone();
            want.sort_unstable();
            assert_eq!(
                pool, want,
                "{name} on every backend, the added ones included"
            );
        }
    }
}
