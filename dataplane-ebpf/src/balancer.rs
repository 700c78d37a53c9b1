//! The `shardline` program's body: parse → decide → rewrite → forward → count.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use shardline_common::{
    maps::Globals,
    packet::PacketBytes,
    route::{decide, Decision},
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
    let frame_len = XdpPacket(ctx).len() as u64;
    let d = route(ctx, globals);
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

/// The routing decision, as a BPF subprogram of its own: parsing and lookups get a stack frame
/// of their own, beside the rewrite's instead of on top of it, so the deepest call chain stays
/// under the verifier's 512 bytes.
#[inline(never)]
fn route(ctx: &XdpContext, globals: &Globals) -> Decision {
    decide(&XdpPacket(ctx), &MapTables { globals })
}

/// Keeps `Action` and the kernel's numbering in step at compile time.
const _: () = {
    assert!(Action::Tx as u32 == xdp_action::XDP_TX);
    assert!(Action::Pass as u32 == xdp_action::XDP_PASS);
    assert!(Action::Drop as u32 == xdp_action::XDP_DROP);
};
