//! The kernel's fronts: per-CPU, direct-mapped caches in front of the `SERVICES` and `SESSIONS`
//! hash maps. On this kind of machine a hash-map lookup is a helper call and return (tens of
//! nanoseconds with SRSO return thunks), while an array lookup is inlined by the verifier; a
//! packet whose service and session sit in the fronts makes no hash-map call for them.
//!
//! The fronts are a cache, never a table: the replay does not read them, and a packet routed
//! through them gets exactly what the hash maps say. How:
//!
//! - Each entry holds the full key as its tag, the value (or, for sessions, "absent": an
//!   unknown session is cached too, as the default-table path reads the map for nothing), and
//!   the *stamp* it was filled under. A tag or stamp mismatch is a miss: the hash map is read
//!   and the entry refilled.
//! - The stamp is [`stamp`] of the `FRONT_EPOCH` word, read once per packet *before* any map
//!   read. Every userspace writer of `SERVICES` or `SESSIONS` bumps the epoch after each update
//!   or delete returns, and counts the write as done only then. So an entry filled under epoch
//!   `e` was read from the map after every write whose bump made `e`, and no write has finished
//!   since (it would have moved the epoch on): a packet that reads `e` and hits that entry sees
//!   what the map held when it began, as if it had run just before the write still under way.
//! - The fronts are per-CPU arrays written only by the program on their own CPU, where XDP runs
//!   to completion without preemption, so no entry is ever read half-written; there are no
//!   concurrent writers to order, and userspace never writes them (a new program starts them
//!   zeroed, and a zero stamp never matches: see [`stamp`]).
//! - Ordering: the epoch load must not pass the map read that follows it, which holds on x86-64
//!   (loads are not reordered with older loads) but not on weakly ordered CPUs, where BPF has
//!   no read barrier. The dataplane uses the fronts only when built for x86-64.
//!
//! Direct-mapped rather than set-associative: one probe and no replacement state, and the
//! hit paths this serves are a few hot services and sessions per CPU.

use crate::{
    consts::{SERVICE_FRONT_ENTRIES, SESSION_FRONT_ENTRIES},
    maps::{Service, ServiceKey, SessionKey, ShardSet},
};

const _: () = {
    assert!(SERVICE_FRONT_ENTRIES.is_power_of_two());
    assert!(SESSION_FRONT_ENTRIES.is_power_of_two());
};

/// The stamp entries are filled and matched under while `FRONT_EPOCH` holds `epoch`: never 0,
/// so a never-filled (zeroed) entry never matches.
#[inline(always)]
pub const fn stamp(epoch: u64) -> u64 {
    epoch | 1 << 63
}

/// Fibonacci hashing of `h` down to an index below `entries` (a power of two).
#[inline(always)]
const fn fold(h: u64, entries: u32) -> u32 {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - entries.trailing_zeros())) as u32
}

/// The services front entry `key` may sit in.
#[inline(always)]
pub const fn service_index(key: &ServiceKey) -> u32 {
    let a = key.addr;
    let words = (a[0] as u64) << 32 ^ a[1] as u64 ^ (a[2] as u64) << 29 ^ (a[3] as u64) << 7;
    fold(
        words ^ (key.port as u64) << 48 ^ (key.proto as u64) << 40,
        SERVICE_FRONT_ENTRIES,
    )
}

/// The sessions front entry `key` may sit in.
#[inline(always)]
pub const fn session_index(key: &SessionKey) -> u32 {
    fold(
        key.session ^ (key.service as u64).rotate_left(40),
        SESSION_FRONT_ENTRIES,
    )
}

/// An entry of the services front.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    /// [`stamp`] of the epoch it was filled under (0: never filled).
    pub stamp: u64,
    /// The key it caches (the tag).
    pub key: ServiceKey,
    /// 1 if the map held the key, 0 if not (never cached for services: see [`Entry::CACHE_ABSENT`]).
    pub present: u32,
    /// The map's value for the key.
    pub value: Service,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// An entry of the sessions front.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEntry {
    /// [`stamp`] of the epoch it was filled under (0: never filled).
    pub stamp: u64,
    /// The key it caches (the tag).
    pub key: SessionKey,
    /// 1 if the map held the key, 0 if it did not (an unplaced session).
    pub present: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The map's value for the key, when present.
    pub value: ShardSet,
}

/// A front entry, for [`lookup`].
pub trait Entry {
    /// The map's key type.
    type Key: Copy;
    /// The map's value type.
    type Value: Copy;
    /// Whether a key the map does not hold is cached as absent. Not for services: every
    /// packet to the host's own addresses asks the services map for nothing, and caching those
    /// misses would evict the VIPs.
    const CACHE_ABSENT: bool;
    /// Whether the entry was filled for `key` under `stamp`. Without branches (one test for
    /// the verifier to walk, not one per field).
    fn hit(&self, stamp: u64, key: &Self::Key) -> bool;
    /// The entry's stamp, key, presence word and value, for [`Entry::fill`].
    fn fields(&mut self) -> (&mut u64, &mut Self::Key, &mut u32, &mut Self::Value);
    /// Fills the entry for `key` under `stamp` with the map's answer.
    #[inline(always)]
    fn fill(&mut self, stamp: u64, key: &Self::Key, value: Option<&Self::Value>) {
        let (entry_stamp, entry_key, present, entry_value) = self.fields();
        if let Some(found) = value {
            *entry_value = *found;
        }
        *present = value.is_some() as u32;
        *entry_key = *key;
        *entry_stamp = stamp;
    }
    /// The cached value, `None` if cached as absent.
    fn value(&self) -> Option<&Self::Value>;
}

impl Entry for ServiceEntry {
    type Key = ServiceKey;
    type Value = Service;
    const CACHE_ABSENT: bool = false;

    #[inline(always)]
    fn hit(&self, stamp: u64, key: &ServiceKey) -> bool {
        let (a, b) = (&self.key, key);
        let words = (a.addr[0] ^ b.addr[0])
            | (a.addr[1] ^ b.addr[1])
            | (a.addr[2] ^ b.addr[2])
            | (a.addr[3] ^ b.addr[3])
            | (a.port ^ b.port) as u32
            | (a.proto ^ b.proto) as u32;
        (self.stamp ^ stamp) | words as u64 == 0
    }

    #[inline(always)]
    fn fields(&mut self) -> (&mut u64, &mut ServiceKey, &mut u32, &mut Service) {
        (
            &mut self.stamp,
            &mut self.key,
            &mut self.present,
            &mut self.value,
        )
    }

    #[inline(always)]
    fn value(&self) -> Option<&Service> {
        // Only ever filled present (CACHE_ABSENT is off).
        Some(&self.value)
    }
}

impl Entry for SessionEntry {
    type Key = SessionKey;
    type Value = ShardSet;
    const CACHE_ABSENT: bool = true;

    #[inline(always)]
    fn hit(&self, stamp: u64, key: &SessionKey) -> bool {
        (self.stamp ^ stamp)
            | (self.key.session ^ key.session)
            | (self.key.service ^ key.service) as u64
            | (self.key._pad ^ key._pad) as u64
            == 0
    }

    #[inline(always)]
    fn fields(&mut self) -> (&mut u64, &mut SessionKey, &mut u32, &mut ShardSet) {
        (
            &mut self.stamp,
            &mut self.key,
            &mut self.present,
            &mut self.value,
        )
    }

    #[inline(always)]
    fn value(&self) -> Option<&ShardSet> {
        (self.present != 0).then_some(&self.value)
    }
}

/// `key`'s value through front entry `entry` under stamp `stamp`: the entry's if it was
/// filled for `key` under `stamp`, else `map`'s (the hash-map lookup), which refills the entry.
#[inline(always)]
pub fn lookup<'e, E: Entry>(
    entry: &'e mut E,
    stamp: u64,
    key: &E::Key,
    map: impl FnOnce(&E::Key) -> Option<&'e E::Value>,
) -> Option<&'e E::Value> {
    if !entry.hit(stamp, key) {
        let found = map(key);
        if found.is_none() && !E::CACHE_ABSENT {
            return None;
        }
        entry.fill(stamp, key, found);
    }
    let entry: &'e E = entry;
    entry.value()
}

#[cfg(all(test, feature = "user"))]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn set(generation: u64) -> ShardSet {
        ShardSet {
            generation,
            count: 1,
            backends: [1; crate::consts::MAX_SHARDS],
            ..ShardSet::default()
        }
    }

    fn skey(session: u64) -> SessionKey {
        SessionKey {
            service: 1,
            _pad: 0,
            session,
        }
    }

    /// A writer that updates, deletes and bumps the epoch as userspace does, and readers that
    /// go through one small front: every read is the map's answer.
    #[test]
    fn reads_through_the_front_are_the_maps_answer_under_every_write() {
        let mut map: HashMap<SessionKey, ShardSet> = HashMap::new();
        let mut front = vec![
            SessionEntry {
                stamp: 0,
                key: SessionKey::default(),
                present: 0,
                _pad: 0,
                value: ShardSet::default(),
            };
            4
        ];
        let mut epoch = 0u64;
        let mut rng = 0x1234_5678u64;
        for step in 0..20_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = skey(rng % 11);
            match rng >> 60 {
                0 => {
                    map.insert(key, set(step));
                    epoch += 1;
                }
                1 => {
                    map.remove(&key);
                    epoch += 1;
                }
                _ => {
                    let entry = &mut front[(session_index(&key) % 4) as usize];
                    let got = lookup(entry, stamp(epoch), &key, |k| map.get(k)).copied();
                    assert_eq!(got, map.get(&key).copied(), "step {step}");
                }
            }
        }
    }

    #[test]
    fn a_zeroed_entry_never_matches_and_absent_services_are_not_cached() {
        let mut e = ServiceEntry::default();
        let key = ServiceKey::default();
        let service = Service {
            id: 7,
            ..Service::default()
        };
        assert_eq!(lookup(&mut e, stamp(0), &key, |_| None), None);
        assert_eq!(e.stamp, 0, "a miss leaves a services entry alone");
        assert_eq!(
            lookup(&mut e, stamp(0), &key, |_| Some(&service)).copied(),
            Some(service)
        );
        // A hit does not ask the map.
        assert_eq!(
            lookup(&mut e, stamp(0), &key, |_| panic!("hit asked the map")).copied(),
            Some(service)
        );
        // A new epoch does.
        assert_eq!(lookup(&mut e, stamp(1), &key, |_| None), None);
    }

    #[test]
    fn entries_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceEntry>(), 8 + 20 + 4 + 20 + 4);
        assert_eq!(
            size_of::<SessionEntry>(),
            8 + 16 + 8 + size_of::<ShardSet>()
        );
    }

    #[test]
    fn indices_stay_in_range_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for s in 0..4 * SESSION_FRONT_ENTRIES as u64 {
            let i = session_index(&skey(s));
            assert!(i < SESSION_FRONT_ENTRIES);
            seen.insert(i);
        }
        assert!(seen.len() > SESSION_FRONT_ENTRIES as usize * 9 / 10);
        let mut seen = std::collections::HashSet::new();
        for port in 0..4 * SERVICE_FRONT_ENTRIES as u16 {
            let i = service_index(&ServiceKey {
                addr: crate::maps::v4_mapped([10, 0, 0, 1]),
                port,
                proto: 17,
                _pad: 0,
            });
            assert!(i < SERVICE_FRONT_ENTRIES);
            seen.insert(i);
        }
        assert!(seen.len() > SERVICE_FRONT_ENTRIES as usize * 9 / 10);
    }
}
