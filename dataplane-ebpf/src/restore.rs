//! Bench-only: run a program body, then undo what it did to the frame.
//!
//! `BPF_PROG_TEST_RUN` with `repeat` hands the program the same buffer every time, so a program
//! that grows the frame (encapsulation) would see its own output on the next repeat.
//! [`restoring`] puts the frame back as it came in, so every repeat routes the same input. Its
//! own cost is what `shardline-bench` measures by wrapping the trivial `XDP_TX`
//! baseline the same way. Never attached to an interface.
//!
//! A FIB-routed backend's packet goes on to the next-hop program (a tail call), and the bench's
//! next-hop program undoes the encapsulation with [`strip_outer`], from the frame alone. The
//! wrapper still resumes after it: the body it takes is a BPF-to-BPF subprogram, and a tail
//! call from a subprogram replaces that subprogram's frame only, so the next-hop program's
//! action returns to [`restoring`], which finds the frame at its length and writes the Ethernet
//! header back (`XDP_TX` and `XDP_REDIRECT` alike). A QUIC service's packet leaves the same
//! subprogram for the QUIC program (`QUIC_PROGRAM`, holding `shardline_quic` itself), whose
//! action and encapsulation come back to [`restoring`] likewise: the attached path whole.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use shardline_common::{
    consts::{ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN},
    packet::PacketBytes,
};

use crate::packet::XdpPacket;

/// Runs `body` and returns its action, with the frame restored afterwards: any bytes the body
/// added at the front are removed again and the Ethernet header (the only input bytes an
/// encapsulation or a MAC rewrite overwrites) is written back.
#[inline(always)]
pub fn restoring(ctx: &XdpContext, body: impl FnOnce(&XdpContext) -> u32) -> u32 {
    let pkt = XdpPacket(ctx);
    let before = pkt.len();
    let Some(eth) = pkt.span(0, ETH_HLEN) else {
        return body(ctx);
    };
    // The 14 bytes as two overlapping words (bytes 0..8 and 6..14): with the context and the
    // length, four values live across the body, in the four callee-saved registers. Saved as
    // three words and a half-word, two of them went to this frame's stack, and the bench
    // programs' combined stack reached the verifier's 512 bytes.
    // SAFETY: all inside the ETH_HLEN bytes checked above.
    let saved = unsafe { [eth.u64(0), eth.u64(ETH_HLEN - 8)] };
    let action = body(ctx);
    let grown = XdpPacket(ctx).len() as i64 - before as i64;
    if grown != 0 {
        // SAFETY: plain helper call on the program's own context; it checks the bounds.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, grown as i32) };
    }
    if let Some(eth) = XdpPacket(ctx).span(0, ETH_HLEN) {
        // SAFETY: all inside the ETH_HLEN bytes checked just above; the two words agree on
        // the bytes they share.
        unsafe {
            eth.set_u64(0, saved[0]);
            eth.set_u64(ETH_HLEN - 8, saved[1]);
        }
    }
    action
}

/// Removes the outer header the balancer's encapsulation put in front of an untagged frame
/// (IPIP, IPv4-in-IPv6 or IP6IP6, told apart by the outer header) and writes the inner
/// EtherType back; the MACs stay as the next hop wrote them (the balancer reads neither). A
/// frame that is none of these (an L2 DSR rewrite, which grows nothing) is left alone.
#[allow(dead_code)] // the auxiliary object tail-calls nothing
#[inline(always)]
pub fn strip_outer(ctx: &XdpContext) {
    let Some(eth) = XdpPacket(ctx).span(0, ETH_HLEN + 10) else {
        return;
    };
    // SAFETY: all inside the ETH_HLEN + 10 bytes checked above.
    let (ethertype, v4_proto, v6_next, macs) = unsafe {
        (
            u16::from_be(eth.u16(12)),
            (u16::from_be(eth.u16(ETH_HLEN + 8)) & 0xff) as u8,
            (u16::from_be(eth.u16(ETH_HLEN + 6)) >> 8) as u8,
            [eth.u32(0), eth.u32(4), eth.u32(8)],
        )
    };
    let (outer, inner) = match (ethertype, v4_proto, v6_next) {
        (ETH_P_IPV4, IPPROTO_IPIP, _) => (IPV4_HLEN, ETH_P_IPV4),
        (ETH_P_IPV6, _, IPPROTO_IPIP) => (IPV6_HLEN, ETH_P_IPV4),
        (ETH_P_IPV6, _, IPPROTO_IPV6) => (IPV6_HLEN, ETH_P_IPV6),
        _ => return,
    };
    // SAFETY: plain helper call on the program's own context; it checks the bounds.
    unsafe { bpf_xdp_adjust_head(ctx.ctx, outer as i32) };
    if let Some(eth) = XdpPacket(ctx).span(0, ETH_HLEN) {
        // SAFETY: all inside the ETH_HLEN bytes checked just above.
        unsafe {
            eth.set_u32(0, macs[0]);
            eth.set_u32(4, macs[1]);
            eth.set_u32(8, macs[2]);
            eth.set_u16(12, inner.to_be());
        }
    }
}
