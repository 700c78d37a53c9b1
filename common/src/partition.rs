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
///
/// The leader is replaced by arithmetic, not a branch: in the eBPF program a branch per member
/// (LLVM turned `best == NO_BACKEND || score > best_score` into two compare-and-set diamonds)
/// split the verifier's states four ways per member, and it walks this loop once for every
/// path that reaches a placed session: half of the `shardline` program's verified
/// instructions (see the README's verifier budget). The first member leads without a compare
/// (the loop would take it over `NO_BACKEND` anyway), which keeps the per-packet price of the
/// arithmetic to the other members.
#[inline(always)]
pub fn rendezvous_owner(set: &ShardSet, key: u64) -> u32 {
    if set.count == 0 {
        return NO_BACKEND;
    }
    // Ids held zero-extended in 64 bits, so `leaderless` needs no extension of its own.
    let mut best = u64::from(set.backends[0]);
    let mut best_score = rendezvous_score(key, set.backends[0]);
    let mut i = 1;
    while i < MAX_SHARDS {
        if i as u32 >= set.count {
            break;
        }
        let b = set.backends[i];
        let score = rendezvous_score(key, b);
        // `best == NO_BACKEND || score > best_score`, as a mask.
        let take = (leaderless(best) | below(best_score, score)).wrapping_neg();
        best ^= (best ^ u64::from(b)) & take;
        best_score ^= (best_score ^ score) & take;
        i += 1;
    }
    best as u32
}

/// 1 if `best` (an id, zero-extended) is [`NO_BACKEND`] (`u32::MAX`), else 0, without a branch.
#[inline(always)]
const fn leaderless(best: u64) -> u64 {
    (best + 1) >> 32
}

/// 1 if `a < b`, else 0, without a branch: the sign of `a / 2 - b / 2 - borrow`, where the
/// borrow is 1 when the low bits the halving dropped make `a` the smaller (`a` even, `b` odd).
/// Both halves are below 2^63, so the difference cannot overflow.
#[inline(always)]
const fn below(a: u64, b: u64) -> u64 {
    ((a >> 1) as i64 - (b >> 1) as i64 - (!a & b & 1) as i64) as u64 >> 63
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

    /// The set's members, in order (`count` of them, at most [`MAX_SHARDS`]).
    pub fn members(&self) -> &[u32] {
        &self.backends[..(self.count as usize).min(MAX_SHARDS)]
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
    fn the_branchless_compares_match_the_plain_ones() {
        let edges = [
            0,
            1,
            2,
            3,
            u64::MAX / 2,
            u64::MAX / 2 + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = edges.to_vec();
        for _ in 0..200 {
            x = crate::hash::mix64(x);
            values.push(x);
            values.push(x >> 40);
        }
        for &a in &values {
            for &b in &values {
                assert_eq!(below(a, b), u64::from(a < b), "below({a:#x}, {b:#x})");
            }
            let id = a as u32;
            let want = u64::from(id == NO_BACKEND);
            assert_eq!(leaderless(u64::from(id)), want, "leaderless({id:#x})");
        }
        assert_eq!(leaderless(u64::from(NO_BACKEND)), 1);
    }

    /// The owner the loop gave before it was made branchless, as the specification.
    fn plain_rendezvous_owner(set: &ShardSet, key: u64) -> u32 {
        let mut best = NO_BACKEND;
        let mut best_score = 0u64;
        for &b in &set.backends[..set.count as usize] {
            let score = rendezvous_score(key, b);
            if best == NO_BACKEND || score > best_score {
                best = b;
                best_score = score;
            }
        }
        best
    }

    #[test]
    fn rendezvous_owner_picks_the_highest_score() {
        let mut x = 7u64;
        for n in 0..=MAX_SHARDS {
            // A member named NO_BACKEND (no valid set has one) is still replaced, as before.
            let ids: Vec<u32> = (0..n as u32)
                .map(|i| {
                    if i == 1 || (n % 3 == 0 && i == 0) {
                        NO_BACKEND
                    } else {
                        i * 37 + 3
                    }
                })
                .collect();
            let mut set = ShardSet {
                count: n as u32,
                ..ShardSet::default()
            };
            set.backends[..n].copy_from_slice(&ids);
            for _ in 0..500 {
                x = crate::hash::mix64(x);
                assert_eq!(
                    rendezvous_owner(&set, x),
                    plain_rendezvous_owner(&set, x),
                    "n={n} key={x:#x}"
                );
            }
        }
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
