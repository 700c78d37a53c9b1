//! `GET /v1/sessions/{service}/{session}/owners?key=K`: which backend owns a request key of a
//! session now, and, while a re-shard's handoff window is open, which one owned it before. A
//! backend answering a key it has never seen asks this and pulls the key's data from the
//! previous owner (docs/handoff.md), as Redis Cluster's ASK redirect lets a client do.
//!
//! The current owner is computed from the tables the local control state implies, with the
//! dataplane's own functions (`pick_shard` for a placed session, the service's ring or the
//! default table otherwise), so it is the backend the dataplane sends the key to.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use shardline_common::{
    consts::NO_BACKEND,
    maps::{SessionKey, ShardSet},
    route::{pick_shard, unplaced_backend},
};

use crate::{
    reshard::board::HandoffBoard,
    state::{ControlState, SessionRef},
};

/// Where a key's owner comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerTable {
    /// The session's placement (its shard set).
    Placed,
    /// The service's own Maglev ring (a service with a pool).
    Pool,
    /// The default Maglev table.
    Default,
}

/// The owner of a key under one placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The backend id; `None` when the table names no backend for the key.
    pub backend: Option<u32>,
    /// The placement's generation (0 for the default table and pool rings).
    pub generation: u64,
    /// The placement's members (empty for the default table and pool rings).
    pub backends: Vec<u32>,
    /// Which table decided.
    pub table: OwnerTable,
}

/// The previous owner of a key, while the handoff window is open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousOwner {
    /// The owner under the placement before the last move.
    #[serde(flatten)]
    pub owner: Owner,
    /// When the window closes, Unix milliseconds.
    pub until_unix_ms: u64,
}

/// The answer of `GET .../owners`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owners {
    /// Service name.
    pub service: String,
    /// Session number.
    pub session: u64,
    /// The request key asked about.
    pub key: u64,
    /// Its owner now.
    pub current: Owner,
    /// Its owner before the session's last move, while the handoff window is open.
    pub previous: Option<PreviousOwner>,
    /// Whether the key changed owner in that move: the current owner should pull its data
    /// from the previous one.
    pub moved: bool,
}

/// The owners of `key` of session `r` (whose service `state` knows) at `now`.
pub fn owners_of(
    state: &ControlState,
    r: &SessionRef,
    key: u64,
    handoffs: &HandoffBoard,
    now: Instant,
) -> Owners {
    let service = state.service_id(&r.service).unwrap_or(0);
    let skey = SessionKey {
        service,
        _pad: 0,
        session: r.session,
    };
    let tables = state.unplaced_tables();
    let found = tables.services.values().find(|s| s.id == service);
    let found = found.copied().unwrap_or_default();
    let unplaced_table = if found.has_pool() {
        OwnerTable::Pool
    } else {
        OwnerTable::Default
    };
    let current = match state.placed_set(r) {
        Some(set) => placed_owner(&set, key),
        None => {
            let id = unplaced_backend(&tables, &found, r.session, key);
            Owner {
                backend: (id != NO_BACKEND).then_some(id),
                generation: 0,
                backends: Vec::new(),
                table: unplaced_table,
            }
        }
    };
    let previous = handoffs.get(&skey, now).map(|p| {
        let mut owner = placed_owner(&p.previous, key);
        if p.previous.generation == 0 {
            // A first placement's previous owner: the session's home, unplaced.
            owner.backends.clear();
            owner.table = unplaced_table;
        }
        PreviousOwner {
            owner,
            until_unix_ms: p.until_unix_ms,
        }
    });
    let moved = previous
        .as_ref()
        .is_some_and(|p| p.owner.backend != current.backend);
    Owners {
        service: r.service.to_string(),
        session: r.session,
        key,
        current,
        previous,
        moved,
    }
}

fn placed_owner(set: &ShardSet, key: u64) -> Owner {
    Owner {
        backend: pick_shard(set, key),
        generation: set.generation,
        backends: set.members().to_vec(),
        table: OwnerTable::Placed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shardline_common::plan::session_plan;

    use super::*;
    use crate::{
        config::Config,
        reshard::{CompactHandoff, Handoff},
        state::Command,
    };

    const CONFIG: &str = r#"
interface = "eth0"
[encap]
source_v4 = "10.0.0.1"
[[services]]
name = "kv"
vip = "10.100.0.1"
port = 7000
protocol = "udp"
mode = "header"
[[services]]
name = "pooled"
vip = "10.100.0.1"
port = 7001
protocol = "udp"
mode = "header"
backends = [3, 4]
"#;

    fn state() -> ControlState {
        let mut text = CONFIG.to_owned();
        for id in 1..=4 {
            text += &format!(
                "[[backends]]\nid = {id}\nipv4 = \"10.0.1.{id}\"\nmac = \"02:00:00:00:00:0{id}\"\n"
            );
        }
        ControlState::from_config(&Config::parse(&text, "test").unwrap())
    }

    fn kv(session: u64) -> SessionRef {
        SessionRef {
            service: "kv".into(),
            session,
        }
    }

    fn place(state: &mut ControlState, session: u64, backends: &[u32]) -> ShardSet {
        state
            .apply(&Command::Place {
                session: kv(session),
                backends: backends.to_vec(),
            })
            .unwrap();
        let key = SessionKey {
            service: 1,
            _pad: 0,
            session,
        };
        state.tables().sessions[&key]
    }

    #[test]
    fn after_a_move_each_key_names_its_old_owner_until_the_window_closes() {
        let mut st = state();
        let before = place(&mut st, 9, &[1, 2]);
        let after = place(&mut st, 9, &[1, 2, 3]);
        let board = HandoffBoard::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        board.publish(
            &[CompactHandoff::from(&Handoff {
                session: SessionKey {
                    service: 1,
                    _pad: 0,
                    session: 9,
                },
                previous: before,
                current: after,
                plan: session_plan(Some(&before), &after),
                until: t0 + window,
            })],
            t0,
        );
        let (mut moved, mut stayed) = (0, 0);
        for key in 0..1000u64 {
            let o = owners_of(&st, &kv(9), key, &board, t0 + window / 2);
            assert_eq!(o.current.table, OwnerTable::Placed);
            assert_eq!(o.current.backend, pick_shard(&after, key));
            assert_eq!(o.current.generation, after.generation);
            assert_eq!(o.current.backends, vec![1, 2, 3]);
            let previous = o.previous.expect("window open");
            assert_eq!(previous.owner.backend, pick_shard(&before, key));
            assert_eq!(previous.owner.generation, before.generation);
            assert_eq!(o.moved, previous.owner.backend != o.current.backend);
            if o.moved {
                // Growing 2 → 3 moves keys only onto the new member.
                assert_eq!(o.current.backend, Some(3), "key {key}");
                moved += 1;
            } else {
                stayed += 1;
            }
        }
        assert!(
            moved > 200 && stayed > 500,
            "moved {moved}, stayed {stayed}"
        );
        let closed = owners_of(&st, &kv(9), 1, &board, t0 + window);
        assert_eq!(closed.previous, None);
        assert!(!closed.moved);
    }

    #[test]
    fn an_unplaced_header_session_is_owned_by_its_home_in_its_pool_ring_or_the_default_table() {
        let st = state();
        let board = HandoffBoard::default();
        let now = Instant::now();
        let mut homes = std::collections::BTreeSet::new();
        for session in 0..64u64 {
            let pooled = SessionRef {
                service: "pooled".into(),
                session,
            };
            let home = owners_of(&st, &kv(session), 0, &board, now).current;
            let pooled_home = owners_of(&st, &pooled, 0, &board, now).current;
            for key in 1..50u64 {
                // Every key of an unplaced header session goes where its first one does.
                let o = owners_of(&st, &kv(session), key, &board, now);
                assert_eq!(o.current, home, "session {session} key {key}");
                assert_eq!(o.current.table, OwnerTable::Default);
                let o = owners_of(&st, &pooled, key, &board, now);
                assert_eq!(o.current, pooled_home, "pooled {session} key {key}");
                assert_eq!(o.current.table, OwnerTable::Pool);
                assert!(matches!(o.current.backend, Some(3 | 4)), "{o:?}");
                assert_eq!(o.previous, None);
            }
            homes.insert(home.backend.expect("the default table names a backend"));
        }
        assert_eq!(
            homes.len(),
            4,
            "sessions' homes spread over every backend: {homes:?}"
        );
    }
}
