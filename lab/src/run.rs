//! `shardline-lab run`: the lab run from the command line, with its live per-session view.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::{Lab, LabOptions};

/// The live view's rows for the rate-shaped sessions: sent, and answers per backend.
fn print_load(load: &Mutex<crate::load::LoadReport>) {
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
fn print_quic(report: &Mutex<crate::quic::RebindingReport>) {
    let r = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let total: u64 = r.answers.values().sum();
    let spread: Vec<String> = r.answers.iter().map(|(b, n)| format!("{b}: {n}")).collect();
    let label = format!("quic/{} rebinds", r.rebinds);
    println!(" {label:<28} {total:>8}  {}", spread.join("  "));
    if let Some(e) = r.error {
        println!(" quic connection stopped: {e}");
    }
}

/// `shardline-lab run`'s default duration, seconds.
pub const DEFAULT_DURATION: u64 = 20;
/// `shardline-lab run`'s default number of client sessions.
pub const DEFAULT_SESSIONS: u32 = 8;
/// `shardline-lab run`'s default number of backends.
pub const DEFAULT_BACKENDS: u32 = 4;

/// The control loop's settings of `shardline-lab run`. The lab's other traffic (header, flow
/// and QUIC sessions) already runs at a few thousand requests per second: capacities sized so
/// the shaped sessions make the difference, and the hook on.
pub fn default_predict() -> crate::predict::PredictOptions {
    crate::predict::PredictOptions {
        backend_capacity: 2000,
        per_shard_capacity: 600.0,
        hook: true,
        ..Default::default()
    }
}

/// The rate-shaped sessions of a `duration`-second `shardline-lab run`: kv/100 ramps over
/// 80 % of the run, kv/101 swings.
pub fn default_shaped(duration: u64) -> [crate::load::Loaded; 2] {
    use crate::load::{Loaded, Shape};
    [
        Loaded {
            id: 100,
            shape: Shape::Ramp {
                from: 100.0,
                to: 2400.0,
                secs: duration as f64 * 0.8,
            },
        },
        Loaded {
            id: 101,
            shape: Shape::Periodic {
                base: 400.0,
                amplitude: 300.0,
                period: 20.0,
            },
        },
    ]
}

/// Everything a run's client saw: the request sessions, the QUIC connection, the shaped load.
#[derive(Debug, Default)]
pub struct RunReport {
    /// The request sessions (header and flow mode), with every loss and its reason.
    pub requests: crate::Report,
    /// The migrating QUIC connection.
    pub quic: crate::quic::RebindingReport,
    /// The rate-shaped sessions.
    pub load: crate::load::LoadReport,
}

impl RunReport {
    /// Shaped requests neither answered nor refused: lost without a reason.
    pub fn load_lost(&self) -> u64 {
        self.load.lost().values().sum()
    }

    /// Shaped requests a backend refused over its capacity.
    pub fn load_refused(&self) -> u64 {
        self.load.refused.values().sum()
    }

    /// Every lost request without a reported reason: request sessions, shaped sessions and a
    /// QUIC connection that stopped early (counted as one).
    pub fn unexplained(&self) -> u64 {
        self.requests.unexplained() + self.load_lost() + u64::from(self.quic.error.is_some())
    }
}

/// What a run shows as it goes: called about once a second with the request sessions' report
/// so far, the QUIC connection's and the shaped load's.
pub type OnTick<'a> = dyn FnMut(
        Duration,
        &crate::Report,
        &Mutex<crate::quic::RebindingReport>,
        &Mutex<crate::load::LoadReport>,
    ) + Send
    + 'a;

/// Drives `lab` as `shardline-lab run` does, for `duration` seconds or until `stop`: the
/// request sessions, one migrating QUIC connection and the [`default_shaped`] sessions, all at
/// once.
pub fn drive_default(
    lab: &Lab,
    duration: u64,
    stop: &Arc<AtomicBool>,
    on_tick: &mut OnTick,
) -> Result<RunReport, crate::LabError> {
    let shaped = default_shaped(duration);
    let load = Mutex::new(crate::load::LoadReport::default());
    let quic = Mutex::new(crate::quic::RebindingReport::default());
    let stop_flag = Arc::clone(stop);
    let stopped = move || stop_flag.load(Ordering::Relaxed);
    let length = Duration::from_secs(duration);
    let requests = std::thread::scope(|scope| {
        let q = scope.spawn(|| lab.drive_quic(length, &stopped, &quic));
        let l = scope.spawn(|| lab.drive_load(&shaped, length, stop, &load));
        let requests = lab.drive(length, &stopped, &mut |t, r| on_tick(t, r, &quic, &load));
        let _ = q.join();
        l.join().expect("the lab's load thread panicked")?;
        requests
    })?;
    Ok(RunReport {
        requests,
        quic: quic.into_inner().unwrap_or_else(|e| e.into_inner()),
        load: load.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

/// The segment MTUs `shardline-lab run --mtu` accepts: the client's link runs
/// [`crate::topology::CLIENT_MTU_MARGIN`] under the segment and must still carry IPv6 (1280);
/// 9000 is [`crate::topology::JUMBO_MTU`].
pub const MTU_RANGE: std::ops::RangeInclusive<u32> =
    1280 + crate::topology::CLIENT_MTU_MARGIN..=crate::topology::JUMBO_MTU;

/// Refuses `shardline-lab run` arguments out of range, naming the flag and the range.
fn check_args(sessions: u32, backends: u32, mtu: Option<u32>) -> anyhow::Result<()> {
    anyhow::ensure!((1..=64).contains(&sessions), "--sessions must be 1 to 64");
    anyhow::ensure!((1..=16).contains(&backends), "--backends must be 1 to 16");
    if let Some(mtu) = mtu {
        anyhow::ensure!(
            MTU_RANGE.contains(&mtu),
            "--mtu must be {} to {} (IPv6's 1280 plus the encapsulation margin, up to jumbo frames)",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        );
    }
    Ok(())
}

/// `shardline-lab run`: builds the lab, drives its sessions for `duration` seconds and prints the
/// live per-session view and the control loop's decisions; every link at `mtu` when given
/// ([`MTU_RANGE`]).
pub fn run(duration: u64, sessions: u32, backends: u32, mtu: Option<u32>) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the lab needs root (network namespaces, BPF)"
    );
    check_args(sessions, backends, mtu)?;
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
    let predict = default_predict();
    println!(
        "lab: predictive control on: backends serve {} req/s each, one shard carries {} req/s; \
         session kv/100 ramps, kv/101 swings",
        predict.backend_capacity, predict.per_shard_capacity
    );
    if let Some(mtu) = mtu {
        println!("lab: every link at MTU {mtu}");
    }
    let lab = Lab::start_on(&opts, Some(predict), mtu)?;
    println!("lab: daemon routing; sending traffic for {duration} s (Ctrl-C stops early)");
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
            "\n t={:>3}s  answered {}  {}",
            elapsed.as_secs(),
            report.observations.len(),
            report.lost_summary()
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
    let report = drive_default(&lab, duration, &stop, &mut |t, r, quic, load| {
        print(t, r);
        print_quic(quic);
        print_load(load);
        print_decisions();
    })?;
    print_decisions();
    let drops = lab.udp_drops();
    drop(lab);
    print_final(&report);
    if report.unexplained() > 0 && !drops.is_empty() {
        println!("lab: UDP datagrams dropped inside the lab's hosts, by namespace: {drops:?}");
    }
    anyhow::ensure!(
        !report.requests.observations.is_empty(),
        "no request was answered: see the logs above"
    );
    Ok(())
}

/// The run's closing lines: answers, losses by reason (request sessions, then the shaped
/// ones), and whether the QUIC connection lasted.
fn print_final(report: &RunReport) {
    let requests = &report.requests;
    let used: std::collections::BTreeSet<u32> =
        requests.observations.iter().map(|o| o.backend).collect();
    println!(
        "\nlab: done: {} answers from backends {:?}, {}",
        requests.observations.len(),
        used,
        requests.lost_summary()
    );
    let sent: u64 = report.load.sent.values().sum();
    println!(
        "lab: shaped sessions: sent {sent}, lost {}, refused by a saturated backend {}",
        report.load_lost(),
        report.load_refused()
    );
    match &report.quic.error {
        Some(e) => println!("lab: the QUIC connection stopped early: {e}"),
        None => println!(
            "lab: the QUIC connection lasted: {} answers, {} rebinds",
            report.quic.answers.values().sum::<u64>(),
            report.quic.rebinds
        ),
    }
    println!(
        "lab: {} lost without a reason; torn down",
        report.unexplained()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_out_of_range_are_refused_with_the_flag_named() {
        check_args(4, 4, None).expect("the defaults");
        check_args(4, 4, Some(9000)).expect("jumbo frames");
        check_args(4, 4, Some(1500)).expect("the veth default");
        for (sessions, backends, mtu, flag) in [
            (0, 4, None, "--sessions"),
            (4, 17, None, "--backends"),
            (4, 4, Some(1379), "--mtu"),
            (4, 4, Some(9001), "--mtu"),
        ] {
            let e = check_args(sessions, backends, mtu)
                .expect_err(flag)
                .to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
