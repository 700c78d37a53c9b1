//! The *sizing* stage: how many shards a session needs.
//!
//! Pure and clock-free: every function takes `now`. The shard count follows the selector's
//! upper bound over the lead window with headroom on the session's level, `ceil((upper +
//! headroom × level) / per-shard capacity)` clamped to 1..=[`MAX_SHARDS`] ([`SizingConfig::plan`]):
//! the bound already covers the window's peak at its quantile, so the headroom is spare
//! capacity in proportion to the load, not a widening of the bound (`shardline replay` showed
//! `upper × (1 + headroom)` paying for a wide bound twice). With a per-shard byte capacity, bandwidth counts too: the forecast's
//! bytes (packets × the session's mean packet size) need `ceil(bytes / per-shard bytes ×
//! (1 + headroom))` shards, and the session gets the larger count ([`SizingConfig::shard_load`]
//! turns the bytes into the packet rate that needs as many shards, so one set of brakes serves
//! both). The brakes against flapping:
//!
//! - **dwell**: no scale-in until `min_dwell` has passed since the last change;
//! - **hysteresis**: a scale-in target must fit the smaller set with `hysteresis` to spare
//!   (it is computed with the capacity reduced by that fraction), so a forecast hovering at a
//!   boundary does not bounce between two counts;
//! - **scale-in delay**: a lower count is taken only after the forecast stayed low for
//!   `scale_in_delay`, and then the highest count asked for during that time;
//! - **scale-in look-ahead** (off by default, `lookahead` ticks): for a session whose season
//!   is known, the delay is replaced by the season's forecast. A scale-in is taken at once
//!   (dwell permitting) down to the count that carries the bound raised by the largest rise
//!   the season's averaged shape forecasts within the next `lookahead` ticks: scale in now
//!   when no ramp is forecast within the window, not 60 s after the last high ask.
//!   Sessions without a season keep the delay.
//!
//! Scale-out is taken at once, dwell or not: the forecast already looks ahead, and a ramp
//! that outgrows one step must not wait out the dwell of the step before (`shardline replay`
//! showed a dwell-delayed second step overloading every ramp).

use std::time::{Duration, Instant};

use thiserror::Error;

pub use crate::config::control::MAX_SHARDS;
use crate::control::reactive::HpaConfig;

/// Why a decision configuration is refused.
#[derive(Debug, Error, PartialEq)]
pub enum SizingError {
    /// Capacity must be a positive finite number.
    #[error("per-shard capacity must be positive and finite, got {0}")]
    Capacity(f64),
    /// Headroom and hysteresis are fractions.
    #[error("{name} must be within 0..1, got {value}")]
    Fraction {
        /// Which setting.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

/// Which rule decides a session's shard count.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Rule {
    /// The upper forecast with headroom and the brakes below (the daemon's default).
    #[default]
    Predictive,
    /// The HPA rule on the observed rate ([`crate::control::reactive`]).
    Reactive(HpaConfig),
    /// Counts given from outside each tick ([`crate::control::Core::give`]): the replay's
    /// static and oracle baselines, which then share the loop's placement code.
    Given,
}

/// The knobs of the shard-count decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingConfig {
    /// Which rule decides.
    pub rule: Rule,
    /// Load one shard carries at full use, in the series' unit.
    pub per_shard_capacity: f64,
    /// Bytes per second one shard carries at full use; infinite: bandwidth is not counted.
    pub per_shard_bytes: f64,
    /// Spare capacity kept on top of the upper forecast (0.2 = 20 %).
    pub headroom: f64,
    /// Extra margin a scale-in target must leave (0.1 = 10 %).
    pub hysteresis: f64,
    /// Least time after a change before a scale-in.
    pub min_dwell: Duration,
    /// How long the forecast must stay low before scaling in.
    pub scale_in_delay: Duration,
    /// Ticks a seasonal session's scale-in looks ahead instead of waiting `scale_in_delay`
    /// ([`ShardState::decide_ahead`]); 0: off, every session waits.
    pub lookahead: usize,
}

impl Default for SizingConfig {
    fn default() -> Self {
        Self {
            rule: Rule::Predictive,
            per_shard_capacity: 1.0,
            per_shard_bytes: f64::INFINITY,
            headroom: 0.25,
            hysteresis: 0.1,
            min_dwell: Duration::from_secs(60),
            scale_in_delay: Duration::from_secs(600),
            lookahead: 0,
        }
    }
}

impl SizingConfig {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), SizingError> {
        if !(self.per_shard_capacity.is_finite() && self.per_shard_capacity > 0.0) {
            return Err(SizingError::Capacity(self.per_shard_capacity));
        }
        for (name, value) in [("headroom", self.headroom), ("hysteresis", self.hysteresis)] {
            if !(0.0..1.0).contains(&value) {
                return Err(SizingError::Fraction { name, value });
            }
        }
        Ok(())
    }

    /// The packet rate that needs as many shards as `packets` per second of `packet_bytes`
    /// bytes each: `packets` itself, or, when their bytes need more shards at
    /// `per_shard_bytes` than the packets do at `per_shard_capacity`, the rate that needs that
    /// many. The shard count of a session is the larger of its two needs.
    pub fn shard_load(&self, packets: f64, packet_bytes: f64) -> f64 {
        let by_bytes = packets * packet_bytes / self.per_shard_bytes * self.per_shard_capacity;
        if by_bytes > packets {
            by_bytes
        } else {
            packets
        }
    }

    /// The load a predictive count is sized for, as the `upper` that [`Self::shards_for`]
    /// turns into the same count: the bound plus the headroom's share of `level` (the
    /// session's expected load, its forecast or what it measures now, whichever is higher),
    /// `(upper + headroom × level) / (1 + headroom)`. Equal to `upper` when the bound is the
    /// level; below it as the bound widens, since the bound's width already is its margin
    /// for the lead window.
    pub fn plan(&self, upper: f64, level: f64) -> f64 {
        if !upper.is_finite() {
            return upper; // NaN or infinite: the maximum, as `shards_for` decides.
        }
        if !level.is_finite() {
            return upper.max(level);
        }
        (upper + self.headroom * level.min(upper)) / (1.0 + self.headroom)
    }

    /// Shards needed for `upper` with the headroom: `ceil(upper / capacity × (1 + headroom))`,
    /// clamped to 1..=[`MAX_SHARDS`] (a non-finite forecast asks for the maximum).
    pub fn shards_for(&self, upper: f64) -> u8 {
        self.count(upper / self.per_shard_capacity * (1.0 + self.headroom))
    }

    /// Shards a scale-in may go down to: as [`Self::shards_for`] with the capacity reduced by
    /// the hysteresis.
    fn shards_to_shrink_to(&self, upper: f64) -> u8 {
        self.count(
            upper / (self.per_shard_capacity * (1.0 - self.hysteresis)) * (1.0 + self.headroom),
        )
    }

    fn count(&self, needed: f64) -> u8 {
        if needed.is_nan() {
            return MAX_SHARDS;
        }
        needed.ceil().clamp(1.0, f64::from(MAX_SHARDS)) as u8
    }
}

/// One session's shard-count state (40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardState {
    shards: u8,
    /// Highest count asked for while the forecast has been low.
    low_max: u8,
    last_change: Option<Instant>,
    low_since: Option<Instant>,
}

impl ShardState {
    /// A session starting with `shards` shards at `now` (the dwell applies from `now`).
    pub fn new(shards: u8, now: Instant) -> Self {
        Self {
            shards: shards.clamp(1, MAX_SHARDS),
            low_max: 0,
            last_change: Some(now),
            low_since: None,
        }
    }

    /// The current shard count (0 for a state never decided).
    pub fn shards(&self) -> u8 {
        self.shards
    }

    /// Decides the shard count at `now` for the upper forecast `upper`; returns the new count
    /// if it changed. Every scale-in waits out the delay ([`Self::decide_ahead`] without a
    /// look-ahead).
    pub fn decide(&mut self, config: &SizingConfig, upper: f64, now: Instant) -> Option<u8> {
        self.decide_ahead(config, upper, || None, now)
    }

    /// As [`Self::decide`], with `ahead` giving, when asked, the load the bound over the
    /// look-ahead window comes to (in `upper`'s terms), or `None` when the session has no
    /// forecast that far (no season). It is asked only when a scale-in is in question and
    /// `config.lookahead` is on; given, it replaces the delay: the count goes down at once,
    /// dwell permitting, to what `ahead` (and `upper`) still need with the hysteresis.
    pub fn decide_ahead(
        &mut self,
        config: &SizingConfig,
        upper: f64,
        ahead: impl FnOnce() -> Option<f64>,
        now: Instant,
    ) -> Option<u8> {
        let wanted = config.shards_for(upper);
        if self.shards == 0 {
            // First decision: nothing to flap from.
            self.apply(wanted, now);
            return Some(wanted);
        }
        let dwelt = self
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= config.min_dwell);
        if wanted > self.shards {
            self.low_since = None;
            self.apply(wanted, now);
            return Some(wanted);
        }
        let shrink_to = config.shards_to_shrink_to(upper);
        if shrink_to >= self.shards {
            self.low_since = None;
            return None;
        }
        if let Some(ahead) = (config.lookahead > 0).then(ahead).flatten() {
            // The season says what the next window needs: no running maximum of past asks.
            self.low_since = None;
            let target = config.shards_to_shrink_to(ahead.max(upper));
            if dwelt && target < self.shards {
                self.apply(target, now);
                return Some(target);
            }
            return None;
        }
        let since = *self.low_since.get_or_insert(now);
        self.low_max = self.low_max.max(shrink_to);
        if dwelt && now.saturating_duration_since(since) >= config.scale_in_delay {
            let target = self.low_max;
            self.apply(target, now);
            return Some(target);
        }
        None
    }

    /// Sets the count to `shards` (clamped to 1..=[`MAX_SHARDS`]) if it differs, bypassing the
    /// brakes: for rules that have their own ([`Rule::Reactive`]) or none ([`Rule::Given`]).
    /// Returns the new count if it changed.
    pub fn set(&mut self, shards: u8, now: Instant) -> Option<u8> {
        let shards = shards.clamp(1, MAX_SHARDS);
        if shards == self.shards {
            return None;
        }
        self.apply(shards, now);
        Some(shards)
    }

    fn apply(&mut self, shards: u8, now: Instant) {
        self.shards = shards;
        self.last_change = Some(now);
        self.low_since = None;
        self.low_max = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SizingConfig {
        SizingConfig {
            rule: Rule::Predictive,
            per_shard_capacity: 100.0,
            per_shard_bytes: f64::INFINITY,
            headroom: 0.2,
            hysteresis: 0.1,
            min_dwell: Duration::from_secs(30),
            scale_in_delay: Duration::from_secs(120),
            lookahead: 0,
        }
    }

    #[test]
    fn shard_count_formula_and_clamp() {
        let c = config();
        assert_eq!(c.shards_for(0.0), 1);
        assert_eq!(c.shards_for(-5.0), 1);
        assert_eq!(c.shards_for(250.0), 3); // 250 × 1.2 / 100 = 3.0
        assert_eq!(c.shards_for(251.0), 4);
        assert_eq!(c.shards_for(1e9), MAX_SHARDS);
        assert_eq!(c.shards_for(f64::INFINITY), MAX_SHARDS);
        assert_eq!(c.shards_for(f64::NAN), MAX_SHARDS);
        assert!(c.validate().is_ok());
        assert!(SizingConfig { headroom: 1.5, ..c }.validate().is_err());
        assert!(SizingConfig {
            per_shard_capacity: 0.0,
            ..c
        }
        .validate()
        .is_err());
    }

    /// The headroom is spare capacity on the level, not a widening of the bound: a bound at
    /// the level is sized as before (`upper × (1 + headroom)`), a wider one gets the headroom
    /// on the level only, never more than the old rule and never less than the bound.
    #[test]
    fn headroom_goes_on_the_level_not_on_the_bound_s_width() {
        let c = config(); // 100 per shard, 20 % headroom
                          // A bound at the level: 240 × 1.2 = 288 → 3 shards, as before.
        assert_eq!(c.shards_for(c.plan(240.0, 240.0)), 3);
        // A bound of 450 over a level of 100: 450 + 20 = 470 → 5 shards, where 450 × 1.2 =
        // 540 asked for 6.
        assert_eq!(c.shards_for(c.plan(450.0, 100.0)), 5);
        assert_eq!(c.shards_for(450.0), 6);
        for (upper, level) in [(0.0, 0.0), (10.0, 50.0), (400.0, 100.0), (1e6, 1.0)] {
            let p = c.plan(upper, level);
            assert!(p <= upper + 1e-9, "{upper} {level}: {p}");
            assert!(p * 1.2 >= upper - 1e-9, "{upper} {level}: {p}");
        }
        assert_eq!(c.plan(f64::INFINITY, 1.0), f64::INFINITY);
        assert!(c.plan(f64::NAN, 1.0).is_nan());
    }

    /// Issue 20 §3: bandwidth counts. 100 pps and 100 kB/s per shard, 20 % headroom: 150 pps
    /// of 1,500-byte packets (225 kB/s) need 3 shards by their bytes where their packets need
    /// 2; 150 pps of 100-byte packets stay at 2.
    #[test]
    fn a_byte_heavy_packet_light_session_gets_the_shards_its_bytes_need() {
        let c = SizingConfig {
            per_shard_bytes: 100_000.0,
            ..config()
        };
        assert_eq!(c.shard_load(150.0, 100.0), 150.0);
        assert_eq!(c.shards_for(c.shard_load(150.0, 100.0)), 2);
        assert!((c.shard_load(150.0, 1500.0) - 225.0).abs() < 1e-9);
        assert_eq!(c.shards_for(c.shard_load(150.0, 1500.0)), 3);
        // Without a byte capacity, packets alone.
        assert_eq!(config().shard_load(150.0, 1500.0), 150.0);
        assert_eq!(config().shard_load(f64::INFINITY, 1500.0), f64::INFINITY);
        assert_eq!(config().shard_load(150.0, 0.0), 150.0);
    }

    #[test]
    fn dwell_holds_back_a_scale_in_after_a_change() {
        let c = SizingConfig {
            scale_in_delay: Duration::ZERO,
            ..config()
        };
        let t0 = Instant::now();
        let mut s = ShardState::default();
        assert_eq!(s.decide(&c, 500.0, t0), Some(6));
        // Load drops 10 s later: the dwell holds the scale-in back until 30 s.
        assert_eq!(s.decide(&c, 100.0, t0 + Duration::from_secs(10)), None);
        assert_eq!(s.shards(), 6);
        assert_eq!(s.decide(&c, 100.0, t0 + Duration::from_secs(30)), Some(2));
    }

    #[test]
    fn hysteresis_ignores_a_forecast_hovering_at_a_boundary() {
        let c = config();
        let t0 = Instant::now();
        let mut s = ShardState::new(3, t0);
        // 3 shards cover up to 250 with the headroom. At 160, 2 shards would do (1.92), but
        // not with the 10 % hysteresis margin (2.13): the count stays put.
        for i in 0..100 {
            let upper = if i % 2 == 0 { 249.0 } else { 160.0 };
            let now = t0 + Duration::from_secs(60 * i);
            assert_eq!(s.decide(&c, upper, now), None, "step {i}");
        }
        assert_eq!(s.shards(), 3);
    }

    #[test]
    fn scale_in_waits_for_the_delay_and_takes_the_highest_low() {
        let c = config();
        let t0 = Instant::now();
        let mut s = ShardState::new(8, t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(s.decide(&c, 100.0, at(60)), None); // low since 60 s, wants 2
        assert_eq!(s.decide(&c, 200.0, at(120)), None); // wants 3
        assert_eq!(s.decide(&c, 100.0, at(179)), None);
        assert_eq!(s.decide(&c, 100.0, at(180)), Some(3));
        // A spike during the wait restarts it.
        let mut s = ShardState::new(8, t0);
        assert_eq!(s.decide(&c, 100.0, at(60)), None);
        assert_eq!(s.decide(&c, 650.0, at(100)), None); // 8 still needed: the wait restarts
        assert_eq!(s.decide(&c, 100.0, at(200)), None);
        assert_eq!(s.decide(&c, 100.0, at(319)), None);
        assert_eq!(s.decide(&c, 100.0, at(320)), Some(2));
    }

    /// The look-ahead brake: a seasonal session in a forecast trough scales in as soon as the
    /// dwell allows, where today's delay holds the count for `scale_in_delay`.
    #[test]
    fn a_forecast_trough_allows_a_scale_in_the_delay_holds_back() {
        let c = SizingConfig {
            lookahead: 60,
            ..config()
        };
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        // Today's rule: low since 30 s, still 8 shards until 150 s.
        let mut waiting = ShardState::new(8, t0);
        assert_eq!(waiting.decide(&c, 100.0, at(30)), None);
        assert_eq!(waiting.decide(&c, 100.0, at(149)), None);
        // No rise forecast within the window: 2 shards at 30 s, when the dwell has passed.
        let mut ahead = ShardState::new(8, t0);
        assert_eq!(ahead.decide_ahead(&c, 100.0, || Some(100.0), at(10)), None);
        assert_eq!(
            ahead.decide_ahead(&c, 100.0, || Some(100.0), at(30)),
            Some(2)
        );
        // Off (`lookahead` 0) or without a season (`None`), the delay rules as before.
        let off = SizingConfig { lookahead: 0, ..c };
        let mut s = ShardState::new(8, t0);
        assert_eq!(s.decide_ahead(&off, 100.0, || Some(100.0), at(30)), None);
        let mut s = ShardState::new(8, t0);
        assert_eq!(s.decide_ahead(&c, 100.0, || None, at(30)), None);
        assert_eq!(s.decide_ahead(&c, 100.0, || None, at(150)), Some(2));
    }

    /// The look-ahead brake: a ramp the season forecasts within the window holds the count
    /// the ramp needs, however long the forecast over the lead window has been low, where
    /// today's delay lets it go.
    #[test]
    fn a_forecast_ramp_forbids_the_scale_in_the_delay_lets_through() {
        let c = SizingConfig {
            lookahead: 60,
            ..config()
        };
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut waiting = ShardState::new(8, t0);
        assert_eq!(waiting.decide(&c, 100.0, at(30)), None);
        assert_eq!(waiting.decide(&c, 100.0, at(150)), Some(2));
        // A ramp to 650 forecast within the window: 8 shards stay, at every tick.
        let mut ahead = ShardState::new(8, t0);
        for secs in (30..400).step_by(10) {
            assert_eq!(
                ahead.decide_ahead(&c, 100.0, || Some(650.0), at(secs)),
                None,
                "at {secs} s"
            );
        }
        assert_eq!(ahead.shards(), 8);
        // A smaller one (250) lets it go only to what that ramp needs: 4 shards.
        assert_eq!(
            ahead.decide_ahead(&c, 100.0, || Some(250.0), at(400)),
            Some(4)
        );
    }

    #[test]
    fn scale_out_is_immediate_even_within_the_dwell() {
        let c = config();
        let t0 = Instant::now();
        let mut s = ShardState::new(1, t0);
        assert_eq!(s.decide(&c, 300.0, t0 + Duration::from_secs(1)), Some(4));
        // The ramp goes on a second later: the next step does not wait for the dwell.
        assert_eq!(s.decide(&c, 1000.0, t0 + Duration::from_secs(2)), Some(12));
        // A scale-in does.
        assert_eq!(s.decide(&c, 10.0, t0 + Duration::from_secs(3)), None);
    }
}
