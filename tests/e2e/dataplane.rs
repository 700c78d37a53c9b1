//! The XDP program under `BPF_PROG_TEST_RUN`: fixtures with expected verdicts and output bytes,
//! and kernel/userspace agreement on random packets.
//!
//! The reason a packet was counted under is read from the `REASONS` per-CPU counters: per
//! packet for fixtures (a delta of exactly one), as totals for the random run.

mod bench_fib;
mod bench_katran;
mod bench_quic;
mod encap_source;
mod four_in_six;
mod handoff;
mod icmp;
mod jumbo;
mod malformed;
mod mtu;
mod nexthop;
mod programs;

use std::collections::BTreeMap;

use crate::support::{
    agrees, expect,
    frames::{
        get_u16, FrameSpec, Net, Transport, DNS_PORT, L2_PORT, LB_MAC, SYN_OPTIONS, VIP4, VIP4_L2,
        VIP6, WEB_PORT,
    },
    hex,
    outer::Expected,
    random, Loaded, TEST_CONFIG,
};
use etherparse::{ip_number, Ipv4Dscp, Ipv4Ecn, Ipv4Header, Ipv6FlowLabel, Ipv6Header};
use rand::{rngs::StdRng, SeedableRng};
use shardline::testrun::KernelRun;
use shardline_common::{
    route::{decide, Decision},
    verdict::{Reason, REASON_COUNT},
};

#[test]
fn program_loads_and_passes_non_ip() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let arp = [0xffu8; 14]
        .iter()
        .copied()
        .chain([0u8; 46])
        .collect::<Vec<_>>();
    let mut frame = arp;
    frame[12] = 0x08;
    frame[13] = 0x06;
    let out = lb.run(&frame);
    assert_eq!(out.action, shardline_common::verdict::Action::Pass);
}

// ---------------------------------------------------------------------------------------------
// Kernel / userspace agreement on random packets
// ---------------------------------------------------------------------------------------------

/// Packets in the random run.
const RANDOM_PACKETS: usize = 12_000;
/// Every this many packets, the replay also runs against the live pinned maps.
const LIVE_REPLAY_EVERY: usize = 60;

#[test]
fn kernel_and_replay_agree_on_random_packets() {
    let mut lb = Loaded::new(TEST_CONFIG);
    random::add_edge_cases(&mut lb);
    let want = Expected::of_snapshot(&lb.tables);
    let mut rng = StdRng::seed_from_u64(0x5ead_11e5);
    let before = lb.reasons();
    let mut replayed = [0u64; REASON_COUNT as usize];
    let mut frames = Vec::with_capacity(RANDOM_PACKETS);
    let mut failures = Vec::new();
    for i in 0..RANDOM_PACKETS {
        let frame = random::frame(&mut rng);
        let d = decide(&frame[..], &lb.tables);
        replayed[d.reason as usize] += 1;
        let k = lb.run(&frame);
        if let Err(e) = agrees(&want, &frame, &k, &d) {
            failures.push(format!(
                "packet {i} ({}): {e}\n  frame {}",
                d.reason.name(),
                hex(&frame)
            ));
        }
        if i % LIVE_REPLAY_EVERY == 0 {
            let live = decide(&frame[..], &lb.maps);
            if live != d {
                failures.push(format!(
                    "packet {i}: live-map replay {live:?} != snapshot replay {d:?}\n  frame {}",
                    hex(&frame)
                ));
            }
        }
        frames.push(frame);
    }
    assert!(
        failures.is_empty(),
        "{} of {RANDOM_PACKETS} packets disagree; the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );

    let after = lb.reasons();
    let kernel: Vec<u64> = (0..REASON_COUNT as usize)
        .map(|r| after[r] - before[r])
        .collect();
    if kernel != replayed {
        let table = Reason::ALL
            .iter()
            .map(|r| {
                format!(
                    "{:>22} kernel {:>6} replay {:>6}",
                    r.name(),
                    kernel[*r as usize],
                    replayed[*r as usize]
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "per-reason totals differ:\n{table}\nfirst packets counted differently:\n{}",
            first_reason_mismatches(&mut lb, &frames).join("\n")
        );
    }

    // The generator must reach every outcome, or the agreement above proves little.
    let missing: Vec<&str> = Reason::ALL
        .iter()
        // `no_next_hop` needs a FIB-routed backend without a FIB answer, which the replay
        // does not model: its fixtures are in `nexthop`.
        .filter(|r| {
            !matches!(**r, Reason::EncapFailed | Reason::NoNextHop) && replayed[**r as usize] == 0
        })
        .map(|r| r.name())
        .collect();
    assert!(
        missing.is_empty(),
        "the random run never produced {missing:?}"
    );
    let summary: BTreeMap<&str, u64> = Reason::ALL
        .iter()
        .map(|r| (r.name(), replayed[*r as usize]))
        .collect();
    eprintln!("random run, packets per reason: {summary:?}");
}

/// Re-runs `frames` one at a time, reading the counters around each, to name the packets whose
/// kernel reason differs from the replay's.
fn first_reason_mismatches(lb: &mut Loaded, frames: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let (_, counted) = lb.run_counted(frame);
        let replay = decide(&frame[..], &lb.tables).reason;
        if counted != replay {
            out.push(format!(
                "packet {i}: kernel {} replay {}\n  frame {}",
                counted.name(),
                replay.name(),
                hex(frame)
            ));
            if out.len() == 10 {
                break;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Fixtures: supported shapes, expected output bytes
// ---------------------------------------------------------------------------------------------

/// The frame the kernel must send for `input` (IP packet at `l2`) tunnelled to backend `id`,
/// built with etherparse from `TEST_CONFIG`'s values: backend MAC, our MAC, the input's VLAN tag
/// and EtherType, an outer header (IPv4 without DF, or IPv6 with `flow_label`), the inner packet.
fn tunnelled(input: &[u8], l2: usize, id: u32, flow_label: u32) -> Vec<u8> {
    let want = Expected::test_config();
    let peer = want.backend(id);
    let inner = &input[l2..];
    let mut out = peer.mac.to_vec();
    out.extend_from_slice(&input[0..6]);
    out.extend_from_slice(&input[12..l2]);
    if inner[0] >> 4 == 4 {
        let mut h = Ipv4Header {
            dscp: Ipv4Dscp::try_new(inner[1] >> 2).unwrap(),
            ecn: Ipv4Ecn::try_new(inner[1] & 3).unwrap(),
            dont_fragment: false,
            ..Ipv4Header::new(
                get_u16(inner, 2),
                64,
                ip_number::IPV4,
                want.src4,
                peer.addr4.unwrap(),
            )
            .unwrap()
        };
        h.header_checksum = h.calc_header_checksum();
        out.extend_from_slice(&h.to_bytes());
    } else {
        let h = Ipv6Header {
            traffic_class: (inner[0] << 4) | (inner[1] >> 4),
            flow_label: Ipv6FlowLabel::try_new(flow_label).unwrap(),
            payload_length: 40 + get_u16(inner, 4),
            next_header: ip_number::IPV6,
            hop_limit: 64,
            source: want.src6,
            destination: peer.addr6.expect("backend has IPv6"),
        };
        out.extend_from_slice(&h.to_bytes());
    }
    out.extend_from_slice(inner);
    out
}

/// Asserts the kernel's output is exactly [`tunnelled`]'s.
fn assert_tunnelled(name: &str, input: &[u8], run: &KernelRun, l2: usize, d: &Decision) {
    let flow_label = (d.key as u32) & 0xf_ffff;
    let want = tunnelled(input, l2, d.backend_id, flow_label);
    assert_eq!(hex(&run.output), hex(&want), "{name}: output bytes");
}

fn with_tos(mut spec: FrameSpec, value: u8) -> FrameSpec {
    match &mut spec.net {
        Net::V4 { tos, .. } => *tos = value,
        Net::V6 { traffic_class, .. } => *traffic_class = value,
    }
    spec
}

#[test]
fn header_mode_ipv4_is_encapsulated_to_its_shard() {
    let mut lb = Loaded::new(TEST_CONFIG);
    for key in [0, 1, 0xdead_beef, u64::MAX] {
        let frame = with_tos(FrameSpec::kv4(42, key), 0xb8).build();
        let (run, d) = expect(&mut lb, "kv4 session 42", &frame, Reason::Forwarded);
        assert!([1, 2, 3].contains(&d.backend_id), "session 42 lives on 1-3");
        assert_tunnelled("kv4 session 42", &frame, &run, 14, &d);
    }
}

#[test]
fn header_mode_ipv4_keeps_its_vlan_tag() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let spec = FrameSpec {
        vlan: Some(100),
        ..with_tos(FrameSpec::kv4(42, 77), 0x10)
    };
    let frame = spec.build();
    assert_eq!(frame[12..18], [0x81, 0x00, 0x00, 100, 0x08, 0x00]);
    let (run, d) = expect(&mut lb, "kv4 in VLAN 100", &frame, Reason::Forwarded);
    assert_eq!(run.output[12..18], frame[12..18], "VLAN tag kept");
    assert_tunnelled("kv4 in VLAN 100", &frame, &run, 18, &d);
}

#[test]
fn header_mode_ipv6_is_encapsulated_to_its_shard() {
    let mut lb = Loaded::new(TEST_CONFIG);
    for key in [0, 5, 0x0123_4567_89ab_cdef] {
        let mut spec = with_tos(FrameSpec::kv6(7, key), 0xa4);
        if let Net::V6 { flow_label, .. } = &mut spec.net {
            *flow_label = 0xbeef;
        }
        let frame = spec.build();
        let (run, d) = expect(&mut lb, "kv6 session 7", &frame, Reason::Forwarded);
        assert!([2, 3].contains(&d.backend_id), "session 7 lives on 2-3");
        assert_tunnelled("kv6 session 7", &frame, &run, 14, &d);
    }
}

#[test]
fn flow_mode_tcp_syn_with_options_is_encapsulated() {
    let mut lb = Loaded::new(TEST_CONFIG);
    for sport in [1024, 40_000, 65_535] {
        let mut spec = FrameSpec::tcp4(VIP4, sport, WEB_PORT);
        if let Transport::Tcp { options, .. } = &mut spec.transport {
            *options = SYN_OPTIONS.to_vec();
        }
        let frame = spec.build();
        assert_eq!(
            frame[14 + 20 + 12] >> 4,
            10,
            "data offset covers the options"
        );
        let (run, d) = expect(&mut lb, "web SYN", &frame, Reason::Forwarded);
        assert_tunnelled("web SYN", &frame, &run, 14, &d);
    }
}

#[test]
fn ipv4_options_stay_intact_inside_the_tunnel() {
    let mut lb = Loaded::new(TEST_CONFIG);
    // Router alert, then NOPs and end-of-options.
    let ip_options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0];
    for mut spec in [
        FrameSpec::kv4(42, 3),
        FrameSpec::udp4(VIP4, 999, DNS_PORT, b"query".to_vec()),
    ] {
        if let Net::V4 { options, .. } = &mut spec.net {
            *options = ip_options.clone();
        }
        let frame = spec.build();
        assert_eq!(frame[14] & 0x0f, 7, "inner IHL counts the options");
        let (run, d) = expect(&mut lb, "IPv4 with options", &frame, Reason::Forwarded);
        assert_tunnelled("IPv4 with options", &frame, &run, 14, &d);
        assert_eq!(run.output[14] & 0x0f, 5, "the outer header has no options");
        assert_eq!(run.output[14 + 20 + 20..14 + 20 + 28], ip_options[..]);
    }
}

#[test]
fn ethernet_padding_is_carried_but_not_counted_in_lengths() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let spec = FrameSpec {
        padding: 14,
        ..FrameSpec::udp4(VIP4, 53, DNS_PORT, b"abcd".to_vec())
    };
    let frame = spec.build();
    assert_eq!(frame.len(), 60);
    let (run, d) = expect(&mut lb, "padded dns query", &frame, Reason::Forwarded);
    assert_tunnelled("padded dns query", &frame, &run, 14, &d);
    assert_eq!(
        get_u16(&run.output, 16),
        20 + 32,
        "outer length excludes the padding"
    );
}

#[test]
fn l2dsr_rewrites_only_the_macs() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let want = Expected::test_config();
    for sport in [1, 5555, 65_000] {
        let frame = FrameSpec::udp4(VIP4_L2, sport, L2_PORT, b"hello".to_vec()).build();
        let (run, d) = expect(&mut lb, "l2 service", &frame, Reason::Forwarded);
        let mut expected = want.backend(d.backend_id).mac.to_vec();
        expected.extend_from_slice(&LB_MAC);
        expected.extend_from_slice(&frame[12..]);
        assert_eq!(hex(&run.output), hex(&expected), "only the MACs change");
    }
}

#[test]
fn ipv6_flow_to_a_backend_without_ipv6_is_dropped() {
    let mut lb = Loaded::new(TEST_CONFIG);
    // Backend 4 holds about a quarter of the Maglev slots, so some source port lands on it.
    let frame = (1024..=u16::MAX)
        .map(|sport| FrameSpec::tcp6(VIP6, sport, WEB_PORT).build())
        .find(|f| decide(&f[..], &lb.tables).backend_id == 4)
        .expect("some source port maps web6 to backend 4");
    let (_, d) = expect(
        &mut lb,
        "web6 to backend 4",
        &frame,
        Reason::NoBackendAddress,
    );
    assert_eq!(d.backend_id, 4);
}

#[test]
fn ipv6_hop_by_hop_then_udp_is_forwarded() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let mut spec = FrameSpec::kv6(7, 11);
    if let Net::V6 { ext, .. } = &mut spec.net {
        ext.hop_by_hop = true;
    }
    let frame = spec.build();
    assert_eq!(frame[14 + 6], 0, "next header is hop-by-hop");
    let (run, d) = expect(&mut lb, "kv6 behind hop-by-hop", &frame, Reason::Forwarded);
    assert_eq!((d.session.session, d.key), (7, 11));
    assert_tunnelled("kv6 behind hop-by-hop", &frame, &run, 14, &d);
}
