//! The router in memory over a [`LocalControl`]: auth, bad input, the error shape, metrics.
#![allow(clippy::type_complexity)] // request tables read best inline

use std::sync::Arc;

use axum::{
    body::Body as HttpBody,
    http::{header, Method, Request, StatusCode},
    Router,
};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::{
    config::Config,
    control::insight::{Sample, SessionInsight},
    state::{ControlState, LocalControl, SessionRef},
};

const TOKEN: &str = "test-token-0123456789";

fn api(token: Option<&str>) -> (Router, Arc<LocalControl>, ApiState) {
    let config = Config::parse(
        include_str!("../../../shardline.example.toml"),
        "shardline.example.toml",
    )
    .unwrap();
    let control = Arc::new(LocalControl::new(ControlState::from_config(&config)));
    let insights = Arc::new(Insights::default());
    insights.publish(SessionInsight {
        session: SessionRef {
            service: "kv".into(),
            session: 42,
        },
        shards: 2,
        rate: 1200.0,
        forecast: 1300.0,
        upper: 1500.0,
        model: "holt".into(),
        error: 0.1,
        history: vec![Sample {
            at_ms: 1,
            actual: 1.0,
            forecast: 2.0,
            upper: 3.0,
        }],
        events: Vec::new(),
    });
    let state = ApiState::new(
        control.clone(),
        insights,
        Arc::default(),
        Arc::default(),
        &Telemetry::default(),
        None,
        token.map(|t| Token::new(t, "test").unwrap()),
    );
    (router(state.clone(), 64 * 1024), control, state)
}

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some((content_type, bytes)) => req
            .header(header::CONTENT_TYPE, content_type)
            .body(HttpBody::from(bytes)),
        None => req.body(HttpBody::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// A request body: content type and bytes.
type Payload = Option<(&'static str, Vec<u8>)>;

fn json(text: &str) -> Payload {
    Some(("application/json", text.as_bytes().to_vec()))
}

/// Asserts the JSON error shape and returns its code.
fn code(body: &Value) -> &str {
    assert!(
        body["error"]["message"].is_string(),
        "not an error body: {body}"
    );
    body["error"]["code"].as_str().expect("error.code")
}

/// One request to every guarded route, with `body` where it takes one.
fn guarded() -> Vec<(Method, String, Payload)> {
    routes()
        .into_iter()
        .filter(|r| r.guarded)
        .map(|r| {
            let path = r
                .path
                .replace("{service}", "kv")
                .replace("{session}", "42")
                .replace("{key}", "k")
                .replace("{id}", "1");
            let body = r.body.map(|_| ("application/json", b"{}".to_vec()));
            (r.method, path, body)
        })
        .collect()
}

#[tokio::test]
async fn guarded_routes_refuse_missing_wrong_or_unconfigured_tokens_and_change_nothing() {
    let (router, control, _) = api(Some(TOKEN));
    let before = control.local();
    for (method, path, body) in guarded() {
        for (token, expected) in [(None, "missing_token"), (Some("nope"), "bad_token")] {
            let (status, v) = call(&router, method.clone(), &path, token, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
            assert_eq!(code(&v), expected, "{method} {path}");
        }
    }
    assert_eq!(control.local(), before);
    let (router, _, _) = api(None);
    let (status, v) = call(&router, Method::DELETE, "/v1/backends/1", Some(TOKEN), None).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNAUTHORIZED, "no_token_configured")
    );
    // Open routes stay open.
    for path in [
        "/v1/status",
        "/v1/backends",
        "/v1/sessions",
        "/v1/cluster",
        "/metrics",
    ] {
        assert_eq!(
            call(&router, Method::GET, path, None, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn bad_input_is_a_json_4xx_and_changes_nothing() {
    let (router, control, _) = api(Some(TOKEN));
    let before = control.local();
    let t = Some(TOKEN);
    let big = format!("{{\"value\": \"{}\"}}", "x".repeat(70 * 1024));
    let cases: Vec<(Method, &str, Payload, StatusCode, &str)> = vec![
        (
            Method::PUT,
            "/v1/backends/1/weight",
            json("{\"weight\": "),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            Method::PUT,
            "/v1/backends/1/weight",
            json("{\"weight\": \"heavy\"}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json_data",
        ),
        (
            Method::PUT,
            "/v1/backends/1/weight",
            json("{\"weight\": 1, \"extra\": 2}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json_data",
        ),
        (
            Method::PUT,
            "/v1/backends/1/weight",
            Some(("text/plain", b"{\"weight\": 1}".to_vec())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "missing_content_type",
        ),
        (
            Method::PUT,
            "/v1/sessions/kv/42/state/k",
            json(&big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Method::PUT,
            "/v1/backends/77/weight",
            json("{\"weight\": 1}"),
            StatusCode::NOT_FOUND,
            "unknown_backend",
        ),
        (
            Method::POST,
            "/v1/backends/77/drain",
            None,
            StatusCode::NOT_FOUND,
            "unknown_backend",
        ),
        (
            Method::DELETE,
            "/v1/backends/77",
            None,
            StatusCode::NOT_FOUND,
            "unknown_backend",
        ),
        (
            Method::GET,
            "/v1/sessions/kv/42/owners",
            None,
            StatusCode::BAD_REQUEST,
            "missing_key",
        ),
        (
            Method::GET,
            "/v1/sessions/kv/42/owners?key=-1",
            None,
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/v1/sessions/nope/42/owners?key=1",
            None,
            StatusCode::NOT_FOUND,
            "unknown_service",
        ),
        (
            Method::PUT,
            "/v1/backends/x/weight",
            json("{\"weight\": 1}"),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::POST,
            "/v1/backends",
            json("{\"id\": 5000, \"ipv4\": \"10.0.0.9\", \"mac\": \"02:00:00:00:00:09\"}"),
            StatusCode::BAD_REQUEST,
            "bad_backend_id",
        ),
        (
            Method::POST,
            "/v1/backends",
            json("{\"id\": 9, \"mac\": \"02:00:00:00:00:09\"}"),
            StatusCode::BAD_REQUEST,
            "bad_backend",
        ),
        (
            Method::PUT,
            "/v1/sessions/kv/42/placement",
            json("{\"backends\": [1, 99]}"),
            StatusCode::NOT_FOUND,
            "unknown_backend",
        ),
        (
            Method::PUT,
            "/v1/sessions/kv/42/placement",
            json("{\"backends\": []}"),
            StatusCode::BAD_REQUEST,
            "bad_shard_set",
        ),
        (
            Method::PUT,
            "/v1/sessions/nope/1/placement",
            json("{\"backends\": [1]}"),
            StatusCode::NOT_FOUND,
            "unknown_service",
        ),
        (
            Method::PUT,
            "/v1/sessions/kv/42/state/k",
            json("{\"value\": \"a\", \"hex\": \"00\"}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_state_value",
        ),
        (
            Method::PUT,
            "/v1/sessions/kv/42/state/k",
            json("{\"hex\": \"0\"}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_hex",
        ),
        (
            Method::PUT,
            "/v1/sessions/kv/42/state/k",
            json(&format!("{{\"value\": \"{}\"}}", "x".repeat(5000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "state_too_large",
        ),
        (
            Method::GET,
            "/v1/sessions/kv/42/state/missing",
            None,
            StatusCode::NOT_FOUND,
            "unknown_key",
        ),
        (
            Method::GET,
            "/v1/sessions/kv/7",
            None,
            StatusCode::NOT_FOUND,
            "unknown_session",
        ),
        (
            Method::POST,
            "/v1/cluster/members",
            json("{\"id\": 2, \"addr\": \"10.0.0.2:7901\"}"),
            StatusCode::CONFLICT,
            "membership",
        ),
        (
            Method::GET,
            "/v1/nothing",
            None,
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            Method::PATCH,
            "/v1/backends",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, expected) in cases {
        let (got, v) = call(&router, method.clone(), path, t, body).await;
        assert_eq!((got, code(&v)), (status, expected), "{method} {path}: {v}");
    }
    assert_eq!(control.local(), before);
}

#[tokio::test]
async fn writes_with_the_token_change_the_state() {
    let (router, control, _) = api(Some(TOKEN));
    let t = Some(TOKEN);
    let add =
        json("{\"id\": 9, \"ipv4\": \"10.0.0.19\", \"mac\": \"02:00:00:00:00:19\", \"weight\": 3}");
    let (status, v) = call(&router, Method::POST, "/v1/backends", t, add).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!((v["id"].as_u64(), v["weight"].as_u64()), (Some(9), Some(3)));
    let ok = |s: StatusCode| assert_eq!(s, StatusCode::OK);
    ok(call(
        &router,
        Method::PUT,
        "/v1/backends/9/weight",
        t,
        json("{\"weight\": 5}"),
    )
    .await
    .0);
    ok(call(&router, Method::POST, "/v1/backends/9/drain", t, None)
        .await
        .0);
    let (_, v) = call(&router, Method::GET, "/v1/backends/9", None, None).await;
    assert_eq!(
        (
            v["weight"].as_u64(),
            v["draining"].as_bool(),
            v["effective_weight"].as_u64()
        ),
        (Some(5), Some(true), Some(0))
    );
    let (status, v) = call(
        &router,
        Method::PUT,
        "/v1/sessions/kv/42/placement",
        t,
        json("{\"backends\": [9, 1]}"),
    )
    .await;
    ok(status);
    assert!(v["placement"].as_u64().is_some(), "{v}");
    // Draining again only reports what the drain waits for: the session placed on 9 (no
    // dataplane here, so the flows are unknown).
    let (status, v) = call(&router, Method::POST, "/v1/backends/9/drain", t, None).await;
    ok(status);
    assert!(v["generation"].as_u64().is_some(), "{v}");
    assert_eq!(v["backend"], 9, "{v}");
    assert_eq!(
        v["progress"],
        serde_json::json!({"flows_left": null, "placed_sessions": 1, "timed_out": false}),
        "{v}"
    );
    let (_, b) = call(&router, Method::GET, "/v1/backends/9", None, None).await;
    assert_eq!(b["drain"], v["progress"], "{b}");
    let (_, b) = call(&router, Method::GET, "/v1/backends/1", None, None).await;
    assert!(
        b["drain"].is_null(),
        "a backend not draining has no progress: {b}"
    );
    ok(call(
        &router,
        Method::PUT,
        "/v1/sessions/kv/42/state/cart",
        t,
        json("{\"value\": \"3 items\"}"),
    )
    .await
    .0);
    let (_, v) = call(
        &router,
        Method::GET,
        "/v1/sessions/kv/42/state/cart",
        t,
        None,
    )
    .await;
    assert_eq!(
        (v["value"].as_str(), v["hex"].as_str()),
        (Some("3 items"), Some("33206974656d73"))
    );
    let (_, v) = call(&router, Method::GET, "/v1/sessions/kv/42", None, None).await;
    assert_eq!(v["backends"], serde_json::json!([9, 1]));
    assert_eq!(v["state_keys"]["cart"], 7);
    assert_eq!(v["insight"]["model"], "holt");
    assert_eq!(v["history"].as_array().map(Vec::len), Some(1));
    ok(call(&router, Method::DELETE, "/v1/backends/9", t, None)
        .await
        .0);
    let state = control.local();
    assert!(!state.backends.contains_key(&9));
    let session = SessionRef {
        service: "kv".into(),
        session: 42,
    };
    assert_eq!(state.sessions[&session].backends, vec![1]);
    let (_, v) = call(&router, Method::GET, "/v1/services", None, None).await;
    assert_eq!(v[0]["name"], "kv");
    assert_eq!(v[0]["placed_sessions"], 1);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_openapi_is_served() {
    let (router, _, _) = api(Some(TOKEN));
    let response = router
        .clone()
        .oneshot(Request::get("/metrics").body(HttpBody::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    for family in [
        "shardline_raft_term",
        "shardline_raft_role",
        "shardline_tick_seconds",
        "shardline_swap_seconds",
        "shardline_backend_weight",
    ] {
        assert!(
            scrape.docs.contains_key(family),
            "{family} missing from:\n{text}"
        );
    }
    let leader = scrape
        .samples
        .iter()
        .find(|s| s.metric == "shardline_raft_role" && s.labels.get("role") == Some("leader"))
        .expect("a leader series");
    assert!(matches!(leader.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    let (status, doc) = call(&router, Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/backends/{id}/weight"]["put"]["security"].is_array());
}

#[test]
fn the_grafana_dashboard_queries_only_families_we_serve() {
    let text = include_str!("../../../deploy/grafana/shardline.json");
    let dashboard: Value = serde_json::from_str(text).expect("the dashboard is JSON");
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    let mut seen = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(base) = word.strip_prefix("shardline_") {
            let name = format!("shardline_{base}");
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(
                metrics::FAMILIES.contains(&family),
                "the dashboard queries {name}, which /metrics does not serve"
            );
            seen += 1;
        }
    }
    assert!(seen > 10, "the dashboard queries few shardline metrics");
}

/// Parses `value` as `T` and checks that `T` writes it back the same: the view the CLI reads
/// is the JSON the handler wrote, field for field.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(path: &str, value: Value) {
    let view: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{path}: not its view ({e}): {value}"));
    assert_eq!(serde_json::to_value(&view).unwrap(), value, "{path}");
}

#[tokio::test]
async fn every_answer_parses_into_its_view() {
    use views::*;
    let (router, _, _) = api(Some(TOKEN));
    let t = Some(TOKEN);
    let get = |path: &'static str| {
        let router = router.clone();
        async move {
            let (status, v) = call(&router, Method::GET, path, t, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {v}");
            v
        }
    };
    round_trips::<StatusView>("status", get("/v1/status").await);
    round_trips::<Vec<BackendView>>("backends", get("/v1/backends").await);
    round_trips::<BackendView>("backend", get("/v1/backends/1").await);
    round_trips::<Vec<ServiceView>>("services", get("/v1/services").await);
    let sessions = get("/v1/sessions").await;
    assert!(!sessions.as_array().unwrap().is_empty());
    round_trips::<Vec<SessionView>>("sessions", sessions);
    let detail = get("/v1/sessions/kv/42").await;
    assert!(!detail["history"].as_array().unwrap().is_empty());
    round_trips::<SessionDetail>("session", detail);
    round_trips::<ClusterStatus>("cluster", get("/v1/cluster").await);
    let put = json(r#"{"value": "3 items"}"#);
    let (_, written) = call(
        &router,
        Method::PUT,
        "/v1/sessions/kv/42/state/cart",
        t,
        put,
    )
    .await;
    round_trips::<Response>("put state", written);
    round_trips::<StateValue>("state", get("/v1/sessions/kv/42/state/cart").await);
    let (_, refused) = call(&router, Method::DELETE, "/v1/backends/99", t, None).await;
    round_trips::<ErrorBody>("refusal", refused);
}

#[tokio::test]
async fn sessions_are_listed_by_service_class_and_labels() {
    let (router, _, _) = api(Some(TOKEN));
    let t = Some(TOKEN);
    for (session, meta) in [
        (
            1,
            r#"{"class": "bulk", "labels": {"team": "a", "tier": "gold"}}"#,
        ),
        (2, r#"{"class": "bulk", "labels": {"team": "b"}}"#),
        (3, r#"{"class": "interactive", "labels": {"team": "a"}}"#),
    ] {
        let path = format!("/v1/sessions/kv/{session}/meta");
        let (status, v) = call(&router, Method::PUT, &path, t, json(meta)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let listed = |query: &'static str| {
        let router = router.clone();
        async move {
            let (status, v) = call(&router, Method::GET, query, None, None).await;
            assert_eq!(status, StatusCode::OK, "{query}: {v}");
            v.as_array()
                .expect("a list")
                .iter()
                .map(|s| {
                    (
                        s["service"].as_str().unwrap().to_owned(),
                        s["session"].as_u64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let kv = |ids: &[u64]| {
        ids.iter()
            .map(|i| ("kv".to_owned(), *i))
            .collect::<Vec<_>>()
    };
    // Session 42 has an insight but no metadata.
    assert_eq!(listed("/v1/sessions").await, kv(&[1, 2, 3, 42]));
    assert_eq!(listed("/v1/sessions?service=kv").await, kv(&[1, 2, 3, 42]));
    assert_eq!(listed("/v1/sessions?service=dns").await, kv(&[]));
    assert_eq!(listed("/v1/sessions?class=bulk").await, kv(&[1, 2]));
    assert_eq!(listed("/v1/sessions?label=team=a").await, kv(&[1, 3]));
    assert_eq!(
        listed("/v1/sessions?label=team=a,tier=gold").await,
        kv(&[1])
    );
    assert_eq!(
        listed("/v1/sessions?class=bulk&label=team=b").await,
        kv(&[2])
    );
    assert_eq!(listed("/v1/sessions?label=team=").await, kv(&[]));
    for (query, wanted) in [
        ("/v1/sessions?label=team", "bad_label"),
        ("/v1/sessions?label==a", "bad_label"),
        ("/v1/sessions?colour=red", "bad_query"),
    ] {
        let (status, v) = call(&router, Method::GET, query, None, None).await;
        assert_eq!(
            (status, code(&v)),
            (StatusCode::BAD_REQUEST, wanted),
            "{query}: {v}"
        );
    }
}
