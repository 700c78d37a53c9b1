use super::*;
use crate::config::Config;

pub(super) fn config() -> Config {
    Config::parse(
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
[[backends]]
id = 1
ipv4 = "10.0.0.11"
mac = "02:00:00:00:00:11"
[[backends]]
id = 2
ipv4 = "10.0.0.12"
mac = "02:00:00:00:00:12"
[[backends]]
id = 3
ipv4 = "10.0.0.13"
mac = "02:00:00:00:00:13"
[[sessions]]
service = "kv"
session = 42
backends = [1, 2]
"#,
        "test",
    )
    .unwrap()
}

pub(super) fn kv(session: u64) -> SessionRef {
    SessionRef {
        service: "kv".into(),
        session,
    }
}

#[test]
fn config_state_gives_the_config_tables() {
    let config = config();
    let state = ControlState::from_config(&config);
    let ours = state.tables();
    let theirs = Snapshot::from_config(&config);
    assert_eq!(ours.services, theirs.services);
    assert_eq!(ours.backends, theirs.backends);
    assert_eq!(ours.sessions, theirs.sessions);
    assert_eq!(ours.maglev, theirs.maglev);
}

#[test]
fn a_rejected_command_changes_nothing() {
    let mut state = ControlState::from_config(&config());
    let before = state.clone();
    for bad in [
        Command::Place {
            session: kv(1),
            backends: vec![1, 9],
        },
        Command::Place {
            session: kv(1),
            backends: vec![1, 1],
        },
        Command::Place {
            session: kv(1),
            backends: vec![],
        },
        Command::SetWeight { id: 7, weight: 1 },
        Command::Place {
            session: SessionRef {
                service: "nope".into(),
                session: 1,
            },
            backends: vec![1],
        },
        Command::PutState {
            session: kv(1),
            key: "k".into(),
            value: vec![0; SESSION_STATE_LIMIT],
        },
    ] {
        assert!(state.apply(&bad).is_err(), "{bad:?} accepted");
        assert_eq!(state, before, "{bad:?} changed the state");
    }
}

#[test]
fn placements_bump_their_generation_only_when_they_change() {
    let mut state = ControlState::from_config(&config());
    let place = |backends: Vec<u32>| Command::Place {
        session: kv(42),
        backends,
    };
    let g1 = state.apply(&place(vec![1, 3])).unwrap().placement.unwrap();
    let g2 = state.apply(&place(vec![1, 3])).unwrap().placement.unwrap();
    let g3 = state.apply(&place(vec![2])).unwrap().placement.unwrap();
    assert_eq!(g1, g2);
    assert_eq!(g3, g2 + 1);
}

#[test]
fn unhealthy_backends_leave_shard_sets_and_the_default_table() {
    let mut state = ControlState::from_config(&config());
    state
        .apply(&Command::SetHealth {
            id: 2,
            healthy: false,
        })
        .unwrap();
    let tables = state.tables();
    let set = tables.sessions.values().next().unwrap();
    assert_eq!(&set.backends[..set.count as usize], &[1]);
    assert!(!tables.maglev.contains(&2));
    let down = |t: &crate::snapshot::Snapshot, id| {
        t.backends[&id].flags & shardline_common::maps::backend_flags::DOWN != 0
    };
    assert!(
        down(&tables, 2) && !down(&tables, 1),
        "the unhealthy one is marked down, so its flows are re-decided"
    );
    state
        .apply(&Command::SetHealth {
            id: 2,
            healthy: true,
        })
        .unwrap();
    assert!(!down(&state.tables(), 2), "back up");
    state
        .apply(&Command::SetHealth {
            id: 2,
            healthy: false,
        })
        .unwrap();
    state
        .apply(&Command::SetHealth {
            id: 1,
            healthy: false,
        })
        .unwrap();
    assert!(
        state.tables().sessions.is_empty(),
        "no live shard: unplaced"
    );
}

#[test]
fn a_drained_backend_keeps_its_shards_until_its_drain_times_out() {
    let mut state = ControlState::from_config(&config());
    let members = |t: &crate::snapshot::Snapshot| {
        let set = t.sessions.values().next().unwrap();
        set.backends[..set.count as usize].to_vec()
    };
    let before = members(&state.tables());
    let id = before[0];
    state.apply(&Command::Drain { id, draining: true }).unwrap();
    let draining = state.tables();
    assert_eq!(
        members(&draining),
        before,
        "draining keeps its placed sessions"
    );
    assert!(
        !draining.maglev.contains(&id),
        "but no share of the default table"
    );
    state.apply(&Command::DrainTimedOut { id }).unwrap();
    let drained = state.tables();
    assert!(
        !members(&drained).contains(&id),
        "timed out: out of every shard set"
    );
    let flags = drained.backends[&id].flags;
    assert_ne!(flags & shardline_common::maps::backend_flags::DOWN, 0);
    // Draining it again (an operator asking what the drain waits for) keeps it ended.
    state.apply(&Command::Drain { id, draining: true }).unwrap();
    assert!(state.backends[&id].drained, "a repeated drain revived it");
    assert!(!members(&state.tables()).contains(&id));
    state
        .apply(&Command::Drain {
            id,
            draining: false,
        })
        .unwrap();
    assert_eq!(members(&state.tables()), before, "undrained: back");
}

#[test]
fn session_state_is_bounded_per_session() {
    let mut state = ControlState::from_config(&config());
    let put = |key: &str, len: usize| Command::PutState {
        session: kv(5),
        key: key.into(),
        value: vec![7; len],
    };
    state.apply(&put("a", 4000)).unwrap();
    // Replacing a key counts its new size only.
    state.apply(&put("a", 4095)).unwrap();
    let err = state.apply(&put("b", 1)).unwrap_err();
    assert!(matches!(err, StateError::StateTooLarge { bytes: 4098, .. }));
    assert_eq!(state.state_bytes(&kv(5)), 4096);
}

#[test]
fn state_round_trips_through_json() {
    let mut state = ControlState::from_config(&config());
    state
        .apply(&Command::PutState {
            session: kv(1),
            key: "cursor".into(),
            value: b"17".to_vec(),
        })
        .unwrap();
    let text = serde_json::to_string(&state).unwrap();
    let back: ControlState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
}

#[tokio::test]
async fn local_control_publishes_every_write() {
    let control = LocalControl::new(ControlState::from_config(&config()));
    let mut rx = control.subscribe();
    control
        .write(Command::Place {
            session: kv(9),
            backends: vec![3],
        })
        .await
        .unwrap();
    rx.changed().await.unwrap();
    assert!(rx.borrow().sessions.contains_key(&kv(9)));
    assert!(control
        .write(Command::RemoveBackend { id: 99 })
        .await
        .is_err());
}

#[test]
fn a_registration_cannot_take_over_an_id_or_an_address() {
    let mut state = ControlState::from_config(&config());
    let before = state.clone();
    let backend = |id: u32, ipv4: &str| BackendConfig {
        id,
        ipv4: Some(ipv4.parse().unwrap()),
        ipv6: None,
        mac: "02:00:00:00:00:fa".into(),
        weight: 50,
        agent: None,
        capacity: None,
        nexthop: Default::default(),
    };
    // The issue's attack: backend 1's id at another address; a new id at backend 2's address.
    for bad in [backend(1, "10.77.0.250"), backend(9, "10.0.0.12")] {
        let e = state
            .apply(&Command::RegisterBackend(bad.clone()))
            .unwrap_err();
        assert!(matches!(e, StateError::Takeover { .. }), "{bad:?}: {e}");
        assert_eq!(state, before, "{bad:?} changed the state");
    }
    let e = state
        .apply(&Command::RegisterBackend(backend(9, "10.0.0.12")))
        .unwrap_err();
    assert!(
        e.to_string().contains("backend 2 already has 10.0.0.12"),
        "{e}"
    );
    // Its own backend at its own address (an agent restarting), and a new backend: accepted.
    state
        .apply(&Command::RegisterBackend(backend(1, "10.0.0.11")))
        .unwrap();
    assert_eq!(state.backends[&1].config.weight, 50);
    state
        .apply(&Command::RegisterBackend(backend(9, "10.0.0.19")))
        .unwrap();
    assert!(state.backends.contains_key(&9));
    // An operator's upsert may still move a backend.
    state
        .apply(&Command::UpsertBackend(backend(1, "10.0.0.21")))
        .unwrap();
}

#[test]
fn commands_with_unknown_fields_do_not_decode() {
    let ok = r#"{"op": "set_weight", "id": 1, "weight": 2}"#;
    assert!(serde_json::from_str::<Command>(ok).is_ok());
    let extra = r#"{"op": "set_weight", "id": 1, "weight": 2, "force": true}"#;
    let e = serde_json::from_str::<Command>(extra).unwrap_err();
    assert!(e.to_string().contains("unknown field `force`"), "{e}");
    let nested = r#"{"op": "upsert_backend", "id": 1, "ipv4": "10.0.0.1", "mac": "02:00:00:00:00:01", "owner": "x"}"#;
    assert!(serde_json::from_str::<Command>(nested).is_err());
}

#[test]
fn a_batch_applies_in_order_and_answers_each_command() {
    let mut state = ControlState::from_config(&config());
    let before = state.generation;
    let batch = Command::batch(vec![
        Command::Place {
            session: kv(7),
            backends: vec![1],
        },
        Command::Place {
            session: kv(7),
            backends: vec![2, 3],
        },
        Command::PutState {
            session: kv(7),
            key: "k".into(),
            value: b"v".to_vec(),
        },
    ]);
    let r = state.apply(&batch).unwrap();
    assert_eq!(r.each.len(), 3);
    assert_eq!(r.each[0].as_ref().unwrap().placement, Some(1));
    assert_eq!(r.each[1].as_ref().unwrap().placement, Some(2));
    // The later placement wins: order is kept.
    assert_eq!(state.sessions[&kv(7)].backends, vec![2, 3]);
    assert_eq!(state.kv[&kv(7)]["k"], b"v".to_vec());
    // Two routing commands, two generations; the batch answers the last.
    assert_eq!(state.generation, before + 2);
    assert_eq!(r.generation, before + 2);
    assert!(batch.routes());
}

#[test]
fn a_rejected_command_in_a_batch_changes_nothing_and_the_rest_apply() {
    let mut state = ControlState::from_config(&config());
    let batch = Command::batch(vec![
        Command::Place {
            session: kv(1),
            backends: vec![1],
        },
        Command::Place {
            session: kv(2),
            backends: vec![99],
        },
        Command::batch(vec![]),
        Command::Place {
            session: kv(3),
            backends: vec![2],
        },
    ]);
    let r = state.apply(&batch).unwrap();
    assert!(r.each[0].is_ok());
    assert_eq!(r.each[1], Err(StateError::UnknownBackend(99)));
    assert_eq!(r.each[2], Err(StateError::NestedBatch));
    assert!(r.each[3].is_ok());
    assert!(!state.sessions.contains_key(&kv(2)));
    assert_eq!(state.sessions[&kv(1)].backends, vec![1]);
    assert_eq!(state.sessions[&kv(3)].backends, vec![2]);
}

#[test]
fn a_batch_of_state_writes_does_not_route() {
    let batch = Command::batch(vec![Command::DeleteState {
        session: kv(1),
        key: "k".into(),
    }]);
    assert!(!batch.routes());
    let mut state = ControlState::from_config(&config());
    let before = state.generation;
    state.apply(&batch).unwrap();
    assert_eq!(state.generation, before);
}

#[test]
fn a_batch_round_trips_through_json_and_a_plain_response_keeps_its_shape() {
    let batch = Command::batch(vec![Command::Unplace { session: kv(1) }]);
    let text = serde_json::to_string(&batch).unwrap();
    assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), batch);
    let plain = Response {
        generation: 3,
        placement: None,
        each: Vec::new(),
    };
    assert_eq!(
        serde_json::to_value(&plain).unwrap(),
        serde_json::json!({"generation": 3, "placement": null})
    );
}

#[test]
fn placement_changes_name_only_the_sessions_that_moved() {
    let before = ControlState::from_config(&config());
    let mut after = before.clone();
    after
        .apply(&Command::batch(vec![
            Command::Place {
                session: kv(7),
                backends: vec![3],
            },
            Command::Unplace { session: kv(42) },
            Command::PutState {
                session: kv(8),
                key: "k".into(),
                value: vec![1],
            },
        ]))
        .unwrap();
    let changes = after.placement_changes(&before).expect("only placements");
    let tables = after.tables();
    assert_eq!(changes.len(), 2, "{changes:?}");
    for (key, set) in &changes {
        assert_eq!(tables.sessions.get(key), set.as_ref(), "{key:?}");
    }
    assert!(changes.iter().any(|(k, s)| k.session == 42 && s.is_none()));
    // Anything beyond placements: the whole tables are written.
    let mut sick = after.clone();
    sick.apply(&Command::SetHealth {
        id: 3,
        healthy: false,
    })
    .unwrap();
    assert!(sick.placement_changes(&after).is_none());
}

#[test]
fn the_target_placements_are_the_tables_placements() {
    use crate::snapshot::delta::TargetPlacements;
    let mut state = ControlState::from_config(&config());
    state
        .apply(&Command::Place {
            session: kv(7),
            backends: vec![2, 1],
        })
        .unwrap();
    let tables = state.tables();
    assert!(!tables.sessions.is_empty());
    let visited: std::collections::HashMap<_, _> = state.target_placements().collect();
    assert_eq!(visited, tables.sessions);
    for key in tables.sessions.keys() {
        assert!(state.places(key), "{key:?}");
    }
    let unplaced = shardline_common::maps::SessionKey::new(1, 999);
    assert!(!state.places(&unplaced));
    assert!(
        !state.places(&shardline_common::maps::SessionKey::new(9, 7)),
        "no service 9"
    );
}
