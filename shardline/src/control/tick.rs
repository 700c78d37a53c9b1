//! One control-loop tick for many sessions: ingest a sample each, forecast, decide.
//!
//! Built for a million sessions: the states are one contiguous slice, a tick allocates nothing
//! and touches each state once. Per session, [`SessionState`] is `size_of::<SessionState>()`
//! bytes inline (≈ 390 on x86_64, checked by a test) plus two heap blocks sized once at
//! creation: `8 × period` bytes of seasonal state and `40 × horizon` bytes of forecasts
//! awaiting their actuals. Non-seasonal sessions at horizon 1 thus cost about 430 bytes
//! (≈ 430 MB per million); a daily season of 5-minute steps (288) adds 2.3 KB.

use std::time::Instant;

use crate::{
    control::forecast::{Selector, SelectorConfig},
    control::reactive::Hpa,
    control::sizing::{Rule, ShardState, SizingConfig},
};

/// Everything the control loop keeps for one session.
#[derive(Debug, Clone)]
pub struct SessionState {
    selector: Selector,
    shards: ShardState,
    /// [`Rule::Given`]: the count given for the next tick (0: none yet).
    given: u8,
    /// [`Rule::Reactive`]: the HPA's recent recommendations, allocated on first use.
    hpa: Option<Box<Hpa>>,
}

impl SessionState {
    /// A session forecast as `config` says, starting with `shards` shards at `now`.
    pub fn new(config: SelectorConfig, shards: u8, now: Instant) -> Self {
        Self {
            selector: Selector::new(config),
            shards: ShardState::new(shards, now),
            given: 0,
            hpa: None,
        }
    }

    /// Gives the count [`Rule::Given`] sets at the next tick.
    pub fn give(&mut self, shards: u8) {
        self.given = shards;
    }

    /// The session's forecaster.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The session's current shard count.
    pub fn shards(&self) -> u8 {
        self.shards.shards()
    }

    /// Feeds a past (or prior) value to the forecaster without deciding: warming a session
    /// from its history or its class's prior.
    pub fn warm(&mut self, value: f64) {
        self.selector.update(value);
    }
}

/// A change of one session's shard count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardChange {
    /// Index of the session in the tick's slice.
    pub session: usize,
    /// Shards before.
    pub from: u8,
    /// Shards now.
    pub to: u8,
    /// The selected forecast that led to it.
    pub forecast: f64,
    /// The upper bound the count was sized for.
    pub upper: f64,
}

/// Feeds `samples[i]` to `states[i]` and decides its shard count at `now`, yielding the
/// sessions whose count changed.
///
/// The work happens as the iterator is driven: drive it to the end. A non-finite sample means
/// "no sample this tick": that session is neither updated nor decided. Panics if the slices'
/// lengths differ.
pub fn tick<'a>(
    states: &'a mut [SessionState],
    samples: &'a [f64],
    config: &'a SizingConfig,
    now: Instant,
) -> impl Iterator<Item = ShardChange> + 'a {
    assert_eq!(
        states.len(),
        samples.len(),
        "tick needs one sample per session"
    );
    states
        .iter_mut()
        .zip(samples)
        .enumerate()
        .filter_map(move |(session, (state, &sample))| {
            if !sample.is_finite() {
                return None;
            }
            state.selector.update(sample);
            let from = state.shards.shards();
            let (changed, upper) = match config.rule {
                Rule::Predictive => {
                    // Never planned below what is measured now: a forecast that lags a ramp
                    // must not size the set under the load it already carries.
                    let upper = state.selector.upper().max(sample);
                    (state.shards.decide(config, upper, now), upper)
                }
                Rule::Reactive(hpa) => {
                    let to = state.hpa.get_or_insert_with(Box::default).decide(
                        &hpa,
                        config.per_shard_capacity,
                        from,
                        sample,
                        now,
                    );
                    (state.shards.set(to, now), sample)
                }
                Rule::Given if state.given > 0 => (state.shards.set(state.given, now), sample),
                Rule::Given => (None, sample),
            };
            changed.map(|to| ShardChange {
                session,
                from,
                to,
                forecast: state.selector.forecast(),
                upper,
            })
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn state_stays_small() {
        let size = std::mem::size_of::<SessionState>();
        assert!(size <= 400, "SessionState grew to {size} bytes");
    }

    #[test]
    fn sessions_scale_with_their_load() {
        let t0 = Instant::now();
        let config = SizingConfig {
            per_shard_capacity: 100.0,
            min_dwell: Duration::from_secs(10),
            scale_in_delay: Duration::from_secs(60),
            ..SizingConfig::default()
        };
        let mut states = vec![SessionState::new(SelectorConfig::default(), 1, t0); 3];
        let mut changes = Vec::new();
        for step in 0..200u64 {
            let now = t0 + Duration::from_secs(5 * step);
            // Session 0 idles, 1 ramps to 1000, 2 is missing its samples.
            let ramp = (step as f64 * 10.0).min(1000.0);
            let samples = [10.0, ramp, f64::NAN];
            changes.extend(tick(&mut states, &samples, &config, now));
        }
        assert_eq!(states[0].shards(), 1);
        assert!(states[1].shards() >= 12, "{}", states[1].shards());
        assert_eq!(states[2].shards(), 1);
        assert!(changes.iter().all(|d| d.session == 1 && d.to > d.from));
        // Dwell: no two changes of a session within 10 s.
        assert!(changes.len() < 20, "{changes:?}");
    }
}
