//! Hash functions of the routing decision. All are pure integer arithmetic (no tables, no
//! loops over input length) so the eBPF program runs exactly the same code as userspace.

use crate::{consts::MAGLEV_SIZE, maps::Addr};

/// MurmurHash3's 64-bit finalizer: a fast bijective mixer with full avalanche.
#[inline(always)]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Golden-ratio constant used to spread small integers (backend ids, ports) before mixing.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// Hash of an address (IPv4 addresses are IPv4-mapped IPv6): the flow-mode session id.
#[inline(always)]
pub fn addr_hash(addr: &Addr) -> u64 {
    let hi = (u64::from(addr[0]) << 32) | u64::from(addr[1]);
    let lo = (u64::from(addr[2]) << 32) | u64::from(addr[3]);
    mix64(lo ^ mix64(hi ^ SPREAD))
}

/// Hash of a 5-tuple: the flow-mode request key, so one connection always lands on one shard.
#[inline(always)]
pub fn flow_hash(src: &Addr, dst: &Addr, sport: u16, dport: u16, proto: u8) -> u64 {
    let ports = (u64::from(sport) << 32) | (u64::from(dport) << 8) | u64::from(proto);
    mix64(addr_hash(src) ^ addr_hash(dst).rotate_left(17) ^ ports.wrapping_mul(SPREAD))
}

/// Rendezvous (highest random weight) score of `backend` for `key`: the shard set member with
/// the highest score owns the key, so adding a member moves only the keys it wins and removing
/// one moves only the keys it owned.
#[inline(always)]
pub const fn rendezvous_score(key: u64, backend: u32) -> u64 {
    mix64(key ^ (backend as u64 + 1).wrapping_mul(SPREAD))
}

/// The hash that picks a request's Maglev slot: modulo the default table's size for the
/// default table, modulo a pool's ring size for a service with a pool.
#[inline(always)]
pub const fn ring_hash(session: u64, key: u64) -> u64 {
    mix64(session ^ key.rotate_left(32))
}

/// The hash whose bits fill the host part of an IPIP packet's outer source when the source is
/// a prefix ([`crate::encap::outer_src4`]): the session and the request key (flow mode:
/// the 5-tuple's hash; QUIC: the connection id's), so a backend's RSS spreads its encapsulated
/// traffic over its queues while one flow keeps one queue. Mixed apart from [`ring_hash`], so
/// the source carries no trace of the slot that chose the backend.
#[inline(always)]
pub const fn encap_source_hash(session: u64, key: u64) -> u64 {
    mix64(key ^ session.rotate_left(32) ^ SPREAD)
}

/// Slot of the default Maglev table for a request of an unplaced session.
#[inline(always)]
pub const fn maglev_slot(session: u64, key: u64) -> u32 {
    (ring_hash(session, key) % MAGLEV_SIZE as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix64_is_deterministic_and_spreads() {
        assert_eq!(mix64(0), 0);
        assert_ne!(mix64(1), mix64(2));
        assert_eq!(mix64(12345), mix64(12345));
        // One flipped input bit flips about half of the output bits.
        let flipped = (mix64(0x1234) ^ mix64(0x1235)).count_ones();
        assert!((20..=44).contains(&flipped), "{flipped}");
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let a = [1u32; 4];
        let b = [2u32; 4];
        let base = flow_hash(&a, &b, 1000, 80, 6);
        assert_ne!(base, flow_hash(&b, &a, 1000, 80, 6));
        assert_ne!(base, flow_hash(&a, &b, 1001, 80, 6));
        assert_ne!(base, flow_hash(&a, &b, 1000, 81, 6));
        assert_ne!(base, flow_hash(&a, &b, 1000, 80, 17));
    }

    #[test]
    fn maglev_slot_is_in_range() {
        for i in 0..10_000u64 {
            assert!(maglev_slot(i, i * 7) < MAGLEV_SIZE);
        }
    }
}
