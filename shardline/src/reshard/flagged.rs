//! The sessions whose placement in the maps carries the handoff window flag, with the end of
//! each one's window, kept in the order the windows end: finding the next end and the windows
//! due are then a look at the first ends, not a scan of every flagged session (tens of
//! thousands after a burst of placements, scanned on every swap and at every wake-up before).
//!
//! A swap flags its moves with one end, so the ends are grouped: one list of sessions per end.
//! A session flagged again (moved again, its window reopened) is listed under its new end too;
//! its stale listing is skipped when its end comes (the map holds the end in force).

use std::{collections::BTreeMap, time::Instant};

use rustc_hash::FxHashMap;
use shardline_common::maps::SessionKey;

/// Flagged sessions by key, and by the end of their window (see the module header).
#[derive(Debug, Default)]
pub(super) struct Flagged {
    /// The end of each flagged session's window.
    until: FxHashMap<SessionKey, Instant>,
    /// The sessions flagged with each end, stale listings included.
    ends: BTreeMap<Instant, Vec<SessionKey>>,
}

impl Flagged {
    /// Flags `key` until `until` (a later flag of the same session replaces it).
    pub(super) fn insert(&mut self, key: SessionKey, until: Instant) {
        if self.until.insert(key, until) != Some(until) {
            self.ends.entry(until).or_default().push(key);
        }
    }

    /// Flags `key` until `until` unless it is flagged already.
    pub(super) fn insert_new(&mut self, key: SessionKey, until: Instant) {
        if !self.until.contains_key(&key) {
            self.insert(key, until);
        }
    }

    /// Whether `key` is flagged.
    pub(super) fn contains_key(&self, key: &SessionKey) -> bool {
        self.until.contains_key(key)
    }

    /// Unflags `key`; whether it was flagged. Its listing is skipped when its end comes.
    pub(super) fn remove(&mut self, key: &SessionKey) -> bool {
        self.until.remove(key).is_some()
    }

    /// The earliest end listed: the next window to close, or (a stale listing) a wake-up that
    /// finds nothing to close and moves on to the next.
    pub(super) fn next_end(&self) -> Option<Instant> {
        self.ends.keys().next().copied()
    }

    /// Unflags and returns up to `limit` sessions whose window ended by `now`, earliest first;
    /// the rest stay listed.
    pub(super) fn take_due(&mut self, now: Instant, limit: usize) -> Vec<SessionKey> {
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(mut first) = self.ends.first_entry() else {
                break;
            };
            let end = *first.key();
            if end > now {
                break;
            }
            let listed = first.get_mut();
            while due.len() < limit {
                let Some(key) = listed.pop() else { break };
                // Only the listing of the end in force closes the window.
                if self.until.get(&key) == Some(&end) {
                    self.until.remove(&key);
                    due.push(key);
                }
            }
            if listed.is_empty() {
                first.remove();
            }
        }
        due
    }

    /// Flagged sessions.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.until.len()
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
    fn windows_close_in_the_order_they_end_each_at_its_latest_end() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut f = Flagged::default();
        for session in 0..5 {
            f.insert(key(session), at(10));
        }
        f.insert(key(9), at(5));
        // Moved again: 1 closes at 20, not 10; 2 is unplaced; 3 is flagged twice alike.
        f.insert(key(1), at(20));
        assert!(f.remove(&key(2)));
        f.insert(key(3), at(10));
        f.insert_new(key(4), at(30));
        assert_eq!(f.next_end(), Some(at(5)));
        assert!(f.take_due(at(4), usize::MAX).is_empty());
        assert_eq!(f.take_due(at(5), usize::MAX), [key(9)]);
        // A limit leaves the rest due.
        let first = f.take_due(at(10), 2);
        assert_eq!(first.len(), 2);
        let mut closed = [first, f.take_due(at(10), usize::MAX)].concat();
        closed.sort_unstable();
        assert_eq!(closed, [key(0), key(3), key(4)]);
        assert_eq!(f.len(), 1);
        assert!(f.contains_key(&key(1)));
        assert_eq!(f.take_due(at(20), usize::MAX), [key(1)]);
        assert_eq!((f.len(), f.next_end()), (0, None));
    }
}
