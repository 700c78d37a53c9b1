//! The daemon's metric families (Prometheus, via `prometheus-client`): what the control loop,
//! the swap stage and the cluster record. Dataplane counters are not kept here: `/metrics`
//! reads them from the per-CPU maps at scrape time.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

/// Labels naming a session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// Service name.
    pub service: String,
    /// Session number.
    pub session: String,
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
}

impl Default for Telemetry {
    fn default() -> Self {
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
        }
    }
}

impl Telemetry {
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
    }
}
