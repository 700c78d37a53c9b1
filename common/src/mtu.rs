//! Path MTU: whether a client packet still fits the egress link once the outer header is
//! added, and what the ICMP "fragmentation needed" / ICMPv6 "packet too big" answer to one that
//! does not carries. The kernel and the replay both ask these, so they agree on every packet.
//!
//! The egress MTU is the attached interface's (read by the daemon when it attaches,
//! [`crate::maps::Globals::egress_mtu`]); it counts the IP packet, as an interface MTU does,
//! so an IPIP packet fits when the inner packet plus 20 octets does not exceed it (40 for
//! IP6IP6, and for IPv4-in-IPv6 towards a backend with only IPv6). An MTU of 0 means unknown:
//! nothing is too big. The answer's family is the client packet's (`v6`); the outer header's
//! length is the outer family's (`outer_v6`).
//!
//! As Katran does, the answer does not look at the IPv4 DF bit: the balancer does not fragment
//! (an XDP program cannot send two frames for one), so an oversized packet is lost whether DF
//! is set or not, and the answer at least lowers the client's path MTU (Linux records it for
//! either kind of socket).

use crate::consts::{ICMP_HLEN, ICMP_QUOTED_L4, IPV4_HLEN, IPV6_HLEN};

/// The minimum IPv6 MTU (RFC 8200): an ICMPv6 error must fit in it (RFC 4443, 2.4 (c)).
pub const IPV6_MIN_MTU: usize = 1280;

/// Octets of the offending packet an ICMPv6 "packet too big" quotes at most: as much as fits
/// in [`IPV6_MIN_MTU`] after the answer's own IPv6 and ICMPv6 headers.
pub const ICMPV6_QUOTE_MAX: usize = IPV6_MIN_MTU - IPV6_HLEN - ICMP_HLEN;

/// Octets of an IPv4 packet the answer quotes at most: a 60-octet header (options) and 8.
pub const QUOTE_MAX_V4: usize = 60 + ICMP_QUOTED_L4;

/// The shortest packet answered, per family: one holding the longest quote, so the kernel
/// reads any quote with one bounds check. Every packet too big for a link that can carry the
/// family is that long: an IPv6 link's MTU is at least 1280 (1240 inner octets fit IP6IP6),
/// and an IPv4 link under 88 octets is not one a load balancer runs on.
#[inline(always)]
pub const fn shortest_answered(v6: bool) -> u32 {
    if v6 {
        ICMPV6_QUOTE_MAX as u32
    } else {
        QUOTE_MAX_V4 as u32
    }
}

/// Length of the outer header the encapsulation adds: IPv4 (IPIP) or IPv6 (IP6IP6, 4in6).
#[inline(always)]
pub const fn outer_len(outer_v6: bool) -> u32 {
    if outer_v6 {
        IPV6_HLEN as u32
    } else {
        IPV4_HLEN as u32
    }
}

/// Whether an IP packet of `ip_len` octets (its header's length) exceeds `egress_mtu` once
/// encapsulated in an `outer_v6` header and is answered: never with an unknown (zero) MTU, nor
/// for a packet shorter than [`shortest_answered`]. The dataplane compares with
/// [`answer_limit`], kept in the globals entry, so its hot path is one compare against one
/// value (a compare against values the program computes itself splits the verifier's states
/// and made it too large to verify).
#[inline(always)]
pub const fn too_big(ip_len: u32, v6: bool, outer_v6: bool, egress_mtu: u32) -> bool {
    ip_len > answer_limit(egress_mtu, v6, outer_v6, true)
}

/// The longest IP packet of the family (`v6`) not answered once encapsulated in an `outer_v6`
/// header: `u32::MAX` when answering is off or the MTU unknown, else what fits `egress_mtu`
/// once encapsulated, but at least one octet short of [`shortest_answered`].
#[inline(always)]
pub const fn answer_limit(egress_mtu: u32, v6: bool, outer_v6: bool, answering: bool) -> u32 {
    if !answering || egress_mtu == 0 {
        return u32::MAX;
    }
    let fits = next_hop_mtu(egress_mtu, outer_v6);
    let short = shortest_answered(v6) - 1;
    if fits > short {
        fits
    } else {
        short
    }
}

/// The MTU the answer reports: the largest inner packet that fits `egress_mtu` once
/// encapsulated in an `outer_v6` header (the next-hop MTU of ICMP type 3 code 4, the MTU of
/// ICMPv6 type 2).
#[inline(always)]
pub const fn next_hop_mtu(egress_mtu: u32, outer_v6: bool) -> u32 {
    egress_mtu.saturating_sub(outer_len(outer_v6))
}

/// Octets of an IPv4 packet whose header is `ihl_octets` long that the answer quotes: its
/// header and the first 8 octets of its data (RFC 792), a multiple of 4 from 28 to 68.
#[inline(always)]
pub const fn quote_len_v4(ihl_octets: usize) -> usize {
    ihl_octets + ICMP_QUOTED_L4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_fits_up_to_the_mtu_less_the_outer_header() {
        // 1500-octet link: an IPIP packet carries up to 1480 inner octets, IP6IP6 1460.
        assert!(!too_big(1480, false, false, 1500));
        assert!(too_big(1481, false, false, 1500));
        assert!(!too_big(1460, true, true, 1500));
        assert!(too_big(1461, true, true, 1500));
        // IPv4-in-IPv6: an IPv4 packet under the 40-octet header.
        assert!(!too_big(1460, false, true, 1500));
        assert!(too_big(1461, false, true, 1500));
        assert_eq!(next_hop_mtu(1500, false), 1480);
        assert_eq!(next_hop_mtu(1500, true), 1460);
        // Unknown MTU: nothing is too big.
        assert!(!too_big(65_535, true, true, 0));
        // Shorter than the longest quote: not answered (links no IP network runs on).
        assert!(too_big(68, false, false, 80));
        assert!(!too_big(67, false, false, 80));
        assert!(!too_big(67, false, true, 80));
        assert!(too_big(1232, true, true, 1200));
        assert!(!too_big(1231, true, true, 1200));
        // Every packet too big for a link of the family's minimum MTU is answered.
        assert!(too_big(1241, true, true, 1280));
        assert_eq!(answer_limit(1500, false, false, false), u32::MAX);
        assert_eq!(answer_limit(0, true, true, true), u32::MAX);
        assert_eq!(answer_limit(1500, true, true, true), 1460);
        assert_eq!(answer_limit(1500, false, true, true), 1460);
        assert_eq!(answer_limit(100, false, true, true), 67);
        assert_eq!(next_hop_mtu(10, true), 0);
    }

    #[test]
    fn quotes_fit_their_rfcs() {
        assert_eq!(quote_len_v4(20), 28);
        assert_eq!(quote_len_v4(60), 68);
        assert_eq!(quote_len_v4(60), QUOTE_MAX_V4);
        assert_eq!(ICMPV6_QUOTE_MAX, 1232);
        assert_eq!(IPV6_HLEN + ICMP_HLEN + ICMPV6_QUOTE_MAX, IPV6_MIN_MTU);
    }
}
