//! Handoff marking, the kernel side (`shardline_common::handoff`): the previous placements of
//! sessions whose handoff window is open, and the mark written into a moved key's packet.
//!
//! Off the hot path by construction: `MapTables` calls [`mark`] when the placement it has just
//! read is found, and [`mark`] goes further only when that placement carries the window flag.
//! A session without an open window pays one compare. The mark is written into the packet in
//! the same subprogram, so the rest of the program never branches on it (a branch there
//! doubles the verifier's states for everything after it).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::Array, programs::XdpContext};
use shardline_common::{
    consts::{MAX_HANDOFFS, UDP_HLEN},
    handoff::{mark_for, slot_of_flag, udp_checksum_after, Handoff, FLAGS_OFFSET},
};

use crate::packet::XdpPacket;

/// Previous placements of moved sessions whose handoff window is open, by slot (the
/// placement's `handoff` flag names it): the daemon writes a slot before the `SESSIONS` update
/// that names it, and writes it again only after a quarantine since the last placement naming
/// it was replaced, so no packet reads a slot while it is written. An array: the verifier
/// inlines its lookup (no helper call), and the daemon writes a tick's slots in place, with
/// none of a hash map's element allocation and freeing per write.
#[map]
pub static HANDOFF_SLOTS: Array<Handoff> = Array::pinned(MAX_HANDOFFS, 0);

/// Bound on the offset of the UDP header a mark is written behind: far below the verifier's
/// 64 KiB packet-offset limit (a bounds check on a pointer that may reach it gives the
/// pointer no range), far above any real header's.
const MAX_UDP_OFF: usize = 16_384;

/// The mark of request `key`, now owned by `owner` (`Tables::handoff_mark`), written into
/// the shardline header at `at`; `flag` is the placement's window flag: 0 without a window,
/// and no lookup.
#[inline(always)]
pub fn mark(ctx: &XdpContext, flag: u32, (key, owner): (u64, u32), at: usize) -> u8 {
    let Some(slot) = slot_of_flag(flag) else {
        return 0;
    };
    mark_in_window(ctx, slot, key, u64::from(owner) | (at as u64) << 32)
}

/// The lookup, the clock, the previous placement's owner and the write: a subprogram of its
/// own, which only sessions in a window run. `owner_at` is the owner in its low word and the
/// header's offset (a packet offset, far below 2^32) in its high word: one register fewer live
/// across the shard pick keeps this frame at 32 bytes, which with the program's own stays
/// within the verifier's 512 (a 40-byte frame here made 528).
fn mark_in_window(ctx: &XdpContext, slot: u32, key: u64, owner_at: u64) -> u8 {
    // An index past the array finds nothing.
    let Some(h) = HANDOFF_SLOTS.get(slot) else {
        return 0;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !h.is_open(now) {
        return 0;
    }
    let (owner, at) = (owner_at as u32, (owner_at >> 32) as usize);
    let mark = mark_for(h, key, owner);
    if mark == 0 || write_mark(ctx, at, mark).is_none() {
        return 0;
    }
    mark
}

/// Writes `mark` into the flags byte of the shardline header at `at`, keeping the UDP checksum
/// valid (RFC 1624); `None` if the header is not where it should be (never, for a header the
/// decision parsed).
#[inline(always)]
fn write_mark(ctx: &XdpContext, at: usize, mark: u8) -> Option<()> {
    let udp = at.wrapping_sub(UDP_HLEN);
    if udp >= MAX_UDP_OFF {
        return None;
    }
    // The UDP header and the shardline header's first four bytes (magic, version, flags).
    let span = XdpPacket(ctx).span(udp, UDP_HLEN + FLAGS_OFFSET + 1)?;
    // SAFETY: offsets 6..8 and 10..12, inside the 12 bytes checked above.
    unsafe {
        let checksum = u16::from_be(span.u16(6));
        let [version, old] = span.u16(UDP_HLEN + 2).to_ne_bytes();
        span.set_u16(6, udp_checksum_after(checksum, version, old, mark).to_be());
        span.set_u16(UDP_HLEN + 2, u16::from_ne_bytes([version, mark]));
    }
    Some(())
}
