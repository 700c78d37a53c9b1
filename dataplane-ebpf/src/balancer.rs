//! The `shardline` program's body: parse → decide → rewrite → forward → count.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use shardline_common::{
    packet::PacketBytes,
    route::decide,
    verdict::{Action, Reason},
};

use crate::{
    counters::{count_forwarded, count_reason},
    maps::GLOBALS,
    packet::XdpPacket,
    rewrite::rewrite,
    tables::MapTables,
};

/// Routes one frame and returns its XDP action.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(globals) = GLOBALS.get(0) else {
        // Unreachable for an array of one entry; pass rather than disturb traffic.
        return xdp_action::XDP_PASS;
    };
    let pkt = XdpPacket(ctx);
    let frame_len = pkt.len() as u64;
    let d = decide(&pkt, &MapTables { globals });
    let mut reason = d.reason;
    if reason == Reason::Forwarded {
        if rewrite(ctx, &d, globals).is_err() {
            reason = Reason::EncapFailed;
        } else {
            count_forwarded(d.backend_id, &d.session, frame_len);
        }
    }
    count_reason(reason);
    reason.action() as u32
}

/// Keeps `Action` and the kernel's numbering in step at compile time.
const _: () = {
    assert!(Action::Tx as u32 == xdp_action::XDP_TX);
    assert!(Action::Pass as u32 == xdp_action::XDP_PASS);
    assert!(Action::Drop as u32 == xdp_action::XDP_DROP);
};
