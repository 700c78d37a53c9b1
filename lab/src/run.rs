//! `shardline-lab run`: the lab run from the command line, with its live per-session view.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{Lab, LabOptions};

/// The live view's rows for the rate-shaped sessions: sent, and answers per backend.
fn print_load(load: &std::sync::Mutex<crate::load::LoadReport>) {
    let r = load.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (id, sent) in &r.sent {
        let answers = r.answers.get(id).cloned().unwrap_or_default();
        let spread: Vec<String> = answers.iter().map(|(b, n)| format!("{b}: {n}")).collect();
        let label = format!("kv/{id} (shaped, sent {sent})");
        let total: u64 = answers.values().sum();
        println!(" {label:<28} {total:>8}  {}", spread.join("  "));
    }
}

/// The live view's row for the lab's QUIC connection, which changes its source every second.
fn print_quic(report: &std::sync::Mutex<crate::quic::RebindingReport>) {
    let r = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let total: u64 = r.answers.values().sum();
    let spread: Vec<String> = r.answers.iter().map(|(b, n)| format!("{b}: {n}")).collect();
    let label = format!("quic/{} rebinds", r.rebinds);
    println!(" {label:<28} {total:>8}  {}", spread.join("  "));
    if let Some(e) = r.error {
        println!(" quic connection stopped: {e}");
    }
}

/// `shardline-lab run`: builds the lab, drives its sessions for `duration` seconds and prints the
/// live per-session view and the control loop's decisions.
pub fn run(duration: u64, sessions: u32, backends: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the lab needs root (network namespaces, BPF)"
    );
    anyhow::ensure!((1..=64).contains(&sessions), "--sessions must be 1 to 64");
    anyhow::ensure!((1..=16).contains(&backends), "--backends must be 1 to 16");
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let opts = LabOptions {
        tag: format!("{}", std::process::id()),
        backends,
        sessions,
        bins: crate::Binaries::locate()?,
    };
    println!(
        "lab: building {backends} backends, {sessions} sessions (namespaces sl-*-{})",
        opts.tag
    );
    // The lab's other traffic (header, flow and QUIC sessions) already runs at a few
    // thousand requests per second: capacities sized so the shaped sessions make the difference.
    let predict = crate::predict::PredictOptions {
        backend_capacity: 2000,
        per_shard_capacity: 600.0,
        hook: true,
        ..Default::default()
    };
    println!(
        "lab: predictive control on: backends serve {} req/s each, one shard carries {} req/s; \
         session kv/100 ramps, kv/101 swings",
        predict.backend_capacity, predict.per_shard_capacity
    );
    let lab = Lab::start_with(&opts, Some(predict))?;
    println!("lab: daemon routing; sending traffic for {duration} s (Ctrl-C stops early)");
    let shaped = [
        crate::load::Loaded {
            id: 100,
            shape: crate::load::Shape::Ramp {
                from: 100.0,
                to: 2400.0,
                secs: duration as f64 * 0.8,
            },
        },
        crate::load::Loaded {
            id: 101,
            shape: crate::load::Shape::Periodic {
                base: 400.0,
                amplitude: 300.0,
                period: 20.0,
            },
        },
    ];
    let load = std::sync::Mutex::new(crate::load::LoadReport::default());
    let decisions_seen = std::sync::atomic::AtomicUsize::new(0);
    let print_decisions = || {
        let log = lab.daemon_log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(" shards at ")
                    || l.contains("re-sharded off")
                    || l.contains("autoscale")
                    || l.contains("health check")
                    || l.contains("registered")
                    || l.contains("saturation")
            })
            .collect();
        let seen = decisions_seen.swap(lines.len(), Ordering::Relaxed);
        for line in lines.iter().skip(seen) {
            // The log line's message, without the timestamp and level.
            let message = line.split_once("shardline::").map_or(*line, |(_, m)| m);
            println!(" decision: {message}");
        }
    };
    let labels: Vec<String> = lab.sessions.iter().map(|s| s.label.clone()).collect();
    let print = |elapsed: Duration, report: &crate::Report| {
        println!(
            "\n t={:>3}s  answered {}  lost {}",
            elapsed.as_secs(),
            report.observations.len(),
            report.lost
        );
        println!(
            " {:<28} {:>8}  backends (id: answers)",
            "session", "answers"
        );
        for (i, per_backend) in report.by_session() {
            let total: u64 = per_backend.values().sum();
            let spread: Vec<String> = per_backend
                .iter()
                .map(|(b, n)| format!("{b}: {n}"))
                .collect();
            println!(" {:<28} {:>8}  {}", labels[i], total, spread.join("  "));
        }
    };
    let quic = std::sync::Mutex::new(crate::quic::RebindingReport::default());
    let stop_flag = Arc::clone(&stop);
    let stopped = move || stop_flag.load(Ordering::Relaxed);
    let report = std::thread::scope(|scope| {
        scope.spawn(|| lab.drive_quic(Duration::from_secs(duration), &stopped, &quic));
        scope.spawn(|| lab.drive_load(&shaped, Duration::from_secs(duration), &stop, &load));
        lab.drive(Duration::from_secs(duration), &stopped, &mut |t, r| {
            print(t, r);
            print_quic(&quic);
            print_load(&load);
            print_decisions();
        })
    })?;
    print_decisions();
    let used: std::collections::BTreeSet<u32> =
        report.observations.iter().map(|o| o.backend).collect();
    println!(
        "\nlab: done: {} answers from backends {:?}, {} lost; tearing down",
        report.observations.len(),
        used,
        report.lost
    );
    drop(lab);
    anyhow::ensure!(
        !report.observations.is_empty(),
        "no request was answered: see the logs above"
    );
    Ok(())
}
