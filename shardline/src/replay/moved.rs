//! The moved-keys measure made incremental: each placed session remembers which member of its
//! set owns each sample key, so a re-shard scores only what can change. A key whose owner
//! stays in the new set keeps it unless one of the set's *new* members outscores it (every
//! other member already lost to it); only a key whose owner left is scored against the whole
//! new set. A grow by one shard thus scores each key twice instead of against both sets, and a
//! shrink scores only the keys it takes away. The counts are [`moved_fraction`]'s exactly
//! (checked by the tests): rendezvous scores of distinct backends never tie, since
//! [`rendezvous_score`] is a bijection of the backend id for a given key.
//!
//! [`moved_fraction`]: super::fleet::moved_fraction

use shardline_common::{
    consts::{MAX_SHARDS, NO_BACKEND},
    hash::rendezvous_score,
};

use super::fleet::{Owners, KEYS, SAMPLE_KEYS};

/// Keys per session.
const N: usize = SAMPLE_KEYS as usize;

// An owner's position in its set fits in a nibble.
const _: () = assert!(MAX_SHARDS <= 16);

/// Per sample key, its owner's position in the session's set, two keys a byte.
type Positions = Box<[u8; N / 2]>;

/// Each session's sample-key owners under its current set (`None`: unplaced).
pub struct KeyOwners {
    sessions: Vec<Option<Positions>>,
}

fn get(p: &Positions, key: usize) -> usize {
    usize::from(p[key / 2] >> (4 * (key & 1)) & 0xf)
}

fn set(p: &mut Positions, key: usize, position: usize) {
    let shift = 4 * (key & 1);
    p[key / 2] = p[key / 2] & !(0xf << shift) | (position as u8) << shift;
}

/// The members that decide: the dataplane's partition reads the first [`MAX_SHARDS`].
fn members(set: &[u32]) -> &[u32] {
    &set[..set.len().min(MAX_SHARDS)]
}

/// Every key's owner position in `set` (non-empty), scored from scratch.
fn positions_of(set: &[u32]) -> Positions {
    let set = members(set);
    let (mut best, mut owner) = (vec![0u64; N], vec![0u32; N]);
    Owners::Set(set).owners(&mut best, &mut owner);
    let mut p: Positions = Box::new([0; N / 2]);
    for (key, id) in owner.iter().enumerate() {
        let at = set
            .iter()
            .position(|m| m == id)
            .expect("owners are members");
        self::set(&mut p, key, at);
    }
    p
}

impl KeyOwners {
    /// `sessions` sessions, all unplaced.
    pub fn new(sessions: usize) -> Self {
        Self {
            sessions: (0..sessions).map(|_| None).collect(),
        }
    }

    /// Moves session `i` from `from` (its owners as they stand) onto `to` and returns the
    /// fraction of its keys whose owner changed: [`super::fleet::moved_fraction`]`(from,
    /// Owners::Set(to))`.
    pub fn reshard(&mut self, i: usize, from: Owners<'_>, to: &[u32]) -> f64 {
        let to = members(to);
        let old = self.sessions[i].take();
        // The old owners: one backend for every key, or a position in the old set per key.
        let (single, old_set, old) = match from {
            Owners::Home(home) => (Some(home.unwrap_or(NO_BACKEND)), &[][..], None),
            Owners::Set(s) if members(s).is_empty() => (Some(NO_BACKEND), &[][..], None),
            Owners::Set(s) => {
                let s = members(s);
                let p = old.unwrap_or_else(|| positions_of(s));
                (None, s, Some(p))
            }
        };
        if to.is_empty() {
            // Every key on no backend.
            let moved = match (single, &old) {
                (Some(NO_BACKEND), _) => 0,
                _ => N,
            };
            return moved as f64 / SAMPLE_KEYS as f64;
        }
        let position_in_to = |id: u32| to.iter().position(|m| *m == id);
        // Old position → new position of the same backend (16: gone).
        let mut kept = [16usize; MAX_SHARDS];
        for (j, id) in old_set.iter().enumerate() {
            kept[j] = position_in_to(*id).unwrap_or(16);
        }
        let single_kept = single.and_then(position_in_to);
        // The new set's members the old owners never competed with, with their positions.
        let home = single.map(|id| [id]);
        let known: &[u32] = home.as_ref().map_or(old_set, |h| &h[..]);
        let fresh: Vec<(usize, u32)> = to
            .iter()
            .enumerate()
            .filter(|(at, m)| !known.contains(m) && to[..*at].iter().all(|x| x != *m))
            .map(|(at, m)| (at, *m))
            .collect();
        let mut next: Positions = Box::new([0; N / 2]);
        let mut moved = 0usize;
        for (key_index, &key) in KEYS.iter().enumerate() {
            let (owner_id, kept_at) = match (single, &old) {
                (Some(id), _) => (id, single_kept),
                (None, Some(p)) => {
                    let j = get(p, key_index);
                    (old_set[j], Some(kept[j]).filter(|&at| at < 16))
                }
                (None, None) => unreachable!("a set's owners are known"),
            };
            let at = match kept_at {
                // Nothing new to lose to: the owner stays.
                Some(at) if fresh.is_empty() => at,
                Some(at) => {
                    let mut best = rendezvous_score(key, owner_id);
                    let mut at = at;
                    for &(fresh_at, member) in &fresh {
                        let score = rendezvous_score(key, member);
                        if score > best {
                            best = score;
                            at = fresh_at;
                        }
                    }
                    at
                }
                None => {
                    let mut best = rendezvous_score(key, to[0]);
                    let mut at = 0;
                    for (j, &member) in to.iter().enumerate().skip(1) {
                        let score = rendezvous_score(key, member);
                        if score > best {
                            best = score;
                            at = j;
                        }
                    }
                    at
                }
            };
            moved += usize::from(to[at] != owner_id);
            set(&mut next, key_index, at);
        }
        self.sessions[i] = Some(next);
        moved as f64 / SAMPLE_KEYS as f64
    }
}

#[cfg(test)]
mod tests {
    use shardline_common::hash::mix64;

    use super::*;
    use crate::replay::fleet::moved_fraction;

    /// Over random walks of grows, shrinks, swaps, duplicates, empty sets and homes, the
    /// incremental count equals the measure from scratch at every step.
    #[test]
    fn incremental_counts_equal_the_measure_from_scratch() {
        let mut keys = KeyOwners::new(1);
        let mut placed: Vec<u32> = Vec::new();
        let home = Some(7);
        let mut r = 1u64;
        let mut draw = |n: u64| {
            r = mix64(r);
            r % n
        };
        for step in 0..400 {
            let mut next = placed.clone();
            match draw(6) {
                0 => next.push(draw(40) as u32 + 1),
                1 => next.truncate(next.len().saturating_sub(1 + draw(3) as usize)),
                2 if !next.is_empty() => {
                    let at = draw(next.len() as u64) as usize;
                    next[at] = draw(40) as u32 + 1;
                }
                3 => next = (0..draw(20)).map(|_| draw(4000) as u32 + 1).collect(),
                4 => next.extend_from_slice(&placed),
                _ => next.push(7),
            }
            let from = if placed.is_empty() {
                Owners::Home(if step % 5 == 0 { None } else { home })
            } else {
                Owners::Set(&placed)
            };
            let expected = moved_fraction(from, Owners::Set(&next));
            assert_eq!(
                keys.reshard(0, from, &next),
                expected,
                "{placed:?} → {next:?}"
            );
            placed = next;
        }
    }
}
