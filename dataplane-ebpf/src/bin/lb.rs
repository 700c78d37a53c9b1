//! The load-balancer object: the `shardline` XDP program and its pinned maps.
//!
//! The packet path reads top to bottom:
//! - `maps`: every BPF map, one comment each, sizes from `shardline_common::consts`.
//! - `packet`: the XDP frame as `PacketBytes`, plus bounds-checked stores.
//! - `clock`: the flow table's clock, a BPF-to-BPF call that reads `bpf_ktime_get_ns` once per
//!   tick and CPU.
//! - `tables`: the maps as `Tables`, so the routing decision is `shardline_common::route::decide`,
//!   the very code userspace replays.
//! - `handoff`: the previous placements of sessions in a handoff window, and the mark a moved
//!   key's packet carries to its new owner.
//! - `rewrite`: IPIP / IP6IP6 encapsulation and the L2 DSR MAC rewrite.
//! - `nexthop`: for FIB-routed backends, the hand-over to the `shardline_nexthop` program (a
//!   tail call through `TAIL_CALLS`) and that program: the next hop from `bpf_fib_lookup`,
//!   `XDP_TX` or `XDP_REDIRECT` through the `TX_PORTS` devmap, the static MAC as the counted
//!   fallback.
//! - `echo`: ICMP / ICMPv6 echo replies written in place over the request.
//! - `too_big`: ICMP "fragmentation needed" / ICMPv6 "packet too big" answers to packets that
//!   would not fit the egress link once encapsulated.
//! - `counters`: per-CPU counters per reason, per backend and per session.
//! - `balancer`: parse → decide → rewrite → count; a QUIC service's packet is decided by the
//!   `shardline_quic` program instead (a tail call through `QUIC_PROGRAM`), so the verifier
//!   walks the connection-id parsing once.
//! - `restore` (bench only): undoes a rewrite so `BPF_PROG_TEST_RUN` repeats see one input.
//!
//! Every program is loaded with `BPF_F_XDP_HAS_FRAGS` (`#[xdp(frags)]`, section `xdp.frags`):
//! it attaches where the MTU exceeds a page and sees a jumbo frame whole (see `packet`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
#[path = "../balancer.rs"]
mod balancer;
#[cfg(target_arch = "bpf")]
#[path = "../clock.rs"]
mod clock;
#[cfg(target_arch = "bpf")]
#[path = "../counters.rs"]
mod counters;
#[cfg(target_arch = "bpf")]
#[path = "../echo.rs"]
mod echo;
#[cfg(target_arch = "bpf")]
#[path = "../handoff.rs"]
mod handoff;
#[cfg(target_arch = "bpf")]
#[path = "../maps.rs"]
mod maps;
#[cfg(target_arch = "bpf")]
#[path = "../nexthop.rs"]
mod nexthop;
#[cfg(target_arch = "bpf")]
#[path = "../packet.rs"]
mod packet;
#[cfg(target_arch = "bpf")]
#[path = "../restore.rs"]
mod restore;
#[cfg(target_arch = "bpf")]
#[path = "../rewrite.rs"]
mod rewrite;
#[cfg(target_arch = "bpf")]
#[path = "../tables.rs"]
mod tables;
#[cfg(target_arch = "bpf")]
#[path = "../too_big.rs"]
mod too_big;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use shardline_common::consts::{
        bench_rotate, BENCH_SESSION_BASE, BENCH_SOURCE_BASE_V4, ETH_HLEN, IPV4_HLEN, UDP_HLEN,
    };

    use crate::packet::XdpPacket;

    /// Routes every packet received on the attached interface. Multi-buffer aware (`frags`):
    /// a frame longer than a page (a jumbo frame) arrives whole, headers in its linear part.
    /// Inlined into the section's entry, so the packet path makes no BPF-to-BPF call.
    #[xdp(frags)]
    #[inline(always)]
    pub fn shardline(ctx: XdpContext) -> u32 {
        crate::balancer::run(&ctx)
    }

    /// The next hop of a FIB-routed backend's packet (`crate::nexthop`): never attached,
    /// reached only by `shardline`'s tail call through `TAIL_CALLS`, which the loader fills.
    /// A program of its own so the verifier walks it once, not once per balancer state.
    #[xdp(frags)]
    #[inline(always)]
    pub fn shardline_nexthop(ctx: XdpContext) -> u32 {
        crate::nexthop::run(&ctx)
    }

    /// The decision for a QUIC service's packet (`crate::balancer::run_quic`): never attached,
    /// reached only by `shardline`'s tail call through `QUIC_PROGRAM`, which the loader fills.
    /// A program of its own so the verifier walks the connection-id parsing once.
    #[xdp(frags)]
    #[inline(always)]
    pub fn shardline_quic(ctx: XdpContext) -> u32 {
        crate::balancer::run_quic(&ctx)
    }

    /// Bench only (`shardline-bench`, never attached): `shardline` with its rewrite
    /// undone afterwards, so every `BPF_PROG_TEST_RUN` repeat routes the same input frame.
    #[xdp(frags)]
    pub fn shardline_bench(ctx: XdpContext) -> u32 {
        crate::restore::restoring(&ctx, crate::balancer::run_bench)
    }

    /// Bench only (`shardline-bench`'s `header_hit_v4_fib` and `header_hit_v4_redirect`, never
    /// attached): `shardline_nexthop` with the balancer's encapsulation undone afterwards
    /// ([`crate::restore::strip_outer`]), whatever the action. The bench puts it in
    /// `TAIL_CALLS` instead of `shardline_nexthop`; its action returns to `shardline_bench`'s
    /// wrapper (see `crate::restore`), which writes the Ethernet header back, so every repeat
    /// routes the same input.
    #[xdp(frags)]
    pub fn shardline_bench_nexthop(ctx: XdpContext) -> u32 {
        let action = crate::nexthop::run(&ctx);
        crate::restore::strip_outer(&ctx);
        action
    }

    /// Bench only (`shardline-bench`'s `quic_` cases, never attached): `shardline_quic` with
    /// its rewrite undone afterwards, as `shardline_bench` is `shardline`. The attached path
    /// of a QUIC packet is `shardline`'s parse and service lookup, then its tail call to
    /// `shardline_quic`; this measures the second program alone.
    #[xdp(frags)]
    pub fn shardline_bench_quic(ctx: XdpContext) -> u32 {
        crate::restore::restoring(&ctx, crate::balancer::run_with::<false, true, true>)
    }

    /// Bench only, like `shardline_bench` with the pools' rings read from `BENCH_RINGS` (an
    /// array of maps, one inner array per service) instead of the `MAGLEV` array: the layout
    /// comparison in `docs/pools.md`.
    #[xdp(frags)]
    pub fn shardline_bench_rings_aom(ctx: XdpContext) -> u32 {
        crate::restore::restoring(&ctx, crate::balancer::run_with::<true, true, false>)
    }

    /// Bench only, like `shardline_bench`, and then the frame's source address moves on by one:
    /// every repeat is a new flow (flow-table miss and insert) of a new client.
    #[xdp(frags)]
    pub fn shardline_bench_new_flow(ctx: XdpContext) -> u32 {
        let action = crate::restore::restoring(&ctx, crate::balancer::run_bench);
        next_source_v4(&ctx);
        action
    }

    /// Bench only, like `shardline_bench`, and then the frame's IPv4 source address moves on
    /// through a cycle of `BENCH_ROTATION` addresses (`bench_rotate`): with the flow table
    /// warmed by one pass, every repeat is a flow-table hit on a different one of a million flows.
    #[xdp(frags)]
    pub fn shardline_bench_rotate_source(ctx: XdpContext) -> u32 {
        let action = crate::restore::restoring(&ctx, crate::balancer::run_bench);
        if let Some(src) = XdpPacket(&ctx).span(ETH_HLEN + 12, 4) {
            // SAFETY: inside the 4 bytes checked just above.
            unsafe {
                let a = u32::from_be(src.u32(0));
                src.set_u32(0, bench_rotate(a, BENCH_SOURCE_BASE_V4).to_be());
            }
        }
        action
    }

    /// Bench only, like `shardline_bench` on an untagged IPv4 header-mode frame, and then the
    /// header's session id (its low word) moves on through a cycle of `BENCH_ROTATION` sessions
    /// (`bench_rotate`): every repeat looks up a different one of a million placed sessions.
    #[xdp(frags)]
    pub fn shardline_bench_rotate_session(ctx: XdpContext) -> u32 {
        let action = crate::restore::restoring(&ctx, crate::balancer::run_bench);
        // The session id is bytes 4..12 of the header, big-endian; its low word is 8..12.
        let at = ETH_HLEN + IPV4_HLEN + UDP_HLEN + 8;
        if let Some(low) = XdpPacket(&ctx).span(at, 4) {
            // SAFETY: inside the 4 bytes checked just above.
            unsafe {
                let s = u32::from_be(low.u32(0));
                low.set_u32(0, bench_rotate(s, BENCH_SESSION_BASE).to_be());
            }
        }
        action
    }

    /// Adds one to the source address of an untagged IPv4 frame, so the next repeat is a flow
    /// the flow table has not seen (a miss and an insert, evicting the least recently used flow
    /// once the table is full; a million repeats outnumber its entries). A load, an add and a
    /// store, left in the figure they are part of. The header checksum goes stale, which the
    /// balancer does not check.
    #[inline(always)]
    fn next_source_v4(ctx: &XdpContext) {
        if let Some(src) = XdpPacket(ctx).span(ETH_HLEN + 12, 4) {
            // SAFETY: inside the 4 bytes checked just above.
            unsafe {
                let a = u32::from_be(src.u32(0));
                src.set_u32(0, a.wrapping_add(1).to_be());
            }
        }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // The verifier rejects any path that could reach here, which is the point.
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
