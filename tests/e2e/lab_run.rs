//! The lab's main job end to end: `shardline-lab run`'s default configuration (backends,
//! sessions, duration, the predictive loop with its hook, the shaped load and the migrating QUIC
//! connection) loses no request without a reported reason. A backend that refuses a request
//! over its capacity limit says so in its answer; anything else lost fails the test.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use shardline_lab::{
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
        "shaped requests neither answered nor refused: {:?}",
        report.load.lost()
    );
    assert_eq!(report.quic.error, None, "the QUIC connection stopped early");
    assert!(
        report.quic.answers.values().sum::<u64>() > 0,
        "the QUIC connection got no answer"
    );
}
