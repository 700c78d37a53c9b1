//! The auxiliary object, with no pinned maps: the backend-side decapsulator, a plain
//! `XDP_PASS` (what a veth peer needs attached for native `XDP_TX` to reach it), the lab's
//! wire (an L2 forwarder by `XDP_REDIRECT` between the switch's ports, `wire.rs`), the trivial
//! baselines `shardline-bench` measures the balancer against, and the prober host's tc egress
//! program for data-path HTTP probes. The XDP programs are multi-buffer aware
//! (`#[xdp(frags)]`): a veth refuses XDP on its peer when the peer's MTU exceeds a page unless
//! the program takes fragments, and the lab's backends receive jumbo frames.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
#[path = "../decap.rs"]
mod decap;
#[cfg(target_arch = "bpf")]
#[path = "../packet.rs"]
mod packet;
#[cfg(target_arch = "bpf")]
#[path = "../probe_encap.rs"]
mod probe_encap;
#[cfg(target_arch = "bpf")]
#[path = "../restore.rs"]
mod restore;
#[cfg(target_arch = "bpf")]
#[path = "../wire.rs"]
mod wire;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };

    use crate::packet::XdpPacket;

    /// Strips IPIP / IP6IP6 outer headers of packets for local VIPs.
    #[xdp(frags)]
    #[inline(always)]
    pub fn shardline_decap(ctx: XdpContext) -> u32 {
        crate::decap::run(&ctx)
    }

    /// tc egress of the prober's host: encapsulates data-path HTTP probes to their backend.
    #[classifier]
    pub fn shardline_probe_encap(ctx: TcContext) -> i32 {
        crate::probe_encap::run(&ctx)
    }

    /// Passes every packet.
    #[xdp(frags)]
    pub fn shardline_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// The lab's wire: forwards frames between the switch's ports by destination MAC.
    #[xdp(frags)]
    pub fn shardline_wire(ctx: XdpContext) -> u32 {
        crate::wire::run(&ctx)
    }

    /// Bench baseline: the least a forwarder does, swap the MACs and send the frame back out.
    #[xdp(frags)]
    pub fn shardline_tx_baseline(ctx: XdpContext) -> u32 {
        swap_macs_tx(&ctx)
    }

    /// Bench baseline wrapped like `shardline_bench`, to measure the wrapper's own cost.
    #[xdp(frags)]
    pub fn shardline_tx_baseline_restoring(ctx: XdpContext) -> u32 {
        crate::restore::restoring(&ctx, swap_macs_tx)
    }

    /// Word loads and stores, as the balancer's rewrite does: a baseline written carelessly
    /// (byte by byte) would flatter every ratio to it.
    #[inline(always)]
    fn swap_macs_tx(ctx: &XdpContext) -> u32 {
        let Some(eth) = XdpPacket(ctx).span(0, 12) else {
            return xdp_action::XDP_DROP;
        };
        // SAFETY: all inside the 12 bytes checked above.
        unsafe {
            let (dst_lo, dst_hi) = (eth.u32(0), eth.u16(4));
            let (src_lo, src_hi) = (eth.u16(6), eth.u32(8));
            eth.set_u16(0, src_lo);
            eth.set_u32(2, src_hi);
            eth.set_u32(6, dst_lo);
            eth.set_u16(10, dst_hi);
        }
        xdp_action::XDP_TX
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
