//! Rewrites a routed packet for its backend: IPIP / IP6IP6 encapsulation (Katran's way: the
//! backend decapsulates and answers the client directly), IPv4-in-IPv6 for an IPv4 packet to a
//! backend with only IPv6 (the IP6IP6 writer, next header 4), or a MAC rewrite for L2 DSR.
//!
//! The outer family is [`outer_v6`]'s. An IPv4 packet takes one path whichever it gets: the
//! IPIP header is written, then the IPv6 one over it (and over the inner header's first 20
//! octets, which an IPIP packet keeps) word by word through a mask that is all ones for
//! IPv4-in-IPv6 and zero for IPIP; the growth and the EtherType are selected the same way. A
//! branch on the backend's family would have the verifier walk the rest of the program twice
//! for every IPv4 state (about 100,000 instructions more).
//!
//! Headers are read and written a word at a time through one bounds-checked [`Span`] each: the
//! eBPF backend turns `[u8; N]` copies into one load and one store per byte, which made the
//! rewrite the costliest part of a forwarded packet.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use shardline_common::{
    checksum::ipv4_header_checksum_words,
    consts::{
        ENCAP_TTL, ETH_HLEN, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN,
        VLAN_HLEN,
    },
    encap::outer_v6,
    maps::{forward_mode, Backend, Globals},
    route::Decision,
};

use crate::{
    maps::BACKENDS,
    packet::{Span, XdpPacket},
};

/// Why a rewrite failed (counted as `encap_failed`).
pub struct RewriteFailed;

/// Rewrites the packet for `d.backend_id` as its service says.
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, d: &Decision, g: &Globals) -> Result<(), RewriteFailed> {
    let backend = BACKENDS.get(d.backend_id).ok_or(RewriteFailed)?;
    if d.service.forward == forward_mode::L2DSR {
        return rewrite_l2(ctx, backend);
    }
    if d.l3_off as usize == ETH_HLEN + VLAN_HLEN {
        encap_with_l2::<{ ETH_HLEN + VLAN_HLEN }>(ctx, d, g, backend)
    } else {
        encap_with_l2::<ETH_HLEN>(ctx, d, g, backend)
    }
}

/// What the encapsulated frame's L2 header keeps of the old one: our MAC (the destination it
/// was sent to) and the bytes after the source MAC (the VLAN tag as it was, and the EtherType:
/// the inner packet's, or IPv6's for IPv4-in-IPv6).
struct OldL2 {
    our_mac_lo: u32,
    our_mac_hi: u16,
    /// Bytes 12..L2 as words: `tail16` (the EtherType) always, `tail32` only with a VLAN tag
    /// (bytes 12..16).
    tail16: u16,
    tail32: u32,
}

/// Encapsulates the packet towards `backend`, keeping its L2 header (and VLAN tag).
#[inline(always)]
fn encap_with_l2<const L2: usize>(
    ctx: &XdpContext,
    d: &Decision,
    g: &Globals,
    backend: &Backend,
) -> Result<(), RewriteFailed> {
    // All ones when an IPv4 packet goes IPv4-in-IPv6 (its backend has only IPv6), else zero:
    // what selects the outer header's length, EtherType and words below without a branch.
    let four_in_six = 0u32.wrapping_sub(u32::from(outer_v6(d.v6, backend.flags) & !d.v6));
    // One check covers the L2 header and the inner IP header's first two bytes.
    let old = XdpPacket(ctx).span(0, L2 + 2).ok_or(RewriteFailed)?;
    // SAFETY: every offset below lies inside the L2 + 2 bytes checked above.
    let (l2, inner) = unsafe {
        // The inner packet's EtherType (in memory order), IPv6's for IPv4-in-IPv6.
        let ethertype = old.u16(L2 - 2);
        let ipv6 = ETH_P_IPV6.to_be();
        let l2 = OldL2 {
            our_mac_lo: old.u32(0),
            our_mac_hi: old.u16(4),
            tail16: ethertype ^ ((ethertype ^ ipv6) & four_in_six as u16),
            tail32: if L2 == ETH_HLEN { 0 } else { old.u32(12) },
        };
        // First two bytes of the inner IP header: IPv4 version/IHL and TOS, or the IPv6
        // version and traffic class, in memory order.
        (l2, old.u16(L2).to_ne_bytes())
    };
    let ip_len = d.ip_len as usize;
    // The length field must fit: IPv4's total length counts the outer header, IPv6's payload
    // length is the inner packet.
    let (outer_len, too_long) = if d.v6 {
        (IPV6_HLEN, ip_len > u16::MAX as usize)
    } else {
        let ipip = IPV4_HLEN & !four_in_six as usize;
        (IPV6_HLEN - ipip, ip_len + ipip > u16::MAX as usize)
    };
    if too_long {
        return Err(RewriteFailed);
    }
    grow(ctx, outer_len)?;
    // L2 + 40 octets whatever was added: an IPIP packet's inner header follows its 20.
    let out = XdpPacket(ctx)
        .span(0, L2 + IPV6_HLEN)
        .ok_or(RewriteFailed)?;
    // SAFETY: the writes below stay inside the L2 + 40 bytes checked just above.
    unsafe {
        write_l2::<L2>(out, &l2, backend);
        if d.v6 {
            let traffic_class = ((u16::from_be_bytes(inner) >> 4) & 0xff) as u8;
            write_ipv6_outer::<L2>(out, d, g, backend, traffic_class, u32::MAX);
        } else {
            // IPIP's header, then IPv4-in-IPv6's written over it and the inner header's
            // first 20 octets (which follow it) when `four_in_six`: one writer for both.
            let src = shardline_common::encap::outer_src4(g, d.session.session, d.key);
            write_ipv4_outer::<L2>(out, ip_len, src, backend, inner[1]);
            write_ipv6_outer::<L2>(out, d, g, backend, inner[1], four_in_six);
        }
    }
    Ok(())
}

/// New L2 header: the backend's next hop as destination, our MAC as source, the rest as it was.
///
/// # Safety
/// `out` must cover at least `L2` bytes.
#[inline(always)]
unsafe fn write_l2<const L2: usize>(out: Span, old: &OldL2, backend: &Backend) {
    let (mac_lo, mac_hi) = backend_mac(backend);
    unsafe {
        out.set_u32(0, mac_lo);
        out.set_u16(4, mac_hi);
        out.set_u32(6, old.our_mac_lo);
        out.set_u16(10, old.our_mac_hi);
        if L2 != ETH_HLEN {
            out.set_u32(12, old.tail32);
        }
        out.set_u16(L2 - 2, old.tail16);
    }
}

/// The backend's MAC as a word and a half-word in memory order.
#[inline(always)]
fn backend_mac(backend: &Backend) -> (u32, u16) {
    let m = backend.mac;
    (
        u32::from_ne_bytes([m[0], m[1], m[2], m[3]]),
        u16::from_ne_bytes([m[4], m[5]]),
    )
}

/// The outer IPv4 header (no options, DF clear, id 0) after `L2`, from `src` (the native word
/// of [`shardline_common::encap::outer_src4`]).
///
/// # Safety
/// `out` must cover at least `L2 + IPV4_HLEN` bytes.
#[inline(always)]
unsafe fn write_ipv4_outer<const L2: usize>(
    out: Span,
    ip_len: usize,
    src: u32,
    backend: &Backend,
    tos: u8,
) {
    let total = ((ip_len + IPV4_HLEN) as u16).to_be_bytes();
    let mut words = [
        u32::from_ne_bytes([0x45, tos, total[0], total[1]]),
        0,
        u32::from_ne_bytes([ENCAP_TTL, IPPROTO_IPIP, 0, 0]),
        src,
        u32::from_ne_bytes(backend.addr4),
    ];
    let sum = ipv4_header_checksum_words(words).to_ne_bytes();
    words[2] = u32::from_ne_bytes([ENCAP_TTL, IPPROTO_IPIP, sum[0], sum[1]]);
    let mut i = 0;
    while i < 5 {
        unsafe { out.set_u32(L2 + 4 * i, words[i]) };
        i += 1;
    }
}

/// The outer IPv6 header after `L2`, written where `write` is all ones (every word is written
/// or kept whole): IP6IP6 (`write` all ones, a constant that folds the blend away) or
/// IPv4-in-IPv6 (`write` all ones for an IPv4 packet to a backend with only IPv6, zero for
/// one that goes IPIP). The next header follows (IPv4 when `write` is not a constant, else
/// IPv6); the flow label carries the request key's entropy for ECMP on the way to the backend.
///
/// # Safety
/// `out` must cover at least `L2 + IPV6_HLEN` bytes.
#[inline(always)]
unsafe fn write_ipv6_outer<const L2: usize>(
    out: Span,
    d: &Decision,
    g: &Globals,
    backend: &Backend,
    traffic_class: u8,
    write: u32,
) {
    let label = (d.key as u32) & 0x000f_ffff;
    let first = 0x6000_0000u32 | (u32::from(traffic_class) << 20) | label;
    let len = (d.ip_len as u16).to_be_bytes();
    let next_header = if d.v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
    let blend = |at: usize, word: u32| unsafe {
        out.set_u32(at, (out.u32(at) & !write) | (word & write));
    };
    blend(L2, first.to_be());
    blend(
        L2 + 4,
        u32::from_ne_bytes([len[0], len[1], next_header, ENCAP_TTL]),
    );
    let mut i = 0;
    while i < 4 {
        let (s, b) = (&g.src6, &backend.addr6);
        let j = 4 * i;
        blend(
            L2 + 8 + j,
            u32::from_ne_bytes([s[j], s[j + 1], s[j + 2], s[j + 3]]),
        );
        blend(
            L2 + 24 + j,
            u32::from_ne_bytes([b[j], b[j + 1], b[j + 2], b[j + 3]]),
        );
        i += 1;
    }
}

/// Rewrites only the MACs, for a backend on this L2 segment that holds the VIP itself.
#[inline(always)]
fn rewrite_l2(ctx: &XdpContext, backend: &Backend) -> Result<(), RewriteFailed> {
    let eth = XdpPacket(ctx).span(0, 12).ok_or(RewriteFailed)?;
    let (mac_lo, mac_hi) = backend_mac(backend);
    // SAFETY: all inside the 12 bytes checked above.
    unsafe {
        let (our_lo, our_hi) = (eth.u32(0), eth.u16(4));
        eth.set_u32(0, mac_lo);
        eth.set_u16(4, mac_hi);
        eth.set_u32(6, our_lo);
        eth.set_u16(10, our_hi);
    }
    Ok(())
}

#[inline(always)]
fn grow(ctx: &XdpContext, by: usize) -> Result<(), RewriteFailed> {
    // SAFETY: plain helper call on the program's own context.
    let rc = unsafe { bpf_xdp_adjust_head(ctx.ctx, -(by as i32)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(RewriteFailed)
    }
}
