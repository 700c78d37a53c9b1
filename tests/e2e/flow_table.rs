//! Flow-mode stickiness under `BPF_PROG_TEST_RUN`: an established flow keeps its backend across
//! table changes, even a drain, until its backend is removed or the flow goes idle.

use crate::support::{
    frames::{FrameSpec, VIP4, WEB_PORT},
    icmp::{error_for, FRAG_NEEDED},
    Loaded, TEST_CONFIG,
};
use shardline_common::{
    maps::{backend_flags, Backend},
    route::decide,
    verdict::{Action, Reason},
};

/// BPF_PROG_TEST_RUN runs on the calling CPU and the flow table is per CPU: stay on one.
pub(crate) fn pin_to_cpu0() {
    pin_to_cpu(0);
}

/// Runs this thread (and so the next BPF_PROG_TEST_RUN) on `cpu`.
fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("a CPU number");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .unwrap_or_else(|e| panic!("pin to CPU {cpu}: {e}"));
}

/// The backend the kernel sent `frame` to, read from the per-backend counters.
pub(crate) fn kernel_backend(lb: &mut Loaded, frame: &[u8]) -> u32 {
    let ids: Vec<u32> = (1..=4).collect();
    let before: Vec<u64> = ids
        .iter()
        .map(|id| lb.maps.backend_counter(*id).expect("counter").packets)
        .collect();
    let run = lb.run(frame);
    assert_eq!(run.action, Action::Tx, "flow packet not forwarded");
    let after: Vec<u64> = ids
        .iter()
        .map(|id| lb.maps.backend_counter(*id).expect("counter").packets)
        .collect();
    let moved: Vec<u32> = ids
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a > b)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one backend counts the packet: {moved:?}"
    );
    moved[0]
}

fn replay(lb: &Loaded, frame: &[u8]) -> u32 {
    decide(frame, &lb.tables).backend_id
}

/// A segment of an established connection from `sport` (ACK, no SYN): a SYN is routed by the
/// tables, never by the flow table (`syn_is_routed_by_the_tables_and_rewrites_the_entry`).
fn flow(sport: u16) -> Vec<u8> {
    FrameSpec::tcp4(VIP4, sport, WEB_PORT).established().build()
}

/// The SYN opening a connection from `sport`.
fn syn(sport: u16) -> Vec<u8> {
    FrameSpec::tcp4(VIP4, sport, WEB_PORT).build()
}

#[test]
fn established_flows_survive_a_drain_but_not_a_removal() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let frame = flow(40_000);
    let a = kernel_backend(&mut lb, &frame);
    assert_eq!(a, replay(&lb, &frame), "a new flow follows the tables");

    // Drain A: the tables now send this flow elsewhere, the established flow stays.
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    let b = replay(&lb, &frame);
    assert_ne!(a, b, "a drained backend owns no slot");
    assert_eq!(
        kernel_backend(&mut lb, &frame),
        a,
        "an established flow keeps its drained backend"
    );
    let flows = lb.maps.live_flows().expect("count live flows");
    assert_eq!(
        flows.get(&a),
        Some(&1),
        "the drain waits for the one established flow: {flows:?}"
    );
    for sport in 41_000..41_050 {
        let fresh = flow(sport);
        assert_ne!(
            kernel_backend(&mut lb, &fresh),
            a,
            "a new flow never reaches a drained backend"
        );
    }

    let flows = lb.maps.live_flows().expect("count live flows");
    assert_eq!(
        flows.get(&a),
        Some(&1),
        "fresh flows never reach it: {flows:?}"
    );
    let fresh_on_b = flows.get(&b).copied().unwrap_or(0);

    // Remove A: its flows move to what the tables say, and stick there.
    lb.maps
        .set_backend(a, &Backend::default())
        .expect("remove backend");
    lb.tables.backends.remove(&a);
    assert_eq!(
        kernel_backend(&mut lb, &frame),
        b,
        "a removed backend's flows move"
    );
    assert_eq!(kernel_backend(&mut lb, &frame), b);
    let flows = lb.maps.live_flows().expect("count live flows");
    assert_eq!(flows.get(&a), None, "{flows:?}");
    assert_eq!(
        flows.get(&b),
        Some(&(fresh_on_b + 1)),
        "the flow is now pinned to {b}, beside the fresh ones: {flows:?}"
    );
    assert_eq!(flows.values().sum::<u64>(), 51, "{flows:?}");
}

/// A flow whose packets move CPU (veth: XDP runs on the sender's CPU) keeps its backend: the
/// new CPU's value of the key is zeroed, so it adopts the live one of the CPU that saw the flow.
#[test]
fn an_established_flow_keeps_its_backend_on_another_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: one CPU, no other to move the flow to");
        return;
    }
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let frame = flow(45_000);
    let a = kernel_backend(&mut lb, &frame);
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    assert_ne!(
        replay(&lb, &frame),
        a,
        "the tables alone send it elsewhere now"
    );

    pin_to_cpu(1);
    assert_eq!(
        kernel_backend(&mut lb, &frame),
        a,
        "CPU 1 adopts CPU 0's live entry instead of routing the flow afresh"
    );
    assert_eq!(
        decide(&frame[..], &lb.maps).backend_id,
        a,
        "and so says the replay against the live flow table"
    );
    pin_to_cpu0();
    assert_eq!(kernel_backend(&mut lb, &frame), a, "and back on CPU 0");
    let flows = lb.maps.live_flows().expect("count live flows");
    assert_eq!(
        flows.get(&a),
        Some(&1),
        "one flow, however many CPUs: {flows:?}"
    );

    // A flow first seen on CPU 1 after the drain follows the tables there.
    pin_to_cpu(1);
    let fresh = flow(45_001);
    assert_eq!(kernel_backend(&mut lb, &fresh), replay(&lb, &fresh));
    pin_to_cpu0();
}

#[test]
fn an_icmp_error_follows_its_flows_entry_and_starts_none() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let request = FrameSpec::tcp4(VIP4, 43_000, WEB_PORT);
    let a = kernel_backend(&mut lb, &request.build());
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    let error = error_for(&request, FRAG_NEEDED, None);
    assert_ne!(
        replay(&lb, &error),
        a,
        "the tables alone send it elsewhere now"
    );
    assert_eq!(
        kernel_backend(&mut lb, &error),
        a,
        "the error reaches the established flow's backend"
    );
    let live = decide(&error[..], &lb.maps);
    assert_eq!(
        (live.backend_id, live.reason),
        (a, Reason::IcmpForwarded),
        "and so says the replay against the live flow table"
    );

    // An error quoting a flow the balancer never saw follows the tables and records nothing.
    let flows = |lb: &Loaded| {
        lb.maps
            .live_flows()
            .expect("live flows")
            .values()
            .sum::<u64>()
    };
    let before = flows(&lb);
    let unseen = error_for(&FrameSpec::tcp4(VIP4, 43_001, WEB_PORT), FRAG_NEEDED, None);
    assert_eq!(kernel_backend(&mut lb, &unseen), replay(&lb, &unseen));
    assert_eq!(flows(&lb), before, "an ICMP error starts no flow");
}

#[test]
fn idle_flows_are_routed_afresh() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let mut globals = lb.maps.globals().expect("globals");
    globals.flow_idle_secs = 1;
    lb.maps.publish_globals(&globals).expect("globals");
    let frame = flow(42_000);
    let a = kernel_backend(&mut lb, &frame);
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    assert_eq!(kernel_backend(&mut lb, &frame), a, "still established");
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    assert_eq!(
        kernel_backend(&mut lb, &frame),
        replay(&lb, &frame),
        "idle for longer than flow_idle_secs"
    );
    assert_ne!(replay(&lb, &frame), a);
}

/// Marks backend `id` down (`down`) or up, in the maps and the snapshot, as the daemon does.
fn set_down(lb: &mut Loaded, id: u32, down: bool) {
    let mut b = lb.tables.backends[&id];
    b.flags = if down {
        b.flags | backend_flags::DOWN
    } else {
        b.flags & !backend_flags::DOWN
    };
    lb.maps.set_backend(id, &b).expect("write the backend");
    lb.tables.backends.insert(id, b);
}

#[test]
fn a_down_backends_flows_are_rerouted_and_their_entries_rewritten() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let frame = flow(42_000);
    let a = kernel_backend(&mut lb, &frame);
    // A goes down: out of the default table and marked down.
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    set_down(&mut lb, a, true);
    let b = replay(&lb, &frame);
    assert_ne!(a, b, "a down backend owns no slot");
    let (_, reason) = lb.run_counted(&frame);
    assert_eq!(
        reason,
        Reason::Rerouted,
        "the flow entry named a down backend"
    );
    assert_eq!(
        kernel_backend(&mut lb, &frame),
        b,
        "rerouted to the table's choice"
    );
    let (_, reason) = lb.run_counted(&frame);
    assert_eq!(
        reason,
        Reason::Forwarded,
        "the entry was rewritten: a plain hit"
    );
    // A comes back: the rewritten flow stays where it went, new flows may use A again.
    set_down(&mut lb, a, false);
    lb.reweight(&[(1, 1), (2, 1), (3, 1), (4, 1)]);
    assert_eq!(
        kernel_backend(&mut lb, &frame),
        b,
        "the rewritten entry sticks"
    );
}

#[test]
fn new_flows_over_the_rate_are_routed_but_not_remembered() {
    use shardline_bench::suite::flow_rate;
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    flow_rate::set_limit(&mut lb, 2).expect("set the new-flow limit");
    let frames: Vec<Vec<u8>> = (0..3).map(|i| flow(44_000 + i)).collect();
    let mut first = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let backend = kernel_backend(&mut lb, frame);
        assert_eq!(
            backend,
            replay(&lb, frame),
            "new flow {i} follows the tables"
        );
        first.push(backend);
    }
    assert_eq!(
        flow_rate::untracked(&mut lb).expect("untracked"),
        1,
        "the third new flow in the second is over the limit of 2"
    );
    assert_eq!(
        lb.maps
            .new_flows_untracked()
            .expect("untracked, as /metrics reads it"),
        Some(1),
        "the daemon reads the same count from the pinned limiter"
    );
    let remembered: u64 = lb.maps.live_flows().expect("live flows").values().sum();
    assert_eq!(remembered, 2, "only the first two flows were inserted");
    // The three flows share a client, so a session: its counters hold the remembered flows'
    // packets, not the refused one's (a flood makes no per-session counters lookup).
    let counted: u64 = lb
        .maps
        .session_counters()
        .expect("session counters")
        .values()
        .map(|c| c.packets)
        .sum();
    assert_eq!(
        counted, 2,
        "the refused flow's packet is not counted per session"
    );

    // Drain the third flow's backend: the remembered flows keep theirs, the third (still new to
    // the flow table) follows the tables, as the replay does.
    let c = first[2];
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != c))).collect();
    lb.reweight(&weights);
    for (i, frame) in frames.iter().enumerate().take(2) {
        assert_eq!(kernel_backend(&mut lb, frame), first[i], "flow {i} stays");
    }
    let now = replay(&lb, &frames[2]);
    assert_ne!(now, c, "a drained backend owns no slot");
    assert_eq!(
        kernel_backend(&mut lb, &frames[2]),
        now,
        "the unremembered flow moves"
    );
}

/// Over the new-flow rate, a flow whose live entry names a backend gone down is still rewritten
/// (its entry re-pointed and its time refreshed, by the one update the refused path keeps, so
/// it does not move back when the backend returns), while a new flow makes no update and leaves
/// no entry: the kernel and the replay against the live flow table agree on both, packet after
/// packet.
#[test]
fn over_the_rate_held_flows_are_rewritten_and_new_ones_leave_no_entry() {
    use shardline_bench::suite::flow_rate;
    use std::collections::BTreeMap;
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    flow_rate::set_limit(&mut lb, 1).expect("set the new-flow limit");
    let held = flow(46_000);
    let a = kernel_backend(&mut lb, &held);
    let remembered = |lb: &Loaded| lb.maps.live_flows().expect("live flows");
    assert_eq!(
        remembered(&lb),
        BTreeMap::from([(a, 1)]),
        "the first flow is admitted"
    );

    // A new flow over the limit: routed as the tables say, and not in the table after.
    let fresh = flow(46_001);
    for round in 0..2 {
        assert_eq!(
            kernel_backend(&mut lb, &fresh),
            decide(&fresh[..], &lb.maps).backend_id,
            "round {round}: the refused flow follows the tables, as the live replay reads them"
        );
        assert_eq!(
            remembered(&lb),
            BTreeMap::from([(a, 1)]),
            "round {round}: a refused flow leaves no entry"
        );
    }

    // The held flow's backend goes down: its packet is rerouted and, though over the limit,
    // rewrites its entry, so its next packet is a plain hit where the live replay sends it.
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    set_down(&mut lb, a, true);
    let b = replay(&lb, &held);
    assert_ne!(a, b, "a down backend owns no slot");
    let (_, reason) = lb.run_counted(&held);
    assert_eq!(reason, Reason::Rerouted, "the entry named a down backend");
    assert_eq!(
        remembered(&lb),
        BTreeMap::from([(b, 1)]),
        "the held flow's entry now names {b}, refreshed (live)"
    );
    let (_, reason) = lb.run_counted(&held);
    assert_eq!(
        reason,
        Reason::Forwarded,
        "the rewritten entry is a plain hit"
    );
    assert_eq!(
        decide(&held[..], &lb.maps).backend_id,
        b,
        "the live replay reads the rewritten entry"
    );
    // The refused flow after the held one's hit still leaves no entry.
    assert_eq!(
        kernel_backend(&mut lb, &fresh),
        decide(&fresh[..], &lb.maps).backend_id
    );
    assert_eq!(
        remembered(&lb),
        BTreeMap::from([(b, 1)]),
        "still one remembered flow"
    );
    assert_eq!(
        flow_rate::untracked(&mut lb).expect("untracked"),
        4,
        "three refused packets of the new flow and the held flow's rerouted one"
    );
    // Its old backend comes back: the rewritten flow stays where it went.
    set_down(&mut lb, a, false);
    lb.reweight(&[(1, 1), (2, 1), (3, 1), (4, 1)]);
    assert_eq!(
        kernel_backend(&mut lb, &held),
        b,
        "the rewritten entry sticks"
    );
    assert_eq!(
        decide(&held[..], &lb.maps).backend_id,
        b,
        "and so says the replay"
    );
}

/// Over the new-flow rate, a flow whose entry went idle is routed as a new flow: no update
/// (the entry stays idle and pins nothing), the tables' backend, as the live replay reads it.
#[test]
fn over_the_rate_an_idle_flow_is_routed_as_new() {
    use shardline_bench::suite::flow_rate;
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let mut globals = lb.maps.globals().expect("globals");
    globals.flow_idle_secs = 1;
    lb.maps.publish_globals(&globals).expect("globals");
    let idle = flow(47_000);
    let a = kernel_backend(&mut lb, &idle);
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    // A fresh window: one new flow takes the limit of 1, so the idle flow is over it.
    flow_rate::set_limit(&mut lb, 1).expect("set the new-flow limit");
    let other = flow(47_001);
    assert_eq!(kernel_backend(&mut lb, &other), replay(&lb, &other));
    let b = replay(&lb, &idle);
    assert_ne!(a, b, "a drained backend owns no slot");
    for round in 0..2 {
        assert_eq!(
            kernel_backend(&mut lb, &idle),
            b,
            "round {round}: routed afresh by the tables"
        );
        assert_eq!(
            decide(&idle[..], &lb.maps).backend_id,
            b,
            "round {round}: the live replay sees no live entry either"
        );
    }
    let flows = lb.maps.live_flows().expect("live flows");
    assert_eq!(
        flows.values().sum::<u64>(),
        1,
        "only the admitted flow is live; the idle one was not refreshed: {flows:?}"
    );
    assert_eq!(flow_rate::untracked(&mut lb).expect("untracked"), 2);
}

/// A TCP SYN (without ACK) opens a connection: it is routed by the tables without the flow-table
/// lookup (as Katran routes a SYN by its ring), so neither a retransmitted SYN nor a reused
/// 5-tuple inherits a backend the tables no longer give it, and (under the new-flow rate) it
/// writes the flow's entry afresh, which the connection's next segments then follow. The replay
/// decides the same on every packet.
#[test]
fn syn_is_routed_by_the_tables_and_rewrites_the_entry() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let (open, segment) = (syn(48_000), flow(48_000));
    let a = kernel_backend(&mut lb, &open);
    assert_eq!(a, replay(&lb, &open), "a SYN follows the tables");
    assert_eq!(
        kernel_backend(&mut lb, &segment),
        a,
        "its connection sticks"
    );

    // Drain A: the tables now give the 5-tuple another backend.
    let weights: Vec<(u32, u32)> = (1..=4).map(|id| (id, u32::from(id != a))).collect();
    lb.reweight(&weights);
    let b = replay(&lb, &open);
    assert_ne!(a, b, "a drained backend owns no slot");
    assert_eq!(replay(&lb, &segment), b, "the replay keeps no flow table");
    assert_eq!(
        kernel_backend(&mut lb, &segment),
        a,
        "an established segment keeps its drained backend"
    );
    // The same 5-tuple's SYN: a new connection, routed by the tables, the entry rewritten.
    assert_eq!(
        kernel_backend(&mut lb, &open),
        b,
        "a SYN ignores the flow table"
    );
    let flows = lb.maps.live_flows().expect("count live flows");
    assert_eq!(
        flows.get(&a),
        None,
        "the entry no longer names A: {flows:?}"
    );
    assert_eq!(flows.get(&b), Some(&1), "{flows:?}");
    assert_eq!(
        kernel_backend(&mut lb, &segment),
        b,
        "the new connection's segments follow its SYN"
    );
    // Drain B too: segments keep B, the next SYN goes where the tables say.
    let weights: Vec<(u32, u32)> = (1..=4)
        .map(|id| (id, u32::from(id != a && id != b)))
        .collect();
    lb.reweight(&weights);
    let c = replay(&lb, &open);
    assert!(c != a && c != b, "neither drained backend owns a slot");
    assert_eq!(
        kernel_backend(&mut lb, &segment),
        b,
        "the entry still names B"
    );
    assert_eq!(
        kernel_backend(&mut lb, &open),
        c,
        "a SYN follows the tables"
    );
}
