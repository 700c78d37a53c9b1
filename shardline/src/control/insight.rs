//! What the control loop knows about each session, for the API, `shardline top` and
//! `shardline plot`. Readers look into the loop's memory ([`Insights`] is a view of it, not a
//! copy) and take a consistent copy of what they asked for.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use serde::{Deserialize, Deserializer, Serialize};

use crate::{config::SessionRef, control::Core};

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

/// Every session's insight, for the API: a view of the control loop's own memory (attached
/// by the loop when it starts), read in place when asked. Nothing is copied per tick, so the
/// loop's per-session window is the only copy of a session's history.
#[derive(Default)]
pub struct Insights {
    /// The loop's memory.
    core: OnceLock<Arc<Mutex<Core>>>,
    /// Insights published by a source that is not a loop (a test's fixtures).
    published: RwLock<BTreeMap<SessionRef, SessionInsight>>,
}

impl std::fmt::Debug for Insights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Insights")
            .field("attached", &self.core.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Insights {
    /// Makes `core` (the running loop's memory) what the insights show; the first call wins.
    pub fn attach(&self, core: Arc<Mutex<Core>>) {
        let _ = self.core.set(core);
    }

    /// Replaces one session's insight (a source that is not a loop).
    pub fn publish(&self, insight: SessionInsight) {
        self.published
            .write()
            .expect("insights lock")
            .insert(insight.session.clone(), insight);
    }

    /// Forgets a published session.
    pub fn forget(&self, session: &SessionRef) {
        self.published
            .write()
            .expect("insights lock")
            .remove(session);
    }

    fn with_core<T>(&self, read: impl FnOnce(&Core) -> T) -> Option<T> {
        let core = self.core.get()?;
        // A loop that panicked leaves its last tick's memory, still worth reading.
        let core = core.lock().unwrap_or_else(|e| e.into_inner());
        Some(read(&core))
    }

    /// One session's insight.
    pub fn session(&self, session: &SessionRef) -> Option<SessionInsight> {
        self.with_core(|core| core.insight(session))
            .flatten()
            .or_else(|| {
                let published = self.published.read().expect("insights lock");
                published.get(session).cloned()
            })
    }

    /// How many sessions have an insight (without collecting them).
    pub fn count(&self) -> usize {
        let sampled = self.with_core(|core| core.summaries().count());
        sampled.unwrap_or(0) + self.published.read().expect("insights lock").len()
    }

    /// Every session's insight without its history and with its last event only (cheap
    /// enough to list).
    pub fn summaries(&self) -> Vec<SessionInsight> {
        let mut out: Vec<SessionInsight> = self
            .with_core(|core| core.summaries().collect())
            .unwrap_or_default();
        let published = self.published.read().expect("insights lock");
        out.extend(published.values().map(|s| SessionInsight {
            history: Vec::new(),
            events: s.events.last().cloned().into_iter().collect(),
            ..s.clone()
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insights_read_the_loops_window_in_place_and_it_stays_bounded() {
        let config: crate::config::control::ControlConfig =
            toml::from_str("per_shard_capacity = 400.0").unwrap();
        let text = "interface = \"eth0\"\n[encap]\nsource_v4 = \"10.0.0.1\"\n[[services]]\nname = \"kv\"\nvip = \"10.0.0.100\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\n[[backends]]\nid = 1\nipv4 = \"10.0.1.1\"\nmac = \"02:00:00:00:00:01\"\n";
        let config_file = crate::config::Config::parse(text, "test").unwrap();
        let state = crate::state::ControlState::from_config(&config_file);
        let core = Arc::new(Mutex::new(Core::new(&config)));
        let insights = Insights::default();
        insights.attach(core.clone());
        let kv = SessionRef {
            service: "kv".into(),
            session: 1,
        };
        assert_eq!(insights.session(&kv), None, "not sampled yet");
        let t0 = std::time::Instant::now();
        let tick = |step: u64| {
            let now = t0 + std::time::Duration::from_secs(step);
            let mut core = core.lock().unwrap();
            core.tick(now, step * 1000, t0, &[(kv.clone(), 100.0)], &state);
        };
        tick(0);
        // Seen without a publish: the view is the loop's memory.
        assert_eq!(insights.session(&kv).map(|i| i.history.len()), Some(1));
        // More past loads than the window holds (as a restart reads them), then a tick.
        let past: Vec<(u64, f64)> = (0..HISTORY_SAMPLES as u64 + 10)
            .map(|i| (i, 50.0))
            .collect();
        core.lock().unwrap().warm(&kv, &past, &state, t0);
        tick(1);
        let insight = insights.session(&kv).expect("sampled");
        assert_eq!(
            insight.history.len(),
            HISTORY_SAMPLES,
            "the window is bounded"
        );
        assert_eq!(insight.history.last().unwrap().at_ms, 1000);
        let summaries = insights.summaries();
        assert_eq!(summaries.len(), 1);
        assert!(summaries[0].history.is_empty(), "lists carry no history");
        assert_eq!(insights.count(), 1);
    }

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
