//! What changes between the tables in force and a target, as the writes that make the change,
//! grouped in the order `DataplaneMaps::write_delta` makes them so that no packet meets a
//! half-written table: new backends, then the default table (built in the idle half, flipped by
//! one globals write), then placements (one update each), then services (they turn routing
//! on), and only then the removals. Pure: computed and tested in memory.

use std::{collections::HashMap, hash::Hash};

use shardline_common::maps::{Backend, Globals, Service, ServiceKey, SessionKey, ShardSet};

use super::Snapshot;

/// The writes that turn one [`Snapshot`] into another.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableDelta {
    /// Backends new or changed: written first, so nothing written after routes to a missing one.
    pub backends: Vec<(u32, Backend)>,
    /// The new default table, if it changed.
    pub maglev: Option<Vec<u32>>,
    /// The target's globals (encapsulation sources, flow idle time), if they changed; the live
    /// Maglev half is the writer's business.
    pub globals: Option<Globals>,
    /// Placements new or changed, sorted by session; each carries a generation above the one it
    /// replaces.
    pub sessions: Vec<(SessionKey, ShardSet)>,
    /// Pool memberships new or changed, by service id (member ids ascending): written before
    /// the services, so a flow entry of a pool never meets a membership it is not in yet.
    pub pools: Vec<(u32, Vec<u32>)>,
    /// Services new or changed, including every service whose ring or pool changed (writing
    /// a pooled service is its ring's flip). Their rings' placement is the writer's business.
    pub services: Vec<(ServiceKey, Service)>,
    /// The ring of every pooled service in `services`, by service id: built in an idle half
    /// just before its service is written.
    pub rings: Vec<(u32, Vec<u32>)>,
    /// Services the target no longer has.
    pub removed_services: Vec<ServiceKey>,
    /// Placements the target no longer has: those sessions go back to the default table.
    pub removed_sessions: Vec<SessionKey>,
    /// Backends the target no longer has, cleared last (nothing routes to them by then).
    pub removed_backends: Vec<u32>,
    /// What [`TableDelta::of_sessions`] found in force for each of `sessions`: not a write.
    pub replaced: Replaced,
}

/// For each placement of a delta's `sessions`, at the same index and with its key, the
/// placement in force it replaces (`None`: the session was not placed), as
/// [`TableDelta::of_sessions`] looked it up: the swap stage needs it again to publish moves
/// (`flag_moves`), and a second lookup in a million-session table cost as much as the first.
/// Bookkeeping, not content: empty when not known (another delta's, or a delta built by
/// hand), and two deltas compare equal whatever theirs hold. An entry whose key is not its
/// placement's (a delta reordered or extended since) is not to be used.
#[derive(Clone, Debug, Default)]
pub struct Replaced(pub Vec<(SessionKey, Option<ShardSet>)>);

impl PartialEq for Replaced {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Replaced {
    /// The placement in force that `sessions[at]` replaces, if known.
    pub fn at(&self, at: usize, key: &SessionKey) -> Option<Option<ShardSet>> {
        self.0
            .get(at)
            .filter(|(replaced, _)| replaced == key)
            .map(|(_, set)| *set)
    }
}

/// The placements in force a delta is computed against: a snapshot's `sessions`, or a compact
/// copy of them (the swap stage keeps one for a million sessions).
pub trait Placements {
    /// Session `key`'s shard set, if placed.
    fn placement(&self, key: &SessionKey) -> Option<ShardSet>;
}

impl Placements for HashMap<SessionKey, ShardSet> {
    fn placement(&self, key: &SessionKey) -> Option<ShardSet> {
        self.get(key).copied()
    }
}

/// Placements in force that a delta brings up to date as it is computed
/// ([`TableDelta::of_sessions_placing`]): one hash probe per session where a lookup, then an
/// insert once written, took two (a tick's 10,000 in a million-session table, on every node).
pub trait PlacementsMut: Placements {
    /// Gives session `key`'s set in force to `decide`, then holds what it answers (`None`:
    /// not placed); returns the set in force before.
    fn update(
        &mut self,
        key: &SessionKey,
        decide: impl FnOnce(Option<ShardSet>) -> Option<ShardSet>,
    ) -> Option<ShardSet>;
}

/// A target's placements, visited rather than held: a whole write goes through them a chunk at
/// a time ([`crate::reshard::Resharder::apply_placements`]), where a `HashMap` of 208-byte
/// shard sets took about 470 bytes a session (a million on a large node).
pub trait TargetPlacements {
    /// Every placement of the target, each session once, in no order.
    fn target_placements(&self) -> Box<dyn Iterator<Item = (SessionKey, ShardSet)> + '_>;
    /// Whether the target places `key`.
    fn places(&self, key: &SessionKey) -> bool;
}

impl TargetPlacements for HashMap<SessionKey, ShardSet> {
    fn target_placements(&self) -> Box<dyn Iterator<Item = (SessionKey, ShardSet)> + '_> {
        Box::new(self.iter().map(|(k, s)| (*k, *s)))
    }

    fn places(&self, key: &SessionKey) -> bool {
        self.contains_key(key)
    }
}

impl TableDelta {
    /// The writes from `before` (what the maps hold) to `after`. A placement that differs only
    /// in its generation or counters slot is unchanged; a changed one gets the generation
    /// `after` gives it, or the one after `before`'s if that is not higher.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let mut delta = Self::between_tables(before, after);
        delta.sessions = after
            .sessions
            .iter()
            .filter_map(|(key, set)| {
                Some((*key, placement_over(before.sessions.placement(key), set)?))
            })
            .collect();
        delta.sessions.sort_unstable_by_key(|(key, _)| *key);
        delta.removed_sessions = sorted(
            before
                .sessions
                .keys()
                .filter(|k| !after.sessions.contains_key(k))
                .copied()
                .collect(),
        );
        delta
    }

    /// [`TableDelta::between`] but the placements (`after.sessions` and `before.sessions` are
    /// ignored): the writes of a whole write that are not per session.
    pub fn between_tables(before: &Snapshot, after: &Snapshot) -> Self {
        let mut backends: Vec<(u32, Backend)> = after
            .backends
            .iter()
            .filter(|(id, b)| before.backends.get(id) != Some(b))
            .map(|(id, b)| (*id, *b))
            .collect();
        backends.sort_unstable_by_key(|(id, _)| *id);
        // The egress MTU is the interface's, not the tables': `after` (from a configuration)
        // does not know it, and a table write keeps the one in force.
        let globals = after
            .globals
            .with_live_half(0)
            .with_egress_mtu(before.globals.egress_mtu);
        let mut pools: Vec<(u32, Vec<u32>)> = after
            .pools
            .iter()
            .filter(|(id, pool)| before.pools.get(id) != Some(pool))
            .map(|(id, pool)| (*id, pool.clone()))
            .collect();
        pools.sort_unstable();
        let ring_changed = |s: &Service| {
            s.has_pool()
                && (after.rings.get(&s.id) != before.rings.get(&s.id)
                    || after.pools.get(&s.id) != before.pools.get(&s.id))
        };
        let mut services: Vec<(ServiceKey, Service)> = after
            .services
            .iter()
            .filter(|(k, s)| {
                before.services.get(k).map(|b| b.unplaced()) != Some(s.unplaced())
                    || ring_changed(s)
            })
            .map(|(k, s)| (*k, s.unplaced()))
            .collect();
        services.sort_unstable_by_key(|(k, s)| (s.id, *k));
        let mut rings: Vec<(u32, Vec<u32>)> = services
            .iter()
            .filter(|(_, s)| s.has_pool())
            .filter_map(|(_, s)| Some((s.id, after.rings.get(&s.id)?.clone())))
            .collect();
        rings.dedup_by_key(|(id, _)| *id);
        Self {
            backends,
            maglev: (after.maglev != before.maglev).then(|| after.maglev.clone()),
            // The too-big limits follow from the MTU and the options: compared as derived.
            globals: (globals
                != before
                    .globals
                    .with_live_half(0)
                    .with_egress_mtu(before.globals.egress_mtu))
            .then_some(globals),
            sessions: Vec::new(),
            pools,
            services,
            rings,
            removed_services: missing(&before.services, &after.services),
            removed_sessions: Vec::new(),
            removed_backends: sorted(missing(&before.backends, &after.backends)),
            replaced: Replaced::default(),
        }
    }

    /// The writes for `changes` alone (each session's new shard set, `None`: back to the
    /// default table) against `before`: what [`TableDelta::between`] gives for `before` with
    /// those changes made, without walking every session. A session named twice is written
    /// as its first change says (the journal names one with the same set every time). Each
    /// placement's predecessor in `before` is kept in `replaced`.
    pub fn of_sessions(
        before: &impl Placements,
        changes: &[(SessionKey, Option<ShardSet>)],
    ) -> Self {
        Self::of_sessions_by(changes, |key, set| {
            let old = before.placement(key);
            (old, set.and_then(|set| placement_over(old, set)))
        })
    }

    /// [`TableDelta::of_sessions`] that also makes `placed` hold the placements the delta
    /// writes (without the window flag), as the maps will once it is written: one probe per
    /// session. The caller puts back what a full map refused, and reads the maps again if the
    /// write fails. A session named twice must be named with the same change each time (as
    /// the journal names it): the first one is written, the others find it in force.
    pub fn of_sessions_placing(
        placed: &mut impl PlacementsMut,
        changes: &[(SessionKey, Option<ShardSet>)],
    ) -> Self {
        Self::of_sessions_by(changes, |key, set| {
            let mut next = None;
            let old = placed.update(key, |old| {
                next = placement_over(old, set?);
                next.map(|set| ShardSet { handoff: 0, ..set }).or(old)
            });
            (old, next)
        })
    }

    /// The delta of `changes`, `step` giving each session's placement in force and the one to
    /// write over it (`None`: none, it routes alike already or goes to the default table).
    fn of_sessions_by(
        changes: &[(SessionKey, Option<ShardSet>)],
        mut step: impl FnMut(&SessionKey, Option<&ShardSet>) -> (Option<ShardSet>, Option<ShardSet>),
    ) -> Self {
        let mut delta = Self::default();
        // At once: a tick's 10,000 placements are 2 MiB, grown step by step a copy each time.
        delta.sessions.reserve(changes.len());
        let replaced = &mut delta.replaced.0;
        replaced.reserve(changes.len());
        for (key, set) in changes {
            match (set, step(key, set.as_ref())) {
                (Some(_), (old, Some(next))) => {
                    delta.sessions.push((*key, next));
                    replaced.push((*key, old));
                }
                (None, (Some(_), _)) => delta.removed_sessions.push(*key),
                _ => {}
            }
        }
        // Stable, so both lists are put in the same order; a tick's sessions come sorted,
        // and a sort of 200-byte entries takes a scratch copy of them even then.
        if !delta.sessions.is_sorted_by_key(|(key, _)| *key) {
            delta.sessions.sort_by_key(|(key, _)| *key);
            replaced.sort_by_key(|(key, _)| *key);
        }
        delta.sessions.dedup_by_key(|(key, _)| *key);
        replaced.dedup_by_key(|(key, _)| *key);
        delta.removed_sessions.sort_unstable();
        delta.removed_sessions.dedup();
        delta
    }

    /// Splits a delta into the writes made before any placement (backends, the default table,
    /// the globals) and the rest: the first and the last part of a whole write made in parts
    /// (`write_delta` writes the groups in this order).
    pub fn split_at_placements(self) -> (Self, Self) {
        let Self {
            backends,
            maglev,
            globals,
            ..
        } = self;
        let head = Self {
            backends,
            maglev,
            globals,
            ..Self::default()
        };
        let tail = Self {
            backends: Vec::new(),
            maglev: None,
            globals: None,
            ..self
        };
        (head, tail)
    }

    /// Adds `later`'s writes to these, group by group (a part of a whole write joined to the
    /// next; `later`'s default table and globals win).
    pub fn extend(&mut self, later: Self) {
        // `later`'s predecessors land at their placements' indices only after a full list.
        if self.replaced.0.len() == self.sessions.len() {
            self.replaced.0.extend(later.replaced.0);
        }
        self.backends.extend(later.backends);
        self.maglev = later.maglev.or(self.maglev.take());
        self.globals = later.globals.or(self.globals);
        self.sessions.extend(later.sessions);
        self.pools.extend(later.pools);
        self.services.extend(later.services);
        self.rings.extend(later.rings);
        self.removed_services.extend(later.removed_services);
        self.removed_sessions.extend(later.removed_sessions);
        self.removed_backends.extend(later.removed_backends);
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the only writes are placements (each one atomic SESSIONS update or delete).
    pub fn only_placements(&self) -> bool {
        // Destructured, not compared with a copy: a tick's delta holds 10,000 placements
        // (2 MiB), and a new field must be placed on one side or the other here.
        let Self {
            backends,
            maglev,
            globals,
            sessions,
            pools,
            services,
            rings,
            removed_services,
            removed_sessions,
            removed_backends,
            replaced: _,
        } = self;
        !(sessions.is_empty() && removed_sessions.is_empty())
            && backends.is_empty()
            && maglev.is_none()
            && globals.is_none()
            && pools.is_empty()
            && services.is_empty()
            && rings.is_empty()
            && removed_services.is_empty()
            && removed_backends.is_empty()
    }
}

/// The keys of `before` that `after` does not have.
fn missing<K: Copy + Eq + Hash, V>(before: &HashMap<K, V>, after: &HashMap<K, V>) -> Vec<K> {
    before
        .keys()
        .filter(|k| !after.contains_key(k))
        .copied()
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v
}

/// The shard set to write for a session placed on `set` in the target that the maps hold as
/// `old`: `None` when they route alike already, else `set` without a counters slot and with
/// a generation above `old`'s.
pub fn placement_over(old: Option<ShardSet>, set: &ShardSet) -> Option<ShardSet> {
    let mut next = ShardSet {
        stats_slot: 0,
        ..*set
    };
    if let Some(old) = old {
        if same_placement(&old, set) {
            return None;
        }
        next.generation = next.generation.max(old.generation + 1);
    }
    Some(next)
}

/// Whether two shard sets route alike (generation and counters slot aside).
fn same_placement(a: &ShardSet, b: &ShardSet) -> bool {
    ShardSet {
        generation: 0,
        stats_slot: 0,
        ..*a
    } == ShardSet {
        generation: 0,
        stats_slot: 0,
        ..*b
    }
}

#[cfg(test)]
mod tests {
    use shardline_common::{
        maps::{backend_flags, scheme},
        partition::shard_set,
    };

    use super::*;

    fn key(session: u64) -> SessionKey {
        SessionKey {
            service: 1,
            _pad: 0,
            session,
        }
    }

    fn tables() -> Snapshot {
        let mut t = Snapshot::default();
        for id in 1..=3 {
            t.backends.insert(
                id,
                Backend {
                    flags: backend_flags::PRESENT,
                    addr4: [10, 0, 0, id as u8],
                    ..Backend::default()
                },
            );
        }
        t.services
            .insert(ServiceKey::vip_marker([0, 0, 0, 1]), Service::default());
        t.sessions
            .insert(key(1), shard_set(&[1, 2], scheme::HASH, 4));
        t.maglev = vec![1, 2, 3, 1, 2, 3];
        t.globals.flow_idle_secs = 30;
        t
    }

    #[test]
    fn equal_tables_need_no_write() {
        let t = tables();
        let mut live = t.clone();
        // What the maps say beyond the tables: the live half and the counters slot.
        live.globals.maglev_active = 1;
        live.sessions.get_mut(&key(1)).expect("placed").stats_slot = 7;
        assert!(TableDelta::between(&live, &t).is_empty());
    }

    #[test]
    fn a_re_placement_is_only_a_placement_with_a_higher_generation() {
        let before = tables();
        let mut after = before.clone();
        after
            .sessions
            .insert(key(1), shard_set(&[2, 3], scheme::HASH, 1));
        let delta = TableDelta::between(&before, &after);
        assert!(delta.only_placements());
        assert_eq!(delta.sessions.len(), 1);
        assert_eq!(delta.sessions[0].1.generation, 5, "above the replaced 4");
        assert_eq!(delta.sessions[0].1.backends[..2], [2, 3]);
    }

    #[test]
    fn the_writes_of_some_sessions_are_what_the_whole_diff_gives() {
        let before = tables();
        let changes = vec![
            // Re-placed, new, unchanged but for the generation, removed, never there.
            (key(1), Some(shard_set(&[2, 3], scheme::HASH, 1))),
            (key(2), Some(shard_set(&[1], scheme::HASH, 9))),
            (key(3), None),
        ];
        let mut after = before.clone();
        for (k, set) in &changes {
            match set {
                Some(set) => after.sessions.insert(*k, *set),
                None => after.sessions.remove(k),
            };
        }
        assert_eq!(
            TableDelta::of_sessions(&before.sessions, &changes),
            TableDelta::between(&before, &after)
        );
        let same = [(key(1), Some(shard_set(&[1, 2], scheme::HASH, 99)))];
        assert!(TableDelta::of_sessions(&before.sessions, &same).is_empty());
        let gone = [(key(1), None)];
        assert_eq!(
            TableDelta::of_sessions(&before.sessions, &gone).removed_sessions,
            [key(1)]
        );
    }

    #[test]
    fn the_writes_of_some_sessions_keep_what_each_replaces() {
        let before = tables();
        // Out of order, one session twice, one re-placed, one never placed sent back to the
        // default table (nothing to write).
        let changes = vec![
            (key(5), Some(shard_set(&[3], scheme::HASH, 1))),
            (key(1), Some(shard_set(&[2, 3], scheme::HASH, 1))),
            (key(5), Some(shard_set(&[3], scheme::HASH, 1))),
            (key(4), Some(shard_set(&[1, 3], scheme::RANGE, 2))),
            (key(3), None),
        ];
        let delta = TableDelta::of_sessions(&before.sessions, &changes);
        let keys: Vec<_> = delta.sessions.iter().map(|(k, _)| k.session).collect();
        assert_eq!(keys, [1, 4, 5]);
        for (i, (k, _)) in delta.sessions.iter().enumerate() {
            assert_eq!(delta.replaced.at(i, k), Some(before.sessions.placement(k)));
            assert_eq!(
                delta.replaced.at(i, &key(99)),
                None,
                "another key's is not used"
            );
        }
        // Joined to a part that knows nothing, or after one: what is kept still matches.
        let (mut head, mut tail) = (TableDelta::default(), delta.clone());
        head.sessions
            .push((key(7), shard_set(&[1], scheme::HASH, 1)));
        head.extend(delta.clone());
        assert_eq!(head.replaced.at(1, &key(1)), None);
        tail.extend(TableDelta::of_sessions(&before.sessions, &changes[..1]));
        assert_eq!(tail.replaced.at(3, &key(5)), Some(None));
        assert_eq!(
            delta,
            TableDelta {
                replaced: Replaced::default(),
                ..delta.clone()
            }
        );
    }

    #[test]
    fn every_kind_of_change_lands_in_its_group() {
        let before = tables();
        let mut after = before.clone();
        after.backends.remove(&3);
        after.backends.insert(
            4,
            Backend {
                flags: backend_flags::PRESENT,
                ..Backend::default()
            },
        );
        after.maglev = vec![1, 2, 4, 1, 2, 4];
        after.globals.flow_idle_secs = 0;
        after.sessions.clear();
        after
            .sessions
            .insert(key(2), shard_set(&[4], scheme::RANGE, 1));
        after.services.clear();
        let delta = TableDelta::between(&before, &after);
        assert!(!delta.only_placements());
        assert_eq!(delta.backends.iter().map(|b| b.0).collect::<Vec<_>>(), [4]);
        assert_eq!(delta.maglev.as_deref(), Some(&after.maglev[..]));
        assert_eq!(delta.globals.map(|g| g.flow_idle_secs), Some(0));
        assert_eq!(delta.sessions, [(key(2), after.sessions[&key(2)])]);
        assert_eq!(delta.removed_sessions, [key(1)]);
        assert_eq!(delta.removed_services.len(), 1);
        assert_eq!(delta.removed_backends, [3]);
    }
}
