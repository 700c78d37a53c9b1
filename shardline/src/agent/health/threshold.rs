//! The fall/rise state machine of one backend's probes, pure: the caller passes each probe's
//! outcome and the time, and gets back the transition, if the outcome completed one.
//!
//! A backend goes down after `fall` failed probes in a row and comes back after `rise`
//! passing probes in a row, so one lost probe (a dropped SYN, a slow GC pause) never takes a
//! backend out, and one lucky answer never puts a flapping backend back.

use serde::{Deserialize, Serialize};

/// How many probes in a row change a backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Failed probes in a row that take a healthy backend down (at least 1).
    pub fall: u32,
    /// Passing probes in a row that bring a down backend back (at least 1).
    pub rise: u32,
}

/// A change of health that a probe completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The backend was healthy and failed `fall` probes in a row.
    Down,
    /// The backend was down and passed `rise` probes in a row.
    Up,
}

impl Transition {
    /// The metric label of the state it moves to (`down` or `up`).
    pub fn to(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
        }
    }
}

/// One backend's probe record: its verdict, since when, and the current run of failures or
/// successes. This is also what `GET /v1/backends` shows as a backend's `probe`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeState {
    /// The probes' verdict: healthy until `fall` failures in a row.
    pub healthy: bool,
    /// Unix time (ms) of the last transition, or of the first probe if none.
    pub since_ms: u64,
    /// Failed probes in a row (0 after a pass).
    pub consecutive_failures: u32,
    /// Passing probes in a row (0 after a failure).
    pub consecutive_successes: u32,
    /// Why the last failed probe failed, if the last probe failed.
    pub last_error: Option<String>,
    /// Down and up transitions so far.
    pub transitions: u64,
}

impl ProbeState {
    /// A record that starts from the health the control state holds (so a new leader, or a
    /// backend an operator marked, does not flip on its first probe).
    pub fn new(healthy: bool, now_ms: u64) -> Self {
        Self {
            healthy,
            since_ms: now_ms,
            ..Self::default()
        }
    }

    /// Records one probe's outcome at `now_ms`; returns the transition it completed, if any.
    pub fn observe(
        &mut self,
        outcome: Result<(), String>,
        now_ms: u64,
        t: Thresholds,
    ) -> Option<Transition> {
        let transition = match outcome {
            Ok(()) => {
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.last_error = None;
                (!self.healthy && self.consecutive_successes >= t.rise.max(1))
                    .then_some(Transition::Up)
            }
            Err(e) => {
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_error = Some(e);
                (self.healthy && self.consecutive_failures >= t.fall.max(1))
                    .then_some(Transition::Down)
            }
        };
        if let Some(tr) = transition {
            self.healthy = tr == Transition::Up;
            self.since_ms = now_ms;
            self.transitions += 1;
        }
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Thresholds = Thresholds { fall: 3, rise: 2 };

    fn fail() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn one_failed_probe_does_not_take_a_backend_down_three_in_a_row_do() {
        let mut p = ProbeState::new(true, 0);
        assert_eq!(p.observe(fail(), 1, DEFAULTS), None);
        assert!(p.healthy, "one failure took it down");
        assert_eq!(p.consecutive_failures, 1);
        assert_eq!(p.last_error.as_deref(), Some("connection refused"));
        // A pass resets the run: two more failures are still not three in a row.
        assert_eq!(p.observe(Ok(()), 2, DEFAULTS), None);
        assert_eq!((p.consecutive_failures, p.last_error.clone()), (0, None));
        assert_eq!(p.observe(fail(), 3, DEFAULTS), None);
        assert_eq!(p.observe(fail(), 4, DEFAULTS), None);
        assert!(p.healthy);
        assert_eq!(p.observe(fail(), 5, DEFAULTS), Some(Transition::Down));
        assert!(!p.healthy);
        assert_eq!(
            (p.since_ms, p.consecutive_failures, p.transitions),
            (5, 3, 1)
        );
        // Further failures change nothing more.
        assert_eq!(p.observe(fail(), 6, DEFAULTS), None);
        assert_eq!((p.since_ms, p.transitions), (5, 1));
    }

    #[test]
    fn two_passing_probes_in_a_row_bring_it_back() {
        let mut p = ProbeState::new(false, 0);
        assert_eq!(p.observe(Ok(()), 1, DEFAULTS), None);
        assert!(!p.healthy, "one pass brought it back");
        assert_eq!(p.observe(fail(), 2, DEFAULTS), None);
        assert_eq!(p.observe(Ok(()), 3, DEFAULTS), None, "the run restarted");
        assert_eq!(p.observe(Ok(()), 4, DEFAULTS), Some(Transition::Up));
        assert!(p.healthy);
        assert_eq!((p.since_ms, p.consecutive_successes), (4, 2));
        assert_eq!(Transition::Up.to(), "up");
        assert_eq!(Transition::Down.to(), "down");
    }

    #[test]
    fn thresholds_of_one_act_on_every_probe_and_zero_counts_as_one() {
        for t in [
            Thresholds { fall: 1, rise: 1 },
            Thresholds { fall: 0, rise: 0 },
        ] {
            let mut p = ProbeState::new(true, 0);
            assert_eq!(p.observe(fail(), 1, t), Some(Transition::Down));
            assert_eq!(p.observe(Ok(()), 2, t), Some(Transition::Up));
        }
    }
}
