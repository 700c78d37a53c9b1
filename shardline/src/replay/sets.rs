//! Each replayed session's shard set as the state applied it, in one flat array: the demand of
//! every session lands on its set's members every tick, and a set per heap block made that
//! pass a cache miss per session.

use shardline_common::consts::MAX_SHARDS;

/// Per session, up to [`MAX_SHARDS`] member ids (the most a state's shard set holds).
pub(super) struct ShardSets {
    ids: Vec<[u32; MAX_SHARDS]>,
    lens: Vec<u8>,
}

impl ShardSets {
    /// `sessions` sessions, all unplaced (empty sets).
    pub(super) fn new(sessions: usize) -> Self {
        Self {
            ids: vec![[0; MAX_SHARDS]; sessions],
            lens: vec![0; sessions],
        }
    }

    /// Session `i`'s set.
    pub(super) fn get(&self, i: usize) -> &[u32] {
        &self.ids[i][..usize::from(self.lens[i])]
    }

    /// Makes session `i`'s set `set`. Panics past [`MAX_SHARDS`] members, which no applied
    /// state holds.
    pub(super) fn set(&mut self, i: usize, set: &[u32]) {
        assert!(set.len() <= MAX_SHARDS, "{} members", set.len());
        self.ids[i][..set.len()].copy_from_slice(set);
        self.lens[i] = set.len() as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_reads_back_its_last_set() {
        let mut sets = ShardSets::new(3);
        assert!(sets.get(0).is_empty() && sets.get(2).is_empty());
        sets.set(1, &[4, 5, 6, 7]);
        sets.set(2, &[1; MAX_SHARDS]);
        sets.set(1, &[9]);
        assert_eq!(sets.get(1), &[9]);
        assert_eq!(sets.get(2), &[1; MAX_SHARDS]);
        assert!(sets.get(0).is_empty());
        sets.set(2, &[]);
        assert!(sets.get(2).is_empty());
    }
}
