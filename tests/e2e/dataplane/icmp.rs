//! Fixtures: ICMP and ICMPv6 to a VIP. Echo requests come back as their replies (every octet
//! checked, checksums valid); errors quoting a flow a backend sent go to that flow's backend,
//! encapsulated like its packets; broken ICMP is dropped and counted, never routed. Each case
//! asserts the kernel's action, bytes and the one reason it counted, and the replay's agreement.

use shardline_common::{route::decide, verdict::Reason};

use super::assert_tunnelled;
use crate::support::{
    expect,
    frames::{
        fix_ipv4_checksum, net4, net6, put_u16, FrameSpec, Net, Transport, CLIENT4, CLIENT6,
        CLIENT_MAC, DNS_PORT, KV_PORT, L2_PORT, LB_MAC, VIP4, VIP4_L2, VIP6, WEB_PORT,
    },
    hex,
    icmp::{
        error_for, error_quoting, folded_sum, icmpv6_sum, FRAG_NEEDED, PACKET_TOO_BIG,
        PORT_UNREACHABLE6, TIME_EXCEEDED,
    },
    quic::QUIC_PORT,
    Loaded, TEST_CONFIG,
};

/// An echo request with identifier 1, sequence 1 and `data`.
fn ping(net: Net, data: &[u8]) -> FrameSpec {
    FrameSpec::new(net, Transport::Icmp, data.to_vec())
}

/// The reply the balancer must send for [`ping`]`(net, data)`, built independently: from the
/// VIP back to the client's MAC and address, type echo reply, TTL / hop limit 64, every
/// checksum computed afresh by etherparse (and the IPv4 header's after the TTL is set).
fn pong(request: &FrameSpec) -> Vec<u8> {
    let (net, ty) = match &request.net {
        Net::V4 { src, dst, .. } => (net4(*dst, *src), 0),
        Net::V6 { src, dst, .. } => (net6(*dst, *src), 129),
    };
    let reply = FrameSpec {
        src_mac: request.dst_mac,
        dst_mac: request.src_mac,
        vlan: request.vlan,
        net,
        transport: Transport::IcmpRaw {
            ty,
            code: 0,
            rest: [0, 1, 0, 1],
        },
        payload: request.payload.clone(),
        padding: request.padding,
    };
    let mut frame = reply.build();
    let l3 = reply.l3_off();
    if matches!(request.net, Net::V4 { .. }) {
        frame[l3 + 8] = 64;
        fix_ipv4_checksum(&mut frame, l3);
    } else {
        frame[l3 + 7] = 64;
    }
    frame
}

#[test]
fn echo_requests_to_a_vip_are_answered_in_place() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let cases = [
        ("ping VIP4", ping(net4(CLIENT4, VIP4), b"abcdefgh")),
        (
            "ping VIP4, odd length",
            ping(net4(CLIENT4, VIP4), b"abcdefghi"),
        ),
        (
            "ping the L2 DSR VIP",
            ping(net4(CLIENT4, VIP4_L2), &[0xff; 56]),
        ),
        (
            "ping VIP4 in VLAN 7, padded",
            FrameSpec {
                vlan: Some(7),
                padding: 9,
                ..ping(net4(CLIENT4, VIP4), b"")
            },
        ),
        ("ping VIP6", ping(net6(CLIENT6, VIP6), b"abcdefgh")),
        (
            "ping VIP6 in VLAN 7",
            FrameSpec {
                vlan: Some(7),
                ..ping(net6(CLIENT6, VIP6), &[0; 100])
            },
        ),
    ];
    for (name, request) in cases {
        let frame = request.build();
        let (run, _) = expect(&mut lb, name, &frame, Reason::IcmpEchoReply);
        let want = pong(&request);
        assert_eq!(hex(&run.output), hex(&want), "{name}: reply bytes");
        assert_eq!(run.output[0..6], CLIENT_MAC, "{name}: back to the client");
        assert_eq!(run.output[6..12], LB_MAC, "{name}: from us");
        let l3 = request.l3_off();
        match request.net {
            Net::V4 { .. } => {
                let end = l3 + usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
                assert_eq!(
                    folded_sum(&run.output[l3..l3 + 20]),
                    0xffff,
                    "{name}: IPv4 checksum"
                );
                assert_eq!(
                    folded_sum(&run.output[l3 + 20..end]),
                    0xffff,
                    "{name}: ICMP checksum"
                );
            }
            Net::V6 { .. } => {
                assert_eq!(
                    icmpv6_sum(&run.output[l3..]),
                    0xffff,
                    "{name}: ICMPv6 checksum"
                );
            }
        }
    }
}

#[test]
fn echo_requests_the_balancer_does_not_answer_pass_untouched() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let mut with_options = ping(net4(CLIENT4, VIP4), b"ping");
    if let Net::V4 { options, .. } = &mut with_options.net {
        *options = vec![1, 1, 1, 0];
    }
    let mut behind_hop_by_hop = ping(net6(CLIENT6, VIP6), b"ping");
    if let Net::V6 { ext, .. } = &mut behind_hop_by_hop.net {
        ext.hop_by_hop = true;
    }
    let echo_reply = FrameSpec::new(
        net4(CLIENT4, VIP4),
        Transport::IcmpRaw {
            ty: 0,
            code: 0,
            rest: [0, 1, 0, 1],
        },
        b"pong".to_vec(),
    );
    let cases = [
        (
            "IPv4 options (a reply would carry them back)",
            with_options,
            Reason::NotL4,
        ),
        (
            "behind an IPv6 extension header",
            behind_hop_by_hop,
            Reason::NotL4,
        ),
        ("an echo reply to the VIP", echo_reply, Reason::NotL4),
        (
            "not a VIP",
            ping(net4(CLIENT4, [10, 100, 0, 9]), b"x"),
            Reason::NotService,
        ),
    ];
    for (name, spec, reason) in cases {
        expect(&mut lb, name, &spec.build(), reason);
    }

    // Answering switched off: the stack answers, as before.
    let mut off = Loaded::new(&format!("{TEST_CONFIG}\n[icmp]\necho_reply = false\n"));
    for request in [
        ping(net4(CLIENT4, VIP4), b"a"),
        ping(net6(CLIENT6, VIP6), b"b"),
    ] {
        expect(
            &mut off,
            "echo_reply = false",
            &request.build(),
            Reason::NotL4,
        );
    }
}

#[test]
fn truncated_icmp_to_a_vip_is_dropped() {
    let mut lb = Loaded::new(TEST_CONFIG);
    // An ICMP header of 4 octets, with the IP length telling the truth about it.
    let mut short = ping(net4(CLIENT4, VIP4), b"").build();
    short.truncate(14 + 20 + 4);
    put_u16(&mut short, 16, 24);
    fix_ipv4_checksum(&mut short, 14);
    expect(
        &mut lb,
        "4-octet ICMP header",
        &short,
        Reason::IcmpMalformed,
    );
    let mut short6 = ping(net6(CLIENT6, VIP6), b"").build();
    short6.truncate(14 + 40 + 7);
    put_u16(&mut short6, 18, 7);
    expect(
        &mut lb,
        "7-octet ICMPv6 header",
        &short6,
        Reason::IcmpMalformed,
    );
}

#[test]
fn an_icmp_error_reaches_the_backend_of_the_tcp_flow_it_quotes() {
    let mut lb = Loaded::new(TEST_CONFIG);
    // Backend 4 has no IPv6 address: IPv6 clients whose flow it owns are not forwarded.
    let v6_port = |from: u16| {
        (from..)
            .find(|sport| {
                let frame = FrameSpec::tcp6(VIP6, *sport, WEB_PORT).build();
                decide(&frame[..], &lb.tables).reason == Reason::Forwarded
            })
            .expect("a port some IPv6 backend owns")
    };
    let cases = [
        (FrameSpec::tcp4(VIP4, 40_001, WEB_PORT), FRAG_NEEDED),
        (FrameSpec::tcp4(VIP4, 40_002, WEB_PORT), TIME_EXCEEDED),
        (
            FrameSpec::tcp6(VIP6, v6_port(40_003), WEB_PORT),
            PACKET_TOO_BIG,
        ),
        (
            FrameSpec::tcp6(VIP6, v6_port(41_000), WEB_PORT),
            PORT_UNREACHABLE6,
        ),
    ];
    for (request, error) in cases {
        let (_, sent) = expect(&mut lb, "the SYN", &request.build(), Reason::Forwarded);
        // A router quotes the IP header and 8 octets of the backend's reply, or all of it.
        let minimal = match request.net {
            Net::V4 { .. } => 20 + 8,
            Net::V6 { .. } => 40 + 8,
        };
        for quote in [Some(minimal), None] {
            let frame = error_for(&request, error, quote);
            let name = format!("ICMP {error:?} quoting {quote:?} octets");
            let (run, d) = expect(&mut lb, &name, &frame, Reason::IcmpForwarded);
            assert_eq!(d.backend_id, sent.backend_id, "{name}: the flow's backend");
            assert_eq!(d.session, sent.session, "{name}: the flow's session");
            assert_tunnelled(&name, &frame, &run, 14, &d);
        }
    }
}

#[test]
fn an_icmp_error_reaches_the_backend_of_the_udp_flow_it_quotes() {
    let mut lb = Loaded::new(TEST_CONFIG);
    for sport in [1, 5353, 65_535] {
        let request = FrameSpec::udp4(VIP4, sport, DNS_PORT, b"query".to_vec());
        let (_, sent) = expect(&mut lb, "dns query", &request.build(), Reason::Forwarded);
        let frame = error_for(&request, FRAG_NEEDED, None);
        let (run, d) = expect(&mut lb, "dns frag needed", &frame, Reason::IcmpForwarded);
        assert_eq!(d.backend_id, sent.backend_id);
        assert_tunnelled("dns frag needed", &frame, &run, 14, &d);
    }
    // L2 DSR: the error goes to the backend by its MAC, the packet otherwise untouched.
    let request = FrameSpec::udp4(VIP4_L2, 777, L2_PORT, b"hello".to_vec());
    let (_, sent) = expect(&mut lb, "l2 request", &request.build(), Reason::Forwarded);
    let frame = error_for(&request, TIME_EXCEEDED, None);
    let (run, d) = expect(&mut lb, "l2 time exceeded", &frame, Reason::IcmpForwarded);
    assert_eq!(d.backend_id, sent.backend_id);
    assert_eq!(run.output[12..], frame[12..], "only the MACs change");
}

#[test]
fn header_mode_errors_route_by_a_quoted_header_else_by_the_client() {
    let mut lb = Loaded::new(TEST_CONFIG);
    for key in [0, 9, u64::MAX] {
        // A backend that echoes the request's header in its reply: routed as the request.
        let request = FrameSpec::kv4(42, key);
        let (_, sent) = expect(&mut lb, "kv request", &request.build(), Reason::Forwarded);
        let frame = error_for(&request, FRAG_NEEDED, None);
        let (run, d) = expect(
            &mut lb,
            "kv error, header quoted",
            &frame,
            Reason::IcmpForwarded,
        );
        assert_eq!(
            (d.backend_id, d.session, d.key),
            (sent.backend_id, sent.session, sent.key)
        );
        assert_tunnelled("kv error, header quoted", &frame, &run, 14, &d);

        // Only 8 octets of the datagram quoted: the client's address and ports decide.
        let frame = error_for(&request, FRAG_NEEDED, Some(28));
        let (run, _) = expect(
            &mut lb,
            "kv error, 8 octets",
            &frame,
            Reason::IcmpForwardedByClient,
        );
        assert_eq!(run.output.len(), frame.len() + 20, "encapsulated");
    }
    let request = FrameSpec::udp6(VIP6, 4_000, KV_PORT, b"a reply without header".to_vec());
    let frame = error_for(&request, PACKET_TOO_BIG, None);
    let (run, d) = expect(
        &mut lb,
        "kv6 error, no header",
        &frame,
        Reason::IcmpForwardedByClient,
    );
    assert_tunnelled("kv6 error, no header", &frame, &run, 14, &d);
    // QUIC: a backend's packet carries the client's connection id, not the server id.
    let request = FrameSpec::udp4(VIP4, 4_001, QUIC_PORT, vec![0x40; 30]);
    let frame = error_for(&request, FRAG_NEEDED, None);
    expect(&mut lb, "quic error", &frame, Reason::IcmpForwardedByClient);
}

#[test]
fn icmp_errors_the_balancer_cannot_route_are_dropped_or_passed() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let request = FrameSpec::tcp4(VIP4, 40_000, WEB_PORT);
    let reply = request.reversed().build()[14..].to_vec();
    let mut from_other_vip = reply.clone();
    from_other_vip[12..16].copy_from_slice(&VIP4_L2);
    let mut later_fragment = reply.clone();
    later_fragment[6..8].copy_from_slice(&[0, 0x20]);
    let mut quoted_icmp = reply.clone();
    quoted_icmp[9] = 1;
    let no_service = FrameSpec::udp4(VIP4, 1, 9, b"x".to_vec())
        .reversed()
        .build()[14..]
        .to_vec();
    let v6_reply = FrameSpec::tcp6(VIP6, 40_000, WEB_PORT).reversed().build()[14..].to_vec();
    let net = request.net.clone();
    let cases = [
        (
            "quote of 7 transport octets",
            error_quoting(&net, FRAG_NEEDED, reply[..27].to_vec()),
            Reason::IcmpMalformed,
        ),
        (
            "quote of half an IP header",
            error_quoting(&net, FRAG_NEEDED, reply[..10].to_vec()),
            Reason::IcmpMalformed,
        ),
        (
            "nothing quoted",
            error_quoting(&net, FRAG_NEEDED, Vec::new()),
            Reason::IcmpMalformed,
        ),
        (
            "quoted packet from another address",
            error_quoting(&net, FRAG_NEEDED, from_other_vip),
            Reason::IcmpMalformed,
        ),
        (
            "IPv6 quoted in ICMPv4",
            error_quoting(&net, FRAG_NEEDED, v6_reply),
            Reason::IcmpMalformed,
        ),
        (
            "quoted later fragment",
            error_quoting(&net, FRAG_NEEDED, later_fragment),
            Reason::NotL4,
        ),
        (
            "quoted ICMP",
            error_quoting(&net, TIME_EXCEEDED, quoted_icmp),
            Reason::NotL4,
        ),
        (
            "quoted port without a service",
            error_quoting(&net, FRAG_NEEDED, no_service),
            Reason::NotL4,
        ),
        (
            "parameter problem",
            error_quoting(&net, (12, 0), reply.clone()),
            Reason::NotL4,
        ),
        (
            "redirect",
            error_quoting(&net, (5, 1), reply),
            Reason::NotL4,
        ),
    ];
    for (name, frame, reason) in cases {
        expect(&mut lb, name, &frame, reason);
    }
    let v6 = FrameSpec::tcp6(VIP6, 40_000, WEB_PORT);
    let mut behind_ext = v6.reversed();
    if let Net::V6 { ext, .. } = &mut behind_ext.net {
        ext.destination_options = true;
    }
    let quoted = behind_ext.build()[14..].to_vec();
    expect(
        &mut lb,
        "quote behind an extension header",
        &error_quoting(&v6.net, PACKET_TOO_BIG, quoted),
        Reason::NotL4,
    );
}
