//! Fixtures: client packets against a 1500-octet egress MTU. One that would not fit once the
//! outer header is added comes back as ICMP "fragmentation needed" / ICMPv6 "packet too big"
//! carrying the usable MTU (every octet checked against an independent oracle, checksums
//! valid); one that just fits is forwarded; with `too_big_reply = false`, or on an L2 DSR
//! service (no outer header), it is forwarded as it is. Each case asserts the kernel's action,
//! bytes and the one reason it counted, and the replay's agreement.

use shardline_common::{route::decide, verdict::Reason};

use crate::support::{
    agrees,
    frames::{
        fix_ipv4_checksum, net4, net6, FrameSpec, Net, Transport, CLIENT4, CLIENT6, CLIENT_MAC,
        DNS_PORT, L2_PORT, LB_MAC, VIP4, VIP4_L2, VIP6, WEB_PORT,
    },
    hex,
    icmp::{folded_sum, icmpv6_sum, too_big_answer},
    outer::Expected,
    Loaded, TEST_CONFIG,
};

/// The egress MTU of these fixtures: Ethernet's.
const MTU: u32 = 1500;

/// A client packet to a flow-mode service whose IP packet is `ip_len` octets long: a UDP
/// datagram to `dns` over IPv4, a TCP segment to `web6` over IPv6.
fn datagram(v6: bool, ip_len: usize) -> FrameSpec {
    if v6 {
        let tcp = Transport::Tcp {
            sport: 40_000,
            dport: WEB_PORT,
            syn: false,
            options: Vec::new(),
        };
        FrameSpec::new(net6(CLIENT6, VIP6), tcp, vec![0xab; ip_len - 40 - 20])
    } else {
        let udp = Transport::Udp {
            sport: 40_000,
            dport: DNS_PORT,
        };
        FrameSpec::new(net4(CLIENT4, VIP4), udp, vec![0xab; ip_len - 20 - 8])
    }
}

/// [`datagram`] from the first client port (from 40000) whose flow the replay forwards, when
/// it fits: backend 4 has no IPv6 address, so not every IPv6 flow is forwarded.
fn forwarded(lb: &Loaded, v6: bool, ip_len: usize) -> FrameSpec {
    let fitting = datagram(v6, 100);
    (40_000..)
        .map(|sport| {
            let mut spec = fitting.clone();
            match &mut spec.transport {
                Transport::Tcp { sport: s, .. } | Transport::Udp { sport: s, .. } => *s = sport,
                _ => unreachable!("datagram is UDP or TCP"),
            }
            spec
        })
        .find(|spec| decide(&spec.build()[..], &lb.tables).reason == Reason::Forwarded)
        .map(|spec| FrameSpec {
            payload: vec![0xab; spec.payload.len() + ip_len - 100],
            ..spec
        })
        .expect("a client port some backend forwards")
}

/// `TEST_CONFIG` (plus `extra`) loaded with a 1500-octet egress MTU.
fn loaded(extra: &str) -> Loaded {
    let mut lb = Loaded::new(&format!("{TEST_CONFIG}\n{extra}"));
    lb.set_egress_mtu(MTU);
    lb
}

/// Runs `frame`: the kernel must count `reason`, the replay decide the same, and the output be
/// what the replay implies (the answer, or the packet forwarded to the replay's backend).
fn expect(lb: &mut Loaded, name: &str, frame: &[u8], reason: Reason) -> Vec<u8> {
    let (run, counted) = lb.run_counted(frame);
    let d = decide(frame, &lb.tables);
    assert_eq!(counted, reason, "{name}: kernel counted {}", counted.name());
    assert_eq!(d.reason, reason, "{name}: replay reason");
    let want = Expected {
        egress_mtu: MTU,
        ..Expected::test_config()
    };
    if let Err(e) = agrees(&want, frame, &run, &d) {
        panic!("{name}: {e}; frame {}", hex(frame));
    }
    run.output
}

#[test]
fn a_packet_too_big_to_encapsulate_gets_fragmentation_needed() {
    let mut lb = loaded("");
    let mut with_options = datagram(false, 1481);
    if let Net::V4 { options, .. } = &mut with_options.net {
        *options = vec![1, 1, 1, 0, 1, 1, 1, 0];
    }
    let cases = [
        ("one octet over", datagram(false, 1481)),
        ("a full 1500-octet datagram", datagram(false, 1500)),
        (
            "in VLAN 7, padded",
            FrameSpec {
                vlan: Some(7),
                padding: 6,
                ..datagram(false, 1500)
            },
        ),
        ("IPv4 options quoted whole", with_options),
        (
            "a TCP segment",
            FrameSpec {
                payload: vec![7; 1460],
                ..FrameSpec::tcp4(VIP4, 40_001, WEB_PORT)
            },
        ),
    ];
    for (name, spec) in cases {
        let frame = spec.build();
        let out = expect(&mut lb, name, &frame, Reason::IcmpTooBig);
        let l3 = spec.l3_off();
        assert_eq!(out[0..6], CLIENT_MAC, "{name}: back to the client");
        assert_eq!(out[6..12], LB_MAC, "{name}: from us");
        assert_eq!(
            (out[l3 + 20], out[l3 + 21]),
            (3, 4),
            "{name}: type 3 code 4"
        );
        assert_eq!(
            u16::from_be_bytes([out[l3 + 26], out[l3 + 27]]),
            1480,
            "{name}: next-hop MTU"
        );
        assert_eq!(out[l3 + 12..l3 + 16], VIP4, "{name}: from the VIP");
        assert_eq!(out[l3 + 16..l3 + 20], CLIENT4, "{name}: to the client");
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        assert_eq!(
            out.len(),
            l3 + 28 + ihl + 8,
            "{name}: header + 8 octets quoted"
        );
        assert_eq!(
            folded_sum(&out[l3..l3 + 20]),
            0xffff,
            "{name}: IPv4 checksum"
        );
        assert_eq!(folded_sum(&out[l3 + 20..]), 0xffff, "{name}: ICMP checksum");
    }
}

#[test]
fn an_ipv6_packet_too_big_to_encapsulate_gets_packet_too_big() {
    let mut lb = loaded("");
    for (name, spec) in [
        ("one octet over", datagram(true, 1461)),
        ("a full 1500-octet datagram", datagram(true, 1500)),
        (
            "in VLAN 7",
            FrameSpec {
                vlan: Some(7),
                ..datagram(true, 1500)
            },
        ),
    ] {
        let frame = spec.build();
        let out = expect(&mut lb, name, &frame, Reason::IcmpTooBig);
        let l3 = spec.l3_off();
        assert_eq!(out[0..6], CLIENT_MAC, "{name}: back to the client");
        assert_eq!(out.len(), l3 + 1280, "{name}: as much as fits in 1280");
        assert_eq!((out[l3 + 40], out[l3 + 41]), (2, 0), "{name}: type 2");
        assert_eq!(
            u32::from_be_bytes(out[l3 + 44..l3 + 48].try_into().unwrap()),
            1460,
            "{name}: MTU"
        );
        assert_eq!(out[l3 + 8..l3 + 24], VIP6, "{name}: from the VIP");
        assert_eq!(out[l3 + 24..l3 + 40], CLIENT6, "{name}: to the client");
        assert_eq!(icmpv6_sum(&out[l3..]), 0xffff, "{name}: ICMPv6 checksum");
        assert_eq!(
            out[l3 + 48..],
            frame[l3..l3 + 1232],
            "{name}: the packet's start quoted"
        );
    }
}

#[test]
fn a_packet_that_just_fits_is_forwarded() {
    let mut lb = loaded("");
    expect(
        &mut lb,
        "IPv4, 1480 octets",
        &datagram(false, 1480).build(),
        Reason::Forwarded,
    );
    let spec = forwarded(&lb, true, 1460);
    expect(
        &mut lb,
        "IPv6, 1460 octets",
        &spec.build(),
        Reason::Forwarded,
    );
    // No outer header on an L2 DSR service: a full-size datagram is forwarded.
    let l2 = FrameSpec::new(
        net4(CLIENT4, VIP4_L2),
        Transport::Udp {
            sport: 40_000,
            dport: L2_PORT,
        },
        vec![0; 1472],
    );
    expect(
        &mut lb,
        "L2 DSR, 1500 octets",
        &l2.build(),
        Reason::Forwarded,
    );
    // The IP header's length decides, not the frame's (Ethernet padding is not sent on).
    let padded = FrameSpec {
        padding: 40,
        ..datagram(false, 1480)
    };
    expect(&mut lb, "padded", &padded.build(), Reason::Forwarded);
}

#[test]
fn answering_off_or_mtu_unknown_forwards_as_before() {
    let mut off = loaded("[icmp]\ntoo_big_reply = false\n");
    for v6 in [false, true] {
        let spec = forwarded(&off, v6, 1500);
        expect(
            &mut off,
            "too_big_reply = false",
            &spec.build(),
            Reason::Forwarded,
        );
    }
    let mut unknown = Loaded::new(TEST_CONFIG);
    expect_unknown(&mut unknown);
}

/// With no MTU recorded (0) nothing is too big.
fn expect_unknown(lb: &mut Loaded) {
    let frame = datagram(false, 1500).build();
    let (run, counted) = lb.run_counted(&frame);
    assert_eq!(counted, Reason::Forwarded, "MTU unknown");
    agrees(
        &Expected::test_config(),
        &frame,
        &run,
        &decide(&frame[..], &lb.tables),
    )
    .unwrap_or_else(|e| panic!("MTU unknown: {e}"));
}

#[test]
fn the_oracle_builds_a_valid_answer() {
    // The oracle itself, against hand-checked fields: a lying oracle would pass anything.
    let mut frame = datagram(false, 1500).build();
    fix_ipv4_checksum(&mut frame, 14);
    let answer = too_big_answer(&frame, MTU, false).unwrap();
    assert_eq!(answer.len(), 14 + 20 + 8 + 28);
    assert_eq!(answer[14 + 2..14 + 4], [0, 56], "total length");
    assert_eq!(answer[14 + 9], 1, "protocol ICMP");
    assert_eq!(folded_sum(&answer[14..34]), 0xffff);
    assert_eq!(folded_sum(&answer[34..]), 0xffff);
    assert_eq!(answer[42..70], frame[14..42], "quote");
}
