//! The backend-side decapsulator: strips the IPIP / IP6IP6 / IPv4-in-IPv6 outer header of
//! packets whose inner destination is a local VIP and passes the inner packet to the stack, for
//! kernels without ipip / ip6tnl devices (as Katran ships its own decap program). A backend with
//! only an IPv6 address receives its IPv4 clients' packets IPv4-in-IPv6: the EtherType becomes
//! the inner packet's.

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::map, maps::HashMap,
    maps::PerCpuArray, programs::XdpContext,
};
use shardline_common::{
    consts::{
        ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN,
        VLAN_HLEN,
    },
    maps::{addr_words, v4_mapped, Addr},
    packet::{parse_l2, PacketBytes},
};

use crate::packet::XdpPacket;

/// Local VIPs (IPv4-mapped for IPv4) whose encapsulated packets are decapsulated.
#[map]
pub static DECAP_VIPS: HashMap<Addr, u32> = HashMap::with_max_entries(1024, 0);

/// Per-CPU counters: index 0 decapsulated, 1 passed untouched.
#[map]
pub static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Decapsulates if the frame is IPIP / IP6IP6 / IPv4-in-IPv6 to a local VIP; always passes.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let done = try_decap(ctx).is_some();
    if let Some(c) = DECAP_STATS.get_ptr_mut(if done { 0 } else { 1 }) {
        // SAFETY: per-CPU slot.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn try_decap(ctx: &XdpContext) -> Option<()> {
    let pkt = XdpPacket(ctx);
    let (l3, ethertype) = parse_l2(&pkt)?;
    let (outer_len, inner_v6) = match ethertype {
        ETH_P_IPV4 => {
            let h: [u8; IPV4_HLEN] = pkt.load(l3)?;
            // Only option-less outer headers: shardline writes none.
            if h[0] != 0x45 || h[9] != IPPROTO_IPIP {
                return None;
            }
            let inner: [u8; IPV4_HLEN] = pkt.load(l3 + IPV4_HLEN)?;
            is_local_vip(&v4_mapped([inner[16], inner[17], inner[18], inner[19]]))?;
            (IPV4_HLEN, false)
        }
        ETH_P_IPV6 => {
            let h: [u8; IPV6_HLEN] = pkt.load(l3)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            match h[6] {
                IPPROTO_IPV6 => {
                    let dst: [u8; 16] = pkt.load(l3 + IPV6_HLEN + 24)?;
                    is_local_vip(&addr_words(dst))?;
                    (IPV6_HLEN, true)
                }
                IPPROTO_IPIP => {
                    let inner: [u8; IPV4_HLEN] = pkt.load(l3 + IPV6_HLEN)?;
                    if inner[0] >> 4 != 4 {
                        return None;
                    }
                    is_local_vip(&v4_mapped([inner[16], inner[17], inner[18], inner[19]]))?;
                    (IPV6_HLEN, false)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let inner_ethertype = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IPV4 };
    // Constant lengths, so every offset the verifier checks is a constant.
    match (l3 == ETH_HLEN + VLAN_HLEN, outer_len == IPV6_HLEN) {
        (false, false) => strip::<ETH_HLEN, IPV4_HLEN>(ctx, inner_ethertype),
        (false, true) => strip::<ETH_HLEN, IPV6_HLEN>(ctx, inner_ethertype),
        (true, false) => strip::<{ ETH_HLEN + VLAN_HLEN }, IPV4_HLEN>(ctx, inner_ethertype),
        (true, true) => strip::<{ ETH_HLEN + VLAN_HLEN }, IPV6_HLEN>(ctx, inner_ethertype),
    }
}

#[inline(always)]
fn is_local_vip(addr: &Addr) -> Option<()> {
    // SAFETY: value read only for presence.
    unsafe { DECAP_VIPS.get(addr) }.map(|_| ())
}

/// Moves the L2 header forward over the outer IP header, its EtherType set to the inner
/// packet's `ethertype` (it differs for IPv4-in-IPv6), then drops the bytes before it.
#[inline(always)]
fn strip<const L2: usize, const OUTER: usize>(ctx: &XdpContext, ethertype: u16) -> Option<()> {
    let outer_len = OUTER;
    // The outer header is at least as long as the L2 header, so old and new L2 do not overlap.
    let span = XdpPacket(ctx).span(0, outer_len + L2)?;
    // SAFETY: every access lies inside the outer_len + L2 bytes checked above (L2 ≤ 18, and
    // the last word written ends at outer_len + L2).
    unsafe {
        let mut at = 0;
        while at + 4 <= L2 {
            span.set_u32(outer_len + at, span.u32(at));
            at += 4;
        }
        if at < L2 {
            span.set_u16(outer_len + at, span.u16(at));
        }
        span.set_u16(outer_len + L2 - 2, ethertype.to_be());
    }
    // SAFETY: plain helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return None;
    }
    Some(())
}
