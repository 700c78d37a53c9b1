//! Re-shard plans: what moves where, as a pure function of the old and the new assignment. The
//! daemon publishes a plan with every swap so backends can hand data over (header mode keeps
//! the previous owner known for a handoff window; see the README).

use crate::maps::{scheme, ShardSet};

/// Maglev slots that change owner, grouped by (from, to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMove {
    /// Previous owner ([`NO_BACKEND`] for an empty slot).
    pub from: u32,
    /// New owner.
    pub to: u32,
    /// How many slots.
    pub slots: u32,
}

/// The delta between two default tables, sorted by (from, to).
pub fn maglev_plan(old: &[u32], new: &[u32]) -> Vec<SlotMove> {
    let mut moves: std::collections::BTreeMap<(u32, u32), u32> = Default::default();
    for (a, b) in old.iter().zip(new) {
        if a != b {
            *moves.entry((*a, *b)).or_default() += 1;
        }
    }
    moves
        .into_iter()
        .map(|((from, to), slots)| SlotMove { from, to, slots })
        .collect()
}

/// A key range that changes owner: keys in `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeMove {
    /// First key of the range.
    pub start: u64,
    /// Last key of the range (inclusive).
    pub end: u64,
    /// Previous owner.
    pub from: u32,
    /// New owner.
    pub to: u32,
}

/// An owner change between two rendezvous shard sets: some keys of `from` go to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnerMove {
    /// Previous owner.
    pub from: u32,
    /// New owner.
    pub to: u32,
}

/// What a session re-shard moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionPlan {
    /// Nothing changes owner.
    Unchanged,
    /// Range scheme on both sides: exactly these key ranges move.
    Ranges(Vec<RangeMove>),
    /// Hash scheme on both sides: keys move only along these (from, to) pairs; which keys is
    /// decided per key by rendezvous hashing.
    Owners(Vec<OwnerMove>),
    /// The scheme changed (or the session was unplaced): any key may move to any new member.
    Rebuild,
}

/// The plan for one session going from `old` (None: not placed) to `new`.
pub fn session_plan(old: Option<&ShardSet>, new: &ShardSet) -> SessionPlan {
    let Some(old) = old else {
        return SessionPlan::Rebuild;
    };
    if old.scheme != new.scheme {
        return SessionPlan::Rebuild;
    }
    if new.scheme == scheme::RANGE {
        let moves = range_plan(old, new);
        if moves.is_empty() {
            return SessionPlan::Unchanged;
        }
        SessionPlan::Ranges(moves)
    } else {
        let moves = owner_plan(old, new);
        if moves.is_empty() {
            return SessionPlan::Unchanged;
        }
        SessionPlan::Owners(moves)
    }
}

/// Rendezvous owner changes: a removed member's keys spread over the new set; a surviving
/// member loses keys only to added members. Nothing else moves.
pub fn owner_plan(old: &ShardSet, new: &ShardSet) -> Vec<OwnerMove> {
    let (o, n) = (old.members(), new.members());
    let added: Vec<u32> = n.iter().copied().filter(|b| !o.contains(b)).collect();
    let mut moves = Vec::new();
    for from in o {
        if n.contains(from) {
            moves.extend(added.iter().map(|to| OwnerMove {
                from: *from,
                to: *to,
            }));
        } else {
            moves.extend(n.iter().map(|to| OwnerMove {
                from: *from,
                to: *to,
            }));
        }
    }
    moves.sort();
    moves
}

/// The ranges each member owns: `(start, end inclusive, owner)`, covering the key space.
pub fn ranges(set: &ShardSet) -> Vec<(u64, u64, u32)> {
    let m = set.members();
    let mut out = Vec::with_capacity(m.len());
    let mut start = 0u64;
    for (i, owner) in m.iter().enumerate() {
        if i + 1 == m.len() {
            out.push((start, u64::MAX, *owner));
            break;
        }
        let split = set.splits[i];
        if split > start {
            out.push((start, split - 1, *owner));
            start = split;
        }
    }
    out
}

/// Exact key ranges that change owner between two range-scheme sets.
pub fn range_plan(old: &ShardSet, new: &ShardSet) -> Vec<RangeMove> {
    let (a, b) = (ranges(old), ranges(new));
    let (mut i, mut j, mut start) = (0, 0, 0u64);
    let mut moves: Vec<RangeMove> = Vec::new();
    while i < a.len() && j < b.len() {
        let end = a[i].1.min(b[j].1);
        let (from, to) = (a[i].2, b[j].2);
        if from != to {
            match moves.last_mut() {
                Some(m) if m.from == from && m.to == to && m.end.wrapping_add(1) == start => {
                    m.end = end
                }
                _ => moves.push(RangeMove {
                    start,
                    end,
                    from,
                    to,
                }),
            }
        }
        if end == u64::MAX {
            break;
        }
        start = end + 1;
        if a[i].1 == end {
            i += 1;
        }
        if b[j].1 == end {
            j += 1;
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        consts::{MAGLEV_SIZE, MAX_SHARDS, NO_BACKEND},
        hash::mix64,
        maglev::{build, Weighted},
        partition::{pick_shard, shard_set},
    };

    const SAMPLES: u64 = 100_000;

    fn owners(set: &ShardSet) -> Vec<u32> {
        (0..SAMPLES)
            .map(|i| pick_shard(set, mix64(i + 1)).unwrap())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn growing_moves_only_keys_to_the_new_shard(n in 1usize..MAX_SHARDS, seed in any::<u32>()) {
            let ids: Vec<u32> = (0..=n as u32).map(|i| seed.wrapping_add(i * 7919) % 4000).collect();
            prop_assume!({ let mut d = ids.clone(); d.sort(); d.dedup(); d.len() == ids.len() });
            let before = shard_set(&ids[..n], scheme::HASH, 1);
            let after = shard_set(&ids, scheme::HASH, 2);
            let (a, b) = (owners(&before), owners(&after));
            let mut moved = 0u64;
            for (x, y) in a.iter().zip(&b) {
                if x != y {
                    prop_assert_eq!(*y, ids[n], "a key moved between old shards");
                    moved += 1;
                }
            }
            let ideal = SAMPLES as f64 / (n as f64 + 1.0);
            prop_assert!(moved as f64 <= 1.1 * ideal, "moved {} of {}, ideal {}", moved, SAMPLES, ideal);
            prop_assert_eq!(owner_plan(&before, &after).iter().all(|m| m.to == ids[n]), true);
        }

        #[test]
        fn removing_a_shard_moves_only_its_keys(n in 2usize..=MAX_SHARDS, victim in any::<prop::sample::Index>()) {
            let ids: Vec<u32> = (0..n as u32).map(|i| i * 3 + 1).collect();
            let gone = ids[victim.index(n)];
            let kept: Vec<u32> = ids.iter().copied().filter(|b| *b != gone).collect();
            let before = shard_set(&ids, scheme::HASH, 1);
            let after = shard_set(&kept, scheme::HASH, 2);
            for (x, y) in owners(&before).iter().zip(&owners(&after)) {
                if x != y {
                    prop_assert_eq!(*x, gone, "a key of a surviving shard moved");
                }
            }
            prop_assert!(owner_plan(&before, &after).iter().all(|m| m.from == gone));
        }

        #[test]
        fn maglev_stays_within_one_percent_of_even(n in 1u32..=650, seed in any::<u16>()) {
            let backends: Vec<Weighted> = (0..n).map(|i| Weighted { id: u32::from(seed) + i, weight: 1 }).collect();
            let table = build(&backends, MAGLEV_SIZE);
            let mut counts = std::collections::HashMap::<u32, u32>::new();
            for id in &table {
                *counts.entry(*id).or_default() += 1;
            }
            prop_assert_eq!(counts.len() as u32, n);
            let even = f64::from(MAGLEV_SIZE) / f64::from(n);
            for c in counts.values() {
                prop_assert!((f64::from(*c) - even).abs() <= 0.01 * even, "{} slots vs even {}", c, even);
            }
        }

        #[test]
        fn range_plan_names_exactly_the_keys_that_move(
            old_n in 1usize..=MAX_SHARDS, new_n in 1usize..=MAX_SHARDS, keys in prop::collection::vec(any::<u64>(), 200)
        ) {
            let old_ids: Vec<u32> = (0..old_n as u32).collect();
            let new_ids: Vec<u32> = (0..new_n as u32).map(|i| (i * 5) % 17).collect();
            prop_assume!({ let mut d = new_ids.clone(); d.sort(); d.dedup(); d.len() == new_ids.len() });
            let old = shard_set(&old_ids, scheme::RANGE, 1);
            let new = shard_set(&new_ids, scheme::RANGE, 2);
            let plan = range_plan(&old, &new);
            for k in keys.iter().copied().chain([0, u64::MAX]) {
                let (x, y) = (pick_shard(&old, k).unwrap(), pick_shard(&new, k).unwrap());
                let named = plan.iter().find(|m| m.start <= k && k <= m.end);
                match named {
                    Some(m) => prop_assert_eq!((m.from, m.to), (x, y)),
                    None => prop_assert_eq!(x, y),
                }
            }
        }
    }

    #[test]
    fn maglev_plan_counts_moved_slots() {
        let a = [1, 1, 2, 2, NO_BACKEND];
        let b = [1, 3, 2, 3, 1];
        assert_eq!(
            maglev_plan(&a, &b),
            vec![
                SlotMove {
                    from: 1,
                    to: 3,
                    slots: 1
                },
                SlotMove {
                    from: 2,
                    to: 3,
                    slots: 1
                },
                SlotMove {
                    from: NO_BACKEND,
                    to: 1,
                    slots: 1
                },
            ]
        );
    }

    #[test]
    fn session_plans() {
        let a = shard_set(&[1, 2], scheme::HASH, 1);
        let b = shard_set(&[1, 2, 3], scheme::HASH, 2);
        assert_eq!(session_plan(Some(&a), &a), SessionPlan::Unchanged);
        assert_eq!(
            session_plan(Some(&a), &b),
            SessionPlan::Owners(vec![
                OwnerMove { from: 1, to: 3 },
                OwnerMove { from: 2, to: 3 }
            ])
        );
        assert_eq!(session_plan(None, &b), SessionPlan::Rebuild);
        let r = shard_set(&[1, 2], scheme::RANGE, 3);
        assert_eq!(session_plan(Some(&a), &r), SessionPlan::Rebuild);
    }
}
