//! `/metrics`: the daemon's families ([`Telemetry`]: tick duration, swap latency, per-session
//! shards and forecast error), the cluster's role and term, and the dataplane's per-CPU
//! counters summed at scrape time (per reason, per backend, per (service, backend), per service).

use std::sync::{Arc, Mutex};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, family::Family, gauge::ConstGauge, gauge::Gauge, MetricType},
    registry::Registry,
};
use shardline_common::maps::Counter;

use super::{ApiError, ApiState};
use crate::{
    maps::{BackendCounters, DataplaneMaps},
    state::Control,
    telemetry::{Telemetry, OTHER},
};

/// The content type of OpenMetrics text, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Roles a node can report, each a series of `shardline_raft_role` (1 for the current one).
const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

/// The registry and the gauges set from the cluster's status on each scrape.
pub(super) struct Metrics {
    registry: Registry,
    raft_term: Gauge,
    raft_role: Family<[(&'static str, &'static str); 1], Gauge>,
    raft_leader: Gauge,
    raft_applied: Gauge,
}

impl Metrics {
    pub(super) fn new(
        telemetry: &Telemetry,
        control: Arc<dyn Control>,
        maps: Option<Arc<Mutex<DataplaneMaps>>>,
    ) -> Self {
        let mut registry = Registry::default();
        telemetry.register(&mut registry);
        let m = Self {
            registry,
            raft_term: Gauge::default(),
            raft_role: Family::default(),
            raft_leader: Gauge::default(),
            raft_applied: Gauge::default(),
        };
        let mut registry = m.registry;
        registry.register(
            "shardline_raft_term",
            "Current Raft term",
            m.raft_term.clone(),
        );
        registry.register(
            "shardline_raft_role",
            "This node's Raft role (1 for the current role)",
            m.raft_role.clone(),
        );
        registry.register(
            "shardline_raft_leader",
            "Node id of the known leader (-1: none known)",
            m.raft_leader.clone(),
        );
        registry.register(
            "shardline_raft_applied_index",
            "Index of the last applied log entry",
            m.raft_applied.clone(),
        );
        registry.register_collector(Box::new(StateCollector { control, maps }));
        Self { registry, ..m }
    }
}

pub(super) async fn serve(State(api): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let status = api.control.status().await;
    let m = &api.metrics;
    m.raft_term.set(status.term as i64);
    m.raft_applied.set(status.applied as i64);
    m.raft_leader.set(status.leader.map_or(-1, |l| l as i64));
    for role in ROLES {
        m.raft_role
            .get_or_create(&[("role", role)])
            .set(i64::from(status.role == role));
    }
    // Reading the per-CPU maps is a few syscalls per series: off the async workers.
    let text = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &api.metrics.registry).map(|_| text)
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(|e| internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text))
}

fn internal(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "metrics",
        format!("encoding the metrics failed: {message}"),
    )
}

/// Families read at scrape time from the control state and the dataplane's maps.
struct StateCollector {
    control: Arc<dyn Control>,
    maps: Option<Arc<Mutex<DataplaneMaps>>>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

/// Writes one family of `series` (labels, value) as `kind` (counter or gauge).
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(L, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let e = family.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value).encode(e)?,
            _ => ConstGauge::new(*value as i64).encode(e)?,
        }
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let state = self.control.local();
        let gauge = MetricType::Gauge;
        let per_backend = |f: &dyn Fn(&crate::state::BackendEntry) -> u64| -> Vec<_> {
            state
                .backends
                .iter()
                .map(|(id, b)| ([("backend", id.to_string())], f(b)))
                .collect()
        };
        family(
            &mut encoder,
            "shardline_state_generation",
            "Routing changes applied to the control state",
            gauge,
            &[([("node", "local".to_owned())], state.generation)],
        )?;
        family(
            &mut encoder,
            "shardline_backend_healthy",
            "Backend passing health checks (1) or not (0)",
            gauge,
            &per_backend(&|b| u64::from(b.healthy)),
        )?;
        family(
            &mut encoder,
            "shardline_backend_draining",
            "Backend draining (1) or not (0)",
            gauge,
            &per_backend(&|b| u64::from(b.draining)),
        )?;
        family(
            &mut encoder,
            "shardline_backend_weight",
            "Backend's effective weight in the default table",
            gauge,
            &per_backend(&|b| u64::from(b.effective_weight())),
        )?;
        let placed: Vec<_> = state
            .services
            .iter()
            .map(|s| {
                let n = state
                    .sessions
                    .iter()
                    .filter(|(r, e)| r.service == s.name && !e.backends.is_empty())
                    .count();
                ([("service", s.name.clone())], n as u64)
            })
            .collect();
        family(
            &mut encoder,
            "shardline_service_placed_sessions",
            "Sessions of a service placed on a shard set",
            gauge,
            &placed,
        )?;
        let (mut weights, mut health) = (Vec::new(), Vec::new());
        for s in &state.services {
            for m in state.pool(&s.name).into_iter().flatten() {
                let labels = [("service", s.name.clone()), ("backend", m.id.to_string())];
                weights.push((labels.clone(), u64::from(m.effective_weight)));
                health.push((labels, u64::from(m.healthy)));
            }
        }
        family(
            &mut encoder,
            "shardline_pool_weight",
            "A backend's effective weight in a service's pool (services with a pool only)",
            gauge,
            &weights,
        )?;
        family(
            &mut encoder,
            "shardline_pool_healthy",
            "1 while a pool member may carry the service's traffic (its own checks and the service's probe pass), else 0",
            gauge,
            &health,
        )?;

        let Some(maps) = &self.maps else {
            return Ok(());
        };
        let maps = maps.lock().map_err(|_| std::fmt::Error)?;
        // A map that cannot be read leaves its families out of this scrape rather than failing
        // the whole scrape: the rest is still worth having.
        if let Ok(counts) = maps.reason_counts() {
            let series: Vec<_> = counts
                .iter()
                .map(|(r, n)| ([("reason", r.name()), ("action", r.action().name())], *n))
                .collect();
            family(
                &mut encoder,
                "shardline_dataplane_packets",
                "Packets by the dataplane's reason (drop reasons included) and action",
                MetricType::Counter,
                &series,
            )?;
        }
        if let Ok(Some(counts)) = maps.nexthop_counts() {
            let series: Vec<_> = counts
                .iter()
                .map(|(o, n)| ([("outcome", o.name())], *n))
                .collect();
            family(
                &mut encoder,
                "shardline_dataplane_nexthop_packets",
                "Packets to backends with nexthop = \"fib\" by how they left: fib (FIB's next hop, XDP_TX), fib_redirect (FIB's next hop out of an egress interface, XDP_REDIRECT), fallback_* (no usable FIB answer: the static MAC, or dropped as no_next_hop without one)",
                MetricType::Counter,
                &series,
            )?;
        }
        if let Ok(Some(untracked)) = maps.new_flows_untracked() {
            family(
                &mut encoder,
                "shardline_dataplane_new_flows_untracked",
                "New flows routed without a flow-table entry because their CPU was over the new-flow rate (a flood); each still follows the tables",
                MetricType::Counter,
                &[([] as [(&str, &str); 0], untracked)],
            )?;
        }
        let ids: Vec<u32> = state.backends.keys().copied().collect();
        let counters = maps.backends_counters(&ids).unwrap_or_default();
        let packets: Vec<_> = counters
            .iter()
            .map(|(id, c)| ([("backend", id.to_string())], c.total().packets))
            .collect();
        let bytes: Vec<_> = counters
            .iter()
            .map(|(id, c)| ([("backend", id.to_string())], c.total().bytes))
            .collect();
        family(
            &mut encoder,
            "shardline_backend_packets",
            "Packets forwarded to a backend",
            MetricType::Counter,
            &packets,
        )?;
        family(
            &mut encoder,
            "shardline_backend_bytes",
            "Bytes forwarded to a backend",
            MetricType::Counter,
            &bytes,
        )?;
        let pairs = service_backend_series(&state, &counters);
        let packets: Vec<_> = pairs.iter().map(|(l, c)| (l.clone(), c.packets)).collect();
        let bytes: Vec<_> = pairs.iter().map(|(l, c)| (l.clone(), c.bytes)).collect();
        family(
            &mut encoder,
            "shardline_backend_forwarded_packets",
            "Packets of a service forwarded to a backend (service=\"_other\": the services beyond the dataplane's per-service rows, together)",
            MetricType::Counter,
            &packets,
        )?;
        family(
            &mut encoder,
            "shardline_backend_forwarded_bytes",
            "Bytes of a service forwarded to a backend",
            MetricType::Counter,
            &bytes,
        )?;
        if let Ok(sessions) = maps.session_counters() {
            let mut per_service = vec![(0u64, 0u64); state.services.len()];
            for (key, c) in sessions {
                if let Some(t) = per_service.get_mut((key.service as usize).wrapping_sub(1)) {
                    t.0 += c.packets;
                    t.1 += c.bytes;
                }
            }
            let name = |i: usize| [("service", state.services[i].name.clone())];
            let packets: Vec<_> = per_service
                .iter()
                .enumerate()
                .map(|(i, t)| (name(i), t.0))
                .collect();
            let bytes: Vec<_> = per_service
                .iter()
                .enumerate()
                .map(|(i, t)| (name(i), t.1))
                .collect();
            family(
                &mut encoder,
                "shardline_service_packets",
                "Packets of a service's sessions the dataplane tracks (recent sessions: an LRU)",
                MetricType::Counter,
                &packets,
            )?;
            family(
                &mut encoder,
                "shardline_service_bytes",
                "Bytes of a service's sessions the dataplane tracks",
                MetricType::Counter,
                &bytes,
            )?;
        }
        Ok(())
    }
}

/// The (service, backend) series of the forwarded counters: each backend that serves a
/// service (in its pool, or any backend for a service without one) and any pair that counted,
/// by service name; services without a counters row of their own fold into one
/// `service="_other"` series per backend, present once it counted.
fn service_backend_series(
    state: &crate::state::ControlState,
    counters: &[(u32, BackendCounters)],
) -> Vec<([(&'static str, String); 2], Counter)> {
    let mut out = Vec::new();
    for (id, c) in counters {
        let own = state.backends.get(id).map_or(0, |b| b.config.weight);
        for (i, s) in state.services.iter().enumerate() {
            let Some(counted) = c.service(i as u32 + 1) else {
                continue;
            };
            if counted != Counter::default() || state.pool_weight(&s.name, *id, own).is_some() {
                out.push((
                    [("service", s.name.clone()), ("backend", id.to_string())],
                    counted,
                ));
            }
        }
        if c.shared() != Counter::default() {
            let labels = [("service", OTHER.to_owned()), ("backend", id.to_string())];
            out.push((labels, c.shared()));
        }
    }
    out
}

/// Every family `/metrics` can serve (for the dashboard test and the docs).
pub const FAMILIES: &[&str] = &[
    "shardline_tick_seconds",
    "shardline_swap_seconds",
    "shardline_session_shards",
    "shardline_forecast_error",
    "shardline_sessions_folded",
    "shardline_raft_term",
    "shardline_raft_role",
    "shardline_raft_leader",
    "shardline_raft_applied_index",
    "shardline_state_generation",
    "shardline_backend_healthy",
    "shardline_backend_draining",
    "shardline_backend_weight",
    "shardline_service_placed_sessions",
    "shardline_pool_weight",
    "shardline_pool_healthy",
    "shardline_dataplane_packets",
    "shardline_dataplane_new_flows_untracked",
    "shardline_backend_packets",
    "shardline_backend_bytes",
    "shardline_backend_forwarded_packets",
    "shardline_backend_forwarded_bytes",
    "shardline_service_packets",
    "shardline_service_bytes",
];

#[cfg(test)]
mod tests {
    use shardline_common::consts::SERVICE_STATS_ROWS;

    use super::*;
    use crate::{config::Config, state::ControlState};

    /// Counters of backend `id` with `packets` in the given rows (100 bytes a packet).
    fn counted(id: u32, rows: &[(usize, u64)]) -> (u32, BackendCounters) {
        let mut c = BackendCounters {
            rows: vec![Counter::default(); SERVICE_STATS_ROWS as usize],
        };
        for (row, packets) in rows {
            c.rows[*row] = Counter {
                packets: *packets,
                bytes: 100 * packets,
            };
        }
        (id, c)
    }

    #[test]
    fn pairs_are_labelled_by_service_members_always_and_others_once_they_count() {
        let config = Config::parse(
            r#"
interface = "eth0"
[encap]
source_v4 = "10.0.0.2"
[[services]]
name = "kv"
vip = "10.100.0.1"
port = 7000
protocol = "udp"
mode = "header"
backends = [1]
[[services]]
name = "web"
vip = "10.100.0.1"
port = 8080
protocol = "tcp"
mode = "flow"
[[backends]]
id = 1
ipv4 = "10.0.0.11"
mac = "02:00:00:00:00:11"
[[backends]]
id = 2
ipv4 = "10.0.0.12"
mac = "02:00:00:00:00:12"
"#,
            "test",
        )
        .expect("valid");
        let state = ControlState::from_config(&config);
        // Backend 1: kv (id 1) and web (id 2) counted; backend 2: only services beyond the
        // per-service rows (row 0). kv's pool leaves backend 2 out, web has no pool.
        let counters = [counted(1, &[(1, 5), (2, 7)]), counted(2, &[(0, 3)])];
        let got: Vec<_> = service_backend_series(&state, &counters)
            .into_iter()
            .map(|([(_, service), (_, backend)], c)| (service, backend, c.packets, c.bytes))
            .collect();
        let want = [
            ("kv", "1", 5, 500),
            ("web", "1", 7, 700),
            ("web", "2", 0, 0),
            (OTHER, "2", 3, 300),
        ]
        .map(|(s, b, p, by)| (s.to_owned(), b.to_owned(), p, by));
        assert_eq!(got, want);
        assert_eq!(counters[0].1.total().packets, 12);
        assert_eq!(counters[0].1.service(2).map(|c| c.packets), Some(7));
        assert_eq!(counters[0].1.service(SERVICE_STATS_ROWS), None);
    }
}
