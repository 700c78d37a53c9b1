//! Weighted Maglev table construction (Eisenbud et al., NSDI 2016), as the daemon fills the
//! default consistent-hash table. Pure: same backends and weights, same table.

use crate::{consts::NO_BACKEND, hash::mix64};

/// A backend's claim on the table: its id and relative weight (0 = drained, no slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weighted {
    /// Backend id.
    pub id: u32,
    /// Relative weight.
    pub weight: u32,
}

/// Builds a Maglev lookup table of `size` slots (a prime) over `backends`. Each backend walks its
/// own permutation of the slots and claims the next free one in turn; heavier backends take
/// proportionally more turns. With no positive weight every slot is [`NO_BACKEND`].
pub fn build(backends: &[Weighted], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    let mut table = vec![NO_BACKEND; size as usize];
    let live: Vec<&Weighted> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() || size == 0 {
        return table;
    }
    let max_weight = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
    let offsets: Vec<u64> = live
        .iter()
        .map(|b| mix64(u64::from(b.id) ^ 0x5348_0001) % m)
        .collect();
    let skips: Vec<u64> = live
        .iter()
        .map(|b| mix64(u64::from(b.id) ^ 0x5348_0002) % (m - 1) + 1)
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut filled = 0u64;
    while filled < m {
        for i in 0..live.len() {
            credit[i] += u64::from(live[i].weight);
            while credit[i] >= max_weight {
                credit[i] -= max_weight;
                loop {
                    let slot = (offsets[i] + next[i] * skips[i]) % m;
                    next[i] += 1;
                    if table[slot as usize] == NO_BACKEND {
                        table[slot as usize] = live[i].id;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    return table;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::consts::MAGLEV_SIZE;

    fn counts(table: &[u32]) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for id in table {
            *c.entry(*id).or_default() += 1;
        }
        c
    }

    fn even(n: u32) -> Vec<Weighted> {
        (0..n).map(|id| Weighted { id, weight: 1 }).collect()
    }

    #[test]
    fn fills_every_slot_evenly() {
        let t = build(&even(4), MAGLEV_SIZE);
        let c = counts(&t);
        assert_eq!(c.len(), 4);
        for n in c.values() {
            let share = *n as f64 / f64::from(MAGLEV_SIZE);
            assert!((share - 0.25).abs() < 0.01, "share {share}");
        }
    }

    #[test]
    fn weights_are_proportional_and_zero_drains() {
        let b = [
            Weighted { id: 1, weight: 3 },
            Weighted { id: 2, weight: 1 },
            Weighted { id: 3, weight: 0 },
        ];
        let c = counts(&build(&b, MAGLEV_SIZE));
        assert!(!c.contains_key(&3));
        let ratio = c[&1] as f64 / c[&2] as f64;
        assert!((ratio - 3.0).abs() < 0.1, "ratio {ratio}");
    }

    #[test]
    fn removing_a_backend_moves_few_other_slots() {
        let before = build(&even(10), MAGLEV_SIZE);
        let after = build(&even(9), MAGLEV_SIZE);
        let moved_others = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 9 && b != a)
            .count() as f64;
        // Maglev is not perfectly minimal; the paper reports a few percent of extra churn.
        assert!(
            moved_others / f64::from(MAGLEV_SIZE) < 0.05,
            "{moved_others}"
        );
    }

    #[test]
    fn empty_when_nothing_is_live() {
        assert!(build(&[Weighted { id: 1, weight: 0 }], 7)
            .iter()
            .all(|s| *s == NO_BACKEND));
        assert!(build(&[], 7).iter().all(|s| *s == NO_BACKEND));
    }
}
