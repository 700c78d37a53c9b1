//! One control-loop tick for many sessions: ingest a sample each, forecast, decide.
//!
//! Built for a million sessions: the states are one contiguous slice, a tick allocates nothing
//! and touches each state once. Per session, [`SessionState`] is `size_of::<SessionState>()`
//! bytes inline (400 on x86_64, checked by a test; the mean packet size sits in what was
//! padding) plus two heap blocks sized once at creation (and again when the loop's period
//! detection changes the season): `16 × period + 4` bytes of seasonal state and `52 × horizon`
//! bytes of forecasts awaiting their actuals. Non-seasonal sessions at horizon 1 thus cost about 450 bytes
//! (≈ 450 MB per million); a daily season of 5-minute steps (288) adds 4.6 KB.

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
    /// Mean bytes per packet (exponentially weighted; 0 until measured): turns the packet
    /// forecast into the bytes [`SizingConfig::shard_load`] sizes for.
    packet_bytes: f32,
}

impl SessionState {
    /// A session forecast as `config` says, starting with `shards` shards at `now`.
    pub fn new(config: SelectorConfig, shards: u8, now: Instant) -> Self {
        Self {
            selector: Selector::new(config),
            shards: ShardState::new(shards, now),
            given: 0,
            hpa: None,
            packet_bytes: 0.0,
        }
    }

    /// Takes one tick's measured `packets` and `bytes` per second into the session's mean
    /// packet size (a tick without packets tells nothing).
    pub fn observe_bytes(&mut self, packets: f64, bytes: f64) {
        if !(packets > 0.0 && bytes.is_finite() && bytes >= 0.0) {
            return;
        }
        let size = bytes / packets;
        self.packet_bytes = if self.packet_bytes > 0.0 {
            (f64::from(self.packet_bytes)
                + PACKET_BYTES_WEIGHT * (size - f64::from(self.packet_bytes))) as f32
        } else {
            size as f32
        };
    }

    /// The session's mean packet size, bytes (0 until measured).
    pub fn packet_bytes(&self) -> f64 {
        f64::from(self.packet_bytes)
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

    /// Gives the forecaster's seasonal models season length `period` (0: none), warmed with
    /// `recent` ([`Selector::set_period`]).
    pub fn set_period(&mut self, period: usize, recent: impl IntoIterator<Item = f64>) {
        self.selector.set_period(period, recent);
    }

    /// Refits the forecaster's Holt-Winters weights to `history`, the session's recent values
    /// oldest first ([`Selector::fit`]).
    pub fn fit(&mut self, history: &[f64]) {
        self.selector.fit(history);
    }
}

/// Weight of a tick's mean packet size in a session's running mean (a memory of about 10
/// ticks).
const PACKET_BYTES_WEIGHT: f64 = 0.1;

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
    /// The upper bound (packets) the count was sized for.
    pub upper: f64,
    /// Its bytes per second (`upper` × the mean packet size; 0 unmeasured).
    pub bytes: f64,
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
    tick_with(states, None, samples, config, now)
}

/// [`tick`], deciding with `forecasts[i]`'s forecaster instead of `states[i]`'s when given:
/// the states of another loop fed the same samples this tick (the replay's baselines share
/// the predictive loop's forecasts). `states`' own forecasters are then left as they are.
/// Panics if the slices' lengths differ.
pub fn tick_with<'a>(
    states: &'a mut [SessionState],
    forecasts: Option<&'a [SessionState]>,
    samples: &'a [f64],
    config: &'a SizingConfig,
    now: Instant,
) -> impl Iterator<Item = ShardChange> + 'a {
    assert_eq!(
        states.len(),
        samples.len(),
        "tick needs one sample per session"
    );
    if let Some(f) = forecasts {
        assert_eq!(f.len(), states.len(), "one forecaster per session");
    }
    states
        .iter_mut()
        .zip(samples)
        .enumerate()
        .filter_map(move |(session, (state, &sample))| {
            if !sample.is_finite() {
                return None;
            }
            let SessionState {
                selector: own,
                shards,
                given,
                hpa: recommendations,
                packet_bytes,
            } = state;
            let selector: &Selector = match forecasts {
                Some(f) => &f[session].selector,
                None => {
                    own.update(sample);
                    own
                }
            };
            let from = shards.shards();
            let packet_bytes = f64::from(*packet_bytes);
            let (changed, upper) = match config.rule {
                Rule::Predictive => {
                    // Never planned below what is measured now: a forecast that lags a ramp
                    // must not size the set under the load it already carries.
                    let upper = selector.upper().max(sample);
                    let level = selector.forecast().max(sample);
                    let load = config.shard_load(config.plan(upper, level), packet_bytes);
                    // The bound over the look-ahead window: this one raised by the rise the
                    // season forecasts beyond the lead window (asked for only on a scale-in).
                    let ahead = || {
                        let rise = selector.season_rise(config.lookahead)?;
                        Some(config.shard_load(config.plan(upper + rise, level), packet_bytes))
                    };
                    (shards.decide_ahead(config, load, ahead, now), upper)
                }
                Rule::Reactive(hpa) => {
                    let to = recommendations.get_or_insert_with(Box::default).decide(
                        &hpa,
                        config.per_shard_capacity,
                        from,
                        config.shard_load(sample, packet_bytes),
                        now,
                    );
                    (shards.set(to, now), sample)
                }
                Rule::Given if *given > 0 => (shards.set(*given, now), sample),
                Rule::Given => (None, sample),
            };
            changed.map(|to| ShardChange {
                session,
                from,
                to,
                forecast: selector.forecast(),
                upper,
                bytes: upper * packet_bytes,
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

    /// Issue 20 §3: two sessions with the same packet rate, one of small packets and one of
    /// large ones: with a per-shard byte capacity the byte-heavy one gets more shards.
    #[test]
    fn a_byte_heavy_packet_light_session_gets_more_shards() {
        let t0 = Instant::now();
        let config = SizingConfig {
            per_shard_capacity: 1000.0,
            per_shard_bytes: 125_000.0, // 1 Mbit/s
            ..SizingConfig::default()
        };
        let mut states = vec![SessionState::new(SelectorConfig::default(), 1, t0); 2];
        let (packets, sizes) = (400.0, [64.0, 1400.0]);
        for step in 0..50u64 {
            for (state, size) in states.iter_mut().zip(sizes) {
                state.observe_bytes(packets, packets * size);
            }
            let now = t0 + Duration::from_secs(step);
            for change in tick(&mut states, &[packets; 2], &config, now) {
                assert_eq!(change.session, 1, "{change:?}");
                assert!(
                    (change.bytes - change.upper * 1400.0).abs() < 1e-6,
                    "{change:?}"
                );
            }
        }
        assert!((states[1].packet_bytes() - 1400.0).abs() < 1e-3);
        // 400 pps need 1 shard (0.48 with the headroom); 560 kB/s need 6 (5.4).
        assert_eq!(states[0].shards(), 1);
        assert_eq!(states[1].shards(), 6);
        // Packets alone (no byte capacity): both take one.
        let mut alone = states.clone();
        let packets_only = SizingConfig {
            per_shard_bytes: f64::INFINITY,
            scale_in_delay: Duration::ZERO,
            min_dwell: Duration::ZERO,
            ..config
        };
        for step in 50..60u64 {
            let now = t0 + Duration::from_secs(step);
            tick(&mut alone, &[packets; 2], &packets_only, now).for_each(drop);
        }
        assert_eq!(alone[1].shards(), 1);
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
