//! What `shardline replay` prints: the `--json` shape scripts compare runs by, and the table.

use serde::{Deserialize, Serialize};

use super::{fleet::Tally, Kind, Outcome};

/// One controller's scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    /// Backend-seconds with demand above capacity.
    pub overload_seconds: f64,
    /// Demand above capacity over all demand offered.
    pub overloaded_demand_fraction: f64,
    /// Shard-seconds held (what the controller costs).
    pub shard_seconds: f64,
    /// Placement changes that took effect.
    pub reshards: u64,
    /// Mean fraction of a session's keys one re-shard moved (0 without re-shards).
    pub keys_moved_fraction: f64,
}

impl From<&Tally> for Scores {
    fn from(t: &Tally) -> Self {
        Self {
            overload_seconds: t.overload_seconds,
            overloaded_demand_fraction: if t.demand > 0.0 {
                t.overloaded_demand / t.demand
            } else {
                0.0
            },
            shard_seconds: t.shard_seconds,
            reshards: t.reshards,
            keys_moved_fraction: if t.reshards > 0 {
                t.keys_moved / t.reshards as f64
            } else {
                0.0
            },
        }
    }
}

/// Every controller's scores, by name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controllers {
    /// The daemon's loop.
    pub predictive: Scores,
    /// The HPA rule.
    pub reactive: Scores,
    /// The fixed count.
    #[serde(rename = "static")]
    pub fixed: Scores,
    /// Perfect knowledge of the lead window.
    pub oracle: Scores,
}

/// `shardline replay --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The series replayed, `+`-joined.
    pub trace: String,
    /// Ticks replayed, the warm-up included.
    pub ticks: usize,
    /// Leading ticks every controller ran on but none is scored on (absent in reports of
    /// replays before the warm-up existed: 0).
    #[serde(default)]
    pub warmup_ticks: usize,
    /// Scores per controller, over the ticks after the warm-up.
    pub controllers: Controllers,
}

impl Report {
    /// The report of an outcome.
    pub fn of(outcome: &Outcome) -> Self {
        let scores = |kind: Kind| {
            outcome
                .tallies
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, t)| Scores::from(t))
                .expect("every controller ran")
        };
        Self {
            trace: outcome.trace.clone(),
            ticks: outcome.ticks,
            warmup_ticks: outcome.warmup_ticks,
            controllers: Controllers {
                predictive: scores(Kind::Predictive),
                reactive: scores(Kind::Reactive),
                fixed: scores(Kind::Static),
                oracle: scores(Kind::Oracle),
            },
        }
    }

    /// Scores in [`Kind::ALL`] order with their names.
    pub fn rows(&self) -> [(&'static str, &Scores); 4] {
        let c = &self.controllers;
        [
            ("predictive", &c.predictive),
            ("reactive", &c.reactive),
            ("static", &c.fixed),
            ("oracle", &c.oracle),
        ]
    }

    /// The goal of issue-style comparisons: predictive has at most half the reactive
    /// controller's overload at no more than 1.1 × its shard-seconds, and stays within 1.3 ×
    /// the oracle's shard-seconds. `None` when met, else why not.
    pub fn goal_missed(&self) -> Option<String> {
        let c = &self.controllers;
        let (p, r, o) = (&c.predictive, &c.reactive, &c.oracle);
        let mut why = Vec::new();
        if p.overload_seconds > 0.5 * r.overload_seconds {
            why.push(format!(
                "overload {:.0} s is more than half of reactive's {:.0} s",
                p.overload_seconds, r.overload_seconds
            ));
        }
        if p.shard_seconds > 1.1 * r.shard_seconds {
            why.push(format!(
                "shard-seconds {:.0} are more than 1.1 × reactive's {:.0}",
                p.shard_seconds, r.shard_seconds
            ));
        }
        if p.shard_seconds > 1.3 * o.shard_seconds {
            why.push(format!(
                "shard-seconds {:.0} are more than 1.3 × the oracle's {:.0}",
                p.shard_seconds, o.shard_seconds
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "trace {} ({} ticks, the first {} warm-up, not scored)\n",
            self.trace, self.ticks, self.warmup_ticks
        );
        out += &format!(
            "{:<11} {:>16} {:>11} {:>14} {:>9} {:>11}\n",
            "controller", "overload (s)", "overloaded", "shard-seconds", "reshards", "keys moved"
        );
        for (name, s) in self.rows() {
            out += &format!(
                "{:<11} {:>16.1} {:>10.2}% {:>14.0} {:>9} {:>10.1}%\n",
                name,
                s.overload_seconds,
                s.overloaded_demand_fraction * 100.0,
                s.shard_seconds,
                s.reshards,
                s.keys_moved_fraction * 100.0
            );
        }
        match self.goal_missed() {
            None => out += "goal met: predictive ≤ ½ reactive's overload at ≤ 1.1 × its shard-seconds, ≤ 1.3 × the oracle's\n",
            Some(why) => out += &format!("goal missed: {why}\n"),
        }
        out
    }
}
