//! Cluster-wide load: behind ECMP every LB node sees only part of a session's packets, so each
//! follower reports its per-session rates to the leader once a tick and the leader's loop
//! samples the sum of its own rates and the newest fresh report of every other node.
//! Pure: reports and `now` in, summed rates out. The HTTP edges are the peer endpoint's
//! `/cluster/rates` route ([`crate::api::peer_rates`]) and the daemon's sender
//! ([`crate::daemon::fleet`]); `docs/cluster.md` ("Cluster-wide load") has the design.
//!
//! Rules, per node: the newest report wins (ordered by the sender's own tick time, so a late or
//! repeated delivery neither replaces a newer report nor counts twice); a report is fresh for
//! [`FleetLoad::stale_after`] after it arrived (two ticks), and a stale one is dropped from the
//! sum and counted; reports from nodes outside the membership, or claiming the leader's own id,
//! are refused. Rates are per second, so reusing a node's last fresh report for one more tick
//! when its next one is late loses nothing and adds nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::{config::SessionRef, control::sample::Rate};

/// One node's per-session rates over one of its ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReport {
    /// The reporting node's id.
    pub node: u64,
    /// When the node read its counters (its wall clock, Unix milliseconds).
    pub tick_ms: u64,
    /// Per-session rates it measured.
    pub sessions: Vec<(SessionRef, Rate)>,
}

/// What became of an offered report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Stored: the node's newest.
    Accepted,
    /// The stored report is of the same tick (a retried or repeated delivery): ignored.
    Duplicate,
    /// The stored report is newer (an overtaken delivery): ignored.
    Late,
    /// The node is not a member of the cluster: refused.
    UnknownNode,
    /// The report claims this node's own id (its own counters are summed already): refused.
    OwnNode,
}

/// Reports not summed, by cause (monotonic counts since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Reports ignored as [`Offer::Duplicate`].
    pub duplicate: u64,
    /// Reports ignored as [`Offer::Late`].
    pub late: u64,
    /// Reports refused as [`Offer::UnknownNode`] or [`Offer::OwnNode`].
    pub unknown: u64,
    /// Reports that went stale before a newer one arrived, dropped from the sum.
    pub stale: u64,
}

/// How current one node's report is, for `/metrics` and `GET /cluster/rates`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFreshness {
    /// The node.
    pub node: u64,
    /// Time since its newest report arrived.
    pub age: Duration,
    /// The sender's tick time of that report (Unix milliseconds).
    pub tick_ms: u64,
    /// Sessions it carried.
    pub sessions: usize,
    /// Whether it is summed (younger than [`FleetLoad::stale_after`]).
    pub fresh: bool,
}

#[derive(Clone, Debug)]
struct Stored {
    tick_ms: u64,
    received: Instant,
    sessions: Vec<(SessionRef, Rate)>,
}

/// The newest report of every other node, and the sum the leader samples.
#[derive(Debug)]
pub struct FleetLoad {
    own: u64,
    stale_after: Duration,
    nodes: BTreeMap<u64, Stored>,
    dropped: Dropped,
}

impl FleetLoad {
    /// The store of node `own`, whose reports go stale `stale_after` after they arrive.
    pub fn new(own: u64, stale_after: Duration) -> Self {
        Self {
            own,
            stale_after,
            nodes: BTreeMap::new(),
            dropped: Dropped::default(),
        }
    }

    /// This node's id.
    pub fn own(&self) -> u64 {
        self.own
    }

    /// How long a report stays fresh.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Offers `report`, arrived at `now`, from a cluster whose members are `members`.
    pub fn offer(&mut self, report: NodeReport, members: &BTreeSet<u64>, now: Instant) -> Offer {
        if report.node == self.own {
            self.dropped.unknown += 1;
            return Offer::OwnNode;
        }
        if !members.contains(&report.node) {
            self.dropped.unknown += 1;
            return Offer::UnknownNode;
        }
        if let Some(stored) = self.nodes.get(&report.node) {
            // A stale stored report yields to any newer delivery, even one whose tick time is
            // earlier (the sender's clock stepped back): it is summed no more anyway.
            let fresh = now.saturating_duration_since(stored.received) < self.stale_after;
            if report.tick_ms == stored.tick_ms {
                self.dropped.duplicate += 1;
                return Offer::Duplicate;
            }
            if report.tick_ms < stored.tick_ms && fresh {
                self.dropped.late += 1;
                return Offer::Late;
            }
        }
        self.nodes.insert(
            report.node,
            Stored {
                tick_ms: report.tick_ms,
                received: now,
                sessions: report.sessions,
            },
        );
        Offer::Accepted
    }

    /// Forgets the reports of nodes no longer in `members` (removed from the cluster).
    pub fn retain_members(&mut self, members: &BTreeSet<u64>) {
        self.nodes.retain(|node, _| members.contains(node));
    }

    /// `own` (this node's rates) plus every fresh report at `now`, per session, into `out`
    /// (cleared first, sorted by session). Stale reports are dropped and counted.
    pub fn sum(
        &mut self,
        own: &[(SessionRef, Rate)],
        now: Instant,
        out: &mut Vec<(SessionRef, Rate)>,
    ) {
        let stale_after = self.stale_after;
        let before = self.nodes.len();
        self.nodes
            .retain(|_, s| now.saturating_duration_since(s.received) < stale_after);
        self.dropped.stale += (before - self.nodes.len()) as u64;
        let mut total: BTreeMap<&SessionRef, Rate> = BTreeMap::new();
        let reports = self.nodes.values().flat_map(|s| s.sessions.iter());
        for (session, rate) in own.iter().chain(reports) {
            let t = total.entry(session).or_default();
            t.packets += rate.packets;
            t.bytes += rate.bytes;
        }
        out.clear();
        out.extend(total.into_iter().map(|(s, r)| (s.clone(), r)));
    }

    /// Every stored report's freshness at `now`, by node.
    pub fn freshness(&self, now: Instant) -> Vec<NodeFreshness> {
        self.nodes
            .iter()
            .map(|(node, s)| {
                let age = now.saturating_duration_since(s.received);
                NodeFreshness {
                    node: *node,
                    age,
                    tick_ms: s.tick_ms,
                    sessions: s.sessions.len(),
                    fresh: age < self.stale_after,
                }
            })
            .collect()
    }

    /// Reports not summed so far, by cause.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    fn kv(session: u64) -> SessionRef {
        SessionRef {
            service: "kv".into(),
            session,
        }
    }

    fn rate(packets: f64) -> Rate {
        Rate {
            packets,
            bytes: packets * 100.0,
        }
    }

    fn report(node: u64, tick_ms: u64, sessions: &[(u64, f64)]) -> NodeReport {
        NodeReport {
            node,
            tick_ms,
            sessions: sessions.iter().map(|&(s, p)| (kv(s), rate(p))).collect(),
        }
    }

    fn members() -> BTreeSet<u64> {
        BTreeSet::from([1, 2, 3])
    }

    fn summed(fleet: &mut FleetLoad, own: &[(u64, f64)], now: Instant) -> Vec<(u64, f64)> {
        let own: Vec<_> = own.iter().map(|&(s, p)| (kv(s), rate(p))).collect();
        let mut out = Vec::new();
        fleet.sum(&own, now, &mut out);
        for (_, r) in &out {
            assert!(
                (r.bytes - r.packets * 100.0).abs() < 1e-6,
                "bytes summed too"
            );
        }
        out.into_iter()
            .map(|(s, r)| (s.session, r.packets))
            .collect()
    }

    #[test]
    fn the_leader_samples_its_own_rates_plus_every_fresh_report() {
        let t0 = Instant::now();
        let mut fleet = FleetLoad::new(1, 2 * TICK);
        assert_eq!(summed(&mut fleet, &[(7, 100.0)], t0), vec![(7, 100.0)]);
        assert_eq!(
            fleet.offer(report(2, 1000, &[(7, 300.0), (8, 5.0)]), &members(), t0),
            Offer::Accepted
        );
        assert_eq!(
            fleet.offer(report(3, 990, &[(7, 50.0)]), &members(), t0),
            Offer::Accepted
        );
        assert_eq!(
            summed(&mut fleet, &[(7, 100.0), (9, 1.0)], t0 + TICK / 2),
            vec![(7, 450.0), (8, 5.0), (9, 1.0)]
        );
        assert_eq!(fleet.dropped(), Dropped::default());
    }

    #[test]
    fn a_stale_report_is_dropped_and_counted_and_a_late_one_reused_until_then() {
        let t0 = Instant::now();
        let mut fleet = FleetLoad::new(1, 2 * TICK);
        fleet.offer(report(2, 1000, &[(7, 300.0)]), &members(), t0);
        // Node 2's next report is late: its last one still counts (rates, not deltas).
        assert_eq!(
            summed(&mut fleet, &[(7, 100.0)], t0 + TICK),
            vec![(7, 400.0)]
        );
        let fresh = fleet.freshness(t0 + TICK);
        assert_eq!((fresh[0].node, fresh[0].fresh), (2, true));
        assert_eq!(fresh[0].age, TICK);
        // Two ticks without a report: stale, dropped from the sum, counted once.
        assert_eq!(
            summed(&mut fleet, &[(7, 100.0)], t0 + 2 * TICK),
            vec![(7, 100.0)]
        );
        summed(&mut fleet, &[], t0 + 3 * TICK);
        assert_eq!(fleet.dropped().stale, 1);
        assert!(fleet.freshness(t0 + 3 * TICK).is_empty());
        // The node comes back: summed again.
        fleet.offer(report(2, 4000, &[(7, 10.0)]), &members(), t0 + 4 * TICK);
        assert_eq!(
            summed(&mut fleet, &[(7, 100.0)], t0 + 4 * TICK),
            vec![(7, 110.0)]
        );
    }

    #[test]
    fn duplicated_or_overtaken_reports_count_once_newest_first() {
        let t0 = Instant::now();
        let mut fleet = FleetLoad::new(1, 2 * TICK);
        let m = members();
        assert_eq!(
            fleet.offer(report(2, 1000, &[(7, 300.0)]), &m, t0),
            Offer::Accepted
        );
        // Delivered twice: counted once.
        assert_eq!(
            fleet.offer(report(2, 1000, &[(7, 300.0)]), &m, t0),
            Offer::Duplicate
        );
        assert_eq!(summed(&mut fleet, &[], t0), vec![(7, 300.0)]);
        // Two ticks arrive between two leader ticks, the newer first: the newer wins.
        assert_eq!(
            fleet.offer(report(2, 1500, &[(7, 200.0)]), &m, t0),
            Offer::Accepted
        );
        assert_eq!(
            fleet.offer(report(2, 1200, &[(7, 900.0)]), &m, t0),
            Offer::Late
        );
        assert_eq!(summed(&mut fleet, &[(7, 1.0)], t0), vec![(7, 201.0)]);
        let d = fleet.dropped();
        assert_eq!((d.duplicate, d.late, d.stale), (1, 1, 0));
        // The sender's clock stepped back: refused while the stored report is fresh, taken
        // once it is stale.
        let later = t0 + 2 * TICK;
        assert_eq!(
            fleet.offer(report(2, 100, &[(7, 5.0)]), &m, later),
            Offer::Accepted
        );
        assert_eq!(summed(&mut fleet, &[], later), vec![(7, 5.0)]);
    }

    #[test]
    fn unknown_and_own_node_ids_are_refused_and_removed_members_forgotten() {
        let t0 = Instant::now();
        let mut fleet = FleetLoad::new(1, 2 * TICK);
        let m = members();
        assert_eq!(
            fleet.offer(report(9, 1000, &[(7, 300.0)]), &m, t0),
            Offer::UnknownNode
        );
        assert_eq!(
            fleet.offer(report(1, 1000, &[(7, 300.0)]), &m, t0),
            Offer::OwnNode
        );
        assert_eq!(summed(&mut fleet, &[(7, 1.0)], t0), vec![(7, 1.0)]);
        assert_eq!(fleet.dropped().unknown, 2);
        fleet.offer(report(3, 1000, &[(7, 300.0)]), &m, t0);
        fleet.retain_members(&BTreeSet::from([1, 2]));
        assert_eq!(summed(&mut fleet, &[(7, 1.0)], t0), vec![(7, 1.0)]);
    }
}
