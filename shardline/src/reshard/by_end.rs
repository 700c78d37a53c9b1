//! Sessions that each hold something until an end (a handoff window's), kept both by session
//! and in the order the ends come: finding the next end and what is due are then a look at
//! the first ends, not a scan of every entry (tens of thousands after a burst of placements,
//! on every swap and at every wake-up). Both the resharder's flagged sessions and the
//! handoff board's published handoffs are one of these.
//!
//! A swap gives its moves one end, so the ends are grouped: one list of sessions per end. A
//! session given a new end is listed under it too; its stale listing is skipped when the old
//! end comes (the entry holds the end in force).

use std::{collections::BTreeMap, time::Instant};

use rustc_hash::FxHashMap;
use shardline_common::maps::SessionKey;

/// Entries by session, and the sessions by the end of their entry (see the module header).
#[derive(Debug)]
pub(super) struct ByEnd<V> {
    /// Each session's end and value. Fx-hashed: a tick inserts 10,000 on every node.
    entries: FxHashMap<SessionKey, (Instant, V)>,
    /// The sessions given each end, stale listings included.
    ends: BTreeMap<Instant, Vec<SessionKey>>,
}

impl<V> Default for ByEnd<V> {
    fn default() -> Self {
        Self {
            entries: FxHashMap::default(),
            ends: BTreeMap::new(),
        }
    }
}

impl<V> ByEnd<V> {
    /// Holds `value` for `key` until `end`, replacing the session's earlier entry.
    pub(super) fn insert(&mut self, key: SessionKey, end: Instant, value: V) {
        let earlier = self.entries.insert(key, (end, value));
        if earlier.is_none_or(|(e, _)| e != end) {
            self.ends.entry(end).or_default().push(key);
        }
    }

    /// [`ByEnd::insert`] for many sessions, with the list of each end looked up once per run
    /// of equal ends (a swap's entries share one); room is made at once for as many as
    /// `items` may give (a table grown step by step holds its old buckets beside the new ones
    /// at each step, and a start may insert a million).
    pub(super) fn extend(&mut self, items: impl Iterator<Item = (SessionKey, Instant, V)>) {
        let (fewest, most) = items.size_hint();
        self.entries.reserve(most.unwrap_or(fewest));
        let mut run: Option<(Instant, &mut Vec<SessionKey>)> = None;
        for (key, end, value) in items {
            let earlier = self.entries.insert(key, (end, value));
            if earlier.is_some_and(|(e, _)| e == end) {
                continue;
            }
            let listed = match run.take() {
                Some((e, listed)) if e == end => listed,
                _ => self.ends.entry(end).or_default(),
            };
            listed.push(key);
            run = Some((end, listed));
        }
    }

    /// The session's end and value.
    pub(super) fn get(&self, key: &SessionKey) -> Option<&(Instant, V)> {
        self.entries.get(key)
    }

    /// Whether `key` has an entry.
    pub(super) fn contains_key(&self, key: &SessionKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Removes the session's entry; whether it had one. Its listing is skipped when its end
    /// comes.
    pub(super) fn remove(&mut self, key: &SessionKey) -> bool {
        self.entries.remove(key).is_some()
    }

    /// The earliest end listed: the next entry due, or (a stale listing) a wake-up that finds
    /// nothing due and moves on to the next.
    pub(super) fn next_end(&self) -> Option<Instant> {
        self.ends.keys().next().copied()
    }

    /// Removes and returns up to `limit` sessions whose end came by `now`, earliest first;
    /// the rest stay listed.
    pub(super) fn take_due(&mut self, now: Instant, limit: usize) -> Vec<SessionKey> {
        // Sized once: grown push by push, each of a close's 2,048-key chunks took a dozen
        // reallocations, and after a million-session load a profile put about 40 % of a
        // close's CPU in them (glibc's `_int_malloc`).
        let mut due = Vec::with_capacity(limit.min(self.entries.len()));
        self.drain_due(now, limit, |key| due.push(key));
        due
    }

    /// Removes every entry whose end came by `now`.
    pub(super) fn forget_due(&mut self, now: Instant) {
        self.drain_due(now, usize::MAX, drop);
    }

    /// Removes up to `limit` entries whose end came by `now`, earliest first, giving each
    /// session to `removed`.
    fn drain_due(&mut self, now: Instant, limit: usize, mut removed: impl FnMut(SessionKey)) {
        let mut taken = 0;
        while taken < limit {
            let Some(mut first) = self.ends.first_entry() else {
                break;
            };
            let end = *first.key();
            if end > now {
                break;
            }
            let listed = first.get_mut();
            while taken < limit {
                let Some(key) = listed.pop() else { break };
                // Only the listing of the end in force removes the entry.
                if self.entries.get(&key).is_some_and(|(e, _)| *e == end) {
                    self.entries.remove(&key);
                    removed(key);
                    taken += 1;
                }
            }
            if listed.is_empty() {
                first.remove();
            }
        }
    }

    /// Sessions with an entry.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(session: u64) -> SessionKey {
        SessionKey::new(1, session)
    }

    #[test]
    fn entries_fall_due_in_the_order_they_end_each_at_its_latest_end() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut f = ByEnd::default();
        f.extend((0..5).map(|session| (key(session), at(10), ())));
        f.insert(key(9), at(5), ());
        // Moved again: 1 ends at 20, not 10; 2 is removed; 3 is given the same end again.
        f.insert(key(1), at(20), ());
        assert!(f.remove(&key(2)));
        assert!(!f.remove(&key(2)));
        f.insert(key(3), at(10), ());
        assert_eq!(f.next_end(), Some(at(5)));
        assert!(f.take_due(at(4), usize::MAX).is_empty());
        assert_eq!(f.take_due(at(5), usize::MAX), [key(9)]);
        // A limit leaves the rest due.
        let first = f.take_due(at(10), 2);
        assert_eq!(first.len(), 2);
        let mut due = [first, f.take_due(at(10), usize::MAX)].concat();
        due.sort_unstable();
        assert_eq!(due, [key(0), key(3), key(4)]);
        assert_eq!(f.len(), 1);
        assert!(f.contains_key(&key(1)));
        assert_eq!(f.get(&key(1)).map(|(end, _)| *end), Some(at(20)));
        assert_eq!(f.take_due(at(20), usize::MAX), [key(1)]);
        assert_eq!((f.len(), f.next_end()), (0, None));
    }

    #[test]
    fn forgetting_what_is_due_keeps_the_rest_and_a_later_end_of_the_same_session() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut f = ByEnd::default();
        // Runs of ends, one session in two of them: its later end is the one in force.
        f.extend(
            [
                (key(1), at(5), 'a'),
                (key(2), at(5), 'b'),
                (key(1), at(8), 'c'),
            ]
            .into_iter(),
        );
        f.extend([(key(3), at(8), 'd')].into_iter());
        f.forget_due(at(5));
        assert_eq!(f.get(&key(2)), None);
        assert_eq!(f.get(&key(1)), Some(&(at(8), 'c')));
        assert_eq!(f.len(), 2);
        f.forget_due(at(8));
        assert_eq!((f.len(), f.next_end()), (0, None));
    }
}
