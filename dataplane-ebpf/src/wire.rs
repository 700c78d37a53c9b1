//! The lab's wire: an L2 forwarder on the switch's veth ports that hands every frame to the
//! port of its destination MAC by `XDP_REDIRECT` through a devmap, instead of the bridge. A
//! frame redirected into a veth reaches its peer as an `xdp_frame` (a page with headroom), as
//! a NIC hands its driver a DMA buffer: the receiving side runs its XDP program on the page
//! without copying it (native XDP on veth copies every skb it receives), or, without a
//! program, builds an skb around the page. Broadcast, multicast and unknown destinations are
//! flooded to every other port (address resolution still works). Bench and lab only.

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS},
    macros::map,
    maps::{DevMap, HashMap},
    programs::XdpContext,
};
use shardline_common::packet::PacketBytes;

use crate::packet::XdpPacket;

/// Ports of the switch: slot → ifindex, filled by the lab.
#[map]
pub static WIRE_PORTS: DevMap = DevMap::with_max_entries(64, 0);

/// Destination MAC (six octets, two zero octets of padding) → slot in [`WIRE_PORTS`].
#[map]
pub static WIRE_MACS: HashMap<[u8; 8], u32> = HashMap::with_max_entries(256, 0);

/// Forwards the frame to its destination's port, or floods it; drops a runt frame.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(dst) = XdpPacket(ctx).load::<6>(0) else {
        return xdp_action::XDP_DROP;
    };
    // The group bit: broadcast and multicast go to every port.
    if dst[0] & 1 == 0 {
        let key = [dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], 0, 0];
        // SAFETY: a plain lookup; the value is copied out at once.
        if let Some(slot) = unsafe { WIRE_MACS.get(&key) }.copied() {
            return WIRE_PORTS
                .redirect(slot, u64::from(xdp_action::XDP_DROP))
                .unwrap_or(xdp_action::XDP_DROP);
        }
    }
    WIRE_PORTS
        .redirect(0, u64::from(BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS))
        .unwrap_or(xdp_action::XDP_DROP)
}
