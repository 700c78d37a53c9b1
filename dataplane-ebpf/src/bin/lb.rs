//! The load-balancer object: the `shardline` XDP program and its pinned maps.
//!
//! The packet path reads top to bottom:
//! - `maps`: every BPF map, one comment each, sizes from `shardline_common::consts`.
//! - `packet`: the XDP frame as `PacketBytes`, plus bounds-checked stores.
//! - `tables`: the maps as `Tables`, so the routing decision is `shardline_common::route::decide`,
//!   the very code userspace replays.
//! - `rewrite`: IPIP / IP6IP6 encapsulation and the L2 DSR MAC rewrite.
//! - `counters`: per-CPU counters per reason, per backend and per session.
//! - `balancer`: parse → decide → rewrite → count.
//! - `restore` (bench only): undoes a rewrite so `BPF_PROG_TEST_RUN` repeats see one input.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
#[path = "../balancer.rs"]
mod balancer;
#[cfg(target_arch = "bpf")]
#[path = "../counters.rs"]
mod counters;
#[cfg(target_arch = "bpf")]
#[path = "../maps.rs"]
mod maps;
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
mod program {
    use aya_ebpf::{macros::xdp, programs::XdpContext};

    /// Routes every packet received on the attached interface.
    #[xdp]
    pub fn shardline(ctx: XdpContext) -> u32 {
        crate::balancer::run(&ctx)
    }

    /// Bench only (`shardline bench-dataplane`, never attached): `shardline` with its rewrite
    /// undone afterwards, so every `BPF_PROG_TEST_RUN` repeat routes the same input frame.
    #[xdp]
    pub fn shardline_bench(ctx: XdpContext) -> u32 {
        crate::restore::restoring(&ctx, crate::balancer::run)
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
