//! Handoff marking end to end, in the netns lab: a header session's shard set grows through
//! the operator's `shardline reshard`; for the handoff window every request whose key moved
//! reaches its new owner marked with its previous owner (the echo answers "moved from X"),
//! no unmoved key is marked, and once the window closes nothing is.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::Value;
use shardline_common::handoff::previous_of;
use shardline_lab::{
    traffic::{header_request, Observation, Outcome, SessionKind},
    Lab, LabOptions,
};

use crate::support::client::in_client;

const BACKENDS: u32 = 4;
/// Request keys asked before and after the move.
const KEYS: u64 = 256;
/// The handoff window the test configures (`handoff_window_secs`).
const WINDOW: Duration = Duration::from_secs(4);

/// Sends every key of `0..KEYS` for header session `index` from the client namespace and
/// returns what answered each; panics on a lost request (nothing here kills a backend).
fn ask_all(lab: &Lab, index: usize) -> BTreeMap<u64, Observation> {
    let session = &lab.sessions[index];
    in_client(lab, || {
        (0..KEYS)
            .map(|key| match header_request(index, session, key) {
                Ok(Outcome::Answered(obs)) => (key, obs),
                Ok(Outcome::Lost(loss)) => panic!("key {key} lost: {loss:?}"),
                Err(e) => panic!("key {key}: {e}"),
            })
            .collect()
    })
}

/// Whether two passes were answered by the same backend with the same mark, key for key.
fn same_answers(a: &BTreeMap<u64, Observation>, b: &BTreeMap<u64, Observation>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, oa), (kb, ob))| ka == kb && oa.backend == ob.backend && oa.mark == ob.mark)
}

/// Re-shards session `name` onto `backends` with the operator's command.
fn reshard(lab: &Lab, name: &str, backends: &[u32]) {
    let list = backends
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    crate::support::cli::ok(lab, &["reshard", name, "--backends", &list]);
}

#[test]
fn a_reshard_marks_each_moved_key_with_its_previous_owner_and_no_other() {
    crate::support::require_root();
    let mut lab = Lab::start(&LabOptions {
        tag: crate::support::unique_tag("h"),
        backends: BACKENDS,
        sessions: 2,
        bins: crate::support::bins(),
    })
    .unwrap_or_else(|e| panic!("starting the lab: {e}"));
    let mut config = lab.config.clone();
    config.handoff_window_secs = WINDOW.as_secs() as u32;
    lab.reload_config(&config)
        .unwrap_or_else(|e| panic!("reloading with a {WINDOW:?} window: {e}"));
    let (index, id) = lab
        .sessions
        .iter()
        .enumerate()
        .find_map(|(i, s)| match s.kind {
            SessionKind::Header { id } if s.vip.is_ipv4() => Some((i, id)),
            _ => None,
        })
        .expect("a header session on the IPv4 VIP");
    let name = format!("kv/{id}");

    // Placed on two backends, and that move's window left to close.
    reshard(&lab, &name, &[1, 2]);
    std::thread::sleep(WINDOW + Duration::from_millis(500));
    let before = ask_all(&lab, index);
    assert!(
        before.values().all(|o| o.mark == 0),
        "no key is marked once the window of its last move closed"
    );
    let owners: BTreeSet<u32> = before.values().map(|o| o.backend).collect();
    assert_eq!(owners, BTreeSet::from([1, 2]), "the placement serves");

    // Grow the set: keys move only onto the new member, each marked with where it was.
    let extra = 3;
    reshard(&lab, &name, &[1, 2, extra]);
    let moved_at = Instant::now();
    // The new set serves once every node applied it. A pass asks its keys one after another,
    // so the pass during which the swap lands is half old set, half new: take the first pass
    // that `extra` answers in and that the pass after it confirms key for key.
    let deadline = moved_at + WINDOW / 2;
    let mut previous: Option<BTreeMap<u64, Observation>> = None;
    let after = loop {
        let pass = ask_all(&lab, index);
        let serves_extra = pass.values().any(|o| o.backend == extra);
        if serves_extra && previous.as_ref().is_some_and(|p| same_answers(p, &pass)) {
            break pass;
        }
        assert!(
            Instant::now() < deadline,
            "backend {extra} did not answer two identical passes within {:?} of the reshard",
            WINDOW / 2
        );
        previous = serves_extra.then_some(pass);
    };
    let within = moved_at.elapsed();
    assert!(
        within < WINDOW,
        "the checks ran {within:?} after the move: the {WINDOW:?} window may have closed"
    );
    let mut moved = 0;
    for (key, now) in &after {
        let was = before[key].backend;
        if now.backend == was {
            assert_eq!(now.mark, 0, "key {key} stayed on {was} yet was marked");
        } else {
            moved += 1;
            assert_eq!(
                now.backend, extra,
                "key {key}: a growing set moves keys only onto the new member"
            );
            assert_eq!(
                previous_of(now.mark),
                Some(Some(was)),
                "key {key} moved {was} → {} and must say so (mark {:#04x})",
                now.backend,
                now.mark
            );
        }
    }
    // Growing 2 → 3 moves about a third of the keys.
    assert!(
        moved > KEYS / 8 && moved < KEYS / 2,
        "{moved} of {KEYS} keys moved"
    );

    // The owners API names the same previous owner.
    let (key, obs) = after
        .iter()
        .find(|(_, o)| o.mark != 0)
        .expect("a marked key");
    let answer: Value = crate::support::cli::json(
        &lab,
        &["sessions", "owners", &name, "--key", &key.to_string()],
    );
    assert_eq!(answer["moved"], true, "{answer}");
    assert_eq!(answer["current"]["backend"], obs.backend, "{answer}");
    assert_eq!(
        answer["previous"]["backend"], before[key].backend,
        "{answer}"
    );

    // After the window the kernel marks nothing (by its own clock, and the daemon clears the
    // session's flag).
    let closes = moved_at + WINDOW + Duration::from_millis(500);
    std::thread::sleep(closes.saturating_duration_since(Instant::now()));
    let late = ask_all(&lab, index);
    assert!(
        late.values().all(|o| o.mark == 0),
        "marked after the window closed: {:?}",
        late.iter()
            .filter(|(_, o)| o.mark != 0)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        late.iter()
            .map(|(k, o)| (*k, o.backend))
            .collect::<BTreeMap<_, _>>(),
        after
            .iter()
            .map(|(k, o)| (*k, o.backend))
            .collect::<BTreeMap<_, _>>(),
        "the window's end moves no key"
    );
}
