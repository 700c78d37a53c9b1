//! The outer header of an encapsulated packet: its family ([`outer_v6`]: IPv4-in-IPv6 for an
//! IPv4 packet to a backend with only IPv6) and the IPv4 source of an IPIP packet, fixed or
//! taken from a prefix by the packet's hash (Katran's `IPIP_V4_PREFIX`), so a backend's RSS
//! spreads encapsulated flows over its queues. The kernel writes them and the replay checks
//! them with these functions.

use crate::{
    hash::encap_source_hash,
    maps::{backend_flags, Globals},
};

/// Whether a packet of the family `v6` to a backend with `flags` ([`backend_flags`]) leaves
/// with an IPv6 outer header: an IPv6 packet (IP6IP6), or an IPv4 one to a backend without an
/// IPv4 address (IPv4-in-IPv6). Also the family the FIB is asked for the backend's address.
#[inline(always)]
pub const fn outer_v6(v6: bool, flags: u32) -> bool {
    v6 | (flags & backend_flags::HAS_V4 == 0)
}

/// The outer IPv4 source of a packet of session `session` with request key `key`, as the
/// native word of its wire bytes: `g.src4`, its [`Globals::src4_hash_mask`] bits replaced by
/// [`encap_source_hash`]'s. Without a mask it is one test more than a fixed source.
#[inline(always)]
pub const fn outer_src4(g: &Globals, session: u64, key: u64) -> u32 {
    let src = u32::from_ne_bytes(g.src4);
    let mask = u32::from_ne_bytes(g.src4_hash_mask);
    if mask == 0 {
        return src;
    }
    let hash = encap_source_hash(session, key) as u32;
    (src & !mask) | (hash & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipip_source_keeps_its_prefix_and_takes_the_host_bits_from_the_hash() {
        let fixed = Globals {
            src4: [10, 0, 0, 2],
            ..Globals::default()
        };
        let bytes = |w: u32| w.to_ne_bytes();
        assert_eq!(
            bytes(outer_src4(&fixed, 1, 2)),
            [10, 0, 0, 2],
            "no mask: fixed"
        );
        let prefixed = Globals {
            src4: [172, 16, 0, 0],
            src4_hash_mask: [0, 0, 255, 255],
            ..Globals::default()
        };
        let mut seen = std::collections::HashSet::new();
        for key in 0..1_000u64 {
            let s = bytes(outer_src4(&prefixed, 7, key));
            assert_eq!(s[..2], [172, 16], "key {key}: outside the prefix");
            assert_eq!(s, bytes(outer_src4(&prefixed, 7, key)), "deterministic");
            seen.insert(s);
        }
        // 1,000 keys over 65,536 hosts: a handful of collisions at most.
        assert!(seen.len() > 980, "{} distinct sources", seen.len());
        assert_ne!(
            outer_src4(&prefixed, 7, 1),
            outer_src4(&prefixed, 8, 1),
            "session counts"
        );
    }
}
