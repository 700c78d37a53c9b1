//! The auxiliary object, with no pinned maps: the backend-side decapsulator and a plain
//! `XDP_PASS` (what a veth peer needs attached for native `XDP_TX` to reach it).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
#[path = "../decap.rs"]
mod decap;
#[cfg(target_arch = "bpf")]
#[path = "../packet.rs"]
mod packet;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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
