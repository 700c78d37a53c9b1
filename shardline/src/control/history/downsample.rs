//! Downsampling tiers: a series kept at several resolutions, each bounded in age (e.g. 1 s
//! for an hour, 1 min for a week). Pure: samples in, closed buckets out.

use std::time::Duration;

/// One resolution of the history: buckets of `step`, kept for `keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Bucket width.
    pub step: Duration,
    /// Age after which a bucket is deleted.
    pub keep: Duration,
}

impl Tier {
    /// The bucket start (ms) holding a sample taken at `at_ms`.
    pub fn bucket(&self, at_ms: u64) -> u64 {
        let step = (self.step.as_millis() as u64).max(1);
        at_ms / step * step
    }

    /// The oldest bucket start still kept at `now_ms`.
    pub fn cutoff(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.keep.as_millis() as u64)
    }
}

/// The default tiers: 1 s for an hour, 1 min for a week.
pub fn default_tiers() -> Vec<Tier> {
    tiers(&crate::config::control::default_tiers())
}

/// The tiers a configuration names.
pub fn tiers(config: &[crate::config::control::TierConfig]) -> Vec<Tier> {
    config
        .iter()
        .map(|t| Tier {
            step: Duration::from_secs(t.step_secs),
            keep: Duration::from_secs(t.keep_secs),
        })
        .collect()
}

/// The open bucket of one series in one tier: it averages its samples until a sample of a
/// later bucket closes it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    start: u64,
    sum: f64,
    count: u32,
}

impl Bucket {
    /// Adds a sample taken at `at_ms`; returns the bucket it closed (start, mean), if any.
    /// Samples older than the open bucket are folded into it (clocks step back rarely, and a
    /// closed bucket is never rewritten).
    pub fn push(&mut self, tier: &Tier, at_ms: u64, value: f64) -> Option<(u64, f64)> {
        let start = tier.bucket(at_ms);
        let closed = if self.count > 0 && start > self.start {
            let closed = (self.start, self.sum / f64::from(self.count));
            *self = Bucket::default();
            Some(closed)
        } else {
            None
        };
        if self.count == 0 {
            self.start = start;
        }
        self.sum += value;
        self.count += 1;
        closed
    }

    /// The open bucket's start and mean so far, if it holds samples.
    pub fn peek(&self) -> Option<(u64, f64)> {
        (self.count > 0).then(|| (self.start, self.sum / f64::from(self.count)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_buckets_average_their_seconds() {
        let tier = Tier {
            step: Duration::from_secs(60),
            keep: Duration::from_secs(600),
        };
        let mut b = Bucket::default();
        let mut closed = Vec::new();
        // Three minutes of one sample per second: values 0..180.
        for s in 0..180u64 {
            closed.extend(b.push(&tier, 1_000 * s, s as f64));
        }
        assert_eq!(closed, vec![(0, 29.5), (60_000, 89.5)]);
        assert_eq!(b.peek(), Some((120_000, 149.5)));
        assert_eq!(tier.cutoff(700_000), 100_000);
        assert_eq!(tier.cutoff(5), 0);
    }

    #[test]
    fn a_sample_from_the_past_joins_the_open_bucket() {
        let tier = Tier {
            step: Duration::from_secs(1),
            keep: Duration::from_secs(10),
        };
        let mut b = Bucket::default();
        assert_eq!(b.push(&tier, 5_000, 1.0), None);
        assert_eq!(b.push(&tier, 4_000, 3.0), None);
        assert_eq!(b.push(&tier, 6_000, 0.0), Some((5_000, 2.0)));
    }
}
