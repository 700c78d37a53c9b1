//! What the control loop knows about each session, published for the API, `shardline top`
//! and `shardline plot`. The loop writes once per tick; readers take a consistent copy.

use std::{collections::BTreeMap, sync::RwLock};

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::SessionRef;

/// Samples kept per session for plots (at one per tick: the last hour at 1 s).
pub const HISTORY_SAMPLES: usize = 3600;

/// One tick of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Measured load (packets per second).
    #[serde(deserialize_with = "nan_if_null")]
    pub actual: f64,
    /// Point forecast made for this tick.
    #[serde(deserialize_with = "nan_if_null")]
    pub forecast: f64,
    /// Upper bound (p95) made for this tick.
    #[serde(deserialize_with = "nan_if_null")]
    pub upper: f64,
}

/// A shard-count change and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReshardEvent {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Shards before.
    pub from: u8,
    /// Shards after.
    pub to: u8,
    /// Why, e.g. `forecast peak 5200 pps at t+10s over 4 x 1500`.
    pub reason: String,
}

/// A session as the control loop sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionInsight {
    /// The session.
    pub session: SessionRef,
    /// Shards it has now.
    pub shards: u8,
    /// Load of the last tick (packets per second).
    #[serde(deserialize_with = "nan_if_null")]
    pub rate: f64,
    /// Point forecast for the decision horizon.
    #[serde(deserialize_with = "nan_if_null")]
    pub forecast: f64,
    /// Upper bound the decision used.
    #[serde(deserialize_with = "nan_if_null")]
    pub upper: f64,
    /// Forecaster the selector trusts now.
    pub model: String,
    /// Recent forecast error (sMAPE, 0..2).
    #[serde(deserialize_with = "nan_if_null")]
    pub error: f64,
    /// Recent samples, oldest first, at most [`HISTORY_SAMPLES`].
    pub history: Vec<Sample>,
    /// Shard-count changes, oldest first.
    pub events: Vec<ReshardEvent>,
}

/// serde_json writes a float that is not finite (a forecaster's NaN) as `null`; read it back as
/// NaN, so one such number does not make a whole answer unreadable to the CLI.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Every session's insight, shared between the control loop and its readers.
#[derive(Debug, Default)]
pub struct Insights {
    sessions: RwLock<BTreeMap<SessionRef, SessionInsight>>,
}

impl Insights {
    /// Replaces one session's insight.
    pub fn publish(&self, insight: SessionInsight) {
        self.sessions
            .write()
            .expect("insights lock")
            .insert(insight.session.clone(), insight);
    }

    /// Forgets a session.
    pub fn forget(&self, session: &SessionRef) {
        self.sessions
            .write()
            .expect("insights lock")
            .remove(session);
    }

    /// One session's insight.
    pub fn session(&self, session: &SessionRef) -> Option<SessionInsight> {
        self.sessions
            .read()
            .expect("insights lock")
            .get(session)
            .cloned()
    }

    /// Every session's insight without its history (cheap enough to list).
    pub fn summaries(&self) -> Vec<SessionInsight> {
        self.sessions
            .read()
            .expect("insights lock")
            .values()
            .map(|s| SessionInsight {
                history: Vec::new(),
                events: s.events.last().cloned().into_iter().collect(),
                ..s.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_float_round_trips_through_json_as_nan() {
        let sample = Sample {
            at_ms: 1,
            actual: f64::NAN,
            forecast: f64::INFINITY,
            upper: 3.0,
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(
            json,
            r#"{"at_ms":1,"actual":null,"forecast":null,"upper":3.0}"#
        );
        let back: Sample = serde_json::from_str(&json).unwrap();
        assert!(back.actual.is_nan() && back.forecast.is_nan());
        assert_eq!((back.at_ms, back.upper), (1, 3.0));
    }
}
