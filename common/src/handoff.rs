//! Handoff marking: for a window after a re-shard, a header-mode packet whose key moved reaches
//! its new owner with the previous owner named in the shardline header's flags byte, so the
//! backend knows, without asking anyone, that it must pull the key's data and from whom.
//!
//! A session with an open window has [`ShardSet::handoff`] naming a slot of the `HANDOFF_SLOTS`
//! array ([`flag_of_slot`]), which holds a [`Handoff`] (its placement before the move and the
//! window's end). A session without one pays one compare of a word the placement lookup has
//! already loaded; only with the flag set does the dataplane read the slot (an array lookup the
//! verifier inlines: no helper call) and run [`pick_shard`] over the previous placement.
//!
//! Slots are written in place, so the daemon never writes a slot a packet may be reading: a
//! slot is written only while no placement names it, and one a placement stopped naming is
//! not written again for a quarantine far longer than any packet's run (the daemon's swap
//! stage keeps the rule).
//!
//! The mark ([`mark_for`]), on the wire (byte 3 of the shardline header, docs/handoff.md):
//!
//! | bits | meaning |
//! |---|---|
//! | `0x80` ([`MOVED`]) | the key moved to this backend in the session's last re-shard, whose window is open |
//! | `0x7f` ([`PREVIOUS_MASK`]) | the previous owner's backend id when below 127; [`PREVIOUS_UNKNOWN`] (127) for an id of 127 or more (ask the owners API) |
//!
//! Clients send the byte as 0. The dataplane writes it only on packets it marks (a client's
//! own `0x80` is not cleared), and keeps the UDP checksum valid by an incremental update.

use crate::{maps::ShardSet, partition::pick_shard};

/// Flags bit set on a packet whose key moved in the session's last re-shard.
pub const MOVED: u8 = 0x80;
/// Bits of the flags byte holding the previous owner's id (or [`PREVIOUS_UNKNOWN`]).
pub const PREVIOUS_MASK: u8 = 0x7f;
/// The id bits' value for a previous owner whose id does not fit them (127 or more): the
/// backend asks `GET /v1/sessions/{service}/{session}/owners?key=K` for it.
pub const PREVIOUS_UNKNOWN: u8 = PREVIOUS_MASK;
/// Offset of the flags byte in the shardline header.
pub const FLAGS_OFFSET: usize = 3;

/// [`ShardSet::handoff`] of a session whose window is open, its [`Handoff`] in `slot` of the
/// `HANDOFF_SLOTS` array (0 means no window).
#[inline(always)]
pub const fn flag_of_slot(slot: u32) -> u32 {
    slot + 1
}

/// The `HANDOFF_SLOTS` slot a [`ShardSet::handoff`] names; `None` without a window.
#[inline(always)]
pub const fn slot_of_flag(flag: u32) -> Option<u32> {
    flag.checked_sub(1)
}

/// Value of the `HANDOFF_SLOTS` array (index: a slot, [`slot_of_flag`]): a moved session's
/// placement before its last move, and when its window closes. A slot no window uses holds
/// `until_ns` 0 (closed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    /// `CLOCK_MONOTONIC` ns (the clock `bpf_ktime_get_ns` reads) after which no packet is
    /// marked, whether or not the daemon has cleared the window yet.
    pub until_ns: u64,
    /// The placement before the move (its `stats_slot` and `handoff` unused).
    pub previous: ShardSet,
}

impl Handoff {
    /// Whether the window is open at `now_ns`.
    #[inline(always)]
    pub const fn is_open(&self, now_ns: u64) -> bool {
        now_ns <= self.until_ns
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (a u64 then a ShardSet of 8-byte alignment).
unsafe impl aya::Pod for Handoff {}

/// The flags byte that names `previous` as the previous owner ([`MOVED`] and the id bits).
#[inline(always)]
pub const fn mark(previous: u32) -> u8 {
    if previous < PREVIOUS_UNKNOWN as u32 {
        MOVED | previous as u8
    } else {
        MOVED | PREVIOUS_UNKNOWN
    }
}

/// The mark of request `key`, which `owner` now owns, under the open handoff `h`: [`mark`] of
/// its previous owner when the key moved, 0 when it did not (or the previous set is empty).
#[inline(always)]
pub fn mark_for(h: &Handoff, key: u64, owner: u32) -> u8 {
    match pick_shard(&h.previous, key) {
        Some(previous) if previous != owner => mark(previous),
        _ => 0,
    }
}

/// The previous owner's id a mark names: `Some(None)` for [`PREVIOUS_UNKNOWN`] (ask the API),
/// `None` for an unmarked flags byte.
pub const fn previous_of(flags: u8) -> Option<Option<u32>> {
    if flags & MOVED == 0 {
        None
    } else if flags & PREVIOUS_MASK == PREVIOUS_UNKNOWN {
        Some(None)
    } else {
        Some(Some((flags & PREVIOUS_MASK) as u32))
    }
}

/// The UDP checksum after the flags byte of a header whose version byte is `version` changed
/// from `old` to `new` (RFC 1624's `HC' = ~(~HC + ~m + m')` over the 16-bit word version,
/// flags, which starts at an even offset from the UDP header). A zero checksum (IPv4: none
/// sent) stays zero; a result of zero is sent as `0xffff`, as UDP requires.
#[inline(always)]
pub const fn udp_checksum_after(checksum: u16, version: u8, old: u8, new: u8) -> u16 {
    if checksum == 0 {
        return 0;
    }
    let m = ((version as u32) << 8) | old as u32;
    let m2 = ((version as u32) << 8) | new as u32;
    let mut sum = (!checksum as u32 & 0xffff) + (!m & 0xffff) + m2;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let out = !sum as u16;
    if out == 0 {
        0xffff
    } else {
        out
    }
}

/// Whether placement `set` has a handoff window open (the flag the dataplane tests first).
#[inline(always)]
pub const fn window_flagged(set: &ShardSet) -> bool {
    set.handoff != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::scheme;

    fn set(members: &[u32]) -> ShardSet {
        ShardSet::from_members(members, scheme::HASH, 1).unwrap()
    }

    #[test]
    fn the_mark_names_small_ids_and_escapes_large_ones() {
        assert_eq!(mark(0), 0x80);
        assert_eq!(mark(5), 0x85);
        assert_eq!(mark(126), 0xfe);
        assert_eq!(mark(127), 0xff);
        assert_eq!(mark(4095), 0xff);
        assert_eq!(previous_of(0), None);
        assert_eq!(
            previous_of(0x05),
            None,
            "id bits without MOVED mean nothing"
        );
        assert_eq!(previous_of(0x85), Some(Some(5)));
        assert_eq!(previous_of(0xff), Some(None));
    }

    #[test]
    fn only_keys_that_moved_are_marked_with_their_previous_owner() {
        let h = Handoff {
            until_ns: 10,
            previous: set(&[1, 2]),
        };
        let current = set(&[1, 2, 3]);
        let (mut moved, mut kept) = (0, 0);
        for key in 0..2_000u64 {
            let owner = pick_shard(&current, key).unwrap();
            let before = pick_shard(&h.previous, key).unwrap();
            let m = mark_for(&h, key, owner);
            if owner == before {
                assert_eq!(m, 0, "key {key} stayed on {owner}");
                kept += 1;
            } else {
                assert_eq!(owner, 3, "growing moves keys onto the new member only");
                assert_eq!(previous_of(m), Some(Some(before)), "key {key}");
                moved += 1;
            }
        }
        assert!(moved > 400 && kept > 1_000, "moved {moved}, kept {kept}");
        assert!(h.is_open(10) && !h.is_open(11));
        let empty = Handoff::default();
        assert_eq!(
            mark_for(&empty, 7, 3),
            0,
            "an empty previous set marks nothing"
        );
    }

    /// The one's-complement sum of `bytes` as 16-bit big-endian words, folded.
    fn sum(bytes: &[u8]) -> u16 {
        let mut s: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn the_incremental_checksum_matches_a_full_recompute() {
        // A UDP header (checksum at 6) then a shardline header whose version sits at 8 + 2.
        for seed in 0..500u32 {
            let mut dgram: Vec<u8> = (0..40u32)
                .map(|i| (i.wrapping_mul(97) ^ seed.wrapping_mul(31)) as u8)
                .collect();
            dgram[8 + 2] = 1;
            dgram[8 + FLAGS_OFFSET] = 0;
            dgram[6..8].copy_from_slice(&[0, 0]);
            let full = |d: &[u8]| match !sum(d) {
                0 => 0xffff,
                c => c,
            };
            let before = full(&dgram);
            dgram[6..8].copy_from_slice(&before.to_be_bytes());
            let new = mark(seed % 200);
            let updated = udp_checksum_after(before, 1, 0, new);
            dgram[8 + FLAGS_OFFSET] = new;
            dgram[6..8].copy_from_slice(&[0, 0]);
            let want = full(&dgram);
            // 0x0000 and 0xffff are the same one's-complement number; UDP sends 0xffff.
            assert_eq!(updated, want, "seed {seed}");
        }
        assert_eq!(
            udp_checksum_after(0, 1, 0, 0x85),
            0,
            "no checksum stays none"
        );
    }
}
