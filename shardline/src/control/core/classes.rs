//! Class priors learned from history: the typical level of a class's sessions, learned from
//! every sample of every session of the class, warms a new session of that class (issue 20
//! §3, "metadata is used"). A configured `[control.classes]` rate stands in only until the
//! class has history. Only the level is learned; a class's shape (its season) is not shared.

use std::{collections::HashMap, sync::Arc};

/// Weight of one session-sample in its class's level (a memory of about 50 samples: a few
/// ticks of a busy class, longer for a small one).
const WEIGHT: f64 = 0.02;

/// Samples a class needs before its learned level is trusted over the configured rate.
pub const MIN_SAMPLES: u64 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Level {
    mean: f64,
    samples: u64,
}

/// Each class's learned level (packets per second of one session of it).
#[derive(Debug, Default)]
pub struct ClassLevels {
    levels: HashMap<Arc<str>, Level>,
}

impl ClassLevels {
    /// Takes one session's `rate` of one tick into `class`'s level (allocates only for a
    /// class seen for the first time). A rate that is not finite is ignored.
    pub fn observe(&mut self, class: &Arc<str>, rate: f64) {
        if !(rate.is_finite() && rate >= 0.0) {
            return;
        }
        let level = match self.levels.get_mut(class) {
            Some(level) => level,
            None => self.levels.entry(class.clone()).or_default(),
        };
        // The plain mean until the memory is full, then exponentially weighted.
        let weight = (1.0 / (level.samples + 1) as f64).max(WEIGHT);
        level.mean += weight * (rate - level.mean);
        level.samples += 1;
    }

    /// `class`'s learned level, once it has [`MIN_SAMPLES`] samples.
    pub fn level(&self, class: &str) -> Option<f64> {
        self.levels
            .get(class)
            .filter(|l| l.samples >= MIN_SAMPLES)
            .map(|l| l.mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_level_follows_its_sessions_once_it_has_enough_samples() {
        let (bulk, chat): (Arc<str>, Arc<str>) = ("bulk".into(), "chat".into());
        let mut levels = ClassLevels::default();
        for i in 0..MIN_SAMPLES - 1 {
            levels.observe(&bulk, if i % 2 == 0 { 900.0 } else { 1100.0 });
        }
        assert_eq!(levels.level("bulk"), None, "too few samples");
        levels.observe(&bulk, 1000.0);
        let level = levels.level("bulk").unwrap();
        assert!((level - 1000.0).abs() < 15.0, "{level}");
        levels.observe(&bulk, f64::NAN);
        assert_eq!(levels.level("bulk"), Some(level), "NaN ignored");
        // The class's load moves: the level follows within a few memories.
        for _ in 0..300 {
            levels.observe(&bulk, 200.0);
        }
        assert!((levels.level("bulk").unwrap() - 200.0).abs() < 5.0);
        // Classes do not mix.
        for _ in 0..MIN_SAMPLES {
            levels.observe(&chat, 5.0);
        }
        assert_eq!(levels.level("chat"), Some(5.0));
        assert_eq!(levels.level("other"), None);
    }
}
