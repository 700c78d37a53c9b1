//! CPU per forwarded packet at one fixed offered rate, below the point where any forwarder
//! saturates: in each round the client sends to a backend directly (the baseline), then through
//! each forwarder, at the same rate, and every run's CPU is summed over the lab's tasks
//! ([`super::cputime`]). A forwarder's cost per packet is its run's total minus the baseline's
//! of the same round, the median over rounds: what the sender, the backends and the answers
//! cost cancels, what is left is the load balancer's side (its softirq work, which runs in the
//! sender's task on veth, and its processes). After the rounds, one profiled run per case
//! ([`super::profile`]) splits that cost by stage of the path and times the lab's XDP programs.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde_json::{json, Map, Value};
use shardline_lab::topology::Topology;

use super::{
    cputime::{lb_cost, per_packet, Role, Tasks},
    profile::{self, BpfStats, Profile, Recording},
    traffic::{blast, Pace, Traffic},
};
use crate::suite::{median, round, BenchError};

/// The case name of the baseline runs: the client sending to a backend directly.
pub const BASELINE: &str = "baseline";
/// A run counts as fully forwarded when the backends received at least this share of what
/// was sent.
const FORWARDED_SHARE: f64 = 0.98;

/// How the CPU rounds run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Datagrams per second offered in every run.
    pub rate: f64,
    /// Sending time of each run.
    pub duration: Duration,
    /// Rounds (each runs the baseline and every case once).
    pub rounds: usize,
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The forwarder, or [`BASELINE`].
    pub case: String,
    /// The round it belongs to.
    pub round: usize,
    /// What the client saw, with the CPU.
    pub traffic: Traffic,
}

impl Run {
    /// The run's CPU per forwarded packet, all its tasks together.
    fn ns_per_pkt(&self) -> Option<f64> {
        let cpu = self.traffic.cpu?;
        per_packet(cpu.total_ns(), self.traffic.forwarded())
    }

    fn role_ns_per_pkt(&self, role: Role) -> Option<f64> {
        let cpu = self.traffic.cpu?;
        per_packet(cpu.ns(role), self.traffic.forwarded())
    }

    /// Whether the backends received (nearly) all that was sent.
    pub fn fully_forwarded(&self) -> bool {
        fully_forwarded(self.traffic.sent, self.traffic.forwarded())
    }

    /// The run as JSON.
    pub fn json(&self) -> Value {
        let t = &self.traffic;
        let by_role: Map<String, Value> = Role::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_owned(),
                    json!(self.role_ns_per_pkt(*r).map(|x| round(x, 0))),
                )
            })
            .collect();
        json!({
            "case": self.case,
            "round": self.round,
            "offered_pps": t.offered_pps().round() as u64,
            "sent": t.sent,
            "forwarded": t.forwarded(),
            "answered": t.answered,
            "fully_forwarded": self.fully_forwarded(),
            "ns_per_pkt": self.ns_per_pkt().map(|x| round(x, 0)),
            "by_role_ns_per_pkt": by_role,
            "proc_stat_softirq_ns_per_pkt": t.cpu.and_then(|c| per_packet(c.softirq_ns, t.forwarded())).map(|x| round(x, 0)),
        })
    }
}

/// Whether `forwarded` is at least [`FORWARDED_SHARE`] of `sent` (and something was sent).
pub fn fully_forwarded(sent: u64, forwarded: u64) -> bool {
    sent > 0 && forwarded as f64 >= FORWARDED_SHARE * sent as f64
}

/// The runs of one topology and, by case (the baseline among them), its profiled run or why
/// there is none.
#[derive(Debug)]
pub struct Measured {
    /// The measured runs, every round.
    pub runs: Vec<Run>,
    /// The profiled run of each case.
    pub profiles: Result<BTreeMap<String, Profile>, String>,
}

/// Runs `plan.rounds` rounds through `topo`: in each, the baseline (`baseline`, a backend
/// reached directly) and then every case, one after the other at `plan.rate`; then one
/// profiled run of each. `prepare` runs before each run with its case name (outside the
/// measured time), e.g. to route the client.
pub fn measure(
    topo: &Topology,
    baseline: SocketAddr,
    cases: &[(&str, SocketAddr)],
    prepare: &dyn Fn(&str) -> Result<(), BenchError>,
    plan: &Plan,
) -> Result<Measured, BenchError> {
    let mut namespaces = vec![
        (topo.client.name(), Role::Client),
        (topo.lb.name(), Role::Lb),
        (topo.switch.name(), Role::Switch),
    ];
    namespaces.extend(topo.backends.iter().map(|b| (b.name(), Role::Backends)));
    let all: Vec<(&str, SocketAddr)> = std::iter::once((BASELINE, baseline))
        .chain(cases.iter().copied())
        .collect();
    let mut runs = Vec::new();
    for round in 0..plan.rounds {
        for (case, target) in &all {
            prepare(case)?;
            let tasks = Tasks::find(&namespaces);
            let traffic = blast(
                topo,
                *target,
                plan.duration,
                Pace::Rate(plan.rate),
                Some(&tasks),
            )?;
            let run = Run {
                case: (*case).to_owned(),
                round,
                traffic,
            };
            println!(
                "bench:   cpu round {round} {case}: {:.0} ns/packet over {} of {} forwarded ({} processes)",
                run.ns_per_pkt().unwrap_or(f64::NAN),
                traffic.forwarded(),
                traffic.sent,
                tasks.processes(),
            );
            runs.push(run);
        }
    }
    let profiles = profiled(topo, &namespaces, &all, prepare, plan).map_err(|e| e.to_string());
    Ok(Measured { runs, profiles })
}

/// One profiled run of every case in `all`, at the plan's rate and duration.
fn profiled(
    topo: &Topology,
    namespaces: &[(&str, Role)],
    all: &[(&str, SocketAddr)],
    prepare: &dyn Fn(&str) -> Result<(), BenchError>,
    plan: &Plan,
) -> Result<BTreeMap<String, Profile>, BenchError> {
    let programs = profile::lab_programs(topo);
    let _stats = BpfStats::enable()?;
    let data = std::env::temp_dir().join(format!("shardline-bench-{}.perf", std::process::id()));
    let mut profiles = BTreeMap::new();
    for (case, target) in all {
        prepare(case)?;
        let pids = Tasks::find(namespaces).pids();
        let before = profile::program_stats(&programs);
        let recording = Recording::start(&data)?;
        let traffic = blast(topo, *target, plan.duration, Pace::Rate(plan.rate), None)?;
        let script = recording.finish()?;
        let after = profile::program_stats(&programs);
        let p = profile::profile(&script, &pids, &before, &after, traffic.forwarded());
        println!(
            "bench:   cpu profiled {case}: {:.0} ns/packet sampled over {} forwarded",
            p.stages.values().sum::<f64>(),
            traffic.forwarded()
        );
        profiles.insert((*case).to_owned(), p);
    }
    Ok(profiles)
}

/// The median over rounds of `case`'s value minus the baseline's value of the same round
/// (rounds where either is missing are skipped); `None` without a pair.
pub fn median_over_baseline(case: &[(usize, f64)], baseline: &[(usize, f64)]) -> Option<f64> {
    let mut diffs: Vec<f64> = case
        .iter()
        .filter_map(|(r, c)| {
            let (_, b) = baseline.iter().find(|(rb, _)| rb == r)?;
            Some(lb_cost(*c, *b))
        })
        .collect();
    (!diffs.is_empty()).then(|| median(&mut diffs))
}

/// What one forwarder costs per packet over its topology's baseline.
#[derive(Clone, Debug)]
pub struct Cost {
    /// Median over rounds of (forwarder − baseline), ns per forwarded packet, all tasks.
    pub ns_per_pkt: Option<f64>,
    /// The same difference, role by role.
    pub by_role: BTreeMap<&'static str, Option<f64>>,
}

/// `case`'s [`Cost`] from the runs of one topology (its baseline among them).
pub fn cost(runs: &[Run], case: &str) -> Cost {
    let values = |name: &str, f: &dyn Fn(&Run) -> Option<f64>| -> Vec<(usize, f64)> {
        runs.iter()
            .filter(|r| r.case == name)
            .filter_map(|r| Some((r.round, f(r)?)))
            .collect()
    };
    let diff = |f: &dyn Fn(&Run) -> Option<f64>| {
        median_over_baseline(&values(case, f), &values(BASELINE, f))
    };
    Cost {
        ns_per_pkt: diff(&Run::ns_per_pkt),
        by_role: Role::ALL
            .iter()
            .map(|role| (role.name(), diff(&|r: &Run| r.role_ns_per_pkt(*role))))
            .collect(),
    }
}

/// The median over rounds of the baseline's own CPU per packet.
pub fn baseline_ns_per_pkt(runs: &[Run]) -> Option<f64> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter(|r| r.case == BASELINE)
        .filter_map(Run::ns_per_pkt)
        .collect();
    (!v.is_empty()).then(|| median(&mut v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::veth::cputime::Usage;

    #[test]
    fn the_difference_pairs_rounds_and_takes_the_median() {
        let case = [(0, 2500.0), (1, 9000.0), (2, 2600.0)];
        let base = [(0, 2000.0), (1, 2100.0), (2, 2000.0)];
        // Differences 500, 6900 (a build burst in round 1), 600: the median ignores the burst.
        assert_eq!(median_over_baseline(&case, &base), Some(600.0));
    }

    #[test]
    fn rounds_without_a_baseline_are_skipped() {
        let case = [(0, 2500.0), (1, 3000.0)];
        let base = [(1, 2000.0)];
        assert_eq!(median_over_baseline(&case, &base), Some(1000.0));
        assert_eq!(median_over_baseline(&case, &[]), None);
    }

    fn run(case: &str, round: usize, forwarded: u64, roles: &[(Role, u64)]) -> Run {
        Run {
            case: case.to_owned(),
            round,
            traffic: Traffic {
                sent: 10_000,
                answered: forwarded,
                at_backends: forwarded,
                seconds: 1.0,
                cpu: Some(Usage::from_roles(roles)),
            },
        }
    }

    #[test]
    fn cost_is_per_forwarded_packet_over_the_same_rounds_baseline() {
        let runs = [
            run(
                BASELINE,
                0,
                10_000,
                &[(Role::Client, 100_000_000), (Role::Backends, 50_000_000)],
            ),
            run(
                "x",
                0,
                10_000,
                &[
                    (Role::Client, 110_000_000),
                    (Role::Backends, 50_000_000),
                    (Role::Lb, 30_000_000),
                ],
            ),
            run(
                BASELINE,
                1,
                10_000,
                &[(Role::Client, 200_000_000), (Role::Backends, 50_000_000)],
            ),
            // Only 5,000 forwarded: per packet is per forwarded packet.
            run(
                "x",
                1,
                5_000,
                &[
                    (Role::Client, 120_000_000),
                    (Role::Backends, 30_000_000),
                    (Role::Lb, 20_000_000),
                ],
            ),
        ];
        let c = cost(&runs, "x");
        // Round 0: 19,000 - 15,000 = 4,000 ns; round 1: 34,000 - 25,000 = 9,000 ns.
        assert_eq!(c.ns_per_pkt, Some(6_500.0));
        // Client: 11,000 - 10,000 = 1,000 and 24,000 - 20,000 = 4,000; Lb: 3,000 and 4,000.
        assert_eq!(c.by_role["client"], Some(2_500.0));
        assert_eq!(c.by_role["lb"], Some(3_500.0));
        assert_eq!(c.by_role["backends"], Some(500.0));
        assert_eq!(baseline_ns_per_pkt(&runs), Some(20_000.0));
        assert!(runs.iter().take(3).all(Run::fully_forwarded));
        assert!(!runs[3].fully_forwarded());
        assert_eq!(cost(&runs, "absent").ns_per_pkt, None);
    }

    #[test]
    fn fully_forwarded_allows_two_percent_loss() {
        assert!(fully_forwarded(10_000, 9_800));
        assert!(!fully_forwarded(10_000, 9_799));
        assert!(!fully_forwarded(0, 0));
    }
}
