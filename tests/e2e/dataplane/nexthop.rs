//! Fixtures: next hops from the kernel's FIB (`nexthop = "fib"`, `shardline_common::nexthop`).
//!
//! Each test builds a namespace with two veth arms (`lb0`, the receiving interface, on the
//! backends' subnet, and `arm1` towards a router), with routes and neighbours made for the
//! backend the replay picks, and runs the frame with `BPF_PROG_TEST_RUN` from a thread inside
//! that namespace, `lb0` as the ingress interface (the `xdp_md` context), so the program's
//! `bpf_fib_lookup` reads that namespace's FIB. The routing decision must stay the replay's;
//! only the MACs and the action follow the FIB, and every outcome is counted.

use aya::{
    maps::{MapData, ProgramArray},
    programs::{TestRun, TestRunOptions},
};
use shardline::{
    loader::{xdp_program, LB_PROGRAM},
    maps::fill_tx_ports,
    testrun::KernelRun,
};
use shardline_bench::suite::fib::mac_text;
use shardline_common::{
    maps::backend_flags,
    nexthop::{NextHopOutcome, NEXTHOP_OUTCOMES, NEXTHOP_SLOT},
    route::{decide, Decision},
    verdict::{Action, Reason},
};
use shardline_lab::netns::Netns;

use crate::support::{
    agrees,
    frames::{FrameSpec, LB_MAC},
    hex,
    outer::Expected,
    unique_tag, Loaded, TEST_CONFIG,
};

/// MAC of the router at the end of `arm1`.
const ROUTER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x01];
/// MAC of `arm1`, the second arm.
const ARM_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x09];
/// MAC the FIB's neighbour entry gives a backend on `lb0` (not its static one).
const NEIGH_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x11];

/// `TEST_CONFIG` with every backend's next hop from the FIB, static MACs kept as fallbacks.
fn fib_config() -> String {
    TEST_CONFIG.replace("\nmac = ", "\nnexthop = \"fib\"\nmac = ")
}

/// `fib_config` without static MACs: a FIB miss has nothing to fall back to.
fn fib_config_without_macs() -> String {
    let mut out = String::new();
    for line in fib_config().lines() {
        if !line.starts_with("mac = ") {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// The test namespace: `lb0` (10.0.0.2/24, fd00::2/64, the backends' subnets) and `arm1`
/// (10.9.0.2/24, fd09::2/64, a router at .1 / ::1), forwarding on.
struct FibNet {
    ns: Netns,
    lb0: u32,
}

impl FibNet {
    fn new() -> Self {
        crate::support::require_root();
        let ns = Netns::create(&format!("sl-fib-{}", unique_tag("n")))
            .unwrap_or_else(|e| panic!("creating the namespace: {e}"));
        let ip = |args: &[&str]| {
            ns.ip(args)
                .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")))
        };
        for (dev, mac) in [("lb0", LB_MAC), ("arm1", ARM_MAC)] {
            let peer = format!("{dev}p");
            ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", dev, "address", &mac_text(mac), "up"]);
            ip(&["link", "set", &peer, "up"]);
        }
        ip(&["addr", "add", "10.0.0.2/24", "dev", "lb0"]);
        ip(&["-6", "addr", "add", "fd00::2/64", "dev", "lb0", "nodad"]);
        ip(&["addr", "add", "10.9.0.2/24", "dev", "arm1"]);
        ip(&["-6", "addr", "add", "fd09::2/64", "dev", "arm1", "nodad"]);
        for router in ["10.9.0.1", "fd09::1"] {
            ip(&[
                "neigh",
                "replace",
                router,
                "lladdr",
                &mac_text(ROUTER_MAC),
                "dev",
                "arm1",
                "nud",
                "permanent",
            ]);
        }
        let net = Self { lb0: 0, ns };
        net.forwarding(true);
        let lb0 = net.in_ns(|| shardline::maps::ifindex("lb0").expect("lb0 exists"));
        Self { lb0, ..net }
    }

    /// Runs `ip args…` in the namespace.
    fn ip(&self, args: &[&str]) {
        self.ns
            .ip(args)
            .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    }

    /// Turns forwarding on or off on every interface (the FIB answers for a forwarding
    /// interface only).
    fn forwarding(&self, on: bool) {
        let v = u8::from(on);
        self.ns
            .exec(
                "sysctl",
                &[
                    "-qw",
                    &format!("net.ipv4.conf.all.forwarding={v}"),
                    &format!("net.ipv6.conf.all.forwarding={v}"),
                ],
            )
            .unwrap_or_else(|e| panic!("sysctl: {e}"));
    }

    /// Runs `f` on a thread inside the namespace.
    fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.ns
                    .enter_current_thread()
                    .unwrap_or_else(|e| panic!("entering the namespace: {e}"));
                f()
            })
            .join()
            .expect("the namespace thread panicked")
        })
    }

    /// A static neighbour: `addr` has `mac` on `lb0`.
    fn neighbour(&self, addr: &str, mac: [u8; 6]) {
        self.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac_text(mac),
            "dev",
            "lb0",
            "nud",
            "permanent",
        ]);
    }
}

/// What one run did: the kernel's answer, the reason it counted and the next-hop outcome it
/// counted (none for a static-MAC backend).
struct Ran {
    run: KernelRun,
    reason: Reason,
    outcome: Option<NextHopOutcome>,
}

fn nexthops(lb: &Loaded) -> [u64; NEXTHOP_OUTCOMES as usize] {
    let mut out = [0; NEXTHOP_OUTCOMES as usize];
    let counts = lb
        .maps
        .nexthop_counts()
        .expect("read NEXTHOPS")
        .expect("the NEXTHOPS counters are pinned");
    for (o, n) in counts {
        out[o as usize] = n;
    }
    out
}

/// Runs `frame` from inside `net` with `lb0` as its ingress interface.
fn run_on(net: &FibNet, lb: &mut Loaded, frame: &[u8]) -> Ran {
    let (reasons, hops) = (lb.reasons(), nexthops(lb));
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&net.lb0.to_ne_bytes());
    let program = xdp_program(&mut lb.ebpf, LB_PROGRAM).expect("the balancer program");
    let run = net.in_ns(|| {
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN with lb0 as the ingress interface");
        out.truncate(result.data_size_out as usize);
        KernelRun {
            action: Action::from_code(result.return_value),
            output: out,
        }
    });
    let (after, hops_after) = (lb.reasons(), nexthops(lb));
    let counted: Vec<Reason> = Reason::ALL
        .iter()
        .copied()
        .filter(|r| after[*r as usize] != reasons[*r as usize])
        .collect();
    let [reason] = counted[..] else {
        panic!("one packet must count one reason, counted {counted:?}");
    };
    let outcomes: Vec<NextHopOutcome> = NextHopOutcome::ALL
        .iter()
        .copied()
        .filter(|o| hops_after[*o as usize] != hops[*o as usize])
        .collect();
    assert!(
        outcomes.len() <= 1,
        "one next-hop outcome at most: {outcomes:?}"
    );
    Ran {
        run,
        reason,
        outcome: outcomes.first().copied(),
    }
}

/// The address of backend `id` of `TEST_CONFIG`, as text, in the packet's family.
fn backend_addr(lb: &Loaded, d: &Decision) -> String {
    let b = &lb.tables.backends[&d.backend_id];
    assert_ne!(
        b.flags & backend_flags::FIB,
        0,
        "the FIB flag reached the tables"
    );
    if d.v6 {
        std::net::Ipv6Addr::from(b.addr6).to_string()
    } else {
        std::net::Ipv4Addr::from(b.addr4).to_string()
    }
}

/// Asserts `ran` is the replay's forwarding of `frame` except for its MACs, which must be
/// `dst` and `src`, with `action`.
fn assert_forwarded_via(
    lb: &Loaded,
    name: &str,
    frame: &[u8],
    ran: &Ran,
    action: Action,
    (dst, src): ([u8; 6], [u8; 6]),
) {
    let d = decide(frame, &lb.tables);
    assert_eq!(ran.reason, Reason::Forwarded, "{name}: reason");
    assert_eq!(ran.run.action, action, "{name}: action");
    let out = &ran.run.output;
    assert_eq!(
        out[..6],
        dst,
        "{name}: destination MAC; output {}",
        hex(out)
    );
    assert_eq!(out[6..12], src, "{name}: source MAC; output {}", hex(out));
    // The rest is the static path's rewrite, checked field by field against the replay.
    let mut as_static = out.clone();
    as_static[..6].copy_from_slice(&lb.tables.backends[&d.backend_id].mac);
    as_static[6..12].copy_from_slice(&LB_MAC);
    let k = KernelRun {
        action: Action::Tx,
        output: as_static,
    };
    if let Err(e) = agrees(&Expected::test_config(), frame, &k, &d) {
        panic!("{name}: {e}; frame {}", hex(frame));
    }
}

#[test]
fn the_fib_answer_gives_the_next_hop_mac_out_of_the_receiving_interface() {
    let net = FibNet::new();
    let mut lb = Loaded::new(&fib_config());
    for (name, frame) in [
        ("kv4", FrameSpec::kv4(1_234, 5).build()),
        // Not session 1 234: its IPv6 packet goes to backend 4, which has no IPv6 address.
        ("kv6", FrameSpec::kv6(4_321, 9).build()),
    ] {
        let d = decide(&frame[..], &lb.tables);
        assert_eq!(
            d.reason,
            Reason::Forwarded,
            "{name}: the replay forwards it"
        );
        net.neighbour(&backend_addr(&lb, &d), NEIGH_MAC);
        let ran = run_on(&net, &mut lb, &frame);
        assert_eq!(
            ran.outcome,
            Some(NextHopOutcome::Fib),
            "{name}: outcome (reason {:?}, action {:?}, backend {}, output {})",
            ran.reason,
            ran.run.action,
            d.backend_id,
            hex(&ran.run.output)
        );
        assert_forwarded_via(&lb, name, &frame, &ran, Action::Tx, (NEIGH_MAC, LB_MAC));
    }
}

#[test]
fn without_a_fib_answer_the_static_mac_is_used_and_the_reason_counted() {
    let net = FibNet::new();
    let mut lb = Loaded::new(&fib_config());
    let frame = FrameSpec::kv4(99, 7).build();
    let d = decide(&frame[..], &lb.tables);
    let addr = backend_addr(&lb, &d);
    let want = Expected::test_config();
    let mut fallback = |name: &str, outcome: NextHopOutcome| {
        let ran = run_on(&net, &mut lb, &frame);
        assert_eq!(ran.outcome, Some(outcome), "{name}: outcome");
        assert_eq!(ran.reason, Reason::Forwarded, "{name}: still forwarded");
        // Exactly the static path: static MAC, XDP_TX, every field as the replay says.
        if let Err(e) = agrees(&want, &frame, &ran.run, &d) {
            panic!("{name}: {e}; frame {}", hex(&frame));
        }
    };
    // On the backends' subnet, but no neighbour entry for the backend yet.
    fallback("no neighbour", NextHopOutcome::NoNeighbour);
    net.ip(&["route", "add", "unreachable", &format!("{addr}/32")]);
    fallback("unreachable", NextHopOutcome::NoRoute);
    net.ip(&["route", "del", "unreachable", &format!("{addr}/32")]);
    net.neighbour(&addr, NEIGH_MAC);
    net.forwarding(false);
    fallback("forwarding off", NextHopOutcome::ForwardingDisabled);
    net.forwarding(true);
    let ran = run_on(&net, &mut lb, &frame);
    assert_eq!(
        ran.outcome,
        Some(NextHopOutcome::Fib),
        "neighbour known at last"
    );
}

#[test]
fn without_a_fib_answer_or_a_static_mac_the_packet_is_dropped_and_counted() {
    let net = FibNet::new();
    let mut lb = Loaded::new(&fib_config_without_macs());
    let frame = FrameSpec::kv4(99, 7).build();
    let ran = run_on(&net, &mut lb, &frame);
    assert_eq!(ran.outcome, Some(NextHopOutcome::NoNeighbour));
    assert_eq!(ran.reason, Reason::NoNextHop);
    assert_eq!(ran.run.action, Action::Drop);
    // With the neighbour known, the same backend is reached without any configured MAC.
    let d = decide(&frame[..], &lb.tables);
    net.neighbour(&backend_addr(&lb, &d), NEIGH_MAC);
    let ran = run_on(&net, &mut lb, &frame);
    assert_eq!(ran.outcome, Some(NextHopOutcome::Fib));
    assert_eq!(ran.run.action, Action::Tx);
    assert_eq!(ran.run.output[..6], NEIGH_MAC);
}

#[test]
fn a_next_hop_out_of_another_listed_interface_is_redirected_through_the_devmap() {
    let net = FibNet::new();
    let mut lb = Loaded::new(&fib_config());
    for (name, frame, router, mask) in [
        ("kv4", FrameSpec::kv4(4_321, 9).build(), "10.9.0.1", "32"),
        ("kv6", FrameSpec::kv6(4_321, 9).build(), "fd09::1", "128"),
    ] {
        let d = decide(&frame[..], &lb.tables);
        let addr = backend_addr(&lb, &d);
        let family = if d.v6 { "-6" } else { "-4" };
        net.ip(&[
            family,
            "route",
            "replace",
            &format!("{addr}/{mask}"),
            "via",
            router,
            "dev",
            "arm1",
        ]);
        // arm1 is not in TX_PORTS yet: the static MAC, out of the receiving interface.
        let ran = run_on(&net, &mut lb, &frame);
        assert_eq!(
            ran.outcome,
            Some(NextHopOutcome::EgressNotInTxPorts),
            "{name}: unlisted egress"
        );
        assert_eq!(ran.run.action, Action::Tx, "{name}");
        assert_eq!(
            ran.run.output[..6],
            lb.tables.backends[&d.backend_id].mac,
            "{name}: static MAC"
        );
        let pin_dir = lb.pin_dir.clone();
        let ports = net.in_ns(|| fill_tx_ports(&pin_dir, &["arm1".to_owned()]));
        assert_eq!(ports.expect("fill TX_PORTS").len(), 1);
        let ran = run_on(&net, &mut lb, &frame);
        assert_eq!(ran.outcome, Some(NextHopOutcome::FibRedirect), "{name}");
        assert_forwarded_via(
            &lb,
            name,
            &frame,
            &ran,
            Action::Redirect,
            (ROUTER_MAC, ARM_MAC),
        );
        // Emptied again for the next family's first step.
        let ports = net.in_ns(|| fill_tx_ports(&pin_dir, &[]));
        assert_eq!(ports.expect("empty TX_PORTS").len(), 0);
    }
}

/// Empties the `TAIL_CALLS` slot of the next-hop program, as if the loader had not filled it.
fn unload_next_hop_program(lb: &Loaded) {
    let mut slots: ProgramArray<MapData> = lb.open_map("TAIL_CALLS").expect("open TAIL_CALLS");
    slots
        .clear_index(&NEXTHOP_SLOT)
        .expect("empty the next-hop slot");
}

#[test]
fn without_the_next_hop_program_the_static_mac_is_used_and_counted() {
    let net = FibNet::new();
    let mut lb = Loaded::new(&fib_config());
    let frame = FrameSpec::kv4(99, 7).build();
    let d = decide(&frame[..], &lb.tables);
    // The FIB would answer: the fallback below is the missing program's, not the FIB's.
    net.neighbour(&backend_addr(&lb, &d), NEIGH_MAC);
    assert_eq!(
        run_on(&net, &mut lb, &frame).outcome,
        Some(NextHopOutcome::Fib)
    );
    unload_next_hop_program(&lb);
    let ran = run_on(&net, &mut lb, &frame);
    assert_eq!(ran.outcome, Some(NextHopOutcome::ProgramMissing));
    assert_eq!(ran.reason, Reason::Forwarded);
    if let Err(e) = agrees(&Expected::test_config(), &frame, &ran.run, &d) {
        panic!("the static path: {e}; frame {}", hex(&frame));
    }

    // Without a static MAC the packet has nowhere to go.
    let mut lb = Loaded::new(&fib_config_without_macs());
    unload_next_hop_program(&lb);
    let ran = run_on(&net, &mut lb, &frame);
    assert_eq!(ran.outcome, Some(NextHopOutcome::ProgramMissing));
    assert_eq!(ran.reason, Reason::NoNextHop);
    assert_eq!(ran.run.action, Action::Drop);
}

#[test]
fn a_static_mac_backend_counts_no_next_hop_outcome() {
    let net = FibNet::new();
    let mut lb = Loaded::new(TEST_CONFIG);
    let frame = FrameSpec::kv4(99, 7).build();
    let ran = run_on(&net, &mut lb, &frame);
    assert_eq!(ran.outcome, None);
    assert_eq!(ran.reason, Reason::Forwarded);
    let d = decide(&frame[..], &lb.tables);
    if let Err(e) = agrees(&Expected::test_config(), &frame, &ran.run, &d) {
        panic!("static path: {e}");
    }
}
