//! The newest raft log entries, kept decoded beside the redb log: the leader reads each new
//! entry back once per follower (replication) and once more to apply it, a follower once to
//! apply it, and decoding a tick's 10,000-placement entry from JSON costs tens of ms each time.
//! Served from here, an entry is decoded at most once per node (a follower's, off the wire).
//!
//! What it holds is always a contiguous suffix of the log (appends extend it, a truncation
//! cuts it, a purge or the bound trims its start), so a read that starts inside it is answered
//! whole from it, and any other read goes to redb.

use std::{collections::VecDeque, ops::Bound};

use openraft::Entry;

use super::TypeConfig;

/// Entries kept: a few ticks' worth, bounded whatever their size.
pub const KEPT: usize = 16;

/// The newest entries of the log, decoded, in index order.
#[derive(Default)]
pub struct RecentLog {
    entries: VecDeque<Entry<TypeConfig>>,
}

impl RecentLog {
    /// Records `entry`, just appended to the log; an entry that does not continue the kept
    /// suffix (after a restart, or a gap) starts it again.
    pub fn push(&mut self, entry: Entry<TypeConfig>) {
        let next = self.entries.back().map(|e| e.log_id.index + 1);
        if next.is_some_and(|n| n != entry.log_id.index) {
            self.entries.clear();
        }
        self.entries.push_back(entry);
        while self.entries.len() > KEPT {
            self.entries.pop_front();
        }
    }

    /// Forgets the entries from `index` on (a truncation).
    pub fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            self.entries.pop_back();
        }
    }

    /// Forgets the entries up to `index` (a purge).
    pub fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            self.entries.pop_front();
        }
    }

    /// The entries of `(start, end)` (bounds as openraft gives them) if the kept suffix holds
    /// the first of them; `None`: read the log itself.
    pub fn get(&self, start: Bound<u64>, end: Bound<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let first = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let kept = self.entries.front()?.log_id.index;
        if first < kept {
            return None;
        }
        let within = |i: u64| match end {
            Bound::Included(e) => i <= e,
            Bound::Excluded(e) => i < e,
            Bound::Unbounded => true,
        };
        Some(
            self.entries
                .iter()
                .skip((first - kept) as usize)
                .take_while(|e| within(e.log_id.index))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indices(got: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        got.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn answers_reads_that_start_inside_the_kept_suffix_only() {
        let mut log = RecentLog::default();
        assert_eq!(indices(log.get(Bound::Included(1), Bound::Unbounded)), None);
        for i in 1..=KEPT as u64 + 4 {
            log.push(entry(i));
        }
        // 1..=4 fell off the front.
        assert_eq!(indices(log.get(Bound::Included(4), Bound::Unbounded)), None);
        assert_eq!(
            indices(log.get(Bound::Included(5), Bound::Excluded(8))),
            Some(vec![5, 6, 7])
        );
        assert_eq!(
            indices(log.get(Bound::Excluded(18), Bound::Included(30))),
            Some(vec![19, 20])
        );
        // Past the end of the log: nothing, as the log itself answers.
        assert_eq!(
            indices(log.get(Bound::Included(21), Bound::Unbounded)),
            Some(vec![])
        );
    }

    #[test]
    fn truncation_purge_and_gaps_keep_it_a_suffix_of_the_log() {
        let mut log = RecentLog::default();
        for i in 1..=6 {
            log.push(entry(i));
        }
        log.truncate(5);
        log.push(entry(5));
        assert_eq!(
            indices(log.get(Bound::Included(1), Bound::Unbounded)),
            Some(vec![1, 2, 3, 4, 5])
        );
        log.purge(2);
        assert_eq!(indices(log.get(Bound::Included(2), Bound::Unbounded)), None);
        assert_eq!(
            indices(log.get(Bound::Included(3), Bound::Included(4))),
            Some(vec![3, 4])
        );
        // An entry that does not continue the suffix (a snapshot installed past it) restarts it.
        log.push(entry(40));
        assert_eq!(indices(log.get(Bound::Included(5), Bound::Unbounded)), None);
        assert_eq!(
            indices(log.get(Bound::Included(40), Bound::Unbounded)),
            Some(vec![40])
        );
    }
}
