//! Unit tests of `tables`.

use super::*;
use shardline::api::views::{DrainProgress, ProbeState, Sample, SessionMeta};

#[test]
fn tables_align_and_cells_read_well() {
    let t = table(
        &["ID", "NAME"],
        &[vec!["1".into(), "kv".into()], vec!["10".into(), "-".into()]],
    );
    assert_eq!(t, "ID  NAME\n1   kv\n10  -\n");
    assert_eq!(opt(None::<u64>), "-");
    assert_eq!(ids(&[1, 2]), "1,2");
    assert_eq!(decimal(1.25), "1.2");
    assert_eq!(decimal(3.0), "3.0");
    assert_eq!(decimal(f64::NAN), "-");
    assert_eq!(opt(Some(3)), "3");
}

#[test]
fn a_pool_shows_each_member_with_its_weight_and_health_for_the_service() {
    let member = |id, weight, healthy: bool, draining: bool, probe_failing| PoolMemberView {
        id,
        weight,
        effective_weight: if healthy && !draining { weight } else { 0 },
        healthy,
        draining,
        probe_failing,
        probe: None,
    };
    let pool = [
        member(1, 3, true, false, false),
        member(2, 1, false, false, true),
        member(3, 1, false, false, false),
        member(4, 0, true, false, false),
    ];
    assert_eq!(
        pool_cell(Some(&pool)),
        "1:3 2:1(probe down) 3:1(down) 4:0(draining)"
    );
    assert_eq!(pool_cell(None), "all");
    assert_eq!(pool_cell(Some(&[])), "none");
}

#[test]
fn backends_show_the_probe_verdict_since_when_failures_in_a_row_and_votes() {
    let probed = BackendView {
        id: 2,
        ipv4: Some("10.0.0.12".parse().unwrap()),
        ipv6: None,
        mac: "02:00:00:00:00:12".into(),
        weight: 100,
        effective_weight: 0,
        healthy: false,
        probe: Some(ProbeState {
            healthy: false,
            since_ms: 1_000,
            consecutive_failures: 4,
            last_error: Some("connection refused".into()),
            ..ProbeState::default()
        }),
        votes: [(1, false), (2, false), (3, true)].into(),
        draining: false,
        drain: None,
        packets: None,
        bytes: None,
    };
    let unprobed = BackendView {
        votes: Default::default(),
        id: 3,
        probe: None,
        healthy: true,
        ..probed.clone()
    };
    let text = backend_table_at(&[probed, unprobed], 1_000 + 185_000);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("HEALTHY  PROBE       FAILS  VOTES     DRAINING"),
        "{text}"
    );
    assert!(
        lines[1].contains("false    down 3m05s  4      2/3 down  false"),
        "{text}"
    );
    assert!(
        lines[2].contains("true     -           -      -         false"),
        "{text}"
    );
    assert_eq!(duration(45), "45s");
    assert_eq!(duration(7_800), "2h10m");
    assert_eq!(duration(97_200 + 86_400 * 3), "4d03h");
}

#[test]
fn a_drain_says_what_it_waits_for() {
    let mut v = DrainView {
        written: Response {
            generation: 7,
            placement: None,
            each: Vec::new(),
        },
        backend: 9,
        progress: DrainProgress {
            flows_left: Some(12),
            placed_sessions: 3,
            timed_out: false,
        },
    };
    assert_eq!(
        drained(&v),
        "ok: generation 7\nbackend 9 draining: waiting for 12 established flows and 3 \
         placed sessions (at most control.drain_timeout_secs)\n"
    );
    v.progress.flows_left = None;
    assert!(drained(&v).contains("waiting for - established flows"));
    v.progress.timed_out = true;
    assert!(drained(&v).contains("backend 9 drained: the drain timeout ended it"));
}

#[test]
fn a_session_without_insight_says_so() {
    let d = SessionDetail {
        view: SessionView {
            service: "kv".into(),
            session: 42,
            backends: vec![1, 2],
            generation: 1,
            meta: SessionMeta::default(),
            insight: None,
        },
        state_keys: [("cart".to_owned(), 7)].into(),
        ..SessionDetail::default()
    };
    let text = session_detail(&d);
    assert!(text.contains("shard set   1,2 (generation 1)"), "{text}");
    assert!(text.contains("class       -"), "{text}");
    assert!(text.contains("none yet"), "{text}");
    assert!(text.contains("cart (7 B)"), "{text}");
}

#[test]
fn a_session_with_insight_shows_its_forecast_and_history() {
    let insight = SessionInsight {
        shards: 2,
        rate: 900.0,
        forecast: 950.25,
        upper: f64::NAN,
        model: "holt".into(),
        error: 0.1,
        ..SessionInsight::default()
    };
    let d = SessionDetail {
        view: SessionView {
            service: "kv".into(),
            session: 1,
            insight: Some(insight),
            ..SessionView::default()
        },
        history: vec![Sample {
            at_ms: 5,
            actual: 1.0,
            forecast: 2.0,
            upper: 3.0,
        }],
        ..SessionDetail::default()
    };
    let text = session_detail(&d);
    assert!(text.contains("shard set   default table"), "{text}");
    assert!(
        text.contains(
            "2 shards, rate 900.0 pps, forecast 950.2 pps, upper - pps, model holt, error 0.1"
        ),
        "{text}"
    );
    assert!(text.contains("5      1.0     2.0       3.0"), "{text}");
    assert_eq!(
        sessions(std::slice::from_ref(&d.view)).lines().nth(1),
        Some("kv       1                  0    -      2       900.0  950.2     -      holt")
    );
}
