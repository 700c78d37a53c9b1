//! Every sample key's rendezvous owner within a shard set, as a position in the set: the
//! replay's moved-keys measure spends most of its time here. The scores are computed a member
//! at a time over all [`SAMPLE_KEYS`] keys, a loop that vectorises, and the function is compiled
//! three times from the same source: for AVX-512 (eight 64-bit multiplies an instruction), for
//! AVX2, and for the baseline x86-64 (or any other target). The widest the CPU runs is picked
//! at run time; all three compute the same integers, so they agree exactly (checked by a test on
//! every path the CPU can run). On the development VM (AMD EPYC), in a throwaway
//! micro-benchmark, one member over the 4,096 keys took about 15 µs at the baseline, 3.6 µs with
//! AVX2 and 1.5 µs with AVX-512.
//!
//! [`SAMPLE_KEYS`]: super::fleet::SAMPLE_KEYS

use shardline_common::{consts::MAX_SHARDS, hash::rendezvous_score};

use super::fleet::{KEYS, SAMPLE_KEYS};

/// Keys per session.
pub(super) const N: usize = SAMPLE_KEYS as usize;

/// Sets `out[k]` to the position in `set` of sample key `k`'s owner: the member with the
/// highest rendezvous score, the earlier one on a tie (a repeated member; distinct backends
/// never tie). Only the first [`MAX_SHARDS`] members count, as in the dataplane's partition.
/// Panics on an empty set.
pub(super) fn owner_positions(set: &[u32], out: &mut [u8; N]) {
    extend_owner_positions(set, 0, out);
}

/// [`owner_positions`] for a set that extends one whose owners are known: `set[..known]` is
/// that set and `out` holds its owners' positions on entry (`known` 0: nothing is known, as
/// [`owner_positions`]). A key keeps its owner unless a later member scores higher, so only
/// the owner's and the new members' scores are computed: a grow of 6 members to 8 scores 3
/// members' worth of keys instead of 8. Panics on an empty set or if `known` is more than the
/// members that count.
pub(super) fn extend_owner_positions(set: &[u32], known: usize, out: &mut [u8; N]) {
    let set = &set[..set.len().min(MAX_SHARDS)];
    assert!(!set.is_empty(), "an empty set owns no key");
    assert!(known <= set.len(), "{known} known members of {}", set.len());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") && has!("avx512bw") && has!("avx512vl") {
            // SAFETY: the CPU has every feature `avx512` is compiled for.
            return unsafe { avx512(set, known, out) };
        }
        if has!("avx2") {
            // SAFETY: the CPU has AVX2, all `avx2` is compiled for.
            return unsafe { avx2(set, known, out) };
        }
    }
    baseline(set, known, out);
}

/// The scoring loop every path compiles: branch-free selects, members outer, keys inner.
#[inline(always)]
fn positions(set: &[u32], known: usize, out: &mut [u8; N]) {
    let mut best = [0u64; N];
    let start = if known == 0 {
        let first = set[0];
        for ((b, o), &key) in best.iter_mut().zip(out.iter_mut()).zip(&KEYS) {
            *b = rendezvous_score(key, first);
            *o = 0;
        }
        1
    } else {
        // The known owners' scores (a position is below `MAX_SHARDS`, so the mask keeps
        // the lookup in bounds without a branch).
        let mut ids = [0u32; MAX_SHARDS];
        ids[..known].copy_from_slice(&set[..known]);
        for ((b, o), &key) in best.iter_mut().zip(out.iter()).zip(&KEYS) {
            *b = rendezvous_score(key, ids[usize::from(*o) & (MAX_SHARDS - 1)]);
        }
        known
    };
    for (at, &member) in set.iter().enumerate().skip(start) {
        let at = at as u8;
        for ((b, o), &key) in best.iter_mut().zip(out.iter_mut()).zip(&KEYS) {
            let score = rendezvous_score(key, member);
            let higher = score > *b;
            *b = if higher { score } else { *b };
            *o = if higher { at } else { *o };
        }
    }
}

fn baseline(set: &[u32], known: usize, out: &mut [u8; N]) {
    positions(set, known, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2(set: &[u32], known: usize, out: &mut [u8; N]) {
    positions(set, known, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
unsafe fn avx512(set: &[u32], known: usize, out: &mut [u8; N]) {
    positions(set, known, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETS: [&[u32]; 6] = [
        &[7],
        &[1, 2],
        &[9, 3, 4000, 12, 5],
        &[8, 1, 2, 3, 4, 5, 6, 7],
        &[5, 5, 6],
        &[
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
        ],
    ];

    /// The positions name every sample key's owner as the dataplane's partition picks it.
    #[test]
    fn positions_name_the_dataplane_owners() {
        use shardline_common::{
            maps::scheme,
            partition::{pick_shard, shard_set},
        };
        let mut out = [0u8; N];
        for set in SETS {
            owner_positions(set, &mut out);
            let table = shard_set(set, scheme::HASH, 0);
            for (key, at) in KEYS.iter().zip(&out) {
                let owner = set[usize::from(*at)];
                assert_eq!(pick_shard(&table, *key), Some(owner), "set {set:?}");
            }
            // A repeated member owns its keys at its first position.
            if set == [5, 5, 6] {
                assert!(out.iter().all(|at| *at != 1));
            }
        }
    }

    /// Extending the owners of any prefix of a set gives the set's owners, on every path the
    /// CPU runs (the dispatched one included).
    #[test]
    fn extending_a_prefixs_owners_gives_the_whole_sets() {
        let (mut expected, mut prefix) = ([0u8; N], [0u8; N]);
        for set in SETS {
            let set = &set[..set.len().min(MAX_SHARDS)];
            baseline(set, 0, &mut expected);
            for known in 1..=set.len() {
                baseline(&set[..known], 0, &mut prefix);
                let mut got = prefix;
                baseline(set, known, &mut got);
                assert_eq!(got, expected, "baseline, {known} of {set:?}");
                #[cfg(target_arch = "x86_64")]
                {
                    use std::arch::is_x86_feature_detected as has;
                    if has!("avx2") {
                        let mut got = prefix;
                        // SAFETY: checked just above.
                        unsafe { avx2(set, known, &mut got) };
                        assert_eq!(got, expected, "avx2, {known} of {set:?}");
                    }
                    if has!("avx512f") && has!("avx512dq") && has!("avx512bw") && has!("avx512vl") {
                        let mut got = prefix;
                        // SAFETY: checked just above.
                        unsafe { avx512(set, known, &mut got) };
                        assert_eq!(got, expected, "avx512, {known} of {set:?}");
                    }
                }
                let mut got = prefix;
                extend_owner_positions(set, known, &mut got);
                assert_eq!(got, expected, "dispatched, {known} of {set:?}");
            }
        }
    }

    /// Every vector path this CPU can run computes what the baseline does. A CPU without them
    /// checks fewer paths, and says so.
    #[test]
    fn every_path_the_cpu_runs_agrees_with_the_baseline() {
        let (mut expected, mut got) = ([0u8; N], [0u8; N]);
        #[cfg(target_arch = "x86_64")]
        let mut checked = 0;
        for set in SETS {
            let set = &set[..set.len().min(MAX_SHARDS)];
            baseline(set, 0, &mut expected);
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") {
                    // SAFETY: checked just above.
                    unsafe { avx2(set, 0, &mut got) };
                    assert_eq!(got, expected, "avx2, set {set:?}");
                    checked += 1;
                }
                if has!("avx512f") && has!("avx512dq") && has!("avx512bw") && has!("avx512vl") {
                    // SAFETY: checked just above.
                    unsafe { avx512(set, 0, &mut got) };
                    assert_eq!(got, expected, "avx512, set {set:?}");
                    checked += 1;
                }
            }
            owner_positions(set, &mut got);
            assert_eq!(got, expected, "dispatched, set {set:?}");
        }
        #[cfg(target_arch = "x86_64")]
        if checked < 2 * SETS.len() {
            eprintln!("this CPU lacks AVX2 or AVX-512: only the paths it has were compared");
        }
    }
}
