//! The moved-keys measure made cheap: each placed session remembers which member of its set
//! owns each sample key, so a re-shard scores only the new set ([`owner_positions`], the
//! vectorised scoring) and compares owners key by key. A session moved from its home onto a
//! set without it moves every key and is not scored at all; its set's owners are scored at
//! its next re-shard, if there is one. The counts are [`moved_fraction`]'s exactly (checked
//! by the tests): rendezvous scores of distinct backends never tie, since
//! [`rendezvous_score`] is a bijection of the backend id for a given key.
//!
//! [`moved_fraction`]: super::fleet::moved_fraction
//! [`rendezvous_score`]: shardline_common::hash::rendezvous_score

use shardline_common::consts::{MAX_SHARDS, NO_BACKEND};

use super::{
    fleet::Owners,
    score::{extend_owner_positions, owner_positions, N},
};

// An owner's position in its set fits in a nibble.
const _: () = assert!(MAX_SHARDS <= 16);

/// Keys a half of [`Positions`] holds.
const HALF: usize = N / 2;

/// Per sample key, its owner's position in the session's set, two keys a byte: key `k` of
/// the first half in the low nibble of byte `k`, key `HALF + k` in its high nibble (so packing
/// and comparing are plain loops over bytes, which vectorise).
type Positions = Box<[u8; HALF]>;

/// Each session's sample-key owners under its current set (`None`: unplaced, or not scored
/// yet).
pub struct KeyOwners {
    sessions: Vec<Option<Positions>>,
}

/// The members that decide: the dataplane's partition reads the first [`MAX_SHARDS`].
fn members(set: &[u32]) -> &[u32] {
    &set[..set.len().min(MAX_SHARDS)]
}

/// Two positions a byte, as [`Positions`] lays them out.
fn pack(positions: &[u8; N]) -> Positions {
    let (low, high) = positions.split_at(HALF);
    let mut p: Positions = Box::new([0; HALF]);
    for ((byte, lo), hi) in p.iter_mut().zip(low).zip(high) {
        *byte = lo | hi << 4;
    }
    p
}

/// The positions [`pack`] packed.
fn unpack(packed: &[u8; HALF]) -> [u8; N] {
    let mut positions = [0u8; N];
    let (low, high) = positions.split_at_mut(HALF);
    for ((byte, lo), hi) in packed.iter().zip(low).zip(high) {
        *lo = byte & 0xf;
        *hi = byte >> 4;
    }
    positions
}

/// How many keys owned at position `from` in `old` are not owned at position `to` in `next`.
fn leaving(old: &[u8; HALF], next: &[u8; N], from: u8, to: u8) -> usize {
    let (low, high) = next.split_at(HALF);
    // Counted in bytes over chunks of 128 keys (no byte overflows), so the loop vectorises.
    let count = |half: &[u8], shift: u32| -> usize {
        old.chunks_exact(128)
            .zip(half.chunks_exact(128))
            .map(|(bytes, ats)| {
                let leaving = bytes.iter().zip(ats).fold(0u8, |n, (byte, at)| {
                    // `&`, not `&&`: a branch would keep the loop scalar.
                    n + (u8::from((byte >> shift) & 0xf == from) & u8::from(*at != to))
                });
                usize::from(leaving)
            })
            .sum()
    };
    count(low, 0) + count(high, 4)
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
        // The old owners: one backend for every key, or a member of the old set per key.
        let from = match from {
            Owners::Home(home) => Err(home.unwrap_or(NO_BACKEND)),
            Owners::Set([]) => Err(NO_BACKEND),
            Owners::Set(s) => Ok(members(s)),
        };
        // The first position of `id` in the new set: where its keys' owner is found.
        let position_in_to = |id: u32| to.iter().position(|m| *m == id);
        // Per old owner (a position in the old set, or the one backend), its position in
        // the new set; 16: not in it.
        let mut kept = [16u8; 16];
        match from {
            // Every key on no backend, before and after, or now on none.
            _ if to.is_empty() => return if from == Err(NO_BACKEND) { 0.0 } else { 1.0 },
            Err(single) => match position_in_to(single) {
                Some(at) => kept.fill(at as u8),
                // No key keeps its owner, whatever the new set's scores.
                None => return 1.0,
            },
            Ok(set) => {
                for (j, id) in set.iter().enumerate() {
                    kept[j] = position_in_to(*id).map_or(16, |at| at as u8);
                }
            }
        }
        let old = match (from, old) {
            (Err(_), _) => None,
            (Ok(_), Some(p)) => Some(p),
            (Ok(set), None) => {
                let mut scratch = [0u8; N];
                owner_positions(set, &mut scratch);
                Some(pack(&scratch))
            }
        };
        let (next, moved) = match (&old, from) {
            // A grow keeps the members in order and appends: only the owners' and the new
            // members' scores are needed, and a key moves exactly when a new member wins it
            // (a repeat of an old member never does: the earlier position keeps a tie).
            (Some(p), Ok(set)) if to.len() > set.len() && to.starts_with(set) => {
                let mut next = unpack(p);
                extend_owner_positions(to, set.len(), &mut next);
                let known = set.len() as u8;
                let moved = next.iter().filter(|at| **at >= known).count();
                (next, moved)
            }
            _ => {
                let mut next = [0u8; N];
                owner_positions(to, &mut next);
                let moved = match (&old, from) {
                    (Some(p), Ok(set)) => (0..set.len())
                        .map(|j| leaving(p, &next, j as u8, kept[j]))
                        .sum(),
                    _ => next.iter().filter(|at| **at != kept[0]).count(),
                };
                (next, moved)
            }
        };
        self.sessions[i] = Some(pack(&next));
        moved as f64 / N as f64
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
