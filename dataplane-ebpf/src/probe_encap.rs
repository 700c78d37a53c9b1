//! The prober host's tc egress program for data-path HTTP probes (Katran's healthcheck
//! forwarding): a packet whose socket mark is a probe mark ([`is_probe_mark`]) is encapsulated
//! to the backend [`PROBE_TARGETS`] names for that mark (IPIP, IPv6-in-IPv6, or IPv4-in-IPv6
//! for an IPv4 VIP's probe to a backend with only IPv6, as the balancer forwards its packets),
//! its inner destination left as the VIP, and sent to the backend's MAC. Every other packet passes
//! untouched. The health checker's ordinary TCP socket thus carries a whole connection to the
//! VIP on one chosen backend; the backend answers from the VIP straight back.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, TC_ACT_OK, TC_ACT_SHOT,
    },
    macros::map,
    maps::HashMap,
    programs::TcContext,
};
use shardline_common::{
    consts::{ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN},
    probe::{
        is_probe_mark, outer_ipv4, outer_ipv6, ProbeTarget, MAX_PROBE_TARGETS, PROBE_FAMILY_V4,
        PROBE_FAMILY_V6,
    },
};

/// Probe mark → the backend its packets are encapsulated to. Written by the health checker
/// before it connects; not pinned (the checker owns the program and the map).
#[map]
pub static PROBE_TARGETS: HashMap<u32, ProbeTarget> =
    HashMap::with_max_entries(MAX_PROBE_TARGETS, 0);

/// Encapsulates a marked probe packet; passes the rest. A marked packet that cannot be
/// encapsulated is dropped: sent as it is, it would reach the VIP through the balancer and
/// prove some other backend's health.
#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if !is_probe_mark(mark) {
        return TC_ACT_OK as i32;
    }
    // SAFETY: a plain hash map lookup; the value is copied out at once.
    let Some(target) = (unsafe { PROBE_TARGETS.get(&mark) }).copied() else {
        return TC_ACT_SHOT as i32;
    };
    match encap(ctx, &target) {
        Some(()) => TC_ACT_OK as i32,
        None => TC_ACT_SHOT as i32,
    }
}

/// Inserts the outer header after the Ethernet header (`BPF_ADJ_ROOM_MAC` opens the room
/// right after L2; `_NET` would open it after the IP header) and points the frame at the
/// backend.
#[inline(always)]
fn encap(ctx: &TcContext, target: &ProbeTarget) -> Option<()> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    match (ethertype, target.family) {
        (ETH_P_IPV4, PROBE_FAMILY_V4) => {
            let inner_len = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2).ok()?);
            let source: [u8; 4] = ctx.load(ETH_HLEN + 12).ok()?;
            let backend = [
                target.addr[0],
                target.addr[1],
                target.addr[2],
                target.addr[3],
            ];
            let outer = outer_ipv4(inner_len, source, backend);
            let flags = u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4);
            ctx.adjust_room(IPV4_HLEN as i32, BPF_ADJ_ROOM_MAC, flags)
                .ok()?;
            ctx.store(ETH_HLEN, &outer, 0).ok()?;
        }
        (ETH_P_IPV6, PROBE_FAMILY_V6) => {
            let payload = u16::from_be(ctx.load::<u16>(ETH_HLEN + 4).ok()?);
            let source: [u8; 16] = ctx.load(ETH_HLEN + 8).ok()?;
            let outer = outer_ipv6(
                payload.wrapping_add(IPV6_HLEN as u16),
                IPPROTO_IPV6,
                &source,
                &target.addr,
            );
            let flags = u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV6);
            ctx.adjust_room(IPV6_HLEN as i32, BPF_ADJ_ROOM_MAC, flags)
                .ok()?;
            ctx.store(ETH_HLEN, &outer, 0).ok()?;
        }
        // IPv4-in-IPv6: the outer source is this node's IPv6 address the checker wrote, and the
        // frame's EtherType becomes IPv6's (the kernel switches the skb's protocol with it).
        (ETH_P_IPV4, PROBE_FAMILY_V6) if target.source6 != [0; 16] => {
            let inner_len = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2).ok()?);
            let outer = outer_ipv6(inner_len, IPPROTO_IPIP, &target.source6, &target.addr);
            let flags = u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV6);
            ctx.adjust_room(IPV6_HLEN as i32, BPF_ADJ_ROOM_MAC, flags)
                .ok()?;
            ctx.store(ETH_HLEN, &outer, 0).ok()?;
            ctx.store(12, &ETH_P_IPV6.to_be(), 0).ok()?;
        }
        _ => return None,
    }
    ctx.store(0, &target.mac, 0).ok()
}
