//! The *profile* stage in the loop: with `control.period = "auto"` (the default) the loop
//! looks for each session's season length in its recent history ([`profile::detect_period`]:
//! periodogram candidates confirmed by the autocorrelation) and gives it to the session's
//! selector, which turns its seasonal models (seasonal naive, Holt-Winters) on; the fleet's
//! forecaster (the autoscale hook's) gets the same treatment from the fleet's total.
//!
//! When, and at what cost:
//!
//! - a series is first looked at after [`FIRST_PROFILE`] samples, then each time its history
//!   has doubled, then every [`REPROFILE_EVERY`] samples once the history is full
//!   ([`HISTORY_SAMPLES`], the same recent samples `shardline top` plots): detection is redone
//!   as the history grows, and a period that appears (or fades) later is found;
//! - at most [`PROFILES_PER_TICK`] series are looked at per tick, taken round-robin from where
//!   the last tick stopped, so sessions that became due together are staggered and a tick's
//!   extra work is bounded whatever the session count;
//! - one detection over a full history (3,600 samples, periods up to 1,200 ticks) is
//!   O(n × n / 3) for the autocorrelation plus an FFT periodogram: a few ms on one core (see
//!   docs/predict.md), and it allocates (the periodogram, the autocorrelations). The per-tick
//!   forecast path does not: a selector's seasonal buffers are allocated only when its
//!   period changes.
//!
//! - each time a series is looked at, its selector's Holt-Winters weights are refitted to the
//!   same history at its horizon ([`Selector::fit`](crate::control::forecast::Selector::fit):
//!   a grid of 192 weight sets, each run over the history; about 10 ms over 3,600 samples,
//!   see docs/predict.md), so at most [`PROFILES_PER_TICK`] fits run per tick too. The
//!   per-tick path keeps its O(1) updates: the fit only sets four weights.
//!
//! A period within 5 % (at least one tick) of the current one keeps the current one, so the
//! warmed seasonal state is not thrown away for detection noise. The season is counted in
//! samples: a session's history holds one sample per tick it had traffic.

use std::{collections::VecDeque, fmt};

use super::Core;
use crate::{
    config::control::Period,
    control::{insight::HISTORY_SAMPLES, profile},
    state::SessionRef,
};

/// Samples a series needs before its period is first looked for (periods up to a third of
/// that, 21 ticks, can be found then; longer ones as the history grows).
pub const FIRST_PROFILE: usize = 64;

/// Samples between two detections once the history is full.
pub const REPROFILE_EVERY: usize = 600;

/// Most detections per tick.
pub const PROFILES_PER_TICK: usize = 2;

/// When a series' period is next looked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedule {
    seen: u64,
    next: u64,
}

impl Schedule {
    /// Counts one more sample of the series.
    pub fn record(&mut self) {
        self.seen += 1;
    }

    /// Whether the series is due for a detection.
    pub fn due(&self) -> bool {
        self.seen >= self.next.max(FIRST_PROFILE as u64)
    }

    /// Marks a detection done over `history` samples: the next one when the history has
    /// doubled, or after [`REPROFILE_EVERY`] samples, whichever is sooner.
    pub fn done(&mut self, history: usize) {
        self.next = self.seen + history.clamp(FIRST_PROFILE, REPROFILE_EVERY) as u64;
    }
}

/// The period a selector using `current` (0: none) switches to when detection `found` this;
/// `None` keeps `current`.
pub fn switch(current: usize, found: Option<usize>) -> Option<usize> {
    match found {
        Some(p) if current >= 2 && p.abs_diff(current) <= (current / 20).max(1) => None,
        Some(p) if p != current => Some(p),
        None if current != 0 => Some(0),
        _ => None,
    }
}

/// A series' season length changed (the loop logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodChange {
    /// The session, or `None` for the fleet's total.
    pub session: Option<SessionRef>,
    /// Ticks before (0: none).
    pub from: usize,
    /// Ticks now (0: none).
    pub to: usize,
    /// Samples it was detected in.
    pub samples: usize,
}

impl fmt::Display for PeriodChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.session {
            Some(s) => write!(f, "session {s}")?,
            None => f.write_str("the fleet's load")?,
        }
        match (self.from, self.to) {
            (_, 0) => write!(
                f,
                ": no season in its last {} samples; seasonal models off (was {} ticks)",
                self.samples, self.from
            ),
            (0, to) => write!(
                f,
                ": a season of {to} ticks in its last {} samples; seasonal models on",
                self.samples
            ),
            (from, to) => write!(
                f,
                ": its season is {to} ticks now (was {from}), in its last {} samples",
                self.samples
            ),
        }
    }
}

/// The loop's detection state.
#[derive(Debug, Default)]
pub(super) struct Seasons {
    /// `period = "auto"`: detection runs.
    auto: bool,
    /// The session the next tick's search for due series starts at.
    cursor: usize,
    /// Reused for the series handed to detection.
    scratch: Vec<f64>,
    /// The fleet's recent totals (only with a hook, which has a fleet forecaster).
    fleet: VecDeque<f64>,
    fleet_schedule: Schedule,
}

impl Seasons {
    /// As `period` says.
    pub(super) fn new(period: Period) -> Self {
        Self {
            auto: period == Period::Auto,
            ..Self::default()
        }
    }

    /// Records one fleet total.
    pub(super) fn fleet_sample(&mut self, total: f64) {
        if !self.auto || !total.is_finite() {
            return;
        }
        if self.fleet.len() >= HISTORY_SAMPLES {
            self.fleet.pop_front();
        }
        self.fleet.push_back(total);
        self.fleet_schedule.record();
    }
}

impl Core {
    /// Looks for the period of the due series (the fleet's first, then sessions round-robin),
    /// at most [`PROFILES_PER_TICK`] of them, and switches their selectors.
    pub(super) fn detect_periods(&mut self, changes: &mut Vec<PeriodChange>) {
        if !self.seasons.auto {
            return;
        }
        let mut budget = PROFILES_PER_TICK;
        if self.detect_fleet_period(changes) {
            budget -= 1;
        }
        self.detect_session_periods(budget, changes);
    }

    /// The fleet's part of [`Self::detect_periods`] (all a loop following another's
    /// forecasts runs: the fleet's forecaster is its own): whether a search was due and run.
    pub(super) fn detect_fleet_period(&mut self, changes: &mut Vec<PeriodChange>) -> bool {
        let seasons = &mut self.seasons;
        if !seasons.auto {
            return false;
        }
        let (Some(fleet), true) = (self.fleet.as_mut(), seasons.fleet_schedule.due()) else {
            return false;
        };
        seasons.scratch.clear();
        seasons.scratch.extend(seasons.fleet.iter().copied());
        seasons.fleet_schedule.done(seasons.scratch.len());
        let from = fleet.period();
        if let Some(to) = switch(from, profile::detect_period(&seasons.scratch)) {
            fleet.set_period(to, seasons.scratch.iter().copied());
            changes.push(PeriodChange {
                session: None,
                from,
                to,
                samples: seasons.scratch.len(),
            });
        }
        fleet.fit(&seasons.scratch);
        true
    }

    /// The sessions' part of [`Self::detect_periods`]: at most `budget` searches, round-robin.
    fn detect_session_periods(&mut self, mut budget: usize, changes: &mut Vec<PeriodChange>) {
        let seasons = &mut self.seasons;
        let n = self.refs.len();
        let mut visited = 0;
        while budget > 0 && visited < n {
            let i = (seasons.cursor + visited) % n;
            visited += 1;
            let extra = &mut self.extras[i];
            if !extra.schedule.due() {
                continue;
            }
            budget -= 1;
            seasons.scratch.clear();
            seasons.scratch.extend(
                extra
                    .history
                    .iter()
                    .map(|s| s.actual)
                    .filter(|v| v.is_finite()),
            );
            extra.schedule.done(seasons.scratch.len());
            let from = self.states[i].selector().period();
            if let Some(to) = switch(from, profile::detect_period(&seasons.scratch)) {
                self.states[i].set_period(to, seasons.scratch.iter().copied());
                changes.push(PeriodChange {
                    session: Some(self.refs[i].clone()),
                    from,
                    to,
                    samples: seasons.scratch.len(),
                });
            }
            self.states[i].fit(&seasons.scratch);
        }
        seasons.cursor = (seasons.cursor + visited) % n.max(1);
    }

    /// The season length a session's seasonal models use now (0: none), if the loop knows the
    /// session.
    pub fn period(&self, session: &SessionRef) -> Option<usize> {
        let i = *self.index.get(session)?;
        Some(self.states[i].selector().period())
    }

    /// The season length of the fleet's forecaster (the hook's), if there is one.
    pub fn fleet_period(&self) -> Option<usize> {
        self.fleet.as_ref().map(|f| f.period())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_due_at_the_first_profile_then_as_the_history_doubles() {
        let mut s = Schedule::default();
        let mut at = Vec::new();
        for seen in 1..=3000usize {
            s.record();
            if s.due() {
                at.push(seen);
                s.done(seen.min(HISTORY_SAMPLES));
            }
        }
        assert_eq!(at[..5], [64, 128, 256, 512, 1024]);
        assert_eq!(at[5..], [1624, 2224, 2824]);
    }

    #[test]
    fn a_near_period_keeps_the_current_one() {
        assert_eq!(switch(0, Some(24)), Some(24));
        assert_eq!(switch(24, Some(25)), None);
        assert_eq!(switch(288, Some(300)), None);
        assert_eq!(switch(288, Some(144)), Some(144));
        assert_eq!(switch(24, None), Some(0));
        assert_eq!(switch(0, None), None);
        assert_eq!(switch(0, Some(0)), None);
    }
}
