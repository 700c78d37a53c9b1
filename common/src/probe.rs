//! Data-path HTTP probes, as Katran's healthcheck forwarding sends them: the health checker
//! opens an ordinary TCP connection to the VIP with a socket mark (`SO_MARK`), and the tc egress
//! program of the prober's host encapsulates every packet carrying a probe mark to the backend
//! the mark names, with the VIP left as the inner destination. The backend decapsulates and
//! answers from the VIP straight to the prober (direct server return), so the prober's own TCP
//! stack carries the whole connection: no raw sockets, no reset from the host's kernel.
//!
//! This module holds what both sides agree on: the marks, the map's value, and the outer
//! header the program writes (pure, so userspace tests the bytes the kernel will send).

use crate::{
    checksum::ipv4_header_checksum,
    consts::{ENCAP_TTL, IPPROTO_IPIP},
};

/// The high half of every probe mark (`"SP"`): the program ignores other marks, so a host's
/// own use of marks (policy routing, conntrack) is left alone unless it picks this half.
pub const PROBE_MARK_BASE: u32 = 0x5350_0000;
/// Which bits of a mark must equal [`PROBE_MARK_BASE`]; the low half indexes a backend.
pub const PROBE_MARK_MASK: u32 = 0xffff_0000;
/// Backends (of one family or the other) the probe map holds at most.
pub const MAX_PROBE_TARGETS: u32 = 4096;

/// Address family of a [`ProbeTarget`]: IPv4, so IPIP.
pub const PROBE_FAMILY_V4: u8 = 4;
/// Address family of a [`ProbeTarget`]: IPv6, so IPv6-in-IPv6, or IPv4-in-IPv6 for an IPv4
/// VIP's probe (a backend with only IPv6, as the balancer encapsulates its packets).
pub const PROBE_FAMILY_V6: u8 = 6;

/// Whether `mark` is a probe's (the program looks it up only then).
#[inline(always)]
pub fn is_probe_mark(mark: u32) -> bool {
    mark & PROBE_MARK_MASK == PROBE_MARK_BASE
}

/// Where a marked probe packet is encapsulated to: the value of the probe map, keyed by mark.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The backend's address, the outer destination (an IPv4 one in the first 4 octets),
    /// network order.
    pub addr: [u8; 16],
    /// The next hop's MAC towards the backend (the backend's own on a shared segment), as the
    /// balancer's `backends[].mac`.
    pub mac: [u8; 6],
    /// [`PROBE_FAMILY_V4`] (the inner packet must be IPv4) or [`PROBE_FAMILY_V6`] (either).
    pub family: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// The outer IPv6 source of an IPv4-in-IPv6 probe: this node's IPv6 address towards the
    /// backend (the inner source is IPv4). All zero: none known, and such a probe is dropped.
    /// IPIP and IPv6-in-IPv6 probes take their inner source as the outer one.
    pub source6: [u8; 16],
}

/// The outer IPv4 header of an IPIP probe packet: `inner_len` octets of inner packet from
/// `source` (the inner source: the prober's address) to `backend`, checksummed.
#[inline(always)]
pub fn outer_ipv4(inner_len: u16, source: [u8; 4], backend: [u8; 4]) -> [u8; 20] {
    let total = inner_len.wrapping_add(20).to_be_bytes();
    let mut h = [
        0x45,
        0,
        total[0],
        total[1],
        0,
        0,
        0x40,
        0,
        ENCAP_TTL,
        IPPROTO_IPIP,
        0,
        0,
        source[0],
        source[1],
        source[2],
        source[3],
        backend[0],
        backend[1],
        backend[2],
        backend[3],
    ];
    let check = ipv4_header_checksum(&h).to_be_bytes();
    h[10] = check[0];
    h[11] = check[1];
    h
}

/// The outer IPv6 header of a probe packet carrying `inner_len` octets (the inner header
/// included) from `source` to `backend`: IPv6-in-IPv6 (`next` [`crate::consts::IPPROTO_IPV6`])
/// or IPv4-in-IPv6 (`next` [`IPPROTO_IPIP`]), as the balancer's.
#[inline(always)]
pub fn outer_ipv6(inner_len: u16, next: u8, source: &[u8; 16], backend: &[u8; 16]) -> [u8; 40] {
    let len = inner_len.to_be_bytes();
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4] = len[0];
    h[5] = len[1];
    h[6] = next;
    h[7] = ENCAP_TTL;
    let mut i = 0;
    while i < 16 {
        h[8 + i] = source[i];
        h[24 + i] = backend[i];
        i += 1;
    }
    h
}

#[cfg(feature = "user")]
mod user {
    use super::ProbeTarget;

    // SAFETY: repr(C), Copy, every padding byte an explicit field.
    unsafe impl aya::Pod for ProbeTarget {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{checksum::internet_checksum, consts::IPPROTO_IPV6};

    #[test]
    fn the_outer_ipv4_header_verifies_and_carries_the_inner_packet() {
        let h = outer_ipv4(60, [10, 77, 0, 2], [10, 77, 0, 12]);
        assert_eq!(
            internet_checksum(&h),
            0,
            "a checksummed header sums to zero"
        );
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 80);
        assert_eq!((h[0], h[9], h[8]), (0x45, IPPROTO_IPIP, ENCAP_TTL));
        assert_eq!(&h[12..16], &[10, 77, 0, 2]);
        assert_eq!(&h[16..20], &[10, 77, 0, 12]);
        assert_eq!(h[6] & 0x40, 0x40, "don't fragment: the probe fits or fails");
    }

    #[test]
    fn the_outer_ipv6_header_carries_the_whole_inner_packet() {
        let (src, dst) = ([0xfd; 16], [0x12; 16]);
        let h = outer_ipv6(100, IPPROTO_IPV6, &src, &dst);
        assert_eq!(h[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 100);
        assert_eq!((h[6], h[7]), (IPPROTO_IPV6, ENCAP_TTL));
        assert_eq!(&h[8..24], &src);
        assert_eq!(&h[24..40], &dst);
        let h = outer_ipv6(60, IPPROTO_IPIP, &src, &dst);
        assert_eq!(h[6], IPPROTO_IPIP, "IPv4-in-IPv6");
    }

    #[test]
    fn only_the_probe_half_of_the_mark_space_is_taken() {
        assert!(is_probe_mark(PROBE_MARK_BASE));
        assert!(is_probe_mark(PROBE_MARK_BASE | 0xffff));
        assert!(!is_probe_mark(0));
        assert!(!is_probe_mark(0x5351_0001));
        assert!(!is_probe_mark(1));
    }
}
