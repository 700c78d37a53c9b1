//! The placements in force, as the swap stage remembers them: one entry per placed session,
//! a million of them on a large node. A [`ShardSet`] is the kernel's map value, 208 bytes (16
//! members and 15 split points, nearly all unused); kept as is, the copy of a million-session
//! `SESSIONS` map cost the daemon about 450 MiB. Here the common set (at most 4
//! members with ids below 65,536, no split points) is 16 bytes inline and every other
//! set is boxed, so the copy is exact either way.

use std::collections::HashMap;

use shardline_common::{
    consts::NO_BACKEND,
    maps::{SessionKey, ShardSet},
};

use crate::snapshot::delta::Placements;

/// Members a set keeps inline.
const INLINE: usize = 4;

/// One placement in force.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Packed {
    /// A set [`Packed::Inline`] holds exactly (see [`Packed::of`]).
    Inline {
        generation: u32,
        count: u8,
        scheme: u8,
        backends: [u16; INLINE],
    },
    /// Any other set.
    Boxed(Box<ShardSet>),
}

impl Packed {
    /// `set` inline when that loses nothing, else boxed.
    fn of(set: &ShardSet) -> Self {
        let inline = (|| {
            let count = usize::try_from(set.count).ok().filter(|c| *c <= INLINE)?;
            let mut backends = [0; INLINE];
            for (slot, id) in backends.iter_mut().zip(&set.backends[..count]) {
                *slot = u16::try_from(*id).ok()?;
            }
            Some(Packed::Inline {
                generation: u32::try_from(set.generation).ok()?,
                count: count as u8,
                scheme: u8::try_from(set.scheme).ok()?,
                backends,
            })
        })();
        match inline {
            // Padding members, split points, counters slot and window flag as a fresh set has
            // them; a set that differs anywhere is kept whole.
            Some(packed) if packed.set() == *set => packed,
            _ => Packed::Boxed(Box::new(*set)),
        }
    }

    /// The set it holds.
    fn set(&self) -> ShardSet {
        match self {
            Packed::Inline {
                generation,
                count,
                scheme,
                backends,
            } => {
                let mut set = ShardSet {
                    generation: u64::from(*generation),
                    count: u32::from(*count),
                    scheme: u32::from(*scheme),
                    ..ShardSet::default()
                };
                for (slot, id) in set.backends.iter_mut().zip(&backends[..*count as usize]) {
                    *slot = u32::from(*id);
                }
                debug_assert!(set.backends[*count as usize..]
                    .iter()
                    .all(|b| *b == NO_BACKEND));
                set
            }
            Packed::Boxed(set) => **set,
        }
    }
}

/// Placed sessions' shard sets by session, compact (see the module header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacedSets {
    sets: HashMap<SessionKey, Packed>,
}

impl PlacedSets {
    /// Session `key`'s set, if placed.
    pub fn get(&self, key: &SessionKey) -> Option<ShardSet> {
        self.sets.get(key).map(Packed::set)
    }

    /// Whether `key` is placed.
    pub fn contains_key(&self, key: &SessionKey) -> bool {
        self.sets.contains_key(key)
    }

    /// Places `key` on `set`, returning the set it had.
    pub fn insert(&mut self, key: SessionKey, set: ShardSet) -> Option<ShardSet> {
        self.sets.insert(key, Packed::of(&set)).map(|p| p.set())
    }

    /// Unplaces `key`, returning the set it had.
    pub fn remove(&mut self, key: &SessionKey) -> Option<ShardSet> {
        self.sets.remove(key).map(|p| p.set())
    }

    /// Placed sessions.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether no session is placed.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Every placement, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (SessionKey, ShardSet)> + '_ {
        self.sets.iter().map(|(k, p)| (*k, p.set()))
    }

    /// Every placement as a plain map (what [`crate::snapshot::Snapshot::sessions`] holds).
    pub fn to_map(&self) -> HashMap<SessionKey, ShardSet> {
        self.iter().collect()
    }
}

impl Placements for PlacedSets {
    fn placement(&self, key: &SessionKey) -> Option<ShardSet> {
        self.get(key)
    }

    fn placed(&self) -> Vec<SessionKey> {
        self.sets.keys().copied().collect()
    }
}

impl FromIterator<(SessionKey, ShardSet)> for PlacedSets {
    fn from_iter<I: IntoIterator<Item = (SessionKey, ShardSet)>>(pairs: I) -> Self {
        Self {
            sets: pairs
                .into_iter()
                .map(|(k, s)| (k, Packed::of(&s)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use shardline_common::maps::scheme;

    use super::*;

    fn key(session: u64) -> SessionKey {
        SessionKey {
            service: 1,
            _pad: 0,
            session,
        }
    }

    #[test]
    fn a_placement_in_force_costs_16_bytes_inline() {
        assert_eq!(std::mem::size_of::<Packed>(), 16);
        assert!(std::mem::size_of::<ShardSet>() >= 200, "what it replaces");
        let set = ShardSet::from_members(&[3, 1, 2], scheme::HASH, 7).unwrap();
        assert!(matches!(Packed::of(&set), Packed::Inline { .. }));
    }

    #[test]
    fn every_set_comes_back_exactly_inline_or_boxed() {
        let mut range = ShardSet::from_members(&[1, 2], scheme::RANGE, 3).unwrap();
        range.splits[0] = 1 << 40;
        let sets = [
            ShardSet::from_members(&[1], scheme::HASH, 1).unwrap(),
            ShardSet::from_members(&[1, 2, 3, 4], scheme::HASH, u64::from(u32::MAX)).unwrap(),
            // Each one reason to box: five members, a wide id, a wide generation, split
            // points, a window flag, a counters slot.
            ShardSet::from_members(&[1, 2, 3, 4, 5], scheme::HASH, 1).unwrap(),
            ShardSet::from_members(&[70_000], scheme::HASH, 1).unwrap(),
            ShardSet::from_members(&[1], scheme::HASH, 1 << 33).unwrap(),
            range,
            ShardSet {
                handoff: 1,
                ..ShardSet::from_members(&[1], scheme::HASH, 1).unwrap()
            },
            ShardSet {
                stats_slot: 9,
                ..ShardSet::from_members(&[1], scheme::HASH, 1).unwrap()
            },
        ];
        let mut placed = PlacedSets::default();
        for (i, set) in sets.iter().enumerate() {
            assert_eq!(placed.insert(key(i as u64), *set), None);
        }
        for (i, set) in sets.iter().enumerate() {
            assert_eq!(placed.get(&key(i as u64)), Some(*set), "set {i}");
            let boxed = matches!(placed.sets[&key(i as u64)], Packed::Boxed(_));
            assert_eq!(boxed, i >= 2, "set {i} boxed");
        }
        assert_eq!(placed.to_map().len(), sets.len());
        assert_eq!(placed.remove(&key(0)), Some(sets[0]));
        assert!(!placed.contains_key(&key(0)));
    }
}
