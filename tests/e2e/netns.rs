//! End to end in network namespaces: real UDP and TCP traffic from a client namespace through
//! the attached XDP program to backend namespaces, which answer the client directly.

use std::time::Duration;

use shardline::config::SessionId;
use shardline_lab::{
    replay::expected_backend,
    traffic::{self, SessionKind},
    Lab, LabOptions, Report,
};

use crate::support::client::in_client;

/// A lab of four backends and `sessions` client sessions, tagged for this test.
pub(crate) fn start_lab(sessions: u32) -> Lab {
    crate::support::require_root();
    let opts = LabOptions {
        tag: crate::support::unique_tag("t"),
        backends: 4,
        sessions,
        bins: crate::support::bins(),
    };
    Lab::start(&opts).unwrap_or_else(|e| panic!("starting the lab: {e}"))
}

pub(crate) fn drive(lab: &Lab, seconds: u64) -> Report {
    lab.drive(Duration::from_secs(seconds), &|| false, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("driving traffic: {e}"))
}

/// Asserts every answer came from the backend the daemon's tables name, and nearly nothing
/// was lost; returns the number of answers.
pub(crate) fn assert_routed_as_replayed(lab: &Lab, report: &Report) -> usize {
    let snapshot = lab.snapshot();
    let mut wrong = Vec::new();
    for obs in &report.observations {
        let session = &lab.sessions[obs.session];
        let expected = expected_backend(&snapshot, session, obs);
        if expected != Some(obs.backend) {
            wrong.push((
                session.label.clone(),
                obs.source,
                obs.key,
                obs.backend,
                expected,
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers from the wrong backend, e.g. {:?}",
        wrong.len(),
        report.observations.len(),
        &wrong[..wrong.len().min(5)]
    );
    let total = report.observations.len() as u64 + report.lost;
    assert!(total > 0, "no request was sent");
    // Neighbours are static in the lab, so a loss is a reply that missed its 500 ms deadline on
    // a loaded machine; more than 1 % is a bug.
    assert!(
        report.lost * 100 <= total,
        "{} of {total} requests lost",
        report.lost
    );
    assert_eq!(report.errors, 0, "socket errors on the client");
    report.observations.len()
}

#[test]
fn traffic_reaches_the_replayed_backend_and_answers_return() {
    let lab = start_lab(8);
    let report = drive(&lab, 3);
    let answered = assert_routed_as_replayed(&lab, &report);
    let by_session = report.by_session();
    assert_eq!(
        by_session.len(),
        8,
        "every session is answered: {by_session:?}"
    );
    let used: std::collections::BTreeSet<u32> =
        report.observations.iter().map(|o| o.backend).collect();
    assert_eq!(
        used.len(),
        4,
        "traffic spreads over the four backends: {used:?}"
    );
    // Placed sessions (odd header sessions) stay on their two shards.
    for (i, session) in lab.sessions.iter().enumerate() {
        if let SessionKind::Header { id } = session.kind {
            if id % 2 == 1 {
                assert_eq!(
                    by_session[&i].len(),
                    2,
                    "{} is placed on 2 shards: {:?}",
                    session.label,
                    by_session[&i]
                );
            }
        }
    }
    assert!(answered > 100, "only {answered} answers in 3 s");
}

#[test]
fn the_same_key_always_lands_on_the_same_backend() {
    let lab = start_lab(4);
    let sessions = lab.sessions.clone();
    in_client(&lab, || {
        for (i, session) in sessions.iter().enumerate() {
            if !matches!(session.kind, SessionKind::Header { .. }) {
                continue;
            }
            for key in [1u64, 0xdead_beef, u64::MAX] {
                let mut backends = std::collections::BTreeSet::new();
                for _ in 0..20 {
                    let mut rng = rand::rngs::mock::StepRng::new(key, 0);
                    if let Some(obs) = traffic::request(i, session, &mut rng).expect("request") {
                        assert_eq!(obs.key, key);
                        backends.insert(obs.backend);
                    }
                }
                assert_eq!(
                    backends.len(),
                    1,
                    "{} key {key:#x} reached {backends:?}",
                    session.label
                );
            }
        }
    });
}

#[test]
fn dataplane_keeps_routing_while_the_daemon_is_down_and_a_new_one_adopts_it() {
    let mut lab = start_lab(4);
    assert_routed_as_replayed(&lab, &drive(&lab, 1));
    lab.kill_daemon();
    assert!(!lab.daemon_running());
    let during = drive(&lab, 2);
    assert!(
        !during.observations.is_empty(),
        "nothing answered while the daemon was down"
    );
    assert_routed_as_replayed(&lab, &during);
    lab.start_daemon()
        .unwrap_or_else(|e| panic!("restarting the daemon: {e}"));
    assert_routed_as_replayed(&lab, &drive(&lab, 1));
}

#[test]
fn sighup_reload_re_shards_a_session_without_dropping_traffic() {
    let mut lab = start_lab(4);
    assert_routed_as_replayed(&lab, &drive(&lab, 1));
    // hdr-1 is placed on backends 2 and 3; move it to backend 4 alone.
    let mut moved = lab.config.clone();
    let hdr1 = moved
        .sessions
        .iter_mut()
        .find(|s| s.service == "kv" && s.session == SessionId::Id(1))
        .expect("the lab places hdr-1");
    assert_eq!(
        hdr1.backends,
        [2, 3],
        "the lab places hdr-1 on backends 2 and 3"
    );
    hdr1.backends = vec![4];
    lab.reload_config(&moved)
        .unwrap_or_else(|e| panic!("reload: {e}"));
    let report = drive(&lab, 1);
    assert_routed_as_replayed(&lab, &report);
    let hdr1 = lab
        .sessions
        .iter()
        .position(|s| s.label == "hdr-1")
        .expect("hdr-1");
    assert_eq!(
        report.by_session()[&hdr1]
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [4]
    );
    let log = lab.daemon_log();
    assert!(
        log.contains("session re-sharded"),
        "the handoff is logged: {log}"
    );
    // An invalid file is refused by the daemon and nothing changes.
    assert!(lab
        .reload_config_text("interface = \"eth0\"\nbogus = 1\n")
        .is_err());
    assert!(lab.daemon_log().contains("reload refused"));
    assert_routed_as_replayed(&lab, &drive(&lab, 1));
}

/// The lab wired by XDP (`Lab::wire_by_xdp`, what the veth bench's headline CPU figure runs
/// on): the switch's ports leave the bridge and forward by destination MAC through the
/// `shardline_wire` devmap redirect; the balancer's `XDP_TX`ed frames still reach the right
/// backend, the backends' answers still reach the client, address resolution (flooded) works.
#[test]
fn traffic_is_routed_as_replayed_through_the_lab_wired_by_xdp() {
    let lab = start_lab(8);
    assert!(!lab.topology.wired_by_xdp());
    lab.wire_by_xdp()
        .unwrap_or_else(|e| panic!("wiring the lab by XDP: {e}"));
    assert!(lab.topology.wired_by_xdp());
    let switch = &lab.topology.switch;
    let port = |dev: &str| {
        let out = switch
            .ip(&["-j", "link", "show", dev])
            .unwrap_or_else(|e| panic!("ip link show {dev}: {e}"));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("ip -j output")[0].clone()
    };
    let prog = |dev: &str| port(dev)["xdp"]["prog"]["name"].as_str().map(str::to_owned);
    for dev in ["p-client", "p-lb", "p-b1", "p-b4"] {
        assert_eq!(
            prog(dev).as_deref(),
            Some("shardline_wire"),
            "{dev} runs the forwarder"
        );
        assert!(port(dev)["master"].is_null(), "{dev} left the bridge");
    }
    let report = drive(&lab, 3);
    let answered = assert_routed_as_replayed(&lab, &report);
    assert!(answered > 100, "only {answered} answers in 3 s");
    // Nothing else delivers frames now: the bridge has no port left.
    let bridged = switch
        .ip(&["link", "show", "master", "br0"])
        .expect("ip link show master br0");
    assert!(
        String::from_utf8_lossy(&bridged.stdout).trim().is_empty(),
        "ports still on the bridge: {}",
        String::from_utf8_lossy(&bridged.stdout)
    );
}
