//! The placements in force, as the swap stage remembers them: one entry per placed session,
//! a million of them on a large node. A [`ShardSet`] is the kernel's map value, 208 bytes (16
//! members and 15 split points, nearly all unused); kept as is, the copy of a million-session
//! `SESSIONS` map cost the daemon about 450 MiB. Here the common set (at most 3 members, a
//! generation below 2^24, no split points) is packed into a `u64` beside its session number,
//! 16 bytes a session in a hash table by service, and every other set is kept whole aside, so
//! the copy is exact either way.

use std::collections::{hash_map::Entry, HashMap};

use rustc_hash::FxHashMap;
use shardline_common::{
    consts::NO_BACKEND,
    maps::{SessionKey, ShardSet},
};

use crate::snapshot::delta::{Placements, PlacementsMut};

/// Members a packed set holds.
const PACKED_MEMBERS: usize = 3;
/// Bits of a packed generation, count, scheme and each member id.
const GENERATION_BITS: u32 = 24;
const COUNT_BITS: u32 = 2;
const SCHEME_BITS: u32 = 1;
const ID_BITS: u32 = 12;
/// Where the count, the scheme and the first member start.
const COUNT_AT: u32 = GENERATION_BITS;
const SCHEME_AT: u32 = COUNT_AT + COUNT_BITS;
const IDS_AT: u32 = SCHEME_AT + SCHEME_BITS;
/// The value of a session whose set is kept whole in [`PlacedSets::whole`]: no packed set
/// has the top bit.
const WHOLE: u64 = 1 << 63;
const _: () = assert!(IDS_AT + PACKED_MEMBERS as u32 * ID_BITS <= 63);

fn mask(bits: u32) -> u64 {
    (1 << bits) - 1
}

/// `set` as a `u64`, if that loses nothing.
fn pack(set: &ShardSet) -> Option<u64> {
    let count = usize::try_from(set.count)
        .ok()
        .filter(|c| *c <= PACKED_MEMBERS)?;
    let mut v = set.generation;
    v |= (count as u64) << COUNT_AT;
    v |= u64::from(set.scheme) << SCHEME_AT;
    for (i, id) in set.backends[..count].iter().enumerate() {
        let id = u64::from(*id);
        if id > mask(ID_BITS) {
            return None;
        }
        v |= id << (IDS_AT + i as u32 * ID_BITS);
    }
    // Fields too wide for their bits, split points, counters slot and window flag as a fresh
    // set has them: a set that differs anywhere is kept whole.
    (set.generation <= mask(GENERATION_BITS)
        && u64::from(set.scheme) <= mask(SCHEME_BITS)
        && unpack(v) == *set)
        .then_some(v)
}

/// The set a [`pack`]ed value holds.
fn unpack(v: u64) -> ShardSet {
    let count = ((v >> COUNT_AT) & mask(COUNT_BITS)) as usize;
    let mut set = ShardSet {
        generation: v & mask(GENERATION_BITS),
        count: count as u32,
        scheme: ((v >> SCHEME_AT) & mask(SCHEME_BITS)) as u32,
        ..ShardSet::default()
    };
    for (i, slot) in set.backends[..count].iter_mut().enumerate() {
        *slot = ((v >> (IDS_AT + i as u32 * ID_BITS)) & mask(ID_BITS)) as u32;
    }
    debug_assert!(set.backends[count..].iter().all(|b| *b == NO_BACKEND));
    set
}

/// One shard set held compact: [`pack`]ed when that loses nothing, else boxed whole. 16 bytes
/// where a [`ShardSet`] takes 208: what the swap stage and the handoff board keep per open
/// handoff, tens of thousands of them while sessions are placed in bulk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactSet {
    /// A set [`pack`] holds.
    Packed(u64),
    /// Any other set.
    Whole(Box<ShardSet>),
}

impl CompactSet {
    /// The set, exactly as it was stored.
    pub fn get(&self) -> ShardSet {
        match self {
            CompactSet::Packed(v) => unpack(*v),
            CompactSet::Whole(set) => **set,
        }
    }
}

impl From<&ShardSet> for CompactSet {
    fn from(set: &ShardSet) -> Self {
        match pack(set) {
            Some(v) => CompactSet::Packed(v),
            None => CompactSet::Whole(Box::new(*set)),
        }
    }
}

/// Placed sessions' shard sets by session, compact (see the module header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacedSets {
    /// By service id, then session number: a packed set, or [`WHOLE`]. A service without
    /// placements has no table. Fx-hashed: a tick looks up and replaces 10,000 sessions here
    /// (SipHash was a fifth of that), as the control loop's session index does.
    sets: FxHashMap<u32, FxHashMap<u64, u64>>,
    /// The sets [`pack`] cannot hold.
    whole: FxHashMap<SessionKey, ShardSet>,
}

impl PlacedSets {
    fn set(&self, key: &SessionKey, v: u64) -> ShardSet {
        read(&self.whole, key, v)
    }

    /// Session `key`'s set, if placed.
    pub fn get(&self, key: &SessionKey) -> Option<ShardSet> {
        let v = *self.sets.get(&key.service)?.get(&key.session)?;
        Some(self.set(key, v))
    }

    /// Whether `key` is placed.
    pub fn contains_key(&self, key: &SessionKey) -> bool {
        self.sets
            .get(&key.service)
            .is_some_and(|s| s.contains_key(&key.session))
    }

    /// Places `key` on `set`, returning the set it had.
    pub fn insert(&mut self, key: SessionKey, set: ShardSet) -> Option<ShardSet> {
        self.update(&key, |_| Some(set))
    }

    /// Unplaces `key`, returning the set it had.
    pub fn remove(&mut self, key: &SessionKey) -> Option<ShardSet> {
        self.update(key, |_| None)
    }

    /// Placed sessions.
    pub fn len(&self) -> usize {
        self.sets.values().map(FxHashMap::len).sum()
    }

    /// Whether no session is placed.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Every placement, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (SessionKey, ShardSet)> + '_ {
        self.sets.iter().flat_map(move |(service, sets)| {
            sets.iter().map(move |(session, v)| {
                let key = SessionKey {
                    service: *service,
                    _pad: 0,
                    session: *session,
                };
                (key, self.set(&key, *v))
            })
        })
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
}

impl PlacementsMut for PlacedSets {
    fn update(
        &mut self,
        key: &SessionKey,
        decide: impl FnOnce(Option<ShardSet>) -> Option<ShardSet>,
    ) -> Option<ShardSet> {
        let Self { sets, whole } = self;
        let service = sets.entry(key.service).or_default();
        let old = match service.entry(key.session) {
            Entry::Occupied(mut entry) => {
                let v = *entry.get();
                let old = read(whole, key, v);
                match decide(Some(old)) {
                    Some(set) => *entry.get_mut() = hold(whole, key, v, &set),
                    None => {
                        entry.remove();
                        if v == WHOLE {
                            whole.remove(key);
                        }
                    }
                }
                Some(old)
            }
            Entry::Vacant(entry) => {
                if let Some(set) = decide(None) {
                    entry.insert(hold(whole, key, 0, &set));
                }
                None
            }
        };
        if service.is_empty() {
            sets.remove(&key.service);
        }
        old
    }
}

/// The set a session's table entry `v` stands for: packed in it, or kept in `whole`.
fn read(whole: &FxHashMap<SessionKey, ShardSet>, key: &SessionKey, v: u64) -> ShardSet {
    if v == WHOLE {
        *whole.get(key).expect("a set kept whole is in `whole`")
    } else {
        unpack(v)
    }
}

/// The value a session's table entry takes for `set`, its entry having been `was` (0: none):
/// packed, or [`WHOLE`] with the set kept in `whole` (and a set kept whole before forgotten
/// once it packs).
fn hold(
    whole: &mut FxHashMap<SessionKey, ShardSet>,
    key: &SessionKey,
    was: u64,
    set: &ShardSet,
) -> u64 {
    match pack(set) {
        Some(v) => {
            if was == WHOLE {
                whole.remove(key);
            }
            v
        }
        None => {
            whole.insert(*key, *set);
            WHOLE
        }
    }
}

impl FromIterator<(SessionKey, ShardSet)> for PlacedSets {
    fn from_iter<I: IntoIterator<Item = (SessionKey, ShardSet)>>(pairs: I) -> Self {
        let mut placed = Self::default();
        for (key, set) in pairs {
            placed.insert(key, set);
        }
        placed
    }
}

#[cfg(test)]
mod tests {
    use shardline_common::maps::scheme;

    use super::*;

    fn key(session: u64) -> SessionKey {
        SessionKey::new(1, session)
    }

    #[test]
    fn a_compact_set_is_16_bytes_and_gives_back_the_set_it_was_made_of() {
        assert_eq!(std::mem::size_of::<CompactSet>(), 16);
        let common = ShardSet::from_members(&[3, 1], scheme::HASH, 7).unwrap();
        assert!(matches!(CompactSet::from(&common), CompactSet::Packed(_)));
        assert_eq!(CompactSet::from(&common).get(), common);
        let wide = ShardSet::from_members(&[1, 2, 3, 4, 5], scheme::HASH, 7).unwrap();
        assert!(matches!(CompactSet::from(&wide), CompactSet::Whole(_)));
        assert_eq!(CompactSet::from(&wide).get(), wide);
    }

    #[test]
    fn a_common_placement_in_force_is_packed_in_a_u64() {
        assert!(std::mem::size_of::<ShardSet>() >= 200, "what it replaces");
        let set = ShardSet::from_members(&[3, 1, 2], scheme::HASH, 7).unwrap();
        assert_eq!(pack(&set).map(unpack), Some(set));
        let mut placed = PlacedSets::default();
        placed.insert(key(1), set);
        assert!(placed.whole.is_empty());
    }

    #[test]
    fn every_set_comes_back_exactly_packed_or_whole() {
        let mut range = ShardSet::from_members(&[1, 2], scheme::RANGE, 3).unwrap();
        range.splits[0] = 1 << 40;
        let sets = [
            ShardSet::from_members(&[1], scheme::HASH, 1).unwrap(),
            ShardSet::from_members(&[1, 2, 4095], scheme::HASH, (1 << 24) - 1).unwrap(),
            // Each one reason to keep it whole: four members, a wide id, a wide generation,
            // split points, a window flag, a counters slot.
            ShardSet::from_members(&[1, 2, 3, 4], scheme::HASH, 1).unwrap(),
            ShardSet::from_members(&[4096], scheme::HASH, 1).unwrap(),
            ShardSet::from_members(&[1], scheme::HASH, 1 << 24).unwrap(),
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
        assert_eq!(placed.len(), sets.len());
        for (i, set) in sets.iter().enumerate() {
            assert_eq!(placed.get(&key(i as u64)), Some(*set), "set {i}");
            let whole = placed.whole.contains_key(&key(i as u64));
            assert_eq!(whole, i >= 2, "set {i} kept whole");
        }
        assert_eq!(placed.to_map().len(), sets.len());
        // Replaced whole by packed and back, then removed: nothing is left behind.
        assert_eq!(placed.insert(key(2), sets[0]), Some(sets[2]));
        assert_eq!(placed.insert(key(2), sets[3]), Some(sets[0]));
        assert_eq!(placed.get(&key(2)), Some(sets[3]));
        for i in 0..sets.len() {
            assert!(placed.remove(&key(i as u64)).is_some());
        }
        assert!(!placed.contains_key(&key(0)));
        assert!(placed.is_empty());
        assert!(placed.whole.is_empty());
        assert_eq!(placed, PlacedSets::default());
    }

    #[test]
    fn an_update_holds_what_it_decides_and_gives_back_what_was_held() {
        let packed = ShardSet::from_members(&[1, 2], scheme::HASH, 3).unwrap();
        let wide = ShardSet::from_members(&[1, 2, 3, 4], scheme::HASH, 4).unwrap();
        let mut placed = PlacedSets::default();
        // Placed, kept, re-placed whole and back, unplaced; and a session left unplaced.
        assert_eq!(placed.update(&key(1), |_| Some(packed)), None);
        assert_eq!(placed.update(&key(1), |old| old), Some(packed));
        assert_eq!(placed.update(&key(1), |_| Some(wide)), Some(packed));
        assert_eq!(placed.get(&key(1)), Some(wide));
        assert_eq!(placed.update(&key(1), |_| Some(packed)), Some(wide));
        assert!(
            placed.whole.is_empty(),
            "a set that packs again is not kept whole"
        );
        assert_eq!(placed.update(&key(2), |_| None), None);
        assert_eq!(placed.update(&key(1), |_| None), Some(packed));
        assert_eq!(placed, PlacedSets::default());
        // As inserts and removals leave it.
        let mut inserted = PlacedSets::default();
        for (i, set) in [packed, wide, packed].iter().enumerate() {
            placed.update(&key(i as u64), |_| Some(*set));
            inserted.insert(key(i as u64), *set);
        }
        assert_eq!(placed, inserted);
    }
}
