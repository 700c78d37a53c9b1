//! QUIC connection-id routing (`mode = "quic"`): fixture packets through `BPF_PROG_TEST_RUN`
//! with the replay agreeing on each, and a real quinn connection through the netns lab that
//! survives a source port change, an address change and a re-shard.

mod lab;

use std::net::{IpAddr, Ipv4Addr};

use aya::maps::{MapData, ProgramArray};

use crate::support::{
    expect,
    frames::{FrameSpec, CLIENT4, VIP4, VIP6},
    quic::{
        long, long_prefix, retry, server_cid, server_cid_in, short, version_negotiation,
        CLIENT_DCID, LAYOUT, QUIC_PORT,
    },
    Loaded, TEST_CONFIG,
};
use shardline::{config::Config, snapshot::Snapshot};
use shardline_common::{
    hash::{addr_hash, maglev_slot},
    maps::{backend_flags, ip_addr},
    quic::cid_hash,
    route::{Decision, Tables},
    verdict::{Action, Reason},
};

/// Runs the QUIC `payload` from `CLIENT4:sport` to the IPv4 quic service; asserts the kernel
/// counted `reason`, the replay agrees, and the output is what the replay implies.
fn expect4(lb: &mut Loaded, name: &str, sport: u16, payload: Vec<u8>, reason: Reason) -> Decision {
    let frame = FrameSpec::udp4(VIP4, sport, QUIC_PORT, payload).build();
    expect_frame(lb, name, &frame, reason)
}

fn expect_frame(lb: &mut Loaded, name: &str, frame: &[u8], reason: Reason) -> Decision {
    expect(lb, name, frame, reason).1
}

/// The backend the consistent choice (Maglev here: no quic session is placed) gives `dcid`
/// from `client`.
fn hashed_backend(snap: &Snapshot, client: [u8; 4], dcid: &[u8]) -> u32 {
    let mut cid = [0u8; 20];
    cid[..dcid.len()].copy_from_slice(dcid);
    let session = addr_hash(&ip_addr(IpAddr::V4(Ipv4Addr::from(client))));
    snap.maglev(maglev_slot(session, cid_hash(&cid, dcid.len())))
}

#[test]
fn initial_and_zero_rtt_share_the_hashed_backend() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let want = hashed_backend(&lb.tables, CLIENT4, &CLIENT_DCID);
    let initial = expect4(
        &mut lb,
        "Initial",
        50_000,
        long(0, &CLIENT_DCID, 1200),
        Reason::Forwarded,
    );
    assert_eq!(
        initial.backend_id, want,
        "Initial: consistent hash of the DCID"
    );
    assert_eq!(initial.key, cid_hash(&pad(&CLIENT_DCID), 20));
    let zero_rtt = expect4(
        &mut lb,
        "0-RTT",
        50_000,
        long(1, &CLIENT_DCID, 300),
        Reason::Forwarded,
    );
    assert_eq!(zero_rtt.backend_id, want, "0-RTT follows its Initial");
    assert_eq!(zero_rtt.session, initial.session);
}

#[test]
fn server_ids_pin_handshake_and_short_headers_whatever_the_client_address() {
    let mut lb = Loaded::new(TEST_CONFIG);
    for id in 1..=4 {
        let cid = server_cid(id);
        for sport in [1024, 40_000, 65_535] {
            let d = expect4(
                &mut lb,
                "Handshake",
                sport,
                long(2, &cid, 100),
                Reason::Forwarded,
            );
            assert_eq!(d.backend_id, id, "Handshake to server id {id}");
            let d = expect4(&mut lb, "1-RTT", sport, short(&cid, 40), Reason::Forwarded);
            assert_eq!(d.backend_id, id, "short header to server id {id}");
        }
        // Another client address (NAT rebinding): same backend.
        let mut spec = FrameSpec::udp4(VIP4, 7, QUIC_PORT, short(&cid, 40));
        if let crate::support::frames::Net::V4 { src, .. } = &mut spec.net {
            *src = [203, 0, 113, 99];
        }
        let d = expect_frame(&mut lb, "rebound", &spec.build(), Reason::Forwarded);
        assert_eq!(d.backend_id, id);
    }
    // Over IPv6 too; backend 4 has no IPv6 address, so its packets are dropped, not rerouted.
    for id in 1..=4 {
        let frame = FrameSpec::udp6(VIP6, 9, QUIC_PORT, short(&server_cid(id), 40)).build();
        let reason = if id == 4 {
            Reason::NoBackendAddress
        } else {
            Reason::Forwarded
        };
        assert_eq!(
            expect_frame(&mut lb, "1-RTT/v6", &frame, reason).backend_id,
            id
        );
    }
}

#[test]
fn a_server_id_naming_a_down_backend_falls_back_to_the_hash() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let cid = server_cid(3);
    let d = expect4(
        &mut lb,
        "backend 3 up",
        5,
        short(&cid, 40),
        Reason::Forwarded,
    );
    assert_eq!(d.backend_id, 3, "pinned while up");
    // Down, as the daemon writes it: out of the default table, and marked.
    lb.reweight(&[(1, 1), (2, 1), (3, 0), (4, 1)]);
    let mut down = lb.tables.backends[&3];
    down.flags |= backend_flags::DOWN;
    lb.maps.set_backend(3, &down).expect("mark backend 3 down");
    lb.tables.backends.insert(3, down);
    let d = expect4(
        &mut lb,
        "backend 3 down",
        5,
        short(&cid, 40),
        Reason::Rerouted,
    );
    assert_eq!(d.backend_id, hashed_backend(&lb.tables, CLIENT4, &cid));
    assert_ne!(d.backend_id, 3, "never to the down backend");
    let mut up = down;
    up.flags &= !backend_flags::DOWN;
    lb.maps.set_backend(3, &up).expect("mark backend 3 up");
    lb.tables.backends.insert(3, up);
    let d = expect4(
        &mut lb,
        "backend 3 up again",
        5,
        short(&cid, 40),
        Reason::Forwarded,
    );
    assert_eq!(d.backend_id, 3, "pinned again once up");
}

#[test]
fn unknown_server_ids_and_other_rotations_fall_back_to_the_hash() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let unknown = server_cid(99);
    let d = expect4(
        &mut lb,
        "unknown id",
        5,
        short(&unknown, 40),
        Reason::Rerouted,
    );
    assert_eq!(d.backend_id, hashed_backend(&lb.tables, CLIENT4, &unknown));
    for rotation in [2, 4, 7] {
        let layout = shardline_common::quic::CidLayout { rotation, ..LAYOUT };
        let cid = match rotation {
            7 => {
                let mut c = server_cid(3);
                c[0] |= 0xe0;
                c
            }
            _ => server_cid_in(layout, 3, 1),
        };
        let d = expect4(
            &mut lb,
            "other rotation",
            5,
            short(&cid, 40),
            Reason::Forwarded,
        );
        assert_eq!(
            d.backend_id,
            hashed_backend(&lb.tables, CLIENT4, &cid),
            "rotation {rotation} is not the current config's: hashed"
        );
    }
}

#[test]
fn server_only_and_bogus_packets_are_dropped_with_their_reason() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("Retry", retry(&CLIENT_SCID_PAD), Reason::QuicServerOnly),
        (
            "Version Negotiation",
            version_negotiation(&CLIENT_SCID_PAD),
            Reason::QuicServerOnly,
        ),
        ("empty datagram", Vec::new(), Reason::QuicMalformed),
        (
            "Initial cut after its DCID",
            long(0, &CLIENT_DCID, 1200)[..6 + 19].to_vec(),
            Reason::QuicMalformed,
        ),
        (
            "short header without its sample",
            short(&server_cid(1), 30)[..20].to_vec(),
            Reason::QuicMalformed,
        ),
        (
            "fixed bit clear (long)",
            flip_fixed_bit(long(2, &server_cid(1), 100)),
            Reason::QuicMalformed,
        ),
        (
            "fixed bit clear (short)",
            flip_fixed_bit(short(&server_cid(1), 40)),
            Reason::QuicMalformed,
        ),
        (
            "DCID length 21",
            long_prefix(0xc0, 1, &[0x42; 21])
                .into_iter()
                .chain([0; 40])
                .collect(),
            Reason::QuicMalformed,
        ),
        (
            "short header claiming 32 bytes",
            short(&[0x1f; 20], 40),
            Reason::QuicMalformed,
        ),
    ];
    for (name, payload, reason) in cases {
        expect4(&mut lb, name, 4242, payload, reason);
    }
    // A TCP packet to the quic port matches no service (quic services are UDP only).
    let tcp = FrameSpec::tcp4(VIP4, 999, QUIC_PORT).build();
    expect_frame(&mut lb, "tcp to the quic port", &tcp, Reason::NotService);
}

/// A client id long enough for server-only packets' DCID.
const CLIENT_SCID_PAD: [u8; 8] = crate::support::quic::CLIENT_SCID;

fn flip_fixed_bit(mut p: Vec<u8>) -> Vec<u8> {
    p[0] &= !0x40;
    p
}

fn pad(cid: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..cid.len()].copy_from_slice(cid);
    out
}

#[test]
fn a_reshard_moves_hashed_packets_but_not_pinned_ones() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let pinned = server_cid(2);
    // Drain backend 2 from the default table and place this client's quic session on {1, 3}.
    let mut config = Config::parse(TEST_CONFIG, "test").expect("valid");
    for b in &mut config.backends {
        if b.id == 2 {
            b.weight = 0;
        }
    }
    config.sessions.push(shardline::config::SessionConfig {
        service: "quic".into(),
        session: shardline::config::SessionId::Addr(Ipv4Addr::from(CLIENT4).into()),
        backends: vec![1, 3],
    });
    lb.tables = Snapshot::from_config(&config);
    let dataplane: &mut shardline::private::PrivateDataplane = &mut lb;
    dataplane
        .maps
        .apply(&dataplane.tables)
        .expect("apply the re-shard");
    let d = expect4(&mut lb, "pinned", 1, short(&pinned, 40), Reason::Forwarded);
    assert_eq!(d.backend_id, 2, "a drained backend keeps its connections");
    for n in 0..64u8 {
        let mut dcid = CLIENT_DCID;
        dcid[19] = n;
        let d = expect4(
            &mut lb,
            "Initial",
            2,
            long(0, &dcid, 1200),
            Reason::Forwarded,
        );
        assert!([1, 3].contains(&d.backend_id), "placed on {{1, 3}}: {d:?}");
    }
    let elsewhere = FrameSpec::udp4(VIP4, 3, QUIC_PORT, long(0, &CLIENT_DCID, 1200));
    let mut elsewhere = elsewhere;
    if let crate::support::frames::Net::V4 { src, .. } = &mut elsewhere.net {
        *src = [198, 51, 100, 7];
    }
    let d = expect_frame(&mut lb, "unplaced", &elsewhere.build(), Reason::Forwarded);
    assert_ne!(
        d.backend_id, 2,
        "backend 2 is drained from the default table"
    );
}

/// `shardline` hands a QUIC service's packet to the `shardline_quic` program (a tail call
/// through `QUIC_PROGRAM`). With that slot empty the packet is counted `quic_malformed` and
/// dropped, never routed undecided; other services' packets are still decided by the balancer.
#[test]
fn without_the_quic_program_quic_packets_are_dropped_and_counted_and_other_traffic_flows() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let initial = FrameSpec::udp4(VIP4, 50_000, QUIC_PORT, long(0, &CLIENT_DCID, 1200)).build();
    let header = FrameSpec::kv4(99, 7).build();
    // With the program in its slot: decided there, as the replay decides in one pass.
    expect_frame(
        &mut lb,
        "Initial, the QUIC program loaded",
        &initial,
        Reason::Forwarded,
    );
    expect_frame(&mut lb, "header mode", &header, Reason::Forwarded);

    let mut slot: ProgramArray<MapData> = lb.open_map("QUIC_PROGRAM").expect("open QUIC_PROGRAM");
    slot.clear_index(&0).expect("empty the QUIC program's slot");
    let (run, counted) = lb.run_counted(&initial);
    assert_eq!(counted, Reason::QuicMalformed, "counted {}", counted.name());
    assert_eq!(run.action, Action::Drop);
    assert_eq!(run.output, initial, "the frame is left as it came");
    expect_frame(
        &mut lb,
        "header mode, no QUIC program",
        &header,
        Reason::Forwarded,
    );
}
