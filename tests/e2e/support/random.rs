//! Random test frames for kernel/userspace agreement: every service shape of `TEST_CONFIG`
//! (QUIC included), ICMP errors quoting what backends send back for them, traffic to nothing, odd but legal shapes (VLAN, IPv4 options, IPv6
//! extension headers, padding, fragments) and corruption (truncation, byte flips, lying length
//! fields).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{rngs::StdRng, Rng};
use shardline_common::{
    consts::{ETH_HLEN, HEADER_LEN, IPPROTO_TCP, IPPROTO_UDP, MAX_BACKENDS},
    hash::addr_hash,
    maps::{
        addr_words, backend_flags, forward_mode, ip_addr, options, session_mode, Backend, Service,
        ServiceKey, SessionKey, ShardSet,
    },
    packet::parse_l2,
};

use super::{
    frames::{
        arp, header_payload, net4, net6, put_u16, with_qinq, FrameSpec, Net, Transport, V6Ext,
        CLIENT4, CLIENT6, DNS_PORT, KV_PORT, L2_PORT, SYN_OPTIONS, VIP4, VIP4_L2, VIP6, WEB_PORT,
    },
    icmp::{error_spec_for, FRAG_NEEDED, PACKET_TOO_BIG, PORT_UNREACHABLE6, TIME_EXCEEDED},
    quic::{random_payload, QUIC_PORT},
    Loaded,
};

/// Header-mode sessions of `kv` placed on a backend id that is configured nowhere.
pub const SESSION_UNKNOWN_BACKEND: u64 = 43;
/// Header-mode session of `kv` placed on a backend id past the end of the backends array.
pub const SESSION_OUT_OF_RANGE: u64 = 44;
/// Header-mode session of `kv6` placed on backend 4, which has no IPv6 address.
pub const SESSION_V4_ONLY: u64 = 45;
/// Header-mode session of `kv` with an empty shard set (falls back to the default table).
pub const SESSION_EMPTY: u64 = 46;
/// Header-mode session of `kv` placed on [`V6_ONLY_BACKEND`]: IPv4-in-IPv6.
pub const SESSION_V6_ONLY: u64 = 47;
/// A backend with only an IPv6 address: IPv4 packets reach it IPv4-in-IPv6. The flow-mode
/// `dns` client [`PLACED_CLIENT4`] is placed on it, whose longest datagrams fit IPIP but not
/// IPv4-in-IPv6.
pub const V6_ONLY_BACKEND: u32 = 97;
/// A backend that is configured but down (in no table): QUIC server ids naming it are
/// rerouted by the fallback hash.
pub const DOWN_BACKEND: u32 = 98;
/// The egress MTU of the random run.
pub const RANDOM_EGRESS_MTU: u32 = 1500;

/// Flow-mode client of `web`, placed on backends 2 and 4.
pub const PLACED_CLIENT4: [u8; 4] = [192, 0, 2, 77];
/// Flow-mode client of `web6`, placed on backends 1 and 4 (4 has no IPv6).
pub const PLACED_CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77,
];

/// Adds to `lb`'s snapshot and maps what `TEST_CONFIG` lacks for the random run: a flow-mode
/// UDP service over IPv6 (`dns6`, on `DNS_PORT`), and placements that reach the rarer outcomes
/// (unknown backend, backend without the packet's family, empty shard set, placed flow-mode
/// clients, a down backend that connection ids name, a backend with only IPv6), and a
/// 1500-octet egress MTU.
pub fn add_edge_cases(lb: &mut Loaded) {
    let id = |addr: IpAddr, port: u16, proto: u8| {
        lb.tables
            .services
            .get(&ServiceKey::new(addr, port, proto))
            .unwrap_or_else(|| panic!("TEST_CONFIG has a service on {addr}:{port}/{proto}"))
            .id
    };
    let vip4 = IpAddr::V4(Ipv4Addr::from(VIP4));
    let vip6 = IpAddr::V6(Ipv6Addr::from(VIP6));
    let kv = id(vip4, KV_PORT, IPPROTO_UDP);
    let kv6 = id(vip6, KV_PORT, IPPROTO_UDP);
    let web = id(vip4, WEB_PORT, IPPROTO_TCP);
    let web6 = id(vip6, WEB_PORT, IPPROTO_TCP);
    let dns = id(vip4, DNS_PORT, IPPROTO_UDP);
    let placements = [
        (kv, SESSION_V6_ONLY, vec![V6_ONLY_BACKEND]),
        (
            dns,
            addr_hash(&ip_addr(IpAddr::V4(Ipv4Addr::from(PLACED_CLIENT4)))),
            vec![V6_ONLY_BACKEND],
        ),
        (kv, SESSION_UNKNOWN_BACKEND, vec![99]),
        (kv, SESSION_OUT_OF_RANGE, vec![MAX_BACKENDS + 904]),
        (kv6, SESSION_V4_ONLY, vec![4]),
        (kv, SESSION_EMPTY, vec![]),
        (
            web,
            addr_hash(&ip_addr(IpAddr::V4(Ipv4Addr::from(PLACED_CLIENT4)))),
            vec![2, 4],
        ),
        (web6, addr_hash(&addr_words(PLACED_CLIENT6)), vec![1, 4]),
    ];
    let dns6 = Service {
        id: lb.tables.services.values().map(|s| s.id).max().unwrap_or(0) + 1,
        mode: session_mode::FLOW,
        forward: forward_mode::ENCAP,
        server_id_len: 0,
        rotation: 0,
        ..Service::default()
    };
    lb.tables
        .services
        .insert(ServiceKey::new(vip6, DNS_PORT, IPPROTO_UDP), dns6);
    for (service, session, backends) in placements {
        // The control plane places a pooled service's sessions inside its pool only (the
        // pools test checks every forwarded packet against that): an edge case that would
        // leave it is not added where the service has a pool.
        if let Some(pool) = lb.tables.pools.get(&service) {
            if !backends.iter().all(|b| pool.contains(b)) {
                continue;
            }
        }
        let mut set = ShardSet {
            generation: 1,
            count: backends.len() as u32,
            ..Default::default()
        };
        set.backends[..backends.len()].copy_from_slice(&backends);
        lb.tables.sessions.insert(
            SessionKey {
                service,
                _pad: 0,
                session,
            },
            set,
        );
    }
    // Addresses of its own, so an output could only name it by mistake.
    let down = Backend {
        flags: backend_flags::PRESENT | backend_flags::HAS_V4 | backend_flags::DOWN,
        addr4: [10, 0, 0, 98],
        mac: [2, 0, 0, 0, 0, 0x98],
        ..Backend::default()
    };
    lb.tables.backends.insert(DOWN_BACKEND, down);
    let v6_only = Backend {
        flags: backend_flags::PRESENT | backend_flags::HAS_V6,
        addr6: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x97],
        mac: [2, 0, 0, 0, 0, 0x97],
        ..Backend::default()
    };
    lb.tables.backends.insert(V6_ONLY_BACKEND, v6_only);
    // As the table builder marks a fleet with a backend that has only IPv6.
    lb.tables.globals.options |= options::FOUR_IN_SIX;
    let dataplane: &mut shardline::private::PrivateDataplane = lb;
    dataplane
        .maps
        .apply(&dataplane.tables)
        .expect("apply the edge cases");
    // An Ethernet egress link, which the longest frames `flow_mode` draws do not fit once
    // encapsulated.
    lb.set_egress_mtu(RANDOM_EGRESS_MTU);
}

/// One random frame, at least an Ethernet header long (`BPF_PROG_TEST_RUN` refuses shorter).
pub fn frame(rng: &mut StdRng) -> Vec<u8> {
    let spec = match rng.gen_range(0..125) {
        0..=29 => header_mode(rng),
        30..=59 => flow_mode(rng),
        60..=79 => elsewhere(rng),
        80..=84 => {
            let mut frame = non_ip(rng);
            corrupt(rng, &mut frame);
            return frame;
        }
        85..=99 => ext_headers(rng),
        100..=109 => quic_mode(rng),
        _ => icmp_error(rng),
    };
    let mut frame = decorated(rng, spec);
    corrupt(rng, &mut frame);
    frame
}

fn header_mode(rng: &mut StdRng) -> FrameSpec {
    let v6 = rng.gen_bool(0.5);
    let session = match rng.gen_range(0..10) {
        0..=3 if v6 => 7,
        0..=3 => 42,
        4 => SESSION_UNKNOWN_BACKEND,
        5 => SESSION_OUT_OF_RANGE,
        6 if v6 => SESSION_V4_ONLY,
        6 => SESSION_V6_ONLY,
        7 => SESSION_EMPTY,
        _ => rng.gen(),
    };
    let key = if rng.gen_bool(0.2) {
        rng.gen_range(0..16)
    } else {
        rng.gen()
    };
    let body_len = rng.gen_range(0..48);
    let body: Vec<u8> = (0..body_len).map(|_| rng.gen()).collect();
    let mut payload = header_payload(session, key, &body);
    match rng.gen_range(0..20) {
        0 => payload[rng.gen_range(0..2)] ^= rng.gen_range(1..=255),
        1 => payload[2] = rng.gen_range(2..=255),
        2 => payload.truncate(rng.gen_range(0..HEADER_LEN)),
        _ => {}
    }
    let sport = rng.gen();
    if v6 {
        FrameSpec::new(
            net6(client6(rng), VIP6),
            Transport::Udp {
                sport,
                dport: KV_PORT,
            },
            payload,
        )
    } else {
        FrameSpec::new(
            net4(client4(rng), VIP4),
            Transport::Udp {
                sport,
                dport: KV_PORT,
            },
            payload,
        )
    }
}

fn flow_mode(rng: &mut StdRng) -> FrameSpec {
    let sport = rng.gen();
    // Now and then a length around what fits the 1500-octet egress MTU once encapsulated
    // (payloads of 1440 and 1400 octets just fit over IPv4 and IPv6 TCP without options).
    let len = if rng.gen_ratio(1, 6) {
        rng.gen_range(1380..1475)
    } else {
        rng.gen_range(0..64)
    };
    let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    let tcp = |rng: &mut StdRng, dport| Transport::Tcp {
        sport,
        dport,
        syn: rng.gen_bool(0.5),
        options: if rng.gen_bool(0.5) {
            SYN_OPTIONS.to_vec()
        } else {
            Vec::new()
        },
    };
    let udp = |dport| Transport::Udp { sport, dport };
    match rng.gen_range(0..5) {
        0 => FrameSpec::new(net4(client4(rng), VIP4), tcp(rng, WEB_PORT), payload),
        1 => FrameSpec::new(net6(client6(rng), VIP6), tcp(rng, WEB_PORT), payload),
        2 => FrameSpec::new(net4(client4(rng), VIP4), udp(DNS_PORT), payload),
        3 => FrameSpec::new(net6(client6(rng), VIP6), udp(DNS_PORT), payload),
        _ => FrameSpec::new(net4(client4(rng), VIP4_L2), udp(L2_PORT), payload),
    }
}

fn quic_mode(rng: &mut StdRng) -> FrameSpec {
    let udp = Transport::Udp {
        sport: rng.gen(),
        dport: QUIC_PORT,
    };
    let payload = random_payload(rng);
    if rng.gen_bool(0.5) {
        FrameSpec::new(net6(client6(rng), VIP6), udp, payload)
    } else {
        FrameSpec::new(net4(client4(rng), VIP4), udp, payload)
    }
}

/// Traffic that matches no service: a VIP on the wrong port or protocol, other addresses, ICMP.
fn elsewhere(rng: &mut StdRng) -> FrameSpec {
    let sport = rng.gen();
    let port = rng.gen();
    let payload: Vec<u8> = (0..rng.gen_range(0..32)).map(|_| rng.gen()).collect();
    let other4 = [10, 100, 0, rng.gen_range(3..=255)];
    let mut other6 = VIP6;
    other6[15] = rng.gen_range(2..=255);
    let udp = |dport| Transport::Udp { sport, dport };
    let tcp = |dport| Transport::Tcp {
        sport,
        dport,
        syn: true,
        options: Vec::new(),
    };
    let (net, transport) = match rng.gen_range(0..12) {
        0 => (net4(client4(rng), VIP4), udp(WEB_PORT)),
        1 => (net4(client4(rng), VIP4), tcp(KV_PORT)),
        2 => (net4(client4(rng), VIP4), tcp(DNS_PORT)),
        3 => (net4(client4(rng), VIP4), udp(port)),
        4 => (net4(client4(rng), VIP4_L2), tcp(L2_PORT)),
        5 => (net6(client6(rng), VIP6), udp(L2_PORT)),
        6 => (net6(client6(rng), VIP6), tcp(port)),
        7 => (net4(client4(rng), other4), udp(KV_PORT)),
        8 => (net6(client6(rng), other6), tcp(WEB_PORT)),
        9 => (net4(client4(rng), VIP4), Transport::Icmp),
        10 => (net6(client6(rng), VIP6), Transport::Icmp),
        _ => (net4(client4(rng), other4), Transport::Icmp),
    };
    FrameSpec::new(net, transport, payload)
}

/// An ICMP error to a VIP quoting what a backend sent back for a request of any service shape:
/// the quote whole, cut to the IP header and 8 transport octets, cut anywhere (often too
/// short), of every type the balancer routes and of others (any type, echo requests included).
fn icmp_error(rng: &mut StdRng) -> FrameSpec {
    let request = match rng.gen_range(0..3) {
        0 => header_mode(rng),
        1 => flow_mode(rng),
        _ => quic_mode(rng),
    };
    let v6 = matches!(request.net, Net::V6 { .. });
    let kind = match rng.gen_range(0..6) {
        0 | 1 if v6 => PACKET_TOO_BIG,
        0 | 1 => FRAG_NEEDED,
        2 if v6 => PORT_UNREACHABLE6,
        2 => (3, rng.gen_range(0..16)),
        3 if v6 => (3, rng.gen_range(0..2)),
        3 => TIME_EXCEEDED,
        4 => (rng.gen(), rng.gen()),
        _ if v6 => (4, 0),
        _ => (12, 0),
    };
    let minimal = if v6 { 40 + 8 } else { 20 + 8 };
    let whole = request.reversed().build().len() - request.l3_off();
    let quote = match rng.gen_range(0..4) {
        0 => None,
        1 => Some(minimal),
        2 => Some(rng.gen_range(0..=minimal)),
        _ => Some(rng.gen_range(minimal..=whole.max(minimal))),
    };
    error_spec_for(&request, kind, quote)
}

/// IPv6 (and IPv4 fragment) shapes to the services: extension header chains of every length.
fn ext_headers(rng: &mut StdRng) -> FrameSpec {
    let mut spec = if rng.gen_bool(0.5) {
        header_mode(rng)
    } else {
        flow_mode(rng)
    };
    match &mut spec.net {
        Net::V6 { ext, .. } => {
            *ext = V6Ext {
                hop_by_hop: rng.gen_bool(0.5),
                destination_options: rng.gen_bool(0.5),
                routing: rng.gen_bool(0.5),
                final_destination_options: rng.gen_bool(0.5),
                fragment: rng
                    .gen_bool(0.2)
                    .then(|| (rng.gen_range(0..4), rng.gen_bool(0.5))),
                auth: rng.gen_bool(0.5),
            };
        }
        Net::V4 {
            more_fragments,
            fragment_offset,
            ..
        } => {
            *more_fragments = rng.gen_bool(0.5);
            *fragment_offset = if rng.gen_bool(0.5) {
                rng.gen_range(1..100)
            } else {
                0
            };
        }
    }
    spec
}

/// Random VLAN tag, TOS / traffic class, flow label, IPv4 options and Ethernet padding.
fn decorated(rng: &mut StdRng, mut spec: FrameSpec) -> Vec<u8> {
    if rng.gen_bool(0.2) {
        spec.vlan = Some(rng.gen_range(1..4095));
    }
    match &mut spec.net {
        Net::V4 { tos, options, .. } => {
            if rng.gen_bool(0.3) {
                *tos = rng.gen();
            }
            if rng.gen_bool(0.15) {
                let len = 4 * rng.gen_range(1..=10);
                // NOPs, then end-of-options: what a real header with spare room carries.
                *options = (0..len).map(|i| if i + 1 < len { 1 } else { 0 }).collect();
            }
        }
        Net::V6 {
            traffic_class,
            flow_label,
            ..
        } => {
            if rng.gen_bool(0.3) {
                *traffic_class = rng.gen();
                *flow_label = rng.gen_range(0..1 << 20);
            }
        }
    }
    if rng.gen_bool(0.25) {
        spec.padding = rng.gen_range(1..40);
    }
    spec.build()
}

fn non_ip(rng: &mut StdRng) -> Vec<u8> {
    let inner = FrameSpec::kv4(42, rng.gen()).build();
    match rng.gen_range(0..4) {
        0 => arp(),
        1 => with_qinq(&inner, rng.gen_range(1..4095)),
        2 => {
            let mut f = inner;
            put_u16(&mut f, 12, rng.gen_range(0x0600..0x0800));
            f
        }
        _ => {
            // Two 802.1Q tags: the dataplane reads one, then finds a tag, not IP.
            let tagged = FrameSpec {
                vlan: Some(5),
                ..FrameSpec::kv4(42, 1)
            }
            .build();
            let mut f = tagged[..12].to_vec();
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            f.extend_from_slice(&tagged[12..]);
            f
        }
    }
}

/// Truncates, flips bytes or rewrites a length field, each some of the time.
fn corrupt(rng: &mut StdRng, frame: &mut Vec<u8>) {
    let l3 = parse_l2(&frame[..]).map(|(off, _)| off).unwrap_or(ETH_HLEN);
    match rng.gen_range(0..100) {
        0..=11 if frame.len() > ETH_HLEN => {
            frame.truncate(rng.gen_range(ETH_HLEN..frame.len()));
        }
        12..=27 => {
            for _ in 0..rng.gen_range(1..=3) {
                // Mostly the headers, where a flip changes the verdict.
                let end = if rng.gen_bool(0.8) {
                    frame.len().min(l3 + 70)
                } else {
                    frame.len()
                };
                let at = rng.gen_range(0..end);
                frame[at] ^= rng.gen_range(1..=255u8);
            }
        }
        28..=35 => {
            // A length field that lies: IPv4 total / IPv6 payload, IHL, or the L4 length.
            let v6 = frame.get(l3).is_some_and(|b| b >> 4 == 6);
            let (field, value) = match rng.gen_range(0..3) {
                0 if v6 => (l3 + 4, rng.gen_range(0..200)),
                0 => (l3 + 2, rng.gen_range(0..220)),
                1 if !v6 => {
                    if let Some(b) = frame.get_mut(l3) {
                        *b = 0x40 | rng.gen_range(0..16);
                    }
                    return;
                }
                _ => (l3 + if v6 { 44 } else { 24 }, rng.gen_range(0..120)),
            };
            if field + 2 <= frame.len() {
                put_u16(frame, field, value);
            }
        }
        _ => {}
    }
}

fn client4(rng: &mut StdRng) -> [u8; 4] {
    match rng.gen_range(0..4) {
        0 => PLACED_CLIENT4,
        1 => CLIENT4,
        _ => [198, 51, rng.gen(), rng.gen()],
    }
}

fn client6(rng: &mut StdRng) -> [u8; 16] {
    match rng.gen_range(0..4) {
        0 => PLACED_CLIENT6,
        1 => CLIENT6,
        _ => {
            let mut a = CLIENT6;
            rng.fill(&mut a[8..]);
            a
        }
    }
}
