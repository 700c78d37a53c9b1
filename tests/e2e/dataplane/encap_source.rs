//! Fixtures: IPIP sources from a prefix (`encap.source_v4_prefix`, Katran's `IPIP_V4_PREFIX`).
//! Every tunnelled IPv4 packet leaves from an address of the prefix picked by its hash: the
//! kernel's choice must be the replay's (common code on both sides), one flow must keep one
//! source, and different flows must spread over the prefix. IP6IP6 and L2 DSR are untouched.

use std::collections::HashSet;

use rand::{rngs::StdRng, SeedableRng};
use shardline_common::{
    hash::encap_source_hash,
    route::{decide, Decision},
    verdict::Reason,
};

use crate::support::{
    agrees,
    frames::{FrameSpec, Transport, DNS_PORT, L2_PORT, VIP4, VIP4_L2, WEB_PORT},
    hex,
    outer::Expected,
    random, Loaded, TEST_CONFIG,
};

/// `TEST_CONFIG` with IPIP sources from 172.16.0.0/16 (its `source_v4` left in: the prefix wins).
fn prefixed() -> String {
    TEST_CONFIG.replacen(
        "[encap]\n",
        "[encap]\nsource_v4_prefix = \"172.16.0.0/16\"\n",
        1,
    )
}

/// The source [`outer_src4`](shardline_common::encap::outer_src4) must give
/// for a /16, worked out here from the hash alone: the prefix's two octets, then the hash's
/// bits 16-31 in memory order.
fn by_hand(d: &Decision) -> [u8; 4] {
    let h = encap_source_hash(d.session.session, d.key) as u32;
    [172, 16, (h >> 16) as u8, (h >> 24) as u8]
}

/// Runs `frame` through the kernel: forwarded as the replay says, bytes checked field by field
/// against the prefixed configuration, and the outer source is [`by_hand`]'s. Returns it.
fn source_of(lb: &mut Loaded, name: &str, frame: &[u8]) -> [u8; 4] {
    let want = Expected::of_snapshot(&lb.tables);
    assert_eq!(
        want.src4_hash_mask,
        [0, 0, 255, 255],
        "the prefix reached the tables"
    );
    let (run, counted) = lb.run_counted(frame);
    let d = decide(frame, &lb.tables);
    assert_eq!(
        counted,
        Reason::Forwarded,
        "{name}: kernel counted {}",
        counted.name()
    );
    if let Err(e) = agrees(&want, frame, &run, &d) {
        panic!("{name}: {e}; frame {}", hex(frame));
    }
    let source: [u8; 4] = run.output[14 + 12..14 + 16].try_into().unwrap();
    assert_eq!(source, by_hand(&d), "{name}: outer source");
    source
}

/// Asserts `sources` (one per flow) are spread: at most one pair of `n` flows shares a source.
fn assert_spread(what: &str, sources: &[[u8; 4]]) {
    let distinct: HashSet<_> = sources.iter().collect();
    assert!(
        distinct.len() + 1 >= sources.len(),
        "{what}: {} flows left from {} sources: {sources:?}",
        sources.len(),
        distinct.len()
    );
}

#[test]
fn header_mode_requests_leave_from_the_prefix_by_their_key() {
    let mut lb = Loaded::new(&prefixed());
    let mut sources = Vec::new();
    for key in [0, 1, 2, 3, 0xdead_beef, 1 << 40, u64::MAX, 77] {
        let frame = FrameSpec::kv4(42, key).build();
        let name = format!("kv4 session 42 key {key}");
        let first = source_of(&mut lb, &name, &frame);
        assert_eq!(source_of(&mut lb, &name, &frame), first, "{name}: again");
        sources.push(first);
    }
    assert_spread("kv4 keys", &sources);
    // The same key in another session is another flow.
    let other = source_of(&mut lb, "kv4 session 43", &FrameSpec::kv4(43, 0).build());
    assert_ne!(other, sources[0], "session 43 key 0 vs session 42 key 0");
}

#[test]
fn a_flow_mode_connection_keeps_one_source_and_connections_spread() {
    let mut lb = Loaded::new(&prefixed());
    let mut sources = Vec::new();
    for sport in [1024, 1025, 2000, 33_333, 40_000, 50_001, 60_000, 65_535] {
        let syn = FrameSpec::tcp4(VIP4, sport, WEB_PORT);
        let mut ack = syn.clone();
        if let Transport::Tcp { syn, .. } = &mut ack.transport {
            *syn = false;
        }
        let name = format!("web from port {sport}");
        let first = source_of(&mut lb, &name, &syn.build());
        assert_eq!(
            source_of(&mut lb, &name, &ack.build()),
            first,
            "{name}: its ACK"
        );
        sources.push(first);
    }
    assert_spread("web connections", &sources);
    let dns: Vec<_> = (0..8)
        .map(|i| {
            let frame = FrameSpec::udp4(VIP4, 5000 + i, DNS_PORT, b"query".to_vec()).build();
            source_of(&mut lb, &format!("dns from port {}", 5000 + i), &frame)
        })
        .collect();
    assert_spread("dns flows", &dns);
}

#[test]
fn ip6ip6_and_l2_dsr_ignore_the_ipv4_prefix() {
    let mut lb = Loaded::new(&prefixed());
    let want = Expected::of_snapshot(&lb.tables);
    for (name, frame) in [
        ("kv6", FrameSpec::kv6(7, 5).build()),
        (
            "l2dsr",
            FrameSpec::udp4(VIP4_L2, 999, L2_PORT, b"x".to_vec()).build(),
        ),
    ] {
        let (run, counted) = lb.run_counted(&frame);
        assert_eq!(counted, Reason::Forwarded, "{name}");
        let d = decide(&frame[..], &lb.tables);
        if let Err(e) = agrees(&want, &frame, &run, &d) {
            panic!("{name}: {e}; frame {}", hex(&frame));
        }
    }
}

#[test]
fn kernel_and_replay_agree_on_prefixed_sources_of_random_packets() {
    let mut lb = Loaded::new(&prefixed());
    random::add_edge_cases(&mut lb);
    let want = Expected::of_snapshot(&lb.tables);
    let mut rng = StdRng::seed_from_u64(0xac10_0000);
    let mut failures = Vec::new();
    let mut tunnelled4 = HashSet::new();
    for i in 0..3_000 {
        let frame = random::frame(&mut rng);
        let d = decide(&frame[..], &lb.tables);
        let k = lb.run(&frame);
        if let Err(e) = agrees(&want, &frame, &k, &d) {
            failures.push(format!("packet {i}: {e}\n  frame {}", hex(&frame)));
        } else if d.reason.forwards() && !d.v6 && k.output.len() == frame.len() + 20 {
            tunnelled4.insert(want.ipip_source(&d));
        }
    }
    assert!(
        failures.is_empty(),
        "{} packets disagree; the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    assert!(
        tunnelled4.len() > 100,
        "the random run tunnelled IPv4 from only {} sources",
        tunnelled4.len()
    );
}
