//! The *reactive* sizing rule: the Kubernetes Horizontal Pod Autoscaler's, on the observed
//! rate instead of a forecast. `[control] controller = "reactive"` runs it in the daemon and
//! `shardline replay` runs it beside the predictive loop, so the two are compared on the same
//! series through the same placement code.
//!
//! The rule, as the HPA documents it: `desired = ceil(current × observed utilisation / target
//! utilisation)`, where utilisation is the observed rate over the capacity of the current
//! shards, so `desired = ceil(observed / (per-shard capacity × target))`; no change while the
//! ratio is within the tolerance of 1; a scale-down takes the highest recommendation of the
//! stabilisation window (default 5 minutes), a scale-up is taken at once.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::control::sizing::MAX_SHARDS;

/// The HPA rule's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaConfig {
    /// Target utilisation of a shard (0.8: shards run at 80 % of capacity).
    pub target: f64,
    /// No change while `|ratio − 1|` is at most this (0.1).
    pub tolerance: f64,
    /// Scale-down stabilisation window: the highest recommendation within it is taken (300 s).
    pub scale_down_window: Duration,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            target: 0.8,
            tolerance: 0.1,
            scale_down_window: Duration::from_secs(300),
        }
    }
}

/// One session's HPA state: its recent recommendations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hpa {
    recommendations: VecDeque<(Instant, u8)>,
}

impl Hpa {
    /// The shard count the rule asks for at `now`, for a session holding `current` shards and
    /// observed at `observed` (in the capacity's unit). A non-finite observation keeps
    /// `current`.
    pub fn decide(
        &mut self,
        config: &HpaConfig,
        per_shard_capacity: f64,
        current: u8,
        observed: f64,
        now: Instant,
    ) -> u8 {
        let current = current.max(1);
        if !observed.is_finite() || per_shard_capacity <= 0.0 {
            return current;
        }
        let utilisation = observed.max(0.0) / (f64::from(current) * per_shard_capacity);
        let ratio = utilisation / config.target;
        let recommended = if (ratio - 1.0).abs() <= config.tolerance {
            current
        } else {
            (f64::from(current) * ratio)
                .ceil()
                .clamp(1.0, f64::from(MAX_SHARDS)) as u8
        };
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > config.scale_down_window)
        {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((now, recommended));
        if recommended >= current {
            return recommended;
        }
        // Scale down to the highest recommendation of the window, never below what it says.
        self.recommendations
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(recommended)
            .min(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_up_at_once_to_the_target_utilisation() {
        let mut hpa = Hpa::default();
        let c = HpaConfig::default();
        let t0 = Instant::now();
        // 1 shard of 100 at 80 % target: 300 observed needs ceil(300 / 80) = 4.
        assert_eq!(hpa.decide(&c, 100.0, 1, 300.0, t0), 4);
        // Within the tolerance: 4 shards at 85 % utilisation stay.
        assert_eq!(hpa.decide(&c, 100.0, 4, 340.0, t0), 4);
        // Past it: 4 shards at 100 % → 5.
        assert_eq!(hpa.decide(&c, 100.0, 4, 400.0, t0), 5);
        assert_eq!(hpa.decide(&c, 100.0, 4, 1e12, t0), MAX_SHARDS);
        assert_eq!(hpa.decide(&c, 100.0, 4, f64::NAN, t0), 4);
    }

    #[test]
    fn scales_down_only_after_the_stabilisation_window() {
        let mut hpa = Hpa::default();
        let c = HpaConfig::default();
        let t0 = Instant::now();
        assert_eq!(hpa.decide(&c, 100.0, 1, 400.0, t0), 5);
        // The load drops: the 5 of the window holds for 300 s.
        for s in 1..=300 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(hpa.decide(&c, 100.0, 5, 50.0, now), 5, "at {s} s");
        }
        let later = t0 + Duration::from_secs(301);
        assert_eq!(hpa.decide(&c, 100.0, 5, 50.0, later), 1);
    }
}
