//! The peer endpoint answers only peers: every raft RPC, forwarded write, membership change
//! and status read without the cluster secret, or with another, is refused before its body is
//! read, and nothing changes (every node's applied state, raft term and log, and the routing
//! its pinned maps give, compared before and after). With the secret, unknown fields and
//! oversized bodies are refused with a JSON error, and change nothing either.

use serde_json::{json, Value};
use shardline::maps::DataplaneMaps;
use shardline_common::{route::decide, verdict::Reason};

use super::{harness::put, start, TestCluster, BOOT};
use crate::support::frames::FrameSpec;

/// A vote and an append from a node 9 in term 1000: accepted, either would depose the leader.
fn hostile_requests() -> Vec<(&'static str, Value)> {
    let vote = json!({"leader_id": {"term": 1000, "node_id": 9}, "committed": true});
    vec![
        ("/raft/vote", json!({"vote": vote, "last_log_id": null})),
        (
            "/raft/append",
            json!({"vote": vote, "prev_log_id": null, "entries": [], "leader_commit": null}),
        ),
        (
            "/raft/snapshot",
            json!({"vote": vote, "meta": {"last_log_id": null, "last_membership": {"log_id": null, "membership": {"configs": [[9]], "nodes": {"9": {"addr": "10.78.0.99:7946"}}}}, "snapshot_id": "x"}, "offset": 0, "data": [], "done": true}),
        ),
        ("/cluster/write", put(7, "k", "stolen")),
        ("/cluster/leader/write", put(7, "k", "stolen")),
        ("/cluster/add", json!({"id": 9, "addr": "10.78.0.99:7946"})),
        ("/cluster/leader/remove", json!(2)),
        ("/cluster/remove", json!(3)),
        ("/cluster/read", Value::Null),
    ]
}

/// One node as the test sees it: applied state, raft position, and routing.
type NodeView = (Value, Value, Vec<(Reason, u32)>);

/// What must not change: every node's applied state and raft position, and its routing.
fn observe(c: &TestCluster) -> Vec<NodeView> {
    (1..=3)
        .map(|id| {
            let local = c.local(id).expect("local state");
            let status = c.status(id).expect("status");
            let raft = json!([
                status["term"],
                status["leader"],
                status["applied"],
                status["members"]
            ]);
            let maps = DataplaneMaps::open(&c.node(id).pin_dir).expect("node maps");
            let routes = (0..20u64)
                .flat_map(|s| (0..10u64).map(move |k| (s, k)))
                .map(|(s, k)| {
                    let d = decide(&FrameSpec::kv4(s, k * 7919).build()[..], &maps);
                    (d.reason, d.backend_id)
                })
                .collect();
            (local, raft, routes)
        })
        .collect()
}

#[test]
fn peer_endpoints_refuse_strangers_and_change_nothing() {
    let c = start(3, 0, 5000);
    let leader = c.leader(&[1, 2, 3], BOOT);
    c.write(leader, put(7, "k", "mine"))
        .expect("a write with the secret");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = observe(&c);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let strangers = [
        ("", "missing_secret"),
        ("Authorization: Bearer not-the-secret\r\n", "bad_secret"),
        ("Authorization: Basic c2VjcmV0\r\n", "missing_secret"),
    ];
    for node in [leader, follower] {
        for (path, body) in hostile_requests() {
            for (headers, code) in strangers {
                let (status, answer) = c
                    .raw(node, path, Some(body.to_string()), headers)
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                let answer: Value = serde_json::from_str(&answer)
                    .unwrap_or_else(|e| panic!("{path}: not a JSON error ({e}): {answer}"));
                assert_eq!(
                    (status, answer["error"]["code"].as_str()),
                    (401, Some(code)),
                    "node {node} {path} with {headers:?}: {answer}"
                );
            }
        }
        for path in ["/cluster/local", "/cluster/status", "/cluster/metrics"] {
            let (status, _) = c.raw(node, path, None, "").expect("get");
            assert_eq!(status, 401, "node {node} GET {path} without the secret");
        }
    }
    // A stranger's oversized body is refused before it is read.
    let huge = format!("[{}0]", "0,".repeat(20 << 20));
    let (status, _) = c
        .raw(follower, "/raft/append", Some(huge.clone()), "")
        .expect("huge");
    assert_eq!(status, 401);

    // With the secret: unknown fields and oversized bodies get a JSON error, naming the field.
    let secret = format!("Authorization: Bearer {}\r\n", c.secret);
    let mut extra = put(7, "k", "stolen");
    extra["force"] = json!(true);
    let (status, answer) = c
        .raw(follower, "/cluster/write", Some(extra.to_string()), &secret)
        .expect("unknown field");
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.contains("unknown_field") && answer.contains("force"),
        "{answer}"
    );
    let vote = json!({"vote": {"leader_id": {"term": 0, "node_id": 9}, "committed": false}, "last_log_id": null, "priority": 1});
    let (status, answer) = c
        .raw(follower, "/raft/vote", Some(vote.to_string()), &secret)
        .expect("unknown raft field");
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("`priority`"), "{answer}");
    let (status, answer) = c
        .raw(follower, "/raft/append", Some(huge), &secret)
        .expect("oversized");
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = observe(&c);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b.0, a.0, "node {}'s applied state changed", i + 1);
        assert_eq!(
            b.1,
            a.1,
            "node {}'s raft term, leader or log changed",
            i + 1
        );
        assert!(b.2 == a.2, "node {}'s maps route differently", i + 1);
    }
    assert_eq!(
        super::harness::get(&after[0].0, 7, "k").as_deref(),
        Some("mine")
    );
    // And the secret still works: the cluster is not wedged by what it refused.
    c.write(follower, put(7, "k", "still mine"))
        .expect("a write after the refusals");
}
