//! The replay's fleet model: backends with a capacity each, sessions whose demand spreads over
//! their shard sets, and the accounting of overloads, shard-seconds and moved keys.
//!
//! - A placed session's demand spreads evenly over its shard set: what the dataplane's
//!   rendezvous hashing converges to over many keys. An unplaced (header-mode) session is
//!   routed by the default table by its session id alone, so all its demand lands on one
//!   backend, its home ([`crate::state::ControlState::home`]).
//! - Shard-seconds: a placed session holds its shard set's size; an unplaced one one shard,
//!   its home.
//! - A backend is overloaded in a tick when the demand it receives exceeds its capacity; the
//!   excess is the overloaded demand.
//! - Keys moved by a re-shard are counted with the dataplane's own rendezvous scores
//!   ([`pick_shard`]'s rule) over [`SAMPLE_KEYS`] sample keys, old set against new.
//!
//! [`pick_shard`]: shardline_common::partition::pick_shard

use shardline_common::{consts::NO_BACKEND, hash::mix64};

use super::score::{owner_positions, N};

/// Sample keys a re-shard's moved fraction is measured over.
pub const SAMPLE_KEYS: u64 = 4096;

/// Who owns a session's keys.
#[derive(Debug, Clone, Copy)]
pub enum Owners<'a> {
    /// Unplaced: every key on the session's home (`None`: the table names no backend).
    Home(Option<u32>),
    /// Placed on this shard set.
    Set(&'a [u32]),
}

/// The sample keys, hashed once at build time.
pub(super) static KEYS: [u64; SAMPLE_KEYS as usize] = {
    let mut keys = [0; SAMPLE_KEYS as usize];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = mix64(i as u64 + 1);
        i += 1;
    }
    keys
};

impl Owners<'_> {
    /// Every sample key's owner into `out` (`NO_BACKEND`: none), scored by the replay's
    /// vectorised kernel ([`owner_positions`]): the earlier member keeps a key on a tie, as
    /// [`shardline_common::partition::rendezvous_owner`] decides it.
    pub(super) fn owners(&self, out: &mut [u32; N]) {
        match *self {
            Owners::Home(home) => out.fill(home.unwrap_or(NO_BACKEND)),
            Owners::Set([]) => out.fill(NO_BACKEND),
            Owners::Set(set) => {
                let mut positions = [0u8; N];
                owner_positions(set, &mut positions);
                for (owner, at) in out.iter_mut().zip(positions) {
                    *owner = set[usize::from(at)];
                }
            }
        }
    }
}

/// The fraction of a session's keys whose owner differs between `from` and `to`, as the
/// dataplane's default table and partition decide them.
pub fn moved_fraction(from: Owners<'_>, to: Owners<'_>) -> f64 {
    let (mut a, mut b) = ([0u32; N], [0u32; N]);
    from.owners(&mut a);
    to.owners(&mut b);
    let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    moved as f64 / SAMPLE_KEYS as f64
}

/// One controller's totals over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Backend-seconds during which a backend's demand exceeded its capacity.
    pub overload_seconds: f64,
    /// Demand above capacity over all demand.
    pub overloaded_demand: f64,
    /// All demand offered.
    pub demand: f64,
    /// Shard-seconds held (an unplaced session holds one shard).
    pub shard_seconds: f64,
    /// Placement changes that took effect.
    pub reshards: u64,
    /// Sum over re-shards of the fraction of the session's keys that moved.
    pub keys_moved: f64,
}

impl Tally {
    /// Adds one tick of `secs` seconds with `loads[i]` the demand backend `i` of `capacities`
    /// received.
    pub fn tick(&mut self, secs: f64, loads: &[f64], capacities: &[f64]) {
        for (load, capacity) in loads.iter().zip(capacities) {
            self.demand += load;
            if *load > *capacity * (1.0 + 1e-9) {
                self.overload_seconds += secs;
                self.overloaded_demand += load - capacity;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_keys_follows_rendezvous_hashing() {
        let set = |s| Owners::Set(s);
        assert_eq!(moved_fraction(set(&[1, 2]), set(&[1, 2])), 0.0);
        // Adding a member moves about its share and nothing else.
        let grown = moved_fraction(set(&[1, 2, 3]), set(&[1, 2, 3, 4]));
        assert!((0.2..0.3).contains(&grown), "{grown}");
        // Replacing every member moves every key.
        assert_eq!(moved_fraction(set(&[1]), set(&[2, 3])), 1.0);
        // From its home to a set that keeps it: about half stay; to one without it: none.
        let widened = moved_fraction(Owners::Home(Some(1)), set(&[1, 2]));
        assert!((0.4..0.6).contains(&widened), "{widened}");
        assert_eq!(moved_fraction(Owners::Home(Some(3)), set(&[1, 2])), 1.0);
    }

    /// The kernel's owners are every sample key's owner as the dataplane picks it.
    #[test]
    fn owners_match_the_dataplane_partition() {
        use shardline_common::{
            maps::scheme,
            partition::{pick_shard, shard_set},
        };
        let mut out = [0u32; N];
        for set in [
            &[7u32][..],
            &[1, 2],
            &[9, 3, 4000, 12, 5],
            &[8, 1, 2, 3, 4, 5, 6, 7],
        ] {
            Owners::Set(set).owners(&mut out);
            let table = shard_set(set, scheme::HASH, 0);
            for (key, owner) in KEYS.iter().zip(&out) {
                assert_eq!(pick_shard(&table, *key), Some(*owner), "set {set:?}");
            }
        }
        Owners::Home(None).owners(&mut out);
        assert!(out.iter().all(|o| *o == NO_BACKEND));
    }

    #[test]
    fn overloads_count_backend_seconds_and_the_excess() {
        let mut t = Tally::default();
        t.tick(2.0, &[50.0, 150.0, 100.0], &[100.0, 100.0, 100.0]);
        assert_eq!(t.overload_seconds, 2.0);
        assert_eq!(t.overloaded_demand, 50.0);
        assert_eq!(t.demand, 300.0);
    }
}
