//! `/cluster/rates` on the peer endpoint: followers POST their per-session rates here once a
//! tick ([`RatesReport`], one request per tick); the leader's loop samples the sum
//! ([`crate::control::fleet`]). `GET` answers how fresh each node's newest report is. Like
//! every peer route it needs the cluster secret ([`PeerAuth`], checked before the body is
//! read) and takes a strict JSON body of at most [`BODY_LIMIT`] bytes; a bad body is refused
//! with the API's JSON error.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    routing::post,
    Json, Router,
};
use serde::{Deserialize, Serialize};

use crate::{
    config::SessionRef,
    control::{
        fleet::{FleetLoad, NodeReport, Offer},
        sample::Rate,
    },
    guard::{peers, PeerAuth, Refusal, Strict},
    state::Control,
    telemetry::{DropLabels, NodeLabels, Telemetry},
};

/// The route's path on the peer endpoint.
pub const PATH: &str = "/cluster/rates";

/// Most sessions one report may carry; a node with more sends its busiest.
pub const MAX_REPORT_SESSIONS: usize = 50_000;

/// Largest body the route reads, bytes (a full report is about 4 MB of JSON).
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// A node's per-session rates over one of its ticks (`POST /cluster/rates`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesReport {
    /// The sending node's id.
    pub node: u64,
    /// When it read its counters (its wall clock, Unix milliseconds): the newest wins.
    pub tick_ms: u64,
    /// Its per-session rates, at most [`MAX_REPORT_SESSIONS`].
    pub sessions: Vec<SessionRate>,
}

/// One session's rate in a [`RatesReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRate {
    /// Service name.
    pub service: String,
    /// Session number.
    pub session: u64,
    /// Packets per second (finite, not negative).
    pub packets: f64,
    /// Bytes per second (finite, not negative).
    pub bytes: f64,
}

/// What a report became (`POST` answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `accepted`, `duplicate` (same tick as the stored one) or `late` (older than it).
    pub outcome: String,
}

/// The reports this node holds (`GET` answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatesView {
    /// This node.
    pub node: u64,
    /// A report older than this is stale: not summed.
    pub stale_after_ms: u64,
    /// Each node's newest report.
    pub nodes: Vec<NodeView>,
    /// Reports not summed since start, by cause.
    pub dropped: DroppedView,
}

/// One node's newest report in a [`RatesView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node.
    pub node: u64,
    /// Milliseconds since it arrived.
    pub age_ms: u64,
    /// The sender's tick time (Unix milliseconds).
    pub tick_ms: u64,
    /// Sessions it carried.
    pub sessions: usize,
    /// Summed (not stale).
    pub fresh: bool,
}

/// [`crate::control::fleet::Dropped`] as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DroppedView {
    /// Delivered again for the same tick.
    pub duplicate: u64,
    /// Overtaken by a newer report.
    pub late: u64,
    /// From a node outside the membership, or claiming the receiver's id.
    pub unknown: u64,
    /// Went stale unreplaced.
    pub stale: u64,
}

/// The other nodes' reports, shared by the route and the sampler.
pub struct PeerRates {
    load: Mutex<FleetLoad>,
    control: Arc<dyn Control>,
    /// Dropped counts already added to the telemetry counters.
    published: Mutex<DroppedView>,
}

impl PeerRates {
    /// Reports for node `own` of the cluster behind `control`, stale `stale_after` after they
    /// arrive.
    pub fn new(own: u64, control: Arc<dyn Control>, stale_after: Duration) -> Self {
        Self {
            load: Mutex::new(FleetLoad::new(own, stale_after)),
            control,
            published: Mutex::default(),
        }
    }

    /// The members' ids now.
    pub async fn members(&self) -> BTreeSet<u64> {
        let status = self.control.status().await;
        status.members.iter().map(|m| m.id).collect()
    }

    /// Offers `report`, arrived at `now`, from a cluster of `members`.
    pub fn offer(&self, report: NodeReport, members: &BTreeSet<u64>, now: Instant) -> Offer {
        self.lock().offer(report, members, now)
    }

    /// `own` plus every fresh report, into `out` ([`FleetLoad::sum`]); reports of nodes no
    /// longer in `members` are forgotten first.
    pub fn sum(
        &self,
        own: &[(SessionRef, Rate)],
        members: &BTreeSet<u64>,
        now: Instant,
        out: &mut Vec<(SessionRef, Rate)>,
    ) {
        let mut load = self.lock();
        load.retain_members(members);
        load.sum(own, now, out);
    }

    /// The reports held at `now`.
    pub fn view(&self, now: Instant) -> RatesView {
        let load = self.lock();
        let d = load.dropped();
        RatesView {
            node: load.own(),
            stale_after_ms: load.stale_after().as_millis() as u64,
            nodes: load
                .freshness(now)
                .into_iter()
                .map(|f| NodeView {
                    node: f.node,
                    age_ms: f.age.as_millis() as u64,
                    tick_ms: f.tick_ms,
                    sessions: f.sessions,
                    fresh: f.fresh,
                })
                .collect(),
            dropped: DroppedView {
                duplicate: d.duplicate,
                late: d.late,
                unknown: d.unknown,
                stale: d.stale,
            },
        }
    }

    /// Sets `telemetry`'s per-node report age and dropped-report counters as of `now`.
    pub fn publish(&self, telemetry: &Telemetry, now: Instant) {
        let view = self.view(now);
        telemetry.peer_report_age.clear();
        for n in &view.nodes {
            let labels = NodeLabels {
                node: n.node.to_string(),
            };
            telemetry
                .peer_report_age
                .get_or_create(&labels)
                .set(n.age_ms as f64 / 1000.0);
        }
        let mut guard = self.published.lock().expect("published lock");
        let published: &mut DroppedView = &mut guard;
        let d = &view.dropped;
        for (reason, now, before) in [
            ("duplicate", d.duplicate, &mut published.duplicate),
            ("late", d.late, &mut published.late),
            ("unknown", d.unknown, &mut published.unknown),
            ("stale", d.stale, &mut published.stale),
        ] {
            let labels = DropLabels {
                reason: reason.into(),
            };
            telemetry
                .peer_reports_dropped
                .get_or_create(&labels)
                .inc_by(now - *before);
            *before = now;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetLoad> {
        self.load.lock().expect("fleet lock")
    }
}

impl RatesReport {
    /// The report as the summing takes it, or the refusal to answer.
    pub fn check(self) -> Result<NodeReport, Refusal> {
        let bad =
            |code, message: String| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
        if self.sessions.len() > MAX_REPORT_SESSIONS {
            return Err(bad(
                "too_many_sessions",
                format!(
                    "a report carries at most {MAX_REPORT_SESSIONS} sessions, this one {}; send the busiest",
                    self.sessions.len()
                ),
            ));
        }
        let valid = |x: f64| x.is_finite() && x >= 0.0;
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for s in self.sessions {
            if !(valid(s.packets) && valid(s.bytes)) {
                return Err(bad(
                    "bad_rate",
                    format!(
                        "session {}/{}: rates must be finite and not negative, got {} packets/s and {} bytes/s",
                        s.service, s.session, s.packets, s.bytes
                    ),
                ));
            }
            let rate = Rate {
                packets: s.packets,
                bytes: s.bytes,
            };
            sessions.push((
                SessionRef {
                    service: s.service.into(),
                    session: s.session,
                },
                rate,
            ));
        }
        Ok(NodeReport {
            node: self.node,
            tick_ms: self.tick_ms,
            sessions,
        })
    }

    /// `rates` of node `node` at `tick_ms`, the busiest [`MAX_REPORT_SESSIONS`] if more.
    pub fn of(node: u64, tick_ms: u64, rates: &[(SessionRef, Rate)]) -> Self {
        let mut sessions: Vec<SessionRate> = rates
            .iter()
            .map(|(s, r)| SessionRate {
                service: s.service.to_string(),
                session: s.session,
                packets: r.packets,
                bytes: r.bytes,
            })
            .collect();
        if sessions.len() > MAX_REPORT_SESSIONS {
            sessions.sort_by(|a, b| b.packets.total_cmp(&a.packets));
            sessions.truncate(MAX_REPORT_SESSIONS);
        }
        Self {
            node,
            tick_ms,
            sessions,
        }
    }
}

/// The route over `rates`, open only to requests `auth` accepts; merge it into the peer
/// endpoint's router.
pub fn router(rates: Arc<PeerRates>, auth: Arc<PeerAuth>) -> Router {
    Router::new()
        .route(PATH, post(offer).get(view))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(auth, peers::require))
        .with_state(rates)
}

async fn offer(
    State(rates): State<Arc<PeerRates>>,
    Strict(report): Strict<RatesReport>,
) -> Result<Json<Outcome>, Refusal> {
    let report = report.check()?;
    let node = report.node;
    let members = rates.members().await;
    let outcome = match rates.offer(report, &members, Instant::now()) {
        Offer::Accepted => "accepted",
        Offer::Duplicate => "duplicate",
        Offer::Late => "late",
        Offer::UnknownNode => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "unknown_node",
                format!("node {node} is not a member of this cluster; add it first"),
            ))
        }
        Offer::OwnNode => {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "own_node",
                format!("node {node} is the receiving node; it counts its own rates"),
            ))
        }
    };
    Ok(Json(Outcome {
        outcome: outcome.into(),
    }))
}

async fn view(State(rates): State<Arc<PeerRates>>) -> Json<RatesView> {
    Json(rates.view(Instant::now()))
}

#[cfg(test)]
mod tests;
