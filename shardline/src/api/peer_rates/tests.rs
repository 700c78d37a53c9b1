//! The route in memory: the cluster secret first, strict bodies refused as JSON errors,
//! unknown nodes refused, duplicates and late reports answered but not summed.

use async_trait::async_trait;
use axum::{
    body::Body,
    http::{header, Request},
};
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;

use super::*;
use crate::{
    guard::{testing::answer, Keyring},
    state::{ClusterStatus, Command, ControlError, ControlState, LocalControl, Member, Response},
};

/// A [`LocalControl`] that says it is node 1 of three.
struct ThreeNodes(LocalControl);

#[async_trait]
impl Control for ThreeNodes {
    async fn write(&self, command: Command) -> Result<Response, ControlError> {
        self.0.write(command).await
    }

    async fn read(&self) -> Result<Arc<ControlState>, ControlError> {
        self.0.read().await
    }

    fn local(&self) -> Arc<ControlState> {
        self.0.local()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<ControlState>> {
        self.0.subscribe()
    }

    async fn status(&self) -> ClusterStatus {
        let mut status = self.0.status().await;
        status.members = (1..=3)
            .map(|id| Member {
                id,
                addr: format!("10.0.0.{id}:7946"),
                voter: true,
            })
            .collect();
        status
    }

    async fn add_member(&self, id: u64, addr: String, voter: bool) -> Result<(), ControlError> {
        self.0.add_member(id, addr, voter).await
    }

    async fn remove_member(&self, id: u64) -> Result<(), ControlError> {
        self.0.remove_member(id).await
    }
}

const SECRET: &str = "cluster-secret-0123456789";

fn app() -> (Router, Arc<PeerRates>) {
    let control = Arc::new(ThreeNodes(LocalControl::new(ControlState::default())));
    let rates = Arc::new(PeerRates::new(1, control, Duration::from_secs(1)));
    let auth = Arc::new(PeerAuth::Secret(Keyring::parse(SECRET, "test").unwrap()));
    (router(rates.clone(), auth), rates)
}

async fn post(app: &Router, secret: Option<&str>, body: String) -> (u16, Value) {
    let mut request = Request::post(PATH).header(header::CONTENT_TYPE, "application/json");
    if let Some(s) = secret {
        request = request.header(header::AUTHORIZATION, format!("Bearer {s}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    answer(response).await
}

fn report(node: u64, tick_ms: u64, packets: f64) -> String {
    json!({"node": node, "tick_ms": tick_ms, "sessions": [
        {"service": "kv", "session": 7, "packets": packets, "bytes": packets * 100.0}
    ]})
    .to_string()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn reports_need_the_secret_and_a_strict_body() {
    let (app, rates) = app();
    let (status, body) = post(&app, None, report(2, 1, 5.0)).await;
    assert_eq!((status, code(&body)), (401, "missing_secret"));
    let (status, body) = post(&app, Some("wrong"), report(2, 1, 5.0)).await;
    assert_eq!((status, code(&body)), (401, "bad_secret"));
    let bad = [
        ("{", 400, "bad_json"),
        (
            r#"{"node": 2, "tick_ms": 1, "sessions": [], "x": 1}"#,
            422,
            "unknown_field",
        ),
        (
            r#"{"node": "two", "tick_ms": 1, "sessions": []}"#,
            422,
            "bad_json_data",
        ),
        (
            r#"{"node": 2, "tick_ms": 1, "sessions": [{"service": "kv", "session": 7, "packets": -1, "bytes": 0}]}"#,
            422,
            "bad_rate",
        ),
    ];
    for (body, want_status, want_code) in bad {
        let (status, answer) = post(&app, Some(SECRET), body.into()).await;
        assert_eq!((status, code(&answer)), (want_status, want_code), "{body}");
    }
    let too_many = RatesReport {
        node: 2,
        tick_ms: 1,
        sessions: vec![
            SessionRate {
                service: "kv".into(),
                session: 1,
                packets: 1.0,
                bytes: 1.0,
            };
            MAX_REPORT_SESSIONS + 1
        ],
    };
    let (status, answer) = post(
        &app,
        Some(SECRET),
        serde_json::to_string(&too_many).unwrap(),
    )
    .await;
    assert_eq!((status, code(&answer)), (422, "too_many_sessions"));
    let huge = format!(r#"{{"node": 2, "pad": "{}"}}"#, "x".repeat(BODY_LIMIT));
    let (status, answer) = post(&app, Some(SECRET), huge).await;
    assert_eq!((status, code(&answer)), (413, "body_too_large"));
    assert!(
        rates.view(Instant::now()).nodes.is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn the_newest_report_of_each_member_is_summed_once() {
    let (app, rates) = app();
    let ok = |outcome: &str| (200, json!({ "outcome": outcome }));
    assert_eq!(
        post(&app, Some(SECRET), report(2, 10, 300.0)).await,
        ok("accepted")
    );
    assert_eq!(
        post(&app, Some(SECRET), report(2, 10, 300.0)).await,
        ok("duplicate")
    );
    assert_eq!(
        post(&app, Some(SECRET), report(2, 9, 900.0)).await,
        ok("late")
    );
    assert_eq!(
        post(&app, Some(SECRET), report(3, 10, 50.0)).await,
        ok("accepted")
    );
    let (status, body) = post(&app, Some(SECRET), report(4, 10, 1.0)).await;
    assert_eq!((status, code(&body)), (403, "unknown_node"));
    let (status, body) = post(&app, Some(SECRET), report(1, 10, 1.0)).await;
    assert_eq!((status, code(&body)), (422, "own_node"));

    let own = [(
        SessionRef {
            service: "kv".into(),
            session: 7,
        },
        Rate {
            packets: 100.0,
            bytes: 10_000.0,
        },
    )];
    let mut out = Vec::new();
    rates.sum(&own, &BTreeSet::from([1, 2, 3]), Instant::now(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.packets, 450.0);

    let get = Request::get(PATH)
        .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .body(Body::empty())
        .unwrap();
    let (status, view) = answer(app.clone().oneshot(get).await.unwrap()).await;
    assert_eq!(status, 200);
    let view: RatesView = serde_json::from_value(view).unwrap();
    assert_eq!(view.node, 1);
    assert_eq!(
        view.nodes.iter().map(|n| n.node).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(view.nodes.iter().all(|n| n.fresh && n.sessions == 1));
    assert_eq!(
        view.dropped,
        DroppedView {
            duplicate: 1,
            late: 1,
            unknown: 2,
            stale: 0
        }
    );

    let telemetry = Telemetry::default();
    rates.publish(&telemetry, Instant::now());
    let mut registry = prometheus_client::registry::Registry::default();
    telemetry.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("shardline_peer_report_age_seconds{node=\"2\"}"),
        "{text}"
    );
    assert!(
        text.contains("shardline_peer_reports_dropped_total{reason=\"unknown\"} 2"),
        "{text}"
    );
}
