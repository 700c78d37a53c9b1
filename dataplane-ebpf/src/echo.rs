//! Answers an ICMP / ICMPv6 echo request to a VIP in place, as Katran does: swap the MACs and
//! the addresses, set the TTL / hop limit, turn the type into echo reply, and update both
//! checksums incrementally (RFC 1624), then `XDP_TX`. The request's identifier, sequence and
//! data come back unchanged, so a checksum that was valid stays valid (and a bad one stays
//! bad: the sender discards the reply, as it would its own corrupt request).
//!
//! The decision ([`shardline_common::icmp::classify`]) only answers requests whose ICMP header
//! follows the fixed IP header, so every offset here is a constant once the L2 length is.

use aya_ebpf::programs::XdpContext;
use shardline_common::{
    checksum::checksum_replace16,
    consts::{icmp_type, icmpv6_type, ECHO_REPLY_TTL, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, VLAN_HLEN},
    route::Decision,
};

use crate::packet::{Span, XdpPacket};

/// Why an answer could not be written (counted as `icmp_malformed`; the decision read the same
/// bytes, so this does not happen).
pub struct EchoFailed;

/// Turns the echo request `d` describes into its reply.
#[inline(always)]
pub fn reply(ctx: &XdpContext, d: &Decision) -> Result<(), EchoFailed> {
    const PLAIN: u32 = ETH_HLEN as u32;
    const TAGGED: u32 = (ETH_HLEN + VLAN_HLEN) as u32;
    match (d.l3_off, d.v6) {
        (PLAIN, false) => reply_v4::<ETH_HLEN>(ctx),
        (PLAIN, true) => reply_v6::<ETH_HLEN>(ctx),
        (TAGGED, false) => reply_v4::<{ ETH_HLEN + VLAN_HLEN }>(ctx),
        (TAGGED, true) => reply_v6::<{ ETH_HLEN + VLAN_HLEN }>(ctx),
        _ => Err(EchoFailed),
    }
}

/// IPv4: addresses swapped (the header checksum does not change: the sum is the same), TTL
/// set (checksum updated for the TTL / protocol word), type 8 → 0 (ICMP checksum updated for
/// the type / code word).
#[inline(always)]
fn reply_v4<const L2: usize>(ctx: &XdpContext) -> Result<(), EchoFailed> {
    let f = XdpPacket(ctx)
        .span(0, L2 + IPV4_HLEN + 4)
        .ok_or(EchoFailed)?;
    // SAFETY: every offset below lies inside the L2 + 24 bytes checked above.
    unsafe {
        swap_macs(f);
        let ttl_proto = f.u16(L2 + 8);
        let [_, proto] = ttl_proto.to_ne_bytes();
        let new_ttl_proto = u16::from_ne_bytes([ECHO_REPLY_TTL, proto]);
        f.set_u16(L2 + 8, new_ttl_proto);
        f.set_u16(
            L2 + 10,
            checksum_replace16(f.u16(L2 + 10), ttl_proto, new_ttl_proto),
        );
        swap_words(f, L2 + 12, L2 + 16, 1);
        set_type(f, L2 + IPV4_HLEN, icmp_type::ECHO_REPLY);
    }
    Ok(())
}

/// IPv6: addresses swapped (the ICMPv6 checksum's pseudo-header holds both, so its sum does
/// not change), hop limit set (not checksummed), type 128 → 129 (checksum updated for the
/// type / code word).
#[inline(always)]
fn reply_v6<const L2: usize>(ctx: &XdpContext) -> Result<(), EchoFailed> {
    let f = XdpPacket(ctx)
        .span(0, L2 + IPV6_HLEN + 4)
        .ok_or(EchoFailed)?;
    // SAFETY: every offset below lies inside the L2 + 44 bytes checked above.
    unsafe {
        swap_macs(f);
        let [next_header, _] = f.u16(L2 + 6).to_ne_bytes();
        f.set_u16(L2 + 6, u16::from_ne_bytes([next_header, ECHO_REPLY_TTL]));
        swap_words(f, L2 + 8, L2 + 24, 4);
        set_type(f, L2 + IPV6_HLEN, icmpv6_type::ECHO_REPLY);
    }
    Ok(())
}

/// Swaps the destination and source MACs: the reply goes back where the request came from.
///
/// # Safety
/// `f` must cover the first 12 bytes.
#[inline(always)]
unsafe fn swap_macs(f: Span) {
    unsafe {
        let (dst_lo, dst_hi) = (f.u32(0), f.u16(4));
        let (src_lo, src_hi) = (f.u16(6), f.u32(8));
        f.set_u16(0, src_lo);
        f.set_u32(2, src_hi);
        f.set_u32(6, dst_lo);
        f.set_u16(10, dst_hi);
    }
}

/// Swaps the `n` words at `a` with the `n` words at `b`.
///
/// # Safety
/// `f` must cover both ranges.
#[inline(always)]
unsafe fn swap_words(f: Span, a: usize, b: usize, n: usize) {
    let mut i = 0;
    while i < n {
        unsafe {
            let (x, y) = (f.u32(a + 4 * i), f.u32(b + 4 * i));
            f.set_u32(a + 4 * i, y);
            f.set_u32(b + 4 * i, x);
        }
        i += 1;
    }
}

/// Sets the ICMP type at `at` to `ty`, keeping the code, and updates the checksum after it.
///
/// # Safety
/// `f` must cover the 4 bytes at `at`.
#[inline(always)]
unsafe fn set_type(f: Span, at: usize, ty: u8) {
    unsafe {
        let type_code = f.u16(at);
        let [_, code] = type_code.to_ne_bytes();
        let new_type_code = u16::from_ne_bytes([ty, code]);
        f.set_u16(at, new_type_code);
        f.set_u16(
            at + 2,
            checksum_replace16(f.u16(at + 2), type_code, new_type_code),
        );
    }
}
