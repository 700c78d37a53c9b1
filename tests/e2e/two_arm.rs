//! The two-arm dataplane end to end (`shardline_lab::topology::two_arm`): clients reach the
//! balancer on `eth0`, the backends sit behind its `eth1` on a segment of their own, configured
//! `nexthop = "fib"` without MACs. Every request must be answered by the backend the replay
//! names, having left by `XDP_REDIRECT` into `eth1` with the next hop the FIB found.

use shardline::maps::DataplaneMaps;
use shardline_common::{nexthop::NextHopOutcome, verdict::Reason};
use shardline_lab::{Lab, LabOptions};

use crate::netns::{assert_routed_as_replayed, drive};

#[test]
fn backends_behind_the_second_arm_are_reached_through_the_fib_and_the_devmap() {
    crate::support::require_root();
    let opts = LabOptions {
        tag: crate::support::unique_tag("a"),
        backends: 4,
        sessions: 8,
        bins: crate::support::bins(),
    };
    let lab = Lab::start_two_arm(&opts).unwrap_or_else(|e| panic!("starting the lab: {e}"));
    assert!(lab.config.backends.iter().all(|b| b.mac.is_empty()));
    let report = drive(&lab, 3);
    let answered = assert_routed_as_replayed(&lab, &report);
    assert!(answered > 100, "only {answered} answers in 3 s");
    let used: std::collections::BTreeSet<u32> =
        report.observations.iter().map(|o| o.backend).collect();
    assert_eq!(
        used.len(),
        4,
        "traffic spreads over the four backends: {used:?}"
    );

    let maps = DataplaneMaps::open(&lab.pin_dir).expect("open the lab's pinned maps");
    let hops: std::collections::BTreeMap<&str, u64> = maps
        .nexthop_counts()
        .expect("read NEXTHOPS")
        .expect("NEXTHOPS is pinned")
        .into_iter()
        .map(|(o, n)| (o.name(), n))
        .collect();
    let redirected = hops[NextHopOutcome::FibRedirect.name()];
    assert!(
        redirected >= answered as u64,
        "every answered request left by the devmap: {hops:?}, {answered} answered"
    );
    let no_next_hop = maps
        .reason_counts()
        .expect("read REASONS")
        .into_iter()
        .find(|(r, _)| *r == Reason::NoNextHop)
        .map(|(_, n)| n);
    assert_eq!(
        no_next_hop,
        Some(0),
        "no packet lacked a next hop: {hops:?}"
    );
}
