//! The *placement* stage: which backends take a session's new shards.
//!
//! Pure: the loads come in, the chosen ids go out. Ranking is by free capacity scaled by
//! weight, deterministic on ties, and never picks a backend that is unhealthy, drained or
//! already too full for one more shard: by its packets (CPU) or, where its agent reports the
//! network's capacity, by its bytes.

use std::{cmp::Ordering, collections::BTreeSet};

/// A backend as the placement sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendLoad {
    /// The backend's id.
    pub id: u32,
    /// Its configured weight (0 drains it: no new shards).
    pub weight: u32,
    /// Whether health checks pass.
    pub healthy: bool,
    /// Capacity it reports, in the series' unit.
    pub capacity: f64,
    /// Load already committed to it (forecasts of the shards it holds).
    pub committed: f64,
    /// Bytes per second its network carries (infinite: unknown, not counted).
    pub net_capacity: f64,
    /// Bytes per second already committed to its network (the larger of what it reports
    /// carrying and the forecasts of the shards it holds).
    pub net_committed: f64,
}

impl BackendLoad {
    /// Predicted free capacity: reported capacity − committed load.
    pub fn free(&self) -> f64 {
        self.capacity - self.committed
    }

    /// Predicted free network capacity, bytes per second (infinite when unknown).
    pub fn net_free(&self) -> f64 {
        self.net_capacity - self.net_committed
    }

    /// Whether a new shard bringing `load` (packets) and `bytes` may go here: healthy, not
    /// drained, with free capacity for it (and some at all), and free network capacity for
    /// its bytes where the network's capacity is known.
    fn takes(&self, load: f64, bytes: f64) -> bool {
        self.healthy
            && self.weight > 0
            && self.free() > 0.0
            && self.free() >= load
            && (self.net_capacity.is_infinite() || self.net_free() >= bytes)
    }

    /// This backend as one service's new shards see it, given what its agent reports it can
    /// carry of that service (`capacity`, if it reports one) and the load of that service's
    /// shards already committed to it (`committed`): whichever free capacity is smaller, the
    /// service's or the host's, bounds it. Without a per-service capacity it is unchanged.
    pub fn for_service(self, capacity: Option<f64>, committed: f64) -> Self {
        match capacity {
            Some(c) if c - committed < self.free() => Self {
                capacity: c,
                committed,
                ..self
            },
            _ => self,
        }
    }
}

/// Picks up to `count` distinct backends for new shards that each bring `per_shard_load`
/// (packets) and `per_shard_bytes`.
///
/// Unhealthy, drained (weight 0) and saturated backends (free capacity below
/// `per_shard_load`, or none at all; free network capacity below `per_shard_bytes`) get
/// nothing. The rest are ranked by free capacity scaled
/// by weight (ties by id, so the choice is deterministic); `out` is cleared and filled with
/// the chosen ids, best first. Fewer than `count` ids means the fleet cannot take the shards.
pub fn choose_backends(
    backends: &[BackendLoad],
    count: usize,
    per_shard_load: f64,
    per_shard_bytes: f64,
    out: &mut Vec<u32>,
) {
    out.clear();
    if count == 0 {
        return;
    }
    // The best `count` so far, best first: one pass, no sort of the whole fleet (a decision
    // costs O(backends × count), and `count` is a handful of shards).
    let mut best: Vec<Rank> = Vec::with_capacity(count.min(backends.len()) + 1);
    for b in backends
        .iter()
        .filter(|b| b.takes(per_shard_load, per_shard_bytes))
    {
        let e = Rank::of(b);
        if best.len() == count && e >= best[count - 1] || best.iter().any(|x| x.id == e.id) {
            continue;
        }
        let at = best.iter().position(|x| e < *x).unwrap_or(best.len());
        best.insert(at, e);
        best.truncate(count);
    }
    out.extend(best.iter().map(|e| e.id));
}

/// A backend's place in the ranking of [`choose_backends`] and [`Ranked`]: weighted free
/// capacity, highest first, ties by id.
#[derive(Debug, Clone, Copy)]
struct Rank {
    key: f64,
    id: u32,
}

impl Rank {
    fn of(b: &BackendLoad) -> Self {
        Self {
            key: b.free() * f64::from(b.weight),
            id: b.id,
        }
    }
}

impl PartialEq for Rank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Rank {}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.total_cmp(&self.key).then(self.id.cmp(&other.id))
    }
}

/// The healthy, undrained backends of a fleet ranked as [`choose_backends`] ranks them, kept
/// in order as shards are committed to them, so a decision walks the best few instead of the
/// whole fleet. Holds for candidates that are the fleet's loads as they are (a service
/// without a pool or per-service capacities); others go through [`choose_backends`].
#[derive(Debug, Default)]
pub struct Ranked {
    ranks: BTreeSet<Rank>,
}

impl Ranked {
    fn ranks(b: &BackendLoad) -> bool {
        b.healthy && b.weight > 0
    }

    /// Ranks `backends` afresh.
    pub fn rebuild(&mut self, backends: &[BackendLoad]) {
        self.ranks.clear();
        self.ranks
            .extend(backends.iter().filter(|b| Self::ranks(b)).map(Rank::of));
    }

    /// Re-ranks a backend whose load changed from `before` to `after`.
    pub fn update(&mut self, before: &BackendLoad, after: &BackendLoad) {
        if Self::ranks(before) {
            self.ranks.remove(&Rank::of(before));
        }
        if Self::ranks(after) {
            self.ranks.insert(Rank::of(after));
        }
    }

    /// [`choose_backends`] over the ranked backends but those in `exclude`: what it picks from
    /// every backend of `backends` (the ranked fleet's loads, in id order) not in `exclude`.
    pub fn choose(
        &self,
        backends: &[BackendLoad],
        exclude: &[u32],
        count: usize,
        per_shard_load: f64,
        per_shard_bytes: f64,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        for rank in &self.ranks {
            if out.len() >= count {
                break;
            }
            // A taker has free ≥ the shard's load and free > 0, so its key (free × a weight
            // of at least 1) is at least both: nothing ranked lower can take it.
            if rank.key < per_shard_load || rank.key <= 0.0 {
                break;
            }
            if exclude.contains(&rank.id) {
                continue;
            }
            let Ok(at) = backends.binary_search_by_key(&rank.id, |b| b.id) else {
                continue;
            };
            if backends[at].takes(per_shard_load, per_shard_bytes) {
                out.push(rank.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: u32, weight: u32, healthy: bool, capacity: f64, committed: f64) -> BackendLoad {
        BackendLoad {
            id,
            weight,
            healthy,
            capacity,
            committed,
            net_capacity: f64::INFINITY,
            net_committed: 0.0,
        }
    }

    #[test]
    fn backends_by_weighted_free_capacity() {
        let fleet = [
            backend(1, 1, true, 1000.0, 900.0),  // free 100
            backend(2, 1, true, 1000.0, 200.0),  // free 800
            backend(3, 2, true, 1000.0, 600.0),  // free 400, weight 2 → 800, id ties break
            backend(4, 1, false, 1000.0, 0.0),   // unhealthy
            backend(5, 0, true, 1000.0, 0.0),    // drained
            backend(6, 1, true, 1000.0, 1000.0), // saturated
            backend(7, 1, true, 1000.0, 950.0),  // free 50 < per-shard load
        ];
        let mut out = Vec::new();
        choose_backends(&fleet, 3, 80.0, 0.0, &mut out);
        assert_eq!(out, vec![2, 3, 1]);
        choose_backends(&fleet, 16, 80.0, 0.0, &mut out);
        assert_eq!(out, vec![2, 3, 1], "only three can take a shard");
        choose_backends(&fleet, 1, 500.0, 0.0, &mut out);
        assert_eq!(out, vec![2]);
    }

    /// Issue 20 §3: a backend whose network is nearly full takes no byte-heavy shard, however
    /// much CPU it has free; a light shard still fits.
    #[test]
    fn a_full_network_takes_no_byte_heavy_shard() {
        let with_net = |b: BackendLoad, capacity: f64, committed: f64| BackendLoad {
            net_capacity: capacity,
            net_committed: committed,
            ..b
        };
        let fleet = [
            with_net(backend(1, 1, true, 1000.0, 0.0), 1.25e8, 1.2e8), // 5 MB/s free
            with_net(backend(2, 1, true, 1000.0, 500.0), 1.25e8, 0.0),
            backend(3, 1, true, 1000.0, 600.0), // network unknown: not counted
        ];
        let mut out = Vec::new();
        choose_backends(&fleet, 3, 100.0, 1e7, &mut out);
        assert_eq!(out, vec![2, 3]);
        choose_backends(&fleet, 3, 100.0, 1e6, &mut out);
        assert_eq!(out, vec![1, 2, 3]);
    }

    /// The ranked walk picks what the full pass picks, as shards are committed one by one.
    #[test]
    fn ranked_choice_equals_the_full_pass() {
        let mut r = 7u64;
        let mut draw = |n: u64| {
            r = shardline_common::hash::mix64(r);
            r % n
        };
        let mut fleet: Vec<BackendLoad> = (1..=60)
            .map(|id| BackendLoad {
                net_capacity: if draw(4) == 0 { 1e6 } else { f64::INFINITY },
                net_committed: draw(1_000_000) as f64,
                ..backend(id, draw(3) as u32, draw(8) > 0, 1000.0, draw(1100) as f64)
            })
            .collect();
        let mut ranked = Ranked::default();
        ranked.rebuild(&fleet);
        let (mut full, mut walked) = (Vec::new(), Vec::new());
        for _ in 0..300 {
            let exclude: Vec<u32> = (0..draw(4)).map(|_| draw(60) as u32 + 1).collect();
            let count = draw(6) as usize;
            let (load, bytes) = (draw(300) as f64, draw(200_000) as f64);
            let candidates: Vec<BackendLoad> = fleet
                .iter()
                .filter(|b| !exclude.contains(&b.id))
                .copied()
                .collect();
            choose_backends(&candidates, count, load, bytes, &mut full);
            ranked.choose(&fleet, &exclude, count, load, bytes, &mut walked);
            assert_eq!(walked, full, "count {count}, load {load}, bytes {bytes}");
            for id in &full {
                let b = &mut fleet[*id as usize - 1];
                let before = *b;
                b.committed += load;
                b.net_committed += bytes;
                ranked.update(&before, b);
            }
        }
    }

    #[test]
    fn a_per_service_capacity_bounds_that_service_by_the_smaller_free_capacity() {
        let host = backend(1, 1, true, 1000.0, 200.0); // free 800
        assert_eq!(
            host.for_service(None, 50.0),
            host,
            "nothing reported: the host's"
        );
        let tight = host.for_service(Some(300.0), 250.0); // the service's free 50
        assert_eq!(
            (tight.capacity, tight.committed, tight.free()),
            (300.0, 250.0, 50.0)
        );
        let roomy = host.for_service(Some(5000.0), 0.0); // the host's 800 is smaller
        assert_eq!(roomy, host);
        // Placement follows: backend 2 has more host room but little for this service.
        let fleet = [
            backend(1, 1, true, 1000.0, 600.0).for_service(None, 0.0), // free 400
            backend(2, 1, true, 1000.0, 0.0).for_service(Some(150.0), 100.0), // free 50
        ];
        let mut out = Vec::new();
        choose_backends(&fleet, 2, 80.0, 0.0, &mut out);
        assert_eq!(
            out,
            vec![1],
            "backend 2 cannot take an 80-unit shard of this service"
        );
    }
}
