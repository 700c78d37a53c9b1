//! Fixtures: malformed and foreign frames. Each asserts the kernel's action and the one reason
//! it counted, the replay's agreement, and that the frame comes back untouched.

use shardline_common::verdict::Reason;

use super::expect;
use crate::support::{
    frames::{
        arp, fix_ipv4_checksum, get_u16, header_payload, net4, net6, put_u16, with_qinq, FrameSpec,
        Net, Transport, V6Ext, CLIENT6, DNS_PORT, KV_PORT, VIP4, VIP6, WEB_PORT,
    },
    Loaded, TEST_CONFIG,
};

/// `frame`'s IPv4 total length set to `total` (checksum fixed), option-less header at 14.
fn ipv4_total(mut frame: Vec<u8>, total: u16) -> Vec<u8> {
    put_u16(&mut frame, 16, total);
    fix_ipv4_checksum(&mut frame, 14);
    frame
}

/// Runs each `(name, frame, reason)` case through [`expect`].
fn expect_all(lb: &mut Loaded, cases: Vec<(&str, Vec<u8>, Reason)>) {
    for (name, frame, reason) in cases {
        expect(lb, name, &frame, reason);
    }
}

#[test]
fn truncated_frames() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let whole = FrameSpec::kv4(42, 9).build();
    // Ethernet 14, IPv4 20, UDP 8, shardline header 20, body 3.
    assert_eq!(whole.len(), 65);
    // Cut at and inside each header: the IPv4 total length now lies.
    let cut: [(usize, Reason); 8] = [
        // IPv4 by EtherType but no whole header: unreadable, so not a VIP's; passed.
        (14, Reason::MalformedNotVip),
        (14 + 12, Reason::MalformedNotVip),
        (14 + 19, Reason::MalformedNotVip),
        (34, Reason::MalformedIp),
        (38, Reason::MalformedIp),
        (42, Reason::MalformedIp),
        (52, Reason::MalformedIp),
        (62, Reason::MalformedIp),
    ];
    for (len, reason) in cut {
        expect(&mut lb, &format!("cut at {len}"), &whole[..len], reason);
    }
    // Cut with the lengths made consistent: the layer that is missing is named.
    let udp_len = |mut f: Vec<u8>, len: u16| {
        put_u16(&mut f, 38, len);
        f
    };
    let consistent = vec![
        (
            "IPv4 header only",
            ipv4_total(whole[..34].to_vec(), 20),
            Reason::MalformedL4,
        ),
        (
            "half a UDP header",
            ipv4_total(whole[..38].to_vec(), 24),
            Reason::MalformedL4,
        ),
        (
            "UDP header, no payload",
            udp_len(ipv4_total(whole[..42].to_vec(), 28), 8),
            Reason::ShortPayload,
        ),
        (
            "19 bytes of shardline header",
            udp_len(ipv4_total(whole[..61].to_vec(), 47), 27),
            Reason::ShortPayload,
        ),
        (
            "shardline header, no body",
            udp_len(ipv4_total(whole[..62].to_vec(), 48), 28),
            Reason::Forwarded,
        ),
    ];
    expect_all(&mut lb, consistent);
}

#[test]
fn malformed_ipv4_headers() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let good = FrameSpec::kv4(42, 9).build();
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = good.clone();
        f(&mut frame);
        fix_ipv4_checksum(&mut frame, 14);
        frame
    };
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("IHL 4", edit(&|f| f[14] = 0x44), Reason::MalformedIp),
        ("IHL 0", edit(&|f| f[14] = 0x40), Reason::MalformedIp),
        (
            "IHL past the packet",
            edit(&|f| f[14] = 0x4f),
            Reason::MalformedIp,
        ),
        ("version 5", edit(&|f| f[14] = 0x55), Reason::MalformedIp),
        (
            "total length past the frame",
            edit(&|f| put_u16(f, 16, 66)),
            Reason::MalformedIp,
        ),
        (
            "total length below IHL",
            edit(&|f| put_u16(f, 16, 19)),
            Reason::MalformedIp,
        ),
        (
            // Destination 10.100.0.99: the stack, not the balancer, deals with it.
            "IHL 3 to a non-VIP",
            edit(&|f| {
                f[14] = 0x43;
                f[14 + 19] = 99;
            }),
            Reason::MalformedNotVip,
        ),
        (
            "UDP length past the IP packet",
            edit(&|f| put_u16(f, 38, 40)),
            Reason::MalformedL4,
        ),
        (
            "UDP length below 8",
            edit(&|f| put_u16(f, 38, 7)),
            Reason::MalformedL4,
        ),
    ];
    expect_all(&mut lb, cases);
}

#[test]
fn malformed_tcp_headers() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let good = FrameSpec::tcp4(VIP4, 4000, WEB_PORT).build();
    for (name, doff, reason) in [
        ("data offset 4", 4u8, Reason::MalformedL4),
        ("data offset past the packet", 15, Reason::MalformedL4),
        ("data offset 5", 5, Reason::Forwarded),
    ] {
        let mut frame = good.clone();
        frame[14 + 20 + 12] = doff << 4;
        expect(&mut lb, name, &frame, reason);
    }
    let cut = ipv4_total(good[..14 + 20 + 12].to_vec(), 32);
    expect(&mut lb, "half a TCP header", &cut, Reason::MalformedL4);
}

#[test]
fn fragments_to_a_vip_are_dropped() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let frag4 = |more: bool, offset: u16, dst: [u8; 4]| {
        let mut spec = FrameSpec::udp4(dst, 1, KV_PORT, header_payload(42, 1, b""));
        if let Net::V4 {
            more_fragments,
            fragment_offset,
            ..
        } = &mut spec.net
        {
            *more_fragments = more;
            *fragment_offset = offset;
        }
        spec.build()
    };
    let frag6 = |offset: u16, more: bool| {
        let mut spec = FrameSpec::kv6(7, 1);
        if let Net::V6 { ext, .. } = &mut spec.net {
            ext.fragment = Some((offset, more));
        }
        spec.build()
    };
    let mut df = frag4(false, 0, VIP4);
    df[20] |= 0x40;
    fix_ipv4_checksum(&mut df, 14);
    expect_all(
        &mut lb,
        vec![
            ("first fragment", frag4(true, 0, VIP4), Reason::Fragment),
            ("middle fragment", frag4(true, 100, VIP4), Reason::Fragment),
            ("last fragment", frag4(false, 100, VIP4), Reason::Fragment),
            (
                "fragment elsewhere",
                frag4(true, 0, [10, 9, 9, 9]),
                Reason::NotService,
            ),
            ("don't-fragment is not a fragment", df, Reason::Forwarded),
            ("v6 first fragment", frag6(0, true), Reason::Fragment),
            ("v6 later fragment", frag6(3, false), Reason::Fragment),
        ],
    );
}

#[test]
fn ipv6_extension_header_chains() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let chain = |ext: V6Ext| {
        let mut spec = FrameSpec::kv6(7, 2);
        if let Net::V6 { ext: e, .. } = &mut spec.net {
            *e = ext;
        }
        spec.build()
    };
    // As many as the dataplane walks (hop-by-hop, destination options, routing, AH), then one
    // more (destination options after routing).
    let four = V6Ext {
        hop_by_hop: true,
        destination_options: true,
        routing: true,
        auth: true,
        ..Default::default()
    };
    let five = V6Ext {
        final_destination_options: true,
        ..four.clone()
    };
    let mut long = FrameSpec::kv6(7, 2).build();
    let payload_len = get_u16(&long, 18);
    put_u16(&mut long, 18, payload_len + 1);
    let mut bad_version = FrameSpec::kv6(7, 2).build();
    bad_version[14] = 0x40;
    expect_all(
        &mut lb,
        vec![
            ("four extension headers", chain(four), Reason::Forwarded),
            (
                "five extension headers",
                chain(five),
                Reason::TooManyExtHeaders,
            ),
            ("payload length past the frame", long, Reason::MalformedIp),
            (
                "version 4 in an IPv6 frame",
                bad_version,
                Reason::MalformedIp,
            ),
        ],
    );
}

#[test]
fn shardline_header_errors() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let with_payload = |payload: Vec<u8>| FrameSpec::udp4(VIP4, 1, KV_PORT, payload).build();
    let header_with = |at: usize, value: u8| {
        let mut h = header_payload(42, 1, b"x");
        h[at] = value;
        with_payload(h)
    };
    // A UDP length of 8 says the datagram is empty, even if the IP packet goes on with what
    // looks like a header: the header must be inside the UDP payload.
    let mut past_udp4 = with_payload(header_payload(42, 1, b""));
    put_u16(&mut past_udp4, 14 + 20 + 4, 8);
    let mut past_udp6 = FrameSpec::kv6(7, 1).build();
    put_u16(&mut past_udp6, 14 + 40 + 4, 8);
    let short = header_payload(42, 1, b"")[..19].to_vec();
    expect_all(
        &mut lb,
        vec![
            ("wrong magic", header_with(1, 0x00), Reason::BadMagic),
            ("version 2", header_with(2, 2), Reason::BadVersion),
            ("version 0", header_with(2, 0), Reason::BadVersion),
            (
                "empty payload",
                with_payload(Vec::new()),
                Reason::ShortPayload,
            ),
            ("19-byte payload", with_payload(short), Reason::ShortPayload),
            (
                "header past the UDP length",
                past_udp4,
                Reason::ShortPayload,
            ),
            (
                "v6 header past the UDP length",
                past_udp6,
                Reason::ShortPayload,
            ),
        ],
    );
}

#[test]
fn foreign_traffic_is_passed() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let mut other6 = VIP6;
    other6[15] = 9;
    // Echo replies: ICMP the balancer leaves to the stack (requests are answered, see icmp.rs).
    let icmp = |net: Net| {
        let ty = if matches!(net, Net::V6 { .. }) {
            129
        } else {
            0
        };
        let rest = [0, 1, 0, 1];
        FrameSpec::new(
            net,
            Transport::IcmpRaw { ty, code: 0, rest },
            b"pong".to_vec(),
        )
        .build()
    };
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("ARP", arp(), Reason::NotIp),
        (
            "QinQ",
            with_qinq(&FrameSpec::kv4(42, 1).build(), 10),
            Reason::NotIp,
        ),
        (
            "VLAN-tagged QinQ inner tag",
            with_qinq(
                &FrameSpec {
                    vlan: Some(3),
                    ..FrameSpec::kv4(42, 1)
                }
                .build(),
                10,
            ),
            Reason::NotIp,
        ),
        (
            "other IPv4 address",
            FrameSpec::udp4([10, 100, 0, 3], 1, KV_PORT, header_payload(42, 1, b"")).build(),
            Reason::NotService,
        ),
        (
            "other IPv6 address",
            FrameSpec::udp6(other6, 1, KV_PORT, header_payload(7, 1, b"")).build(),
            Reason::NotService,
        ),
        (
            "VIP, UDP on the TCP port",
            FrameSpec::udp4(VIP4, 1, WEB_PORT, vec![1; 8]).build(),
            Reason::NotService,
        ),
        (
            "VIP, TCP on the UDP port",
            FrameSpec::tcp4(VIP4, 1, KV_PORT).build(),
            Reason::NotService,
        ),
        (
            "v6 VIP, no dns6",
            FrameSpec::udp6(VIP6, 1, DNS_PORT, vec![1; 8]).build(),
            Reason::NotService,
        ),
        (
            "ICMP echo reply to the VIP",
            icmp(net4([192, 0, 2, 1], VIP4)),
            Reason::NotL4,
        ),
        (
            "ICMPv6 echo reply to the VIP",
            icmp(net6(CLIENT6, VIP6)),
            Reason::NotL4,
        ),
        (
            "ICMP elsewhere",
            icmp(net4([192, 0, 2, 1], [8, 8, 8, 8])),
            Reason::NotService,
        ),
    ];
    expect_all(&mut lb, cases);
}
