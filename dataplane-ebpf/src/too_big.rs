//! Answers a client packet that would not fit the egress link once encapsulated, as Katran
//! does: the frame is cut to its L2 header and the quote ([`shardline_common::mtu`]: the IPv4
//! header and 8 octets, or as much of the IPv6 packet as fits in 1280), grown at the head by a
//! new IP and ICMP header, and sent back with `XDP_TX` from the VIP to the client: ICMP
//! "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big" (type 2), carrying
//! [`next_hop_mtu`]. Checksums are computed afresh. The quote is summed before the frame is
//! cut, through one bounds check over the longest quote (a packet is only answered when it is
//! that long, [`shortest_answered`](shardline_common::mtu::shortest_answered)): an IPv4 quote
//! in a loop of 17 words with no branch, an IPv6 one (1232 bytes) by `bpf_csum_diff`.
//!
//! After both adjustments the frame reads: `HEAD` new octets, the old L2 header, the quote.
//! The new L2 header is the old one with the MACs swapped, written at offset 0; the new IP and
//! ICMP headers follow it and end exactly where the quote starts (`HEAD` is their length), so
//! the old L2 header is read whole before anything is written over it.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use shardline_common::{
    checksum::ipv4_header_checksum_words,
    consts::{
        icmp_type, icmpv6_type, ECHO_REPLY_TTL, ETH_HLEN, ICMP_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPV4_HLEN, IPV6_HLEN, VLAN_HLEN,
    },
    maps::Globals,
    mtu::{next_hop_mtu, quote_len_v4, ICMPV6_QUOTE_MAX, QUOTE_MAX_V4},
    route::Decision,
};

use crate::packet::{Span, XdpPacket};

/// Why an answer could not be written (counted as `encap_failed`: the frame could not be
/// resized).
pub struct TooBigFailed;

/// Frag-code 4 of ICMP destination unreachable: fragmentation needed and DF set.
const FRAG_NEEDED: u8 = 4;

/// Turns the packet `d` describes into its "fragmentation needed" / "packet too big" answer,
/// reporting what fits the egress MTU once encapsulated (40 octets for IPv4 when some backend
/// has only IPv6, `Globals::too_big_outer_v6`).
#[inline(always)]
pub fn reply(ctx: &XdpContext, d: &Decision, g: &Globals) -> Result<(), TooBigFailed> {
    const PLAIN: u32 = ETH_HLEN as u32;
    const TAGGED: u32 = (ETH_HLEN + VLAN_HLEN) as u32;
    let mtu = next_hop_mtu(g.egress_mtu, g.too_big_outer_v6(d.v6));
    match (d.l3_off, d.v6) {
        (PLAIN, false) => reply_v4::<ETH_HLEN>(ctx, mtu),
        (PLAIN, true) => reply_v6::<ETH_HLEN>(ctx, mtu),
        (TAGGED, false) => reply_v4::<{ ETH_HLEN + VLAN_HLEN }>(ctx, mtu),
        (TAGGED, true) => reply_v6::<{ ETH_HLEN + VLAN_HLEN }>(ctx, mtu),
        _ => Err(TooBigFailed),
    }
}

/// ICMP type 3 code 4 quoting the IPv4 header and 8 octets.
#[inline(always)]
fn reply_v4<const L2: usize>(ctx: &XdpContext, mtu: u32) -> Result<(), TooBigFailed> {
    const HEAD: usize = IPV4_HLEN + ICMP_HLEN;
    let ip = XdpPacket(ctx)
        .span(0, L2 + QUOTE_MAX_V4)
        .ok_or(TooBigFailed)?;
    // SAFETY: inside the L2 + 68 bytes checked above.
    let [vihl, _] = unsafe { ip.u16(L2) }.to_ne_bytes();
    let quote = quote_len_v4(((vihl & 0x0f) as usize) * 4);
    // SAFETY: as above; the quote lies at L2, at most 68 bytes.
    let quoted = unsafe { sum_quote::<L2, { QUOTE_MAX_V4 / 4 }>(ip, quote / 4) };
    resize(ctx, L2 + quote, HEAD)?;
    let f = XdpPacket(ctx)
        .span(0, HEAD + L2 + IPV4_HLEN)
        .ok_or(TooBigFailed)?;
    let total = ((HEAD + quote) as u16).to_be_bytes();
    let mtu = (mtu as u16).to_be_bytes();
    // SAFETY: every offset below lies inside the HEAD + L2 + 20 bytes checked above.
    unsafe {
        let (vip, client) = (f.u32(HEAD + L2 + 16), f.u32(HEAD + L2 + 12));
        turn_l2::<L2, HEAD>(f);
        let icmp = [
            u32::from_ne_bytes([icmp_type::DEST_UNREACH, FRAG_NEEDED, 0, 0]),
            u32::from_ne_bytes([0, 0, mtu[0], mtu[1]]),
        ];
        let sum = fold(quoted + sum_words(&icmp)).to_ne_bytes();
        f.set_u32(
            L2 + IPV4_HLEN,
            u32::from_ne_bytes([icmp_type::DEST_UNREACH, FRAG_NEEDED, sum[0], sum[1]]),
        );
        f.set_u32(L2 + IPV4_HLEN + 4, icmp[1]);
        let mut words = [
            u32::from_ne_bytes([0x45, 0, total[0], total[1]]),
            0,
            u32::from_ne_bytes([ECHO_REPLY_TTL, IPPROTO_ICMP, 0, 0]),
            vip,
            client,
        ];
        let check = ipv4_header_checksum_words(words).to_ne_bytes();
        words[2] = u32::from_ne_bytes([ECHO_REPLY_TTL, IPPROTO_ICMP, check[0], check[1]]);
        let mut i = 0;
        while i < 5 {
            f.set_u32(L2 + 4 * i, words[i]);
            i += 1;
        }
    }
    Ok(())
}

/// ICMPv6 type 2 quoting as much of the IPv6 packet as fits in 1280 octets.
#[inline(always)]
fn reply_v6<const L2: usize>(ctx: &XdpContext, mtu: u32) -> Result<(), TooBigFailed> {
    const HEAD: usize = IPV6_HLEN + ICMP_HLEN;
    let quote = ICMPV6_QUOTE_MAX;
    let ip = XdpPacket(ctx).span(0, L2 + quote).ok_or(TooBigFailed)?;
    // Summed by the kernel (`bpf_csum_diff`, at most 512 bytes a call): a 308-word loop, walked
    // on every path that reaches it, made the program too large to verify.
    let mut quoted = 0u64;
    let mut at = 0;
    while at < quote {
        let len = if quote - at < 512 { quote - at } else { 512 };
        // SAFETY: the `len` bytes at L2 + at lie inside the L2 + 1232 bytes checked above;
        // the helper only reads them.
        let partial = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                ip.addr(L2 + at) as *mut u32,
                len as u32,
                0,
            )
        };
        if partial < 0 {
            return Err(TooBigFailed);
        }
        let partial = partial as u32;
        quoted += u64::from(partial & 0xffff) + u64::from(partial >> 16);
        at += 512;
    }
    resize(ctx, L2 + quote, HEAD)?;
    let f = XdpPacket(ctx)
        .span(0, HEAD + L2 + IPV6_HLEN)
        .ok_or(TooBigFailed)?;
    let len = ((ICMP_HLEN + quote) as u32).to_be();
    // SAFETY: every offset below lies inside the HEAD + L2 + 40 bytes checked above.
    unsafe {
        // The quoted header's source (the client) and destination (the VIP), as 8 words.
        let mut addrs = [0u32; 8];
        let mut i = 0;
        while i < 8 {
            addrs[i] = f.u32(HEAD + L2 + 8 + 4 * i);
            i += 1;
        }
        turn_l2::<L2, HEAD>(f);
        let icmp = [
            u32::from_ne_bytes([icmpv6_type::PACKET_TOO_BIG, 0, 0, 0]),
            mtu.to_be(),
        ];
        // Pseudo-header: both addresses, the upper-layer length, the next header.
        let pseudo = sum_words(&addrs) + sum_words(&[len, u32::from(IPPROTO_ICMPV6).to_be()]);
        let sum = fold(pseudo + quoted + sum_words(&icmp));
        let sum = sum.to_ne_bytes();
        f.set_u32(
            L2 + IPV6_HLEN,
            u32::from_ne_bytes([icmpv6_type::PACKET_TOO_BIG, 0, sum[0], sum[1]]),
        );
        f.set_u32(L2 + IPV6_HLEN + 4, icmp[1]);
        let plen = ((ICMP_HLEN + quote) as u16).to_be_bytes();
        f.set_u32(L2, 0x6000_0000u32.to_be());
        f.set_u32(
            L2 + 4,
            u32::from_ne_bytes([plen[0], plen[1], IPPROTO_ICMPV6, ECHO_REPLY_TTL]),
        );
        // From the VIP (the quote's destination) to the client (its source).
        let mut i = 0;
        while i < 4 {
            f.set_u32(L2 + 8 + 4 * i, addrs[4 + i]);
            f.set_u32(L2 + 24 + 4 * i, addrs[i]);
            i += 1;
        }
    }
    Ok(())
}

/// Cuts the frame to `keep` octets, then grows it by `head` at the front. The cut is measured
/// from the whole frame's end: a multi-buffer (jumbo) frame loses its fragments first, then the
/// rest of its linear part.
#[inline(always)]
fn resize(ctx: &XdpContext, keep: usize, head: usize) -> Result<(), TooBigFailed> {
    // SAFETY: plain helper calls on the program's own context.
    let whole = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    let delta = keep as i32 - whole;
    // SAFETY: as above.
    let (tail, front) = unsafe {
        (
            bpf_xdp_adjust_tail(ctx.ctx, delta),
            bpf_xdp_adjust_head(ctx.ctx, -(head as i32)),
        )
    };
    if tail == 0 && front == 0 {
        Ok(())
    } else {
        Err(TooBigFailed)
    }
}

/// Writes the old L2 header (at `HEAD`) at offset 0 with its MACs swapped: the answer goes back
/// where the packet came from, VLAN tag and EtherType kept.
///
/// # Safety
/// `f` must cover `HEAD + L2` bytes.
#[inline(always)]
unsafe fn turn_l2<const L2: usize, const HEAD: usize>(f: Span) {
    unsafe {
        let (ours_lo, ours_hi) = (f.u32(HEAD), f.u16(HEAD + 4));
        let (theirs_lo, theirs_hi) = (f.u16(HEAD + 6), f.u32(HEAD + 8));
        let tag = if L2 == ETH_HLEN { 0 } else { f.u32(HEAD + 12) };
        let ethertype = f.u16(HEAD + L2 - 2);
        f.set_u16(0, theirs_lo);
        f.set_u32(2, theirs_hi);
        f.set_u32(6, ours_lo);
        f.set_u16(10, ours_hi);
        if L2 != ETH_HLEN {
            f.set_u32(12, tag);
        }
        f.set_u16(L2 - 2, ethertype);
    }
}

/// The unfolded sum of the first `words` of the `MAX` words at `L2`: every word is read, those
/// past `words` masked out without a branch.
///
/// # Safety
/// `f` must cover `L2 + 4 * MAX` bytes.
#[inline(always)]
unsafe fn sum_quote<const L2: usize, const MAX: usize>(f: Span, words: usize) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < MAX {
        // All ones while i < words (both far below 2^31), zero after.
        let mask = 0u32.wrapping_sub(((i as u32).wrapping_sub(words as u32)) >> 31);
        let w = unsafe { f.u32(L2 + 4 * i) } & mask;
        sum += u64::from(w & 0xffff) + u64::from(w >> 16);
        i += 1;
    }
    sum
}

/// The unfolded sum of `words` as 16-bit halves in memory order.
#[inline(always)]
fn sum_words<const N: usize>(words: &[u32; N]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < N {
        sum += u64::from(words[i] & 0xffff) + u64::from(words[i] >> 16);
        i += 1;
    }
    sum
}

/// The checksum of an unfolded sum: folded to 16 bits and complemented, in memory order.
#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
