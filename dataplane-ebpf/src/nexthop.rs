//! The next hop of a packet to a FIB-routed backend (`backend_flags::FIB`): `bpf_fib_lookup`
//! on the outer destination (the backend's address), then the FIB's MACs and `XDP_TX` when the
//! next hop is out of the receiving interface, `bpf_redirect_map` through `TX_PORTS` when it is
//! out of another listed one, and the static MAC the rewrite already wrote when the FIB has no
//! usable answer. Each outcome is counted (`shardline_common::nexthop`).
//!
//! Two halves:
//! - [`hand_off`], inlined in the balancer at the point a FIB-routed packet leaves: it writes
//!   the backend into this CPU's `NEXTHOP_ARGS` slot and tail-calls the next-hop program
//!   (`TAIL_CALLS`). The verifier walks only these few instructions per balancer state that
//!   reaches them, and the fallback behind the call for when the slot is empty.
//! - [`run`], the body of the `shardline_nexthop` program the tail call jumps to, verified on
//!   its own. It starts with a fresh 512-byte stack, so the lookup's parameters live there.
//!
//! A static-MAC backend's packet pays one flag test and never reaches either.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use shardline_common::{
    encap::outer_v6,
    maps::{addr_words, backend_flags},
    nexthop::{NextHopArgs, NextHopOutcome, AF_INET, AF_INET6, NEXTHOP_SLOT},
    verdict::Reason,
};

use crate::{
    maps::{BACKENDS, NEXTHOPS, NEXTHOP_ARGS, REASONS, TAIL_CALLS, TX_PORTS},
    packet::XdpPacket,
};

/// Whether backend `backend_id`'s next hop comes from the FIB (`backend_flags::FIB`).
#[inline(always)]
pub fn is_fib(backend_id: u32) -> bool {
    BACKENDS
        .get(backend_id)
        .is_some_and(|b| b.flags & backend_flags::FIB != 0)
}

/// Hands the packet just rewritten for backend `backend_id` (`v6`: an IPv6 packet, whose
/// outer header is IPv6 too) to the next-hop program, which counts `reason` (or
/// `no_next_hop`) and returns the packet's action: on success this never returns. When the
/// tail call falls through (no next-hop program loaded) it counts
/// `fallback_program_missing` and the reason itself and returns the static path's action:
/// `XDP_TX` with the static MAC the rewrite wrote, or `XDP_DROP` as `no_next_hop` when the
/// backend has none.
///
/// The balancer returns what this returns: nothing of its state is used after the call. The
/// fallback reads the hand-over back from the slot rather than keep it in registers, so only
/// the context is live across the tail call and the verifier prunes every balancer state
/// that reaches it after the first (the values written are never precise).
#[inline(always)]
pub fn hand_off(ctx: &XdpContext, backend_id: u32, v6: bool, reason: Reason) -> u32 {
    if let Some(args) = NEXTHOP_ARGS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; the tail call below runs the reader on this CPU next.
        unsafe {
            *args = NextHopArgs {
                backend_id,
                v6: u32::from(v6),
                reason: reason as u32,
                _pad: 0,
            };
        }
    }
    // SAFETY: the context is this program's own; a tail call ends this program on success.
    unsafe { TAIL_CALLS.tail_call(ctx, NEXTHOP_SLOT) };
    program_missing()
}

/// The tail call fell through: the static path, counted (see [`hand_off`]). A subprogram of its
/// own: the verifier walks it once, and the balancer's frame does not grow.
#[inline(never)]
fn program_missing() -> u32 {
    count_outcome(NextHopOutcome::ProgramMissing);
    let args = NEXTHOP_ARGS.get(0).copied().unwrap_or_default();
    match BACKENDS.get(args.backend_id) {
        Some(b) if has_mac(b.mac) => {
            count_reason_index(args.reason);
            xdp_action::XDP_TX
        }
        _ => {
            count_reason_index(Reason::NoNextHop as u32);
            xdp_action::XDP_DROP
        }
    }
}

/// The `shardline_nexthop` program's body: reads the balancer's hand-over, looks the backend
/// up in the FIB, rewrites the MACs when it answers, counts the outcome and the reason, and
/// returns `XDP_TX`, `XDP_REDIRECT`, or `XDP_DROP` when the FIB has no answer and the backend
/// no static MAC.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    // This CPU's slot, written by the balancer just before the tail call.
    let args = NEXTHOP_ARGS.get(0).copied().unwrap_or_default();
    let Some(backend) = BACKENDS.get(args.backend_id) else {
        // Unreachable: the balancer found the backend before handing the packet over.
        count_outcome(NextHopOutcome::Other);
        count_reason_index(Reason::NoNextHop as u32);
        return xdp_action::XDP_DROP;
    };
    let ingress = ctx.ingress_ifindex() as u32;
    // SAFETY: plain old data; all zeroes is an empty lookup request.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.ifindex = ingress;
    // The source is left out (zero): the lookup is by destination, as the static path's is,
    // in the outer header's family (IPv6 for IPv4-in-IPv6).
    if outer_v6(args.v6 != 0, backend.flags) {
        p.family = AF_INET6;
        p.__bindgen_anon_4.ipv6_dst = addr_words(backend.addr6);
    } else {
        p.family = AF_INET;
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(backend.addr4);
    }
    // SAFETY: `p` is a live stack object of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    let (outcome, action) = if rc != 0 {
        (NextHopOutcome::of_fib_failure(rc), xdp_action::XDP_TX)
    } else if p.ifindex == ingress {
        write_macs(ctx, p.smac, p.dmac);
        (NextHopOutcome::Fib, xdp_action::XDP_TX)
    } else {
        match TX_PORTS.redirect(p.ifindex, 0) {
            Ok(redirect) => {
                write_macs(ctx, p.smac, p.dmac);
                (NextHopOutcome::FibRedirect, redirect)
            }
            Err(_) => (NextHopOutcome::EgressNotInTxPorts, xdp_action::XDP_TX),
        }
    };
    count_outcome(outcome);
    // Without a static MAC a fallback has nowhere to send the packet.
    if outcome.is_fallback() && !has_mac(backend.mac) {
        count_reason_index(Reason::NoNextHop as u32);
        xdp_action::XDP_DROP
    } else {
        count_reason_index(args.reason);
        action
    }
}

/// Whether a backend's static MAC is configured (all zero: none).
#[inline(always)]
fn has_mac(m: [u8; 6]) -> bool {
    u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) | u32::from(m[4]) | u32::from(m[5]) != 0
}

/// Counts one packet of a FIB-routed backend under `outcome`.
#[inline(always)]
fn count_outcome(outcome: NextHopOutcome) {
    if let Some(c) = NEXTHOPS.get_ptr_mut(outcome as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

/// Counts one packet under the reason of index `reason` (as handed over, a `u32`).
#[inline(always)]
fn count_reason_index(reason: u32) {
    if let Some(c) = REASONS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

/// Writes the FIB's next-hop MAC as destination and the egress interface's as source.
#[inline(always)]
fn write_macs(ctx: &XdpContext, smac: [u8; 6], dmac: [u8; 6]) {
    if let Some(eth) = XdpPacket(ctx).span(0, 12) {
        // SAFETY: all inside the 12 bytes checked just above.
        unsafe {
            eth.set_u32(0, u32::from_ne_bytes([dmac[0], dmac[1], dmac[2], dmac[3]]));
            eth.set_u16(4, u16::from_ne_bytes([dmac[4], dmac[5]]));
            eth.set_u32(6, u32::from_ne_bytes([smac[0], smac[1], smac[2], smac[3]]));
            eth.set_u16(10, u16::from_ne_bytes([smac[4], smac[5]]));
        }
    }
}
