//! The daemon's metric families (Prometheus, via `prometheus-client`): what the control loop,
//! the swap stage and the cluster record. Dataplane counters are not kept here: `/metrics`
//! reads them from the per-CPU maps at scrape time. Per-session families are bounded: the top
//! K sessions by load and one aggregate series ([`sessions`]).

pub mod sessions;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{
    collections::HashSet,
    sync::{atomic::AtomicU64, Mutex},
};

pub use self::sessions::{SessionRow, OTHER};

/// Labels naming a session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// Service name.
    pub service: String,
    /// Session number.
    pub session: String,
}

/// Labels of `shardline_backend_health_transitions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Backend id.
    pub backend: String,
    /// `down` or `up`.
    pub to: String,
}

/// Labels naming a cluster node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Node id.
    pub node: String,
}

/// Labels of `shardline_peer_reports_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `duplicate`, `late`, `unknown` or `stale`.
    pub reason: String,
}

/// Metric families recorded by the daemon's stages.
pub struct Telemetry {
    /// Seconds one control-loop tick (ingest + forecast + decide) took.
    pub tick_seconds: Histogram,
    /// Seconds one routing-visible map write (session update or Maglev flip) took.
    pub swap_seconds: Histogram,
    /// Shards per session.
    pub session_shards: Family<SessionLabels, Gauge>,
    /// Recent forecast error (sMAPE) per session.
    pub forecast_error: Family<SessionLabels, Gauge<f64, AtomicU64>>,
    /// Session placements the dataplane refused because SESSIONS was full (each refusal of
    /// each apply): those sessions keep routing by the default table.
    pub placements_refused: Counter,
    /// Backend health transitions the checker made (`to` is `down` or `up`).
    pub health_transitions: Family<TransitionLabels, Counter>,
    /// Sessions folded into the `_other` series of the per-session families (beyond the top K).
    pub sessions_folded: Gauge,
    /// Age of each other node's newest rates report, seconds (cluster-wide load).
    pub peer_report_age: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    /// Rates reports not summed, by reason.
    pub peer_reports_dropped: Family<DropLabels, Counter>,
    /// How many sessions keep their own per-session series (`[api] metrics_top_sessions`).
    top_sessions: usize,
    /// The labels exported by the last [`Telemetry::publish_sessions`], to remove the series
    /// of sessions that left the top K.
    exported: Mutex<HashSet<SessionLabels>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new(crate::config::api::DEFAULT_METRICS_TOP_SESSIONS)
    }
}

impl Telemetry {
    /// Families that export at most `top_sessions` sessions' own series (plus `_other`).
    pub fn new(top_sessions: usize) -> Self {
        Self {
            tick_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1e-5, 4.0, 10),
            ),
            swap_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1e-6, 4.0, 10),
            ),
            session_shards: Family::default(),
            forecast_error: Family::default(),
            placements_refused: Counter::default(),
            health_transitions: Family::default(),
            sessions_folded: Gauge::default(),
            peer_report_age: Family::default(),
            peer_reports_dropped: Family::default(),
            top_sessions,
            exported: Mutex::default(),
        }
    }

    /// Sets the per-session families from every session's `rows`: the top K by load as they
    /// are, the rest as one `{service="_other",session="_other"}` series (shards summed, error
    /// weighted by load). Series of sessions no longer in the top K are removed.
    pub fn publish_sessions(&self, rows: Vec<SessionRow>) {
        let selection = sessions::select(rows, self.top_sessions);
        let mut now = HashSet::with_capacity(selection.top.len() + 1);
        for r in &selection.top {
            self.session_shards
                .get_or_create(&r.labels)
                .set(i64::from(r.shards));
            self.forecast_error.get_or_create(&r.labels).set(r.error);
            now.insert(r.labels.clone());
        }
        let folded = selection.rest.as_ref().map_or(0, |r| r.sessions);
        if let Some(rest) = selection.rest {
            let labels = SessionLabels {
                service: OTHER.into(),
                session: OTHER.into(),
            };
            self.session_shards
                .get_or_create(&labels)
                .set(i64::try_from(rest.shards).unwrap_or(i64::MAX));
            self.forecast_error.get_or_create(&labels).set(rest.error);
            now.insert(labels);
        }
        self.sessions_folded
            .set(i64::try_from(folded).unwrap_or(i64::MAX));
        let mut exported = self.exported.lock().expect("exported lock");
        for gone in exported.difference(&now) {
            self.session_shards.remove(gone);
            self.forecast_error.remove(gone);
        }
        *exported = now;
    }

    /// Registers every family under the `shardline_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shardline_tick_seconds",
            "Duration of one control-loop tick (ingest, forecast, decide)",
            self.tick_seconds.clone(),
        );
        registry.register(
            "shardline_swap_seconds",
            "Duration of one routing-visible map write",
            self.swap_seconds.clone(),
        );
        registry.register(
            "shardline_session_shards",
            "Shards per session",
            self.session_shards.clone(),
        );
        registry.register(
            "shardline_forecast_error",
            "Recent forecast error per session (sMAPE, 0 to 2)",
            self.forecast_error.clone(),
        );
        registry.register(
            "shardline_placements_refused",
            "Session placements refused because the SESSIONS map was full (the session stays on the default table)",
            self.placements_refused.clone(),
        );
        registry.register(
            "shardline_backend_health_transitions",
            "Backend health transitions made by the fall/rise thresholds, by backend and the state it moved to",
            self.health_transitions.clone(),
        );
        registry.register(
            "shardline_sessions_folded",
            "Sessions beyond the top K by load, aggregated into the session=\"_other\" series",
            self.sessions_folded.clone(),
        );
        registry.register(
            "shardline_peer_report_age_seconds",
            "Age of each other node's newest per-session rates report (stale after two ticks: not summed)",
            self.peer_report_age.clone(),
        );
        registry.register(
            "shardline_peer_reports_dropped",
            "Per-session rates reports not summed, by reason (duplicate, late, unknown node, stale)",
            self.peer_reports_dropped.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    fn rows(n: u32) -> Vec<SessionRow> {
        (0..n)
            .map(|i| SessionRow {
                labels: SessionLabels {
                    service: "kv".into(),
                    session: i.to_string(),
                },
                rate: f64::from(i),
                shards: 1,
                error: 0.1,
            })
            .collect()
    }

    fn scrape(t: &Telemetry) -> String {
        let mut registry = Registry::default();
        t.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn per_session_families_hold_the_top_k_and_one_aggregate_and_forget_the_fallen() {
        let t = Telemetry::new(3);
        t.publish_sessions(rows(1000));
        let text = scrape(&t);
        let shards: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("shardline_session_shards{"))
            .collect();
        assert_eq!(shards.len(), 4, "{text}");
        for top in ["999", "998", "997"] {
            assert!(text.contains(&format!("session=\"{top}\"")), "{text}");
        }
        assert!(
            text.contains("shardline_session_shards{service=\"_other\",session=\"_other\"} 997"),
            "{text}"
        );
        assert!(text.contains("shardline_sessions_folded 997"), "{text}");

        // Session 5 climbs to the top; 997 leaves it and its series goes.
        let mut next = rows(1000);
        next[5].rate = 1e9;
        t.publish_sessions(next);
        let text = scrape(&t);
        assert!(text.contains("session=\"5\""), "{text}");
        assert!(!text.contains("session=\"997\""), "{text}");
        // Fewer sessions than K: no aggregate series left behind.
        t.publish_sessions(rows(2));
        let text = scrape(&t);
        let series = |l: &&str| !l.starts_with('#');
        assert!(
            !text.lines().filter(series).any(|l| l.contains("_other")),
            "{text}"
        );
        assert!(text.contains("shardline_sessions_folded 0"), "{text}");
    }
}
