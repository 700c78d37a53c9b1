//! The operator surface against a daemon in the netns lab: every CLI command (tables, --json,
//! exit codes), the API's refusals (no or wrong token, bad JSON, wrong types, oversized bodies,
//! unknown backends → a JSON 4xx and no state change), `/metrics` through a Prometheus text
//! parser, the OpenAPI description, and a restart that keeps the API's changes unless the
//! configuration file was edited.

use serde_json::Value;

use crate::support::cli::{cli, expect, json, ok};
use shardline_lab::{lab_config, Lab, LabOptions};

const API: &str = "http://127.0.0.1:7900";

/// `shardline backends add` for backend 9 (10.1.0.9), which the lab's file does not list.
const ADD_BACKEND_9: [&str; 8] = [
    "backends",
    "add",
    "--id",
    "9",
    "--ipv4",
    "10.1.0.9",
    "--mac",
    "02:00:00:00:00:09",
];

fn start_lab() -> Lab {
    crate::support::require_root();
    let opts = LabOptions {
        tag: crate::support::unique_tag("a"),
        backends: 3,
        sessions: 4,
        bins: crate::support::bins(),
    };
    Lab::start(&opts).unwrap_or_else(|e| panic!("starting the lab: {e}"))
}

#[test]
fn cli_commands_work_against_the_lab_daemon() {
    let mut lab = start_lab();

    // status
    let out = ok(&lab, &["status"]);
    assert!(
        out.contains("node 1 (leader, term 1)") && out.contains("api: writable"),
        "{out}"
    );
    let status = json(&lab, &["status"]);
    assert_eq!(status["cluster"]["role"], "leader");
    assert_eq!(status["backends"], 3);

    // backends: list, add, weight, drain, undrain, remove
    let out = ok(&lab, &["backends"]);
    assert!(out.starts_with("ID") && out.lines().count() == 4, "{out}");
    assert_eq!(
        json(&lab, &["backends", "list"]).as_array().map(Vec::len),
        Some(3)
    );
    ok(&lab, &[&ADD_BACKEND_9[..], &["--weight", "2"]].concat());
    ok(&lab, &["backends", "weight", "9", "5"]);
    let out = ok(&lab, &["backends", "drain", "9"]);
    assert!(out.starts_with("ok: generation"), "{out}");
    assert!(
        out.contains("backend 9 draining: waiting for 0 established flows and 0 placed sessions"),
        "{out}"
    );
    let b9 = |lab: &Lab| {
        json(lab, &["backends"])
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == 9)
            .cloned()
    };
    let b = b9(&lab).expect("backend 9 added");
    assert_eq!(
        (
            b["weight"].as_u64(),
            b["draining"].as_bool(),
            b["effective_weight"].as_u64()
        ),
        (Some(5), Some(true), Some(0))
    );
    ok(&lab, &["backends", "drain", "9", "--undo"]);
    assert_eq!(b9(&lab).unwrap()["draining"], false);
    ok(&lab, &["backends", "remove", "9"]);
    assert!(b9(&lab).is_none());
    let err = expect(&lab, true, &["backends", "drain", "99"], 1);
    assert!(err.contains("unknown_backend"), "{err}");

    // services
    let out = ok(&lab, &["services"]);
    for name in ["kv", "kv6", "dns", "web", "quic"] {
        assert!(out.contains(name), "{out}");
    }
    assert_eq!(json(&lab, &["services"])[0]["name"], "kv");

    // sessions: the lab places kv/1 on backends 2 and 3
    let out = ok(&lab, &["sessions"]);
    assert!(out.contains("kv") && out.contains("2,3"), "{out}");
    let list = json(&lab, &["sessions", "list"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == "kv" && s["session"] == 1),
        "{list}"
    );
    let out = ok(&lab, &["sessions", "show", "kv/1"]);
    assert!(out.contains("shard set   2,3"), "{out}");
    expect(&lab, true, &["sessions", "show", "kv/77"], 1);
    expect(&lab, true, &["sessions", "show", "kv"], 2);

    // reshard
    ok(&lab, &["reshard", "kv/1", "--backends", "1,3"]);
    assert_eq!(
        json(&lab, &["sessions", "show", "kv/1"])["backends"],
        serde_json::json!([1, 3])
    );
    // The move 2,3 → 1,3 opened a handoff window: every key names its owner under each set,
    // and exactly the keys whose owner changed are marked moved.
    let mut moved = 0;
    for key in 0..64u64 {
        let k = key.to_string();
        let o = json(&lab, &["sessions", "owners", "kv/1", "--key", &k]);
        assert_eq!(o["current"]["table"], "placed", "{o}");
        assert_eq!(o["current"]["backends"], serde_json::json!([1, 3]), "{o}");
        let (now, before) = (&o["current"]["backend"], &o["previous"]["backend"]);
        assert_eq!(o["previous"]["backends"], serde_json::json!([2, 3]), "{o}");
        assert_eq!(o["moved"], serde_json::json!(now != before), "{o}");
        assert!(matches!(now.as_u64(), Some(1 | 3)), "{o}");
        assert!(matches!(before.as_u64(), Some(2 | 3)), "{o}");
        moved += usize::from(now != before);
    }
    assert!(moved > 0, "no key moved between 2,3 and 1,3");
    let out = ok(&lab, &["sessions", "owners", "kv/1", "--key", "7"]);
    assert!(
        out.contains("before") && out.contains("shard set 2,3"),
        "{out}"
    );
    let err = expect(&lab, true, &["reshard", "kv/1", "--backends", "1,42"], 1);
    assert!(err.contains("unknown_backend"), "{err}");
    ok(&lab, &["reshard", "kv/1", "--default"]);
    assert_eq!(
        json(&lab, &["sessions", "show", "kv/1"])["backends"],
        serde_json::json!([])
    );

    // state
    ok(&lab, &["state", "put", "kv/1", "cart", "3 items"]);
    assert_eq!(ok(&lab, &["state", "get", "kv/1", "cart"]), "3 items\n");
    assert_eq!(
        json(&lab, &["state", "get", "kv/1", "cart"])["hex"],
        "33206974656d73"
    );
    ok(&lab, &["state", "put", "kv/1", "raw", "00ff", "--hex"]);
    assert_eq!(ok(&lab, &["state", "get", "kv/1", "raw"]), "hex:00ff\n");
    let err = expect(&lab, false, &["state", "get", "kv/1", "cart"], 1);
    assert!(err.contains("missing_token"), "{err}");
    ok(&lab, &["state", "delete", "kv/1", "cart"]);
    expect(&lab, true, &["state", "get", "kv/1", "cart"], 1);

    // cluster (one node; adding an unreachable node or removing an unknown one is refused)
    let out = ok(&lab, &["cluster"]);
    assert!(out.contains("term 1") && out.contains("leader"), "{out}");
    assert!(ok(&lab, &["cluster", "leader"]).starts_with("node 1"));
    assert_eq!(json(&lab, &["cluster", "members"])["members"][0]["id"], 1);
    let err = expect(&lab, true, &["cluster", "add", "2", "10.9.0.2:7901"], 1);
    assert!(err.contains("membership"), "{err}");
    expect(&lab, true, &["cluster", "remove", "2"], 1);

    // no token: refused, nothing changed
    let before = json(&lab, &["backends"]);
    let err = expect(&lab, false, &["backends", "drain", "1"], 1);
    assert!(err.contains("missing_token"), "{err}");
    assert_eq!(json(&lab, &["backends"]), before);

    // an unreachable daemon, and bad arguments
    expect(&lab, true, &["status", "--api", "http://127.0.0.1:1"], 3);
    expect(&lab, true, &["backends", "weight", "1"], 2);

    // top, one frame
    let out = ok(&lab, &["top", "--once"]);
    assert!(
        out.contains("shardline top") && out.contains("kv/1"),
        "{out}"
    );

    // plot: a PNG once the control loop has samples, a refusal naming why until then
    let png = std::env::temp_dir().join(format!("shardline-api-plot-{}.png", std::process::id()));
    let (code, _, err) = cli(
        &lab,
        true,
        &["plot", "kv/1", "--out", png.to_str().unwrap()],
    );
    match code {
        0 => assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG")),
        1 => assert!(err.contains("no_history"), "{err}"),
        _ => panic!("plot: exit {code}: {err}"),
    }
    let _ = std::fs::remove_file(&png);

    // SIGHUP re-reads the token: the old one is refused, the new one accepted
    let old = std::fs::read_to_string(&lab.api_token).unwrap();
    let old_file =
        std::env::temp_dir().join(format!("shardline-api-old-token-{}", std::process::id()));
    std::fs::write(&old_file, &old).unwrap();
    std::fs::write(&lab.api_token, "a-new-token-after-reload").unwrap();
    let config = lab_config(3, &lab.sessions, &lab.pin_dir);
    lab.reload_config(&config)
        .unwrap_or_else(|e| panic!("reloading: {e}"));
    ok(&lab, &["backends", "weight", "1", "2"]);
    let err = expect(
        &lab,
        false,
        &[
            "backends",
            "weight",
            "1",
            "3",
            "--token-file",
            old_file.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("bad_token"), "{err}");
    let _ = std::fs::remove_file(&old_file);
}

/// An HTTP answer (status and body), or why there was none.
fn try_request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Result<(u16, String), String> {
    let method_ = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = reqwest::blocking::Client::new().request(method_, format!("{API}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((content_type, text)) = body {
        req = req
            .header("Content-Type", content_type)
            .body(text.to_owned());
    }
    let answer = req.send().map_err(|e| format!("{method} {path}: {e}"))?;
    let status = answer.status().as_u16();
    Ok((status, answer.text().unwrap_or_default()))
}

/// An HTTP answer: status and body; panics if there is none.
fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    try_request(method, path, token, body).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts a JSON error with `status` and `code`.
fn refused(answer: (u16, String), status: u16, code: &str, what: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{what}: {body}");
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
    assert_eq!(v["error"]["code"], code, "{what}: {body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[test]
fn the_api_refuses_bad_requests_without_changing_state_and_serves_metrics() {
    let lab = start_lab();
    let token = std::fs::read_to_string(&lab.api_token).unwrap();
    let lb = &lab.topology.lb;
    std::thread::scope(|s| {
        s.spawn(|| {
            lb.enter_current_thread()
                .expect("entering the load balancer's namespace");
            let t = Some(token.as_str());
            let state = || {
                (
                    request("GET", "/v1/backends", t, None).1,
                    request("GET", "/v1/sessions", t, None).1,
                )
            };
            let before = state();
            let jsn = "application/json";
            let add = r#"{"id": 9, "ipv4": "10.1.0.9", "mac": "02:00:00:00:00:09"}"#;
            refused(
                request("POST", "/v1/backends", None, Some((jsn, add))),
                401,
                "missing_token",
                "no token",
            );
            refused(
                request("POST", "/v1/backends", Some("wrong"), Some((jsn, add))),
                401,
                "bad_token",
                "wrong token",
            );
            refused(
                request("DELETE", "/v1/backends/1", Some("wrong"), None),
                401,
                "bad_token",
                "wrong token, delete",
            );
            refused(
                request("GET", "/v1/sessions/kv/1/state/k", None, None),
                401,
                "missing_token",
                "state read",
            );
            refused(
                request("POST", "/v1/backends", t, Some((jsn, "{\"id\": 9,"))),
                400,
                "bad_json",
                "malformed JSON",
            );
            refused(
                request(
                    "POST",
                    "/v1/backends",
                    t,
                    Some((jsn, r#"{"id": "nine", "mac": "x"}"#)),
                ),
                422,
                "bad_json_data",
                "wrong types",
            );
            refused(
                request("POST", "/v1/backends", t, Some(("text/plain", add))),
                415,
                "missing_content_type",
                "no JSON content type",
            );
            let big = format!(r#"{{"value": "{}"}}"#, "x".repeat(80 * 1024));
            // The daemon answers 413 before reading the whole body and closes the connection;
            // the client may see that as a reset while still sending, so a few tries may be
            // needed to read the answer itself.
            let answer = (0..5)
                .find_map(|_| {
                    try_request("PUT", "/v1/sessions/kv/1/state/k", t, Some((jsn, &big))).ok()
                })
                .expect("no answer to an oversized body in 5 tries");
            refused(answer, 413, "body_too_large", "oversized body");
            refused(
                request(
                    "PUT",
                    "/v1/backends/99/weight",
                    t,
                    Some((jsn, r#"{"weight": 1}"#)),
                ),
                404,
                "unknown_backend",
                "unknown backend",
            );
            refused(
                request(
                    "PUT",
                    "/v1/sessions/kv/1/placement",
                    t,
                    Some((jsn, r#"{"backends": [1, 99]}"#)),
                ),
                404,
                "unknown_backend",
                "unknown backend in a shard set",
            );
            refused(
                request("GET", "/v1/nowhere", None, None),
                404,
                "no_route",
                "unknown route",
            );
            assert_eq!(state(), before, "a refused request changed the state");

            let (status, text) = request("GET", "/metrics", None, None);
            assert_eq!(status, 200);
            let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
                .expect("Prometheus text");
            for family in shardline::api::metrics::FAMILIES {
                assert!(
                    scrape.docs.contains_key(*family),
                    "{family} missing from /metrics:\n{text}"
                );
            }
            let has = |metric: &str, label: &str, value: &str| {
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == metric && s.labels.get(label) == Some(value))
            };
            assert!(
                has("shardline_dataplane_packets_total", "reason", "no_backend"),
                "{text}"
            );
            assert!(
                has("shardline_backend_packets_total", "backend", "3"),
                "{text}"
            );
            assert!(
                has("shardline_service_packets_total", "service", "kv"),
                "{text}"
            );
            assert!(has("shardline_raft_role", "role", "leader"), "{text}");

            let (status, doc) = request("GET", "/v1/openapi.json", None, None);
            assert_eq!(status, 200);
            let doc: Value = serde_json::from_str(&doc).unwrap();
            assert!(
                doc["paths"]["/v1/sessions/{service}/{session}/placement"]["put"].is_object(),
                "{doc}"
            );
        })
        .join()
        .expect("the HTTP checks panicked");
    });
}

/// Restarts the lab's daemon on its store and waits (at most 20 s) for its log to say what it
/// did with the configuration file at start; returns that line.
fn restart_daemon(lab: &mut Lab) -> String {
    lab.kill_daemon();
    lab.start_daemon()
        .unwrap_or_else(|e| panic!("restarting the daemon: {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = lab.daemon_log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("replicated state kept") || l.contains("replicated state loaded"))
        {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted daemon never said whether it loaded its file:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Backend `id` as `shardline backends --json` lists it.
fn backend(lab: &Lab, id: u64) -> Option<Value> {
    json(lab, &["backends"])
        .as_array()
        .expect("a list of backends")
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
}

#[test]
fn a_restart_keeps_api_changes_and_applies_an_edited_file() {
    let mut lab = start_lab();
    ok(&lab, &ADD_BACKEND_9);
    ok(&lab, &["backends", "weight", "2", "4"]);

    // The same file: the API's changes stay.
    let line = restart_daemon(&mut lab);
    assert!(line.contains("replicated state kept"), "{line}");
    assert!(backend(&lab, 9).is_some(), "backend 9 lost by a restart");
    assert_eq!(backend(&lab, 2).expect("backend 2")["weight"], 4);

    // An edited file (a backend added to it): it is loaded, and replaces the API's backends.
    let path = shardline_lab::daemon_config_path(lab.work_dir());
    let mut text = std::fs::read_to_string(&path).expect("reading the daemon's config");
    text += "\n[[backends]]\nid = 7\nipv4 = \"10.1.0.7\"\nmac = \"02:00:00:00:00:07\"\n";
    std::fs::write(&path, text).expect("writing the daemon's config");
    let line = restart_daemon(&mut lab);
    assert!(
        line.contains("replicated state loaded") && line.contains("changed"),
        "{line}"
    );
    assert!(
        backend(&lab, 7).is_some(),
        "the file's new backend 7 not loaded"
    );
    assert_eq!(backend(&lab, 2).expect("backend 2")["weight"], 1);
    assert!(backend(&lab, 9).is_none(), "the file has no backend 9");
}
