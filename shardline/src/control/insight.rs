//! What the control loop knows about each session, published for the API, `shardline top`
//! and `shardline plot`. The loop writes once per tick; readers take a consistent copy.

use std::{collections::BTreeMap, sync::RwLock};

use serde::{Deserialize, Serialize};

use crate::config::SessionRef;

/// Samples kept per session for plots (at one per tick: the last hour at 1 s).
pub const HISTORY_SAMPLES: usize = 3600;

/// One tick of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Measured load (packets per second).
    pub actual: f64,
    /// Point forecast made for this tick.
    pub forecast: f64,
    /// Upper bound (p95) made for this tick.
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
    pub rate: f64,
    /// Point forecast for the decision horizon.
    pub forecast: f64,
    /// Upper bound the decision used.
    pub upper: f64,
    /// Forecaster the selector trusts now.
    pub model: String,
    /// Recent forecast error (sMAPE, 0..2).
    pub error: f64,
    /// Recent samples, oldest first, at most [`HISTORY_SAMPLES`].
    pub history: Vec<Sample>,
    /// Shard-count changes, oldest first.
    pub events: Vec<ReshardEvent>,
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
