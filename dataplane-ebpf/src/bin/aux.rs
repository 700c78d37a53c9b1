//! The auxiliary object, with no pinned maps: the backend-side decapsulator, a plain
//! `XDP_PASS` (what a veth peer needs attached for native `XDP_TX` to reach it), and the
//! trivial baselines `shardline bench-dataplane` measures the balancer against.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
#[path = "../decap.rs"]
mod decap;
#[cfg(target_arch = "bpf")]
#[path = "../packet.rs"]
mod packet;
#[cfg(target_arch = "bpf")]
#[path = "../restore.rs"]
mod restore;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
    use shardline_common::packet::PacketBytes;

    use crate::packet::XdpPacket;

    /// Strips IPIP / IP6IP6 outer headers of packets for local VIPs.
    #[xdp]
    pub fn shardline_decap(ctx: XdpContext) -> u32 {
        crate::decap::run(&ctx)
    }

    /// Passes every packet.
    #[xdp]
    pub fn shardline_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// Bench baseline: the least a forwarder does, swap the MACs and send the frame back out.
    #[xdp]
    pub fn shardline_tx_baseline(ctx: XdpContext) -> u32 {
        swap_macs_tx(&ctx)
    }

    /// Bench baseline wrapped like `shardline_bench`, to measure the wrapper's own cost.
    #[xdp]
    pub fn shardline_tx_baseline_restoring(ctx: XdpContext) -> u32 {
        crate::restore::restoring(&ctx, swap_macs_tx)
    }

    #[inline(always)]
    fn swap_macs_tx(ctx: &XdpContext) -> u32 {
        let pkt = XdpPacket(ctx);
        let Some(macs) = pkt.load::<12>(0) else {
            return xdp_action::XDP_DROP;
        };
        let mut swapped = [0u8; 12];
        let mut i = 0;
        while i < 6 {
            swapped[i] = macs[6 + i];
            swapped[6 + i] = macs[i];
            i += 1;
        }
        match pkt.store(0, &swapped) {
            Some(()) => xdp_action::XDP_TX,
            None => xdp_action::XDP_DROP,
        }
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
