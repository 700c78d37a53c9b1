//! Rewrites a routed packet for its backend: IPIP / IP6IP6 encapsulation (Katran's way: the
//! backend decapsulates and answers the client directly) or a MAC rewrite for L2 DSR.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use shardline_common::{
    checksum::ipv4_header_checksum,
    consts::{ENCAP_TTL, ETH_HLEN, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN, VLAN_HLEN},
    maps::{forward_mode, Backend, Globals},
    packet::PacketBytes,
    route::Decision,
};

use crate::{maps::BACKENDS, packet::XdpPacket};

/// Why a rewrite failed (counted as `encap_failed`).
pub struct RewriteFailed;

/// Rewrites the packet for `d.backend_id` as its service says. A BPF subprogram of its own
/// (not inlined): its header buffers get their own stack frame instead of adding to the
/// routing decision's, keeping the call chain under the verifier's 512 bytes.
#[inline(never)]
pub fn rewrite(ctx: &XdpContext, d: &Decision, g: &Globals) -> Result<(), RewriteFailed> {
    let backend = BACKENDS.get(d.backend_id).ok_or(RewriteFailed)?;
    if d.service.forward == forward_mode::L2DSR {
        return rewrite_l2(ctx, backend);
    }
    if d.l3_off as usize == ETH_HLEN + VLAN_HLEN {
        encap_with_l2::<{ ETH_HLEN + VLAN_HLEN }>(ctx, d, g, backend)
    } else {
        encap_with_l2::<ETH_HLEN>(ctx, d, g, backend)
    }
}

/// Encapsulates the packet towards `backend`, keeping its L2 header (and VLAN tag).
#[inline(always)]
fn encap_with_l2<const L2: usize>(
    ctx: &XdpContext,
    d: &Decision,
    g: &Globals,
    backend: &Backend,
) -> Result<(), RewriteFailed> {
    let pkt = XdpPacket(ctx);
    let mut l2: [u8; L2] = pkt.load(0).ok_or(RewriteFailed)?;
    // First two bytes of the inner IP header: IPv4 TOS or the IPv6 traffic class.
    let inner = pkt.u16_at(L2).ok_or(RewriteFailed)?;
    rewrite_macs(&mut l2, backend);
    let ip_len = d.ip_len as usize;
    if d.v6 {
        if ip_len > u16::MAX as usize {
            return Err(RewriteFailed);
        }
        let outer = ipv6_outer(d, g, backend, ((inner >> 4) & 0xff) as u8);
        grow(ctx, IPV6_HLEN)?;
        let pkt = XdpPacket(ctx);
        pkt.store(0, &l2).ok_or(RewriteFailed)?;
        pkt.store(L2, &outer).ok_or(RewriteFailed)?;
    } else {
        if ip_len + IPV4_HLEN > u16::MAX as usize {
            return Err(RewriteFailed);
        }
        let outer = ipv4_outer(ip_len, g, backend, (inner & 0xff) as u8);
        grow(ctx, IPV4_HLEN)?;
        let pkt = XdpPacket(ctx);
        pkt.store(0, &l2).ok_or(RewriteFailed)?;
        pkt.store(L2, &outer).ok_or(RewriteFailed)?;
    }
    Ok(())
}

/// Rewrites only the MACs, for a backend on this L2 segment that holds the VIP itself.
#[inline(always)]
fn rewrite_l2(ctx: &XdpContext, backend: &Backend) -> Result<(), RewriteFailed> {
    let pkt = XdpPacket(ctx);
    let mut macs: [u8; 12] = pkt.load(0).ok_or(RewriteFailed)?;
    rewrite_macs(&mut macs, backend);
    pkt.store(0, &macs).ok_or(RewriteFailed)
}

/// Destination: the backend's next hop. Source: the address the frame was sent to, ours.
#[inline(always)]
fn rewrite_macs<const N: usize>(l2: &mut [u8; N], backend: &Backend) {
    let mut i = 0;
    while i < 6 {
        l2[6 + i] = l2[i];
        l2[i] = backend.mac[i];
        i += 1;
    }
}

#[inline(always)]
fn grow(ctx: &XdpContext, by: usize) -> Result<(), RewriteFailed> {
    // SAFETY: plain helper call on the program's own context.
    let rc = unsafe { bpf_xdp_adjust_head(ctx.ctx, -(by as i32)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(RewriteFailed)
    }
}

#[inline(always)]
fn ipv4_outer(ip_len: usize, g: &Globals, backend: &Backend, tos: u8) -> [u8; IPV4_HLEN] {
    let total = ((ip_len + IPV4_HLEN) as u16).to_be_bytes();
    let mut h = [0u8; IPV4_HLEN];
    h[0] = 0x45;
    h[1] = tos;
    h[2] = total[0];
    h[3] = total[1];
    h[8] = ENCAP_TTL;
    h[9] = IPPROTO_IPIP;
    h[12..16].copy_from_slice(&g.src4);
    h[16..20].copy_from_slice(&backend.addr4);
    let sum = ipv4_header_checksum(&h).to_be_bytes();
    h[10] = sum[0];
    h[11] = sum[1];
    h
}

#[inline(always)]
fn ipv6_outer(d: &Decision, g: &Globals, backend: &Backend, traffic_class: u8) -> [u8; IPV6_HLEN] {
    // The flow label carries the request key's entropy for ECMP on the way to the backend.
    let label = (d.key as u32) & 0x000f_ffff;
    let first = 0x6000_0000u32 | (u32::from(traffic_class) << 20) | label;
    let mut h = [0u8; IPV6_HLEN];
    h[0..4].copy_from_slice(&first.to_be_bytes());
    h[4..6].copy_from_slice(&(d.ip_len as u16).to_be_bytes());
    h[6] = IPPROTO_IPV6;
    h[7] = ENCAP_TTL;
    h[8..24].copy_from_slice(&g.src6);
    h[24..40].copy_from_slice(&backend.addr6);
    h
}
