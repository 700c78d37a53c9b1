//! How a placed session's keys are split across its shard set, one function per scheme. Pure
//! and bounded, so the XDP program and the userspace replay run the same code.
//!
//! - **hash**: rendezvous (highest random weight) hashing. Adding a member moves exactly the keys
//!   it now wins; removing one moves exactly the keys it owned.
//! - **range**: sorted split points over the key space and a bounded binary search; a re-shard
//!   moves whole key ranges, which backends that store ordered data can hand over cheaply.

use crate::{
    consts::{MAX_SHARDS, NO_BACKEND},
    hash::rendezvous_score,
    maps::{scheme, ShardSet},
};

/// The member of `set` that owns `key` under its scheme; `None` for an empty set (the session
/// falls back to the default table).
#[inline(always)]
pub fn pick_shard(set: &ShardSet, key: u64) -> Option<u32> {
    let id = if set.scheme == scheme::RANGE {
        range_owner(set, key)
    } else {
        rendezvous_owner(set, key)
    };
    if id == NO_BACKEND {
        None
    } else {
        Some(id)
    }
}

/// Rendezvous hashing over the first `count` members.
#[inline(always)]
pub fn rendezvous_owner(set: &ShardSet, key: u64) -> u32 {
    let mut best = NO_BACKEND;
    let mut best_score = 0u64;
    let mut i = 0;
    while i < MAX_SHARDS {
        if i as u32 >= set.count {
            break;
        }
        let b = set.backends[i];
        let score = rendezvous_score(key, b);
        if best == NO_BACKEND || score > best_score {
            best = b;
            best_score = score;
        }
        i += 1;
    }
    best
}

/// Binary search of the split points: the first member whose split is above `key`, else the
/// last member. Five rounds cover 16 members, so the loop bound is a constant.
#[inline(always)]
pub fn range_owner(set: &ShardSet, key: u64) -> u32 {
    let count = set.count as usize;
    if count == 0 || count > MAX_SHARDS {
        return NO_BACKEND;
    }
    let (mut lo, mut hi) = (0usize, count - 1);
    let mut round = 0;
    while round < 5 {
        if lo < hi {
            let mid = (lo + hi) / 2;
            let split = match set.splits.get(mid) {
                Some(s) => *s,
                None => return NO_BACKEND,
            };
            if key < split {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        round += 1;
    }
    match set.backends.get(lo) {
        Some(b) => *b,
        None => NO_BACKEND,
    }
}

/// Split points dividing the key space into `count` equal ranges.
pub fn even_splits(count: usize) -> [u64; MAX_SHARDS - 1] {
    let mut splits = [u64::MAX; MAX_SHARDS - 1];
    if count == 0 {
        return splits;
    }
    let width = u64::MAX / count as u64;
    let mut i = 0;
    while i + 1 < count && i < MAX_SHARDS - 1 {
        splits[i] = width * (i as u64 + 1);
        i += 1;
    }
    splits
}

/// Why a list of backends is not a shard set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSetError {
    /// No backend at all (an unplaced session has no shard set; the default table routes it).
    Empty,
    /// More than [`MAX_SHARDS`] backends.
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A backend named twice.
    Duplicate {
        /// The backend id.
        id: u32,
    },
}

impl core::fmt::Display for ShardSetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => write!(f, "a shard set needs at least one backend"),
            Self::TooMany { count } => write!(
                f,
                "a shard set holds at most {MAX_SHARDS} backends, got {count}"
            ),
            Self::Duplicate { id } => write!(f, "backend {id} is listed twice in a shard set"),
        }
    }
}

#[cfg(feature = "user")]
impl std::error::Error for ShardSetError {}

impl ShardSet {
    /// The shard set of 1 to [`MAX_SHARDS`] distinct backends `members` (in this order) under
    /// `scheme_id` (one of [`scheme`]; ranges get even split points) at `generation`: the one
    /// check every writer of placements makes.
    pub fn from_members(
        members: &[u32],
        scheme_id: u32,
        generation: u64,
    ) -> Result<ShardSet, ShardSetError> {
        if members.is_empty() {
            return Err(ShardSetError::Empty);
        }
        if members.len() > MAX_SHARDS {
            return Err(ShardSetError::TooMany {
                count: members.len(),
            });
        }
        for (i, id) in members.iter().enumerate() {
            if members[..i].contains(id) {
                return Err(ShardSetError::Duplicate { id: *id });
            }
        }
        Ok(shard_set(members, scheme_id, generation))
    }
}

/// A shard set over `backends` with scheme `scheme` and, for ranges, even split points,
/// unchecked: members past [`MAX_SHARDS`] are cut off. Fixtures use it; writers of placements
/// use [`ShardSet::from_members`].
pub fn shard_set(backends: &[u32], scheme_id: u32, generation: u64) -> ShardSet {
    let mut set = ShardSet {
        generation,
        scheme: scheme_id,
        ..ShardSet::default()
    };
    let n = backends.len().min(MAX_SHARDS);
    set.backends[..n].copy_from_slice(&backends[..n]);
    set.count = n as u32;
    if scheme_id == scheme::RANGE {
        set.splits = even_splits(n);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_owner_follows_the_splits() {
        let set = shard_set(&[10, 20, 30, 40], scheme::RANGE, 1);
        let q = u64::MAX / 4;
        assert_eq!(pick_shard(&set, 0), Some(10));
        assert_eq!(pick_shard(&set, q - 1), Some(10));
        assert_eq!(pick_shard(&set, q), Some(20));
        assert_eq!(pick_shard(&set, 2 * q), Some(30));
        assert_eq!(pick_shard(&set, 3 * q), Some(40));
        assert_eq!(pick_shard(&set, u64::MAX), Some(40));
    }

    #[test]
    fn range_owner_handles_every_size() {
        for n in 1..=MAX_SHARDS {
            let ids: Vec<u32> = (0..n as u32).collect();
            let set = shard_set(&ids, scheme::RANGE, 1);
            for (i, id) in ids.iter().enumerate() {
                let start = if i == 0 { 0 } else { set.splits[i - 1] };
                assert_eq!(range_owner(&set, start), *id, "n={n} i={i}");
            }
            assert_eq!(range_owner(&set, u64::MAX), ids[n - 1]);
        }
    }

    #[test]
    fn from_members_takes_one_to_max_shards_distinct_backends() {
        let all: [u32; MAX_SHARDS + 1] = core::array::from_fn(|i| i as u32);
        assert_eq!(
            ShardSet::from_members(&[], scheme::HASH, 1),
            Err(ShardSetError::Empty)
        );
        assert_eq!(
            ShardSet::from_members(&all, scheme::HASH, 1),
            Err(ShardSetError::TooMany {
                count: MAX_SHARDS + 1
            })
        );
        assert_eq!(
            ShardSet::from_members(&[4, 7, 4], scheme::HASH, 1),
            Err(ShardSetError::Duplicate { id: 4 })
        );
        let one = ShardSet::from_members(&[9], scheme::HASH, 3).expect("one backend");
        assert_eq!((one.count, one.backends[0], one.generation), (1, 9, 3));
        let full = ShardSet::from_members(&all[..MAX_SHARDS], scheme::RANGE, 1).expect("full");
        assert_eq!(full, shard_set(&all[..MAX_SHARDS], scheme::RANGE, 1));
    }

    #[test]
    fn empty_sets_fall_back() {
        assert_eq!(pick_shard(&ShardSet::default(), 5), None);
        let range = ShardSet {
            scheme: scheme::RANGE,
            ..ShardSet::default()
        };
        assert_eq!(pick_shard(&range, 5), None);
    }
}
