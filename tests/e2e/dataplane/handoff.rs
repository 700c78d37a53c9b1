//! Handoff marking under `BPF_PROG_TEST_RUN`: in an open window, a moved key's packet reaches
//! its new owner with the previous owner (read from the handoff slot its placement names) in
//! the shardline header's flags byte and a valid UDP checksum; keys that stayed, expired
//! windows, placements without the window flag and flags naming a slot past the array are never
//! marked; the replay (snapshot and live maps) names the same mark.

use etherparse::{SlicedPacket, TransportSlice};
use shardline_common::{
    consts::MAX_HANDOFFS,
    handoff::{flag_of_slot, previous_of, Handoff, FLAGS_OFFSET},
    maps::{scheme, SessionKey, ShardSet},
    route::{decide, pick_shard},
    verdict::Reason,
};

use super::tunnelled;
use crate::support::{expect, frames::FrameSpec, hex, Loaded, TEST_CONFIG};

/// `kv`'s session 42 (service id 1) and `kv6`'s session 7 (service id 3) of `TEST_CONFIG`.
const KV42: SessionKey = SessionKey {
    service: 1,
    _pad: 0,
    session: 42,
};
const KV6_7: SessionKey = SessionKey {
    service: 3,
    _pad: 0,
    session: 7,
};

fn set(members: &[u32], generation: u64) -> ShardSet {
    ShardSet::from_members(members, scheme::HASH, generation).expect("a shard set")
}

/// Writes `previous` until `until_ns` into handoff slot `slot` and places `session` on
/// `current`, its window flag naming the slot if `flagged` (else 0: the slot is written all
/// the same); the snapshot holds the handoff only if `open` (its handoffs are those open now).
fn publish(
    lb: &mut Loaded,
    session: SessionKey,
    (previous, current): (&[u32], &[u32]),
    (slot, flagged): (u32, bool),
    until_ns: u64,
    open: bool,
) -> Handoff {
    let h = Handoff {
        until_ns,
        previous: set(previous, 10),
    };
    // A flag past the array names no slot: nothing to write.
    if slot < MAX_HANDOFFS {
        lb.maps
            .write_handoff_slots(&[slot], &[h])
            .expect("write HANDOFF_SLOTS");
    }
    let current = set(current, 11);
    let handoff = if flagged { flag_of_slot(slot) } else { 0 };
    lb.maps
        .place_session(&session, &ShardSet { handoff, ..current })
        .expect("write SESSIONS");
    lb.tables.sessions.insert(session, current);
    lb.tables.handoffs.remove(&session);
    if open {
        lb.tables.handoffs.insert(session, h);
    }
    h
}

/// The flags byte of the shardline header inside a tunnelled frame, and whether the inner UDP
/// checksum is valid (etherparse recomputes it over the inner packet).
fn inner_flags(output: &[u8], v6: bool) -> (u8, bool) {
    let outer = if v6 { 40 } else { 20 };
    let inner = SlicedPacket::from_ip(&output[14 + outer..]).expect("an inner IP packet");
    let Some(TransportSlice::Udp(udp)) = inner.transport else {
        panic!("inner packet is not UDP");
    };
    let payload = udp.payload();
    let valid = match &inner.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let h = udp.to_header();
            h.checksum == 0
                || h.calc_checksum_ipv4(&ip.header().to_header(), payload)
                    .map(|c| c == h.checksum)
                    .unwrap_or(false)
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            let h = udp.to_header();
            h.calc_checksum_ipv6(&ip.header().to_header(), payload)
                .map(|c| c == h.checksum)
                .unwrap_or(false)
        }
        _ => panic!("inner packet is not IP"),
    };
    (payload[FLAGS_OFFSET], valid)
}

/// Runs keys `0..n` of `session` and checks every one: forwarded as the replay says, marked
/// with its previous owner exactly when it moved. Returns (moved, stayed).
fn run_keys(
    lb: &mut Loaded,
    session: SessionKey,
    h: &Handoff,
    marking: bool,
    n: u64,
) -> (u32, u32) {
    let v6 = session == KV6_7;
    let (mut moved, mut stayed) = (0, 0);
    for key in 0..n {
        let spec = if v6 {
            FrameSpec::kv6(session.session, key)
        } else {
            FrameSpec::kv4(session.session, key)
        };
        let frame = spec.build();
        let name = format!("session {} key {key}", session.session);
        let (run, d) = expect(lb, &name, &frame, Reason::Forwarded);
        let live = decide(&frame[..], &lb.maps);
        assert_eq!(live, d, "{name}: live-map replay");
        let before = pick_shard(&h.previous, key).expect("previous owner");
        let (flags, checksum_ok) = inner_flags(&run.output, v6);
        assert!(
            checksum_ok,
            "{name}: inner UDP checksum; output {}",
            hex(&run.output)
        );
        if marking && before != d.backend_id {
            moved += 1;
            assert_eq!(
                previous_of(flags),
                Some(Some(before)),
                "{name}: moved from {before}"
            );
            // The whole frame: the client's request with the mark, checksum recomputed by
            // etherparse, tunnelled to the new owner.
            let mut want = spec.clone();
            want.payload[FLAGS_OFFSET] = flags;
            let flow_label = (d.key as u32) & 0xf_ffff;
            let want = tunnelled(&want.build(), 14, d.backend_id, flow_label);
            assert_eq!(hex(&run.output), hex(&want), "{name}: output bytes");
        } else {
            stayed += 1;
            assert_eq!(flags, 0, "{name}: not moved (or no window), not marked");
            assert_eq!(d.mark, 0, "{name}: replay mark");
        }
    }
    (moved, stayed)
}

#[test]
fn moved_keys_reach_their_new_owner_marked_with_the_previous_one() {
    let mut lb = Loaded::new(TEST_CONFIG);
    // 42 grows from [1, 2] to [1, 2, 3]: keys move onto 3 only.
    let h42 = publish(
        &mut lb,
        KV42,
        (&[1, 2], &[1, 2, 3]),
        (7, true),
        u64::MAX,
        true,
    );
    let (moved, stayed) = run_keys(&mut lb, KV42, &h42, true, 300);
    assert!(moved > 50 && stayed > 100, "moved {moved}, stayed {stayed}");
    // IPv6 (checksum mandatory), 7 shrinks from [1, 2, 3] to [2, 3]: keys move off 1. Its
    // handoff is in the array's last slot.
    let last = MAX_HANDOFFS - 1;
    let h = publish(
        &mut lb,
        KV6_7,
        (&[1, 2, 3], &[2, 3]),
        (last, true),
        u64::MAX,
        true,
    );
    let (moved, stayed) = run_keys(&mut lb, KV6_7, &h, true, 300);
    assert!(moved > 50 && stayed > 100, "moved {moved}, stayed {stayed}");
    // 42's slot is its own: 7's write left it as it was.
    let slot7 = lb.maps.handoffs().get(7).expect("read HANDOFF_SLOTS");
    assert_eq!(slot7, h42);
    let (moved, _) = run_keys(&mut lb, KV42, &slot7, true, 100);
    assert!(moved > 10, "42 still marked from slot 7: {moved}");
}

#[test]
fn no_mark_past_the_window_without_the_flag_or_past_the_array() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let cases = [
        // The daemon has not cleared it yet: the kernel reads the clock.
        ("the window closed", (3, true), 1),
        // A slot is read only through the placement's flag.
        ("no flag on the placement", (3, false), u64::MAX),
        // Maps an earlier writer left: the lookup finds nothing.
        ("a flag past the array", (MAX_HANDOFFS, true), u64::MAX),
    ];
    for (case, slot, until_ns) in cases {
        let h = publish(&mut lb, KV42, (&[1, 2], &[1, 2, 3]), slot, until_ns, false);
        // Every key: forwarded as the replay says, unmarked, the replay's mark 0.
        let (moved, stayed) = run_keys(&mut lb, KV42, &h, false, 100);
        assert_eq!((moved, stayed), (0, 100), "{case}");
    }
}
