//! The pool commands on a small state: `kv` pooled on backends 1 and 2, `web` on every one.

use crate::{
    config::PoolMember,
    state::{
        tests::{config, kv},
        Command, ControlState, SessionRef, StateError,
    },
};

/// [`config`] with `kv` on the pool of backends 1 and 2 and a second service, `web`, without
/// a pool.
pub(super) fn pooled() -> ControlState {
    let mut config = config();
    config.services[0].backends = Some(vec![PoolMember::Id(1), PoolMember::Id(2)]);
    let mut web = config.services[0].clone();
    web.name = "web".into();
    web.port = 8080;
    web.backends = None;
    config.services.push(web);
    ControlState::from_config(&config)
}

#[test]
fn a_pool_bounds_placements_and_its_ring() {
    let mut state = pooled();
    let before = state.clone();
    assert_eq!(
        state.apply(&Command::Place {
            session: kv(5),
            backends: vec![1, 3],
        }),
        Err(StateError::OutsidePool {
            service: "kv".into(),
            id: 3
        })
    );
    assert_eq!(state, before, "a refused placement changes nothing");
    // `web` has no pool: every backend serves it.
    let web = SessionRef {
        service: "web".into(),
        session: 5,
    };
    state
        .apply(&Command::Place {
            session: web,
            backends: vec![1, 3],
        })
        .unwrap();
    let tables = state.tables();
    let kv_id = state.service_id("kv").unwrap();
    assert_eq!(tables.pools[&kv_id], vec![1, 2]);
    let ring = &tables.rings[&kv_id];
    assert_eq!(ring.len(), 251);
    assert!(
        ring.iter().all(|id| [1, 2].contains(id)),
        "kv's ring holds its pool only"
    );
    assert!(!tables.rings.contains_key(&state.service_id("web").unwrap()));
    assert_eq!(state.pool_weight("kv", 3, 1), None);
    assert_eq!(state.pool_weight("web", 3, 7), Some(7));
}

#[test]
fn joining_and_leaving_a_pool_moves_only_its_service() {
    let mut state = pooled();
    state
        .apply(&Command::Place {
            session: kv(9),
            backends: vec![1, 2],
        })
        .unwrap();
    let kv_id = state.service_id("kv").unwrap();
    state
        .apply(&Command::JoinPool {
            service: "kv".into(),
            id: 3,
            weight: Some(2),
        })
        .unwrap();
    let ring = &state.tables().rings[&kv_id];
    let threes = ring.iter().filter(|id| **id == 3).count();
    assert!(
        threes > ring.len() / 3,
        "weight 2 of 4 takes about half: {threes}"
    );
    // Draining it from kv alone: weight 0 there, still in the pool.
    state
        .apply(&Command::JoinPool {
            service: "kv".into(),
            id: 3,
            weight: Some(0),
        })
        .unwrap();
    assert!(!state.tables().rings[&kv_id].contains(&3));
    assert_eq!(state.pool_weight("kv", 3, 1), Some(0));
    // Leaving: the sessions placed on it leave it too.
    state
        .apply(&Command::LeavePool {
            service: "kv".into(),
            id: 1,
        })
        .unwrap();
    assert_eq!(state.sessions[&kv(9)].backends, vec![2]);
    assert_eq!(
        state.apply(&Command::LeavePool {
            service: "kv".into(),
            id: 1,
        }),
        Err(StateError::OutsidePool {
            service: "kv".into(),
            id: 1
        })
    );
    assert_eq!(
        state.apply(&Command::LeavePool {
            service: "web".into(),
            id: 1,
        }),
        Err(StateError::NoPool("web".into()))
    );
    // Removing a backend takes it out of every pool.
    state.apply(&Command::RemoveBackend { id: 2 }).unwrap();
    assert_eq!(state.tables().pools[&kv_id], vec![3]);
}

#[test]
fn a_failing_service_probe_takes_the_backend_out_of_that_pool_only() {
    let mut state = pooled();
    // `web` (no pool) and `kv` both placed on 1 and 2; `kv` gets a ring of its own.
    let web = SessionRef {
        service: "web".into(),
        session: 5,
    };
    for session in [kv(9), web.clone()] {
        state
            .apply(&Command::Place {
                session,
                backends: vec![1, 2],
            })
            .unwrap();
    }
    let kv_id = state.service_id("kv").unwrap();
    let web_id = state.service_id("web").unwrap();
    let before = state.tables();
    state
        .apply(&Command::SetServiceHealth {
            service: "kv".into(),
            id: 2,
            healthy: false,
        })
        .unwrap();
    let after = state.tables();
    // Out of kv's ring, membership and shard sets ...
    assert_eq!(after.pools[&kv_id], vec![1], "out of kv's membership");
    assert_eq!(
        after.rings[&kv_id].len(),
        before.rings[&kv_id].len(),
        "same ring size"
    );
    assert!(
        after.rings[&kv_id].iter().all(|id| *id == 1),
        "out of kv's ring"
    );
    let members = |service: u32, session: u64| {
        let key = shardline_common::maps::SessionKey {
            service,
            _pad: 0,
            session,
        };
        let set = after.sessions[&key];
        set.backends[..set.count as usize].to_vec()
    };
    assert_eq!(members(kv_id, 9), vec![1], "out of kv's shard sets");
    // ... and still everywhere else: web's shard set, the default table, its backend entry.
    assert_eq!(members(web_id, 5), vec![1, 2], "web keeps it");
    assert_eq!(
        after.maglev, before.maglev,
        "the default table is untouched"
    );
    assert_eq!(after.backends, before.backends, "not down: no DOWN flag");
    assert_eq!(state.pool_weight("kv", 2, 1), Some(0));
    assert_eq!(state.pool_weight("web", 2, 1), Some(1));
    let member = |id| {
        state
            .pool("kv")
            .unwrap()
            .into_iter()
            .find(|m| m.id == id)
            .unwrap()
    };
    assert!(member(2).probe_failing && !member(2).healthy && member(2).effective_weight == 0);
    assert!(member(1).healthy && member(1).effective_weight == 1);
    assert_eq!(state.pool("web"), None);
    // A service without a pool, or a backend outside the pool, has no per-service verdict.
    for (service, id, problem) in [
        ("web", 2, StateError::NoPool("web".into())),
        (
            "kv",
            3,
            StateError::OutsidePool {
                service: "kv".into(),
                id: 3,
            },
        ),
    ] {
        let refused = state.apply(&Command::SetServiceHealth {
            service: service.into(),
            id,
            healthy: false,
        });
        assert_eq!(refused, Err(problem));
    }
    // Passing again: back in, and kv's ring is the one it had.
    state
        .apply(&Command::SetServiceHealth {
            service: "kv".into(),
            id: 2,
            healthy: true,
        })
        .unwrap();
    assert_eq!(state.tables().rings[&kv_id], before.rings[&kv_id]);
    assert_eq!(state.tables().pools[&kv_id], vec![1, 2]);
    // A config reload keeps a failing verdict while the pool still holds the backend, and
    // leaving the pool forgets it.
    state
        .apply(&Command::SetServiceHealth {
            service: "kv".into(),
            id: 2,
            healthy: false,
        })
        .unwrap();
    let mut reload = config();
    reload.services[0].backends = Some(vec![PoolMember::Id(1), PoolMember::Id(2)]);
    let mut web_service = reload.services[0].clone();
    web_service.name = "web".into();
    web_service.port = 8080;
    web_service.backends = None;
    reload.services.push(web_service);
    state
        .apply(&Command::LoadConfig(crate::config::ConfigTables::of(
            &reload,
        )))
        .unwrap();
    assert!(
        state.backends[&2].failing.contains("kv"),
        "kept over a reload"
    );
    state
        .apply(&Command::LeavePool {
            service: "kv".into(),
            id: 2,
        })
        .unwrap();
    assert!(
        state.backends[&2].failing.is_empty(),
        "forgotten with the pool"
    );
}
