//! The predictive control loop end to end in the netns lab: a ramping session is scaled out
//! before any backend saturates, the autoscale hook brings a new backend in time, a dead
//! backend is dropped within a health interval, and a corrupt history file is reported.
//!
//! Saturation is judged by the backends themselves: each echo backend refuses requests over
//! its capacity and logs `saturated` when it does.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use shardline::{
    config::control::{Controller, OnCorrupt},
    maps::DataplaneMaps,
};
use shardline_common::maps::SessionKey;
use shardline_lab::{
    load::{LoadReport, Loaded, Shape},
    predict::{extras_file, PredictOptions},
    Lab, LabError, LabOptions,
};

fn options(backends: u32) -> LabOptions {
    crate::support::require_root();
    LabOptions {
        tag: crate::support::unique_tag("p"),
        backends,
        sessions: 2,
        bins: crate::support::bins(),
    }
}

fn start(backends: u32, predict: PredictOptions) -> Lab {
    Lab::start_with(&options(backends), Some(predict))
        .unwrap_or_else(|e| panic!("starting the lab: {e}"))
}

/// The `kv` service's session `id` as the dataplane knows it.
fn kv(id: u64) -> SessionKey {
    SessionKey {
        service: 1,
        _pad: 0,
        session: id,
    }
}

/// Shard set of `kv/id` in the pinned maps (empty: the default table routes it).
fn shard_set(lab: &Lab, id: u64) -> Vec<u32> {
    let maps = DataplaneMaps::open(&lab.pin_dir).expect("open the lab's maps");
    let snap = maps.read_snapshot().expect("read the maps");
    snap.sessions
        .get(&kv(id))
        .map(|s| s.backends[..s.count as usize].to_vec())
        .unwrap_or_default()
}

/// Backends whose own log says they refused work.
fn saturated(lab: &Lab, ids: impl IntoIterator<Item = u32>) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for id in ids {
        let log = lab.log_of(&format!("echo on backend {id}"))
            + &std::fs::read_to_string(lab.work_dir().join(format!("extra-{id}-echo.log")))
                .unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("saturated:")) {
            out.push((id, line.to_owned()));
        }
    }
    out
}

fn decisions(lab: &Lab) -> Vec<String> {
    lab.daemon_log()
        .lines()
        .filter(|l| l.contains(" shards") || l.contains("re-sharded") || l.contains("hook"))
        .map(str::to_owned)
        .collect()
}

fn drive(lab: &Lab, sessions: &[Loaded], seconds: u64) -> LoadReport {
    let report = Mutex::new(LoadReport::default());
    lab.drive_load(
        sessions,
        Duration::from_secs(seconds),
        &AtomicBool::new(false),
        &report,
    )
    .unwrap_or_else(|e| panic!("driving the load: {e}"));
    report.into_inner().unwrap()
}

fn answered(report: &LoadReport, id: u64) -> (u64, u64, BTreeMap<u32, u64>) {
    let answers = report.answers.get(&id).cloned().unwrap_or_default();
    (
        report.sent.get(&id).copied().unwrap_or(0),
        answers.values().sum(),
        answers,
    )
}

#[test]
fn a_ramping_session_is_scaled_out_before_any_backend_saturates() {
    let lab = start(4, PredictOptions::default());
    // One backend serves 400 req/s; the ramp ends at 700, so one or two shards would saturate.
    let ramp = Loaded {
        id: 100,
        shape: Shape::Ramp {
            from: 50.0,
            to: 700.0,
            secs: 30.0,
        },
    };
    let report = drive(&lab, &[ramp], 36);
    let set = shard_set(&lab, 100);
    let log = decisions(&lab);
    assert!(
        set.len() >= 3,
        "kv/100 ended on {set:?}; decisions:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("session kv/100 1 → 2 shards at t=")
            && l.contains("forecast peak")),
        "no scale-out decision with its reason:\n{}",
        log.join("\n")
    );
    let full = saturated(&lab, 1..=4);
    assert!(
        full.is_empty(),
        "backends saturated: {full:?}; decisions:\n{}",
        log.join("\n")
    );
    let (sent, got, spread) = answered(&report, 100);
    assert!(
        got as f64 > 0.95 * sent as f64,
        "{got} of {sent} answered: {spread:?}"
    );
    assert!(spread.len() >= 3, "answers came from {spread:?}");
}

/// What one controller did with [`steep_growth`].
#[derive(Debug)]
struct Outcome {
    controller: Controller,
    sent: u64,
    answered: u64,
    /// Requests backends refused over their capacity.
    refused: u64,
    saturated: Vec<(u32, String)>,
    decisions: Vec<String>,
}

/// Backends of the controller comparison: 400 requests/s each, 2,400 together.
const GROWTH_BACKENDS: u32 = 6;

/// The comparison's load: 20 → 1,600 requests/s, growing 55 % a second for 10 s, then flat.
/// Per-shard capacity is what a backend carries (no slack), so whichever controller lets the
/// load outgrow a shard set for a second saturates a backend.
fn steep_growth() -> Loaded {
    Loaded {
        id: 100,
        shape: Shape::Exponential {
            from: 20.0,
            to: 1600.0,
            secs: 10.0,
        },
    }
}

/// Runs [`steep_growth`] for 18 s in a fresh lab whose loop uses `controller` on the daemon's
/// default 1 s tick.
fn grow_under(controller: Controller) -> Outcome {
    let opts = PredictOptions::default();
    let lab = start(
        GROWTH_BACKENDS,
        PredictOptions {
            controller,
            per_shard_capacity: opts.backend_capacity as f64,
            tick_ms: 1000,
            ..opts
        },
    );
    let report = drive(&lab, &[steep_growth()], 18);
    let (sent, answered, _) = answered(&report, 100);
    Outcome {
        controller,
        sent,
        answered,
        refused: report.refused.get(&100).copied().unwrap_or(0),
        saturated: saturated(&lab, 1..=GROWTH_BACKENDS),
        decisions: decisions(&lab),
    }
}

/// Issue 20: the same load, capacities and tick under the predictive loop and under the HPA
/// rule on the observed rate (target 0.8, 10 % tolerance). Both keep 20 % spare in a steady
/// state; on a load that grows by half every second the HPA acts a tick after the rate
/// crossed its threshold and sizes for what it saw, so the next second outgrows the set,
/// while the forecast's upper bound over the next 6 s sizes ahead of it.
#[test]
fn on_a_steep_ramp_the_predictive_loop_saturates_no_backend_and_the_reactive_one_does() {
    let outcomes = [Controller::Predictive, Controller::Reactive].map(grow_under);
    for o in &outcomes {
        eprintln!(
            "{:?}: {} of {} answered, {} refused over capacity ({:.2} %), saturated: {:?}\n{}",
            o.controller,
            o.answered,
            o.sent,
            o.refused,
            100.0 * o.refused as f64 / o.sent.max(1) as f64,
            o.saturated.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            o.decisions.join("\n")
        );
    }
    let [predictive, reactive] = outcomes;
    assert!(
        predictive.saturated.is_empty() && predictive.refused == 0,
        "the predictive loop let backends saturate: {predictive:#?}"
    );
    assert!(
        predictive.answered as f64 > 0.98 * predictive.sent as f64,
        "{predictive:#?}"
    );
    assert!(
        !reactive.saturated.is_empty() && reactive.refused > 0,
        "the reactive rule kept up with the ramp, so the test shows nothing: {reactive:#?}"
    );
}

#[test]
fn the_hook_brings_a_new_backend_in_before_the_fleet_saturates() {
    let lab = start(
        2,
        PredictOptions {
            hook: true,
            ..PredictOptions::default()
        },
    );
    // Two backends serve 800 req/s together; the ramp ends at 900.
    let ramp = Loaded {
        id: 100,
        shape: Shape::Ramp {
            from: 50.0,
            to: 900.0,
            secs: 40.0,
        },
    };
    let report = drive(&lab, &[ramp], 46);
    let log = lab.daemon_log();
    let extras = std::fs::read_to_string(extras_file(lab.work_dir())).unwrap_or_default();
    assert!(
        log.contains("calling the autoscale hook"),
        "the hook was not called:\n{}",
        decisions(&lab).join("\n")
    );
    assert!(
        extras.starts_with("3 "),
        "the hook added no backend 3: {extras:?}"
    );
    assert!(
        log.contains("backend registered through its agent"),
        "{log}"
    );
    let set = shard_set(&lab, 100);
    assert!(
        set.contains(&3),
        "kv/100 ended on {set:?}:\n{}",
        decisions(&lab).join("\n")
    );
    let (_, _, spread) = answered(&report, 100);
    assert!(spread.get(&3).is_some_and(|n| *n > 100), "{spread:?}");
    let full = saturated(&lab, 1..=3);
    assert!(
        full.is_empty(),
        "backends saturated: {full:?}; decisions:\n{}",
        decisions(&lab).join("\n")
    );
}

#[test]
fn a_dead_backend_leaves_every_shard_set_within_a_health_interval() {
    let interval = Duration::from_millis(500);
    let lab = start(3, PredictOptions::default());
    // The lab config places kv/1 on backends 2 and 3.
    assert_eq!(shard_set(&lab, 1), vec![2, 3]);
    let steady = Loaded {
        id: 1,
        shape: Shape::Ramp {
            from: 100.0,
            to: 100.0,
            secs: 1.0,
        },
    };
    let stop = AtomicBool::new(false);
    let report = Mutex::new(LoadReport::default());
    let (removed_after, set_after, forwarded) = std::thread::scope(|s| {
        s.spawn(|| lab.drive_load(&[steady], Duration::from_secs(30), &stop, &report));
        std::thread::sleep(Duration::from_secs(3));
        for what in ["agent", "echo", "decap"] {
            lab.kill(&format!("{what} on backend 2"));
        }
        let killed = Instant::now();
        while shard_set(&lab, 1).contains(&2) && killed.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let removed_after = killed.elapsed();
        // Let the loop re-shard, then watch backend 2's forwarded counter stay put.
        std::thread::sleep(interval * 2);
        let maps = DataplaneMaps::open(&lab.pin_dir).expect("open the lab's maps");
        let before = maps.backend_counter(2).unwrap().packets;
        std::thread::sleep(Duration::from_secs(3));
        let after = maps.backend_counter(2).unwrap().packets;
        stop.store(true, Ordering::Relaxed);
        (removed_after, shard_set(&lab, 1), after - before)
    });
    let log = lab.daemon_log();
    assert!(
        removed_after <= interval + Duration::from_millis(500),
        "backend 2 left kv/1's shard set only after {removed_after:?}:\n{log}"
    );
    assert!(log.contains("health check failed"), "{log}");
    assert_eq!(set_after.len(), 2, "kv/1 was not re-sharded: {set_after:?}");
    assert!(!set_after.contains(&2), "{set_after:?}");
    assert_eq!(forwarded, 0, "{forwarded} packets went to dead backend 2");
    let report = report.into_inner().unwrap();
    let (_, _, spread) = answered(&report, 1);
    assert!(spread.len() >= 2, "{spread:?}");
}

#[test]
fn a_corrupt_history_file_is_refused_or_recovered_never_a_panic() {
    let garbage = b"not a history store\n".repeat(200);
    let refused = Lab::start_with(
        &options(1),
        Some(PredictOptions {
            history_seed: Some(garbage.clone()),
            on_corrupt: OnCorrupt::Refuse,
            ..PredictOptions::default()
        }),
    );
    match refused {
        Ok(_) => panic!("the daemon started on a corrupt history with history_on_corrupt = refuse"),
        Err(LabError::NotReady { what, log, .. }) => {
            assert_eq!(what, "daemon");
            assert!(
                log.contains("history.redb is corrupt or truncated"),
                "{log}"
            );
            assert!(!log.contains("panicked"), "{log}");
        }
        Err(e) => panic!("unexpected lab error: {e}"),
    }
    let lab = start(
        1,
        PredictOptions {
            history_seed: Some(garbage),
            on_corrupt: OnCorrupt::Recover,
            ..PredictOptions::default()
        },
    );
    let log = lab.daemon_log();
    assert!(log.contains("starting with an empty history"), "{log}");
    assert!(lab.work_dir().join("history.corrupt").exists());
}
