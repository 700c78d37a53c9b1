//! A set of backend ids as a bit vector: the tick asks "is this backend alive?" for every
//! member of every placed session, and ids are small (below `MAX_BACKENDS`), so a bit per id
//! answers without hashing.

/// Backend ids, one bit each (grows to the largest id inserted).
#[derive(Debug, Default, Clone)]
pub(super) struct BackendSet {
    words: Vec<u64>,
}

impl BackendSet {
    /// Empties the set, keeping its memory.
    pub(super) fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds `id`.
    pub(super) fn insert(&mut self, id: u32) {
        let word = (id / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (id % 64);
    }

    /// Whether `id` is in the set.
    pub(super) fn contains(&self, id: u32) -> bool {
        self.words
            .get((id / 64) as usize)
            .is_some_and(|w| w & 1 << (id % 64) != 0)
    }
}

impl Extend<u32> for BackendSet {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_what_was_inserted_since_the_last_clear() {
        let mut set = BackendSet::default();
        set.extend([0, 63, 64, 4095, 70_000]);
        for id in [0, 63, 64, 4095, 70_000] {
            assert!(set.contains(id), "{id}");
        }
        for id in [1, 62, 65, 4094, 69_999, 70_001, u32::MAX] {
            assert!(!set.contains(id), "{id}");
        }
        set.clear();
        assert!(!set.contains(64));
        set.insert(1);
        assert!(set.contains(1) && !set.contains(0));
    }
}
