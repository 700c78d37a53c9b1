//! Fixtures: IPv4-in-IPv6 to a backend with only an IPv6 address. An IPv4 client packet placed
//! on such a backend leaves with an IPv6 outer header (next header 4, from `encap.source_v6`,
//! flow label from the request key as IP6IP6's, traffic class the inner TOS, EtherType IPv6)
//! and its inner packet untouched, every byte checked against a frame built by hand; a
//! dual-stack backend still gets IPIP; the path-MTU check allows for the 40-octet header (for
//! every IPv4 packet once a backend has only IPv6, `options::FOUR_IN_SIX`); the replay agrees
//! on each; and `shardline decap`'s program turns every kind of tunnelled frame back into the
//! client's packet.

use std::net::IpAddr;

use aya::maps::HashMap;
use shardline::{
    loader::{load_aux, xdp_program},
    testrun::{run_once, KernelRun},
};
use shardline_common::{
    consts::{ETH_HLEN, VLAN_HLEN},
    encap::outer_v6,
    maps::{ip_addr, Addr},
    route::{decide, Decision},
    verdict::{Action, Reason},
};

use crate::support::{
    agrees,
    frames::{
        get_u16, header_payload, net4, FrameSpec, Net, Transport, CLIENT4, KV_PORT, VIP4, VIP6,
    },
    hex,
    outer::Expected,
    Loaded, TEST_CONFIG,
};

/// The backend with only IPv6 these fixtures add, and its addresses.
const V6_ONLY: u32 = 5;
const V6_ONLY_ADDR: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15];
const V6_ONLY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x15];
/// `kv` sessions placed on it alone, and on dual-stack backend 1 alone.
const SESSION_V6_ONLY: u64 = 50;
const SESSION_DUAL: u64 = 51;
/// `TEST_CONFIG`'s IPv6 encapsulation source.
const SOURCE_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];
/// The egress MTU of the path-MTU fixture.
const MTU: u32 = 1500;

/// `TEST_CONFIG` with backend 5 (IPv6 only) and the two sessions above.
fn config() -> String {
    format!(
        "{TEST_CONFIG}
[[backends]]
id = {V6_ONLY}
ipv6 = \"fd00::15\"
mac = \"02:00:00:00:00:15\"

[[sessions]]
service = \"kv\"
session = {SESSION_V6_ONLY}
backends = [{V6_ONLY}]

[[sessions]]
service = \"kv\"
session = {SESSION_DUAL}
backends = [1]
"
    )
}

/// A header-mode request to `kv` over IPv4 with `body` after the shardline header.
fn kv4(session: u64, key: u64, body: &[u8]) -> FrameSpec {
    let udp = Transport::Udp {
        sport: 40_000,
        dport: KV_PORT,
    };
    FrameSpec::new(net4(CLIENT4, VIP4), udp, header_payload(session, key, body))
}

/// The frame the balancer must send for `frame` (its IPv4 packet at `l2`, request key `key`)
/// to backend 5, built here from the frame alone: the next hop's MAC, ours, the VLAN tag kept,
/// EtherType IPv6; an IPv6 header with the inner TOS as traffic class and the key's low 20
/// bits as flow label, payload length the inner packet's, next header 4, hop limit 64; then
/// the inner packet as it came.
fn by_hand(frame: &[u8], l2: usize, key: u64) -> Vec<u8> {
    let inner = &frame[l2..];
    let first = 0x6000_0000 | (u32::from(inner[1]) << 20) | (key as u32 & 0x000f_ffff);
    let mut out = V6_ONLY_MAC.to_vec();
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..l2 - 2]);
    out.extend_from_slice(&[0x86, 0xdd]);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&get_u16(inner, 2).to_be_bytes());
    out.extend_from_slice(&[4, 64]);
    out.extend_from_slice(&SOURCE_V6);
    out.extend_from_slice(&V6_ONLY_ADDR);
    out.extend_from_slice(inner);
    out
}

/// Runs `frame`: the kernel must count `reason` and the replay decide the same, and the
/// output be what the replay implies (checked field by field against the snapshot's backends).
fn expect(lb: &mut Loaded, name: &str, frame: &[u8], reason: Reason) -> (KernelRun, Decision) {
    let (run, counted) = lb.run_counted(frame);
    let d = decide(frame, &lb.tables);
    assert_eq!(counted, reason, "{name}: kernel counted {}", counted.name());
    assert_eq!(d.reason, reason, "{name}: replay reason");
    if let Err(e) = agrees(&Expected::of_snapshot(&lb.tables), frame, &run, &d) {
        panic!("{name}: {e}; frame {}", hex(frame));
    }
    (run, d)
}

#[test]
fn an_ipv4_packet_to_a_backend_with_only_ipv6_goes_ipv4_in_ipv6() {
    let mut lb = Loaded::new(&config());
    for key in [0, 1, 0x000f_ffff, 0xdead_beef, u64::MAX] {
        for (vlan, tos) in [(None, 0), (None, 0xb8), (Some(42), 0x2e)] {
            let mut spec = kv4(SESSION_V6_ONLY, key, b"GET");
            spec.vlan = vlan;
            if let Net::V4 { tos: t, .. } = &mut spec.net {
                *t = tos;
            }
            let frame = spec.build();
            let name = format!("key {key:#x} vlan {vlan:?} tos {tos:#x}");
            let (run, d) = expect(&mut lb, &name, &frame, Reason::Forwarded);
            assert_eq!(d.backend_id, V6_ONLY, "{name}: placed on backend 5");
            let flags = lb.tables.backends[&V6_ONLY].flags;
            assert!(
                outer_v6(d.v6, flags) && !d.v6,
                "{name}: IPv4-in-IPv6 by the replay"
            );
            let l2 = ETH_HLEN + if vlan.is_some() { VLAN_HLEN } else { 0 };
            assert_eq!(run.action, Action::Tx, "{name}");
            assert_eq!(
                hex(&run.output),
                hex(&by_hand(&frame, l2, key)),
                "{name}: output"
            );
        }
    }
}

#[test]
fn a_dual_stack_backend_still_gets_ipip() {
    let mut lb = Loaded::new(&config());
    for key in [0, 7, u64::MAX] {
        let frame = kv4(SESSION_DUAL, key, b"GET").build();
        let name = format!("dual-stack key {key}");
        let (run, d) = expect(&mut lb, &name, &frame, Reason::Forwarded);
        assert_eq!(d.backend_id, 1, "{name}");
        assert!(
            !outer_v6(d.v6, lb.tables.backends[&1].flags),
            "{name}: IPIP by the replay"
        );
        assert_eq!(
            run.output.len(),
            frame.len() + 20,
            "{name}: a 20-octet outer"
        );
        assert_eq!(get_u16(&run.output, 12), 0x0800, "{name}: EtherType IPv4");
        assert_eq!(run.output[14 + 9], 4, "{name}: protocol IPIP");
    }
}

#[test]
fn the_mtu_check_allows_for_the_40_octet_outer_header() {
    // Header (8 UDP + 20 IPv4) and the shardline header come on top of the body.
    let overhead = kv4(0, 0, b"").build().len() - ETH_HLEN;
    let sized = |session: u64, ip_len: u32| {
        kv4(session, 9, &vec![0xab; ip_len as usize - overhead]).build()
    };
    let icmp = ETH_HLEN + 20;
    let mut lb = Loaded::new(&config());
    lb.set_egress_mtu(MTU);
    // With a backend that has only IPv6, every IPv4 packet is checked against the 40-octet
    // header before its backend is known: 1460 octets fit a 1500-octet link (IPv4-in-IPv6
    // and IPIP alike), 1461 are answered with 1460.
    for session in [SESSION_V6_ONLY, SESSION_DUAL] {
        let name = format!("session {session}");
        expect(&mut lb, &name, &sized(session, 1460), Reason::Forwarded);
        let (run, _) = expect(&mut lb, &name, &sized(session, 1461), Reason::IcmpTooBig);
        assert_eq!(
            run.output[icmp..icmp + 2],
            [3, 4],
            "{name}: fragmentation needed"
        );
        assert_eq!(get_u16(&run.output, icmp + 6), 1460, "{name}: next-hop MTU");
    }
    // Without one, IPIP keeps its 20 octets: up to 1480.
    let mut lb = Loaded::new(&config().replace("ipv6 = \"fd00::15\"", "ipv4 = \"10.0.0.15\""));
    lb.set_egress_mtu(MTU);
    expect(
        &mut lb,
        "ipip 1480",
        &sized(SESSION_DUAL, 1480),
        Reason::Forwarded,
    );
    let (run, _) = expect(
        &mut lb,
        "ipip 1481",
        &sized(SESSION_DUAL, 1481),
        Reason::IcmpTooBig,
    );
    assert_eq!(get_u16(&run.output, icmp + 6), 1480, "next-hop MTU");
}

/// The decapsulator of the auxiliary object (`shardline decap`'s program), loaded with `vips`
/// as local VIPs.
struct Decap(aya::Ebpf);

impl Decap {
    fn new(vips: &[IpAddr]) -> Self {
        let mut ebpf = load_aux().expect("loading the auxiliary object");
        xdp_program(&mut ebpf, "shardline_decap")
            .expect("shardline_decap in the auxiliary object")
            .load()
            .expect("loading shardline_decap");
        let mut table: HashMap<_, Addr, u32> =
            HashMap::try_from(ebpf.map_mut("DECAP_VIPS").expect("DECAP_VIPS")).expect("a hash");
        for vip in vips {
            table.insert(ip_addr(*vip), 1, 0).expect("add a VIP");
        }
        Self(ebpf)
    }

    fn run(&mut self, frame: &[u8]) -> KernelRun {
        let program = xdp_program(&mut self.0, "shardline_decap").expect("shardline_decap");
        run_once(program, frame).expect("BPF_PROG_TEST_RUN")
    }
}

#[test]
fn shardline_decap_turns_every_tunnel_back_into_the_client_packet() {
    let mut lb = Loaded::new(&config());
    let mut decap = Decap::new(&[VIP4.into(), VIP6.into()]);
    let mut tagged = kv4(SESSION_V6_ONLY, 1, b"GET");
    tagged.vlan = Some(42);
    for (name, spec, grown) in [
        ("4in6", kv4(SESSION_V6_ONLY, 1, b"GET"), 40),
        ("4in6 tagged", tagged, 40),
        ("ipip", kv4(SESSION_DUAL, 1, b"GET"), 20),
        ("ip6ip6", FrameSpec::kv6(7, 1), 40),
    ] {
        let frame = spec.build();
        let tunnelled = lb.run(&frame);
        assert_eq!(tunnelled.action, Action::Tx, "{name}");
        assert_eq!(tunnelled.output.len(), frame.len() + grown, "{name}");
        let back = decap.run(&tunnelled.output);
        assert_eq!(back.action, Action::Pass, "{name}: decap passes");
        // The backend's stack sees the client's frame, but for the MACs of the last hop.
        let mut want = tunnelled.output[0..12].to_vec();
        want.extend_from_slice(&frame[12..]);
        assert_eq!(hex(&back.output), hex(&want), "{name}: decapsulated");
    }
    // A 4in6 frame to an address that is not a local VIP is left alone.
    let mut decap_v6 = Decap::new(&[VIP6.into()]);
    let frame = kv4(SESSION_V6_ONLY, 1, b"GET").build();
    let tunnelled = lb.run(&frame);
    let back = decap_v6.run(&tunnelled.output);
    assert_eq!(back.output, tunnelled.output, "not a local VIP: untouched");
}
