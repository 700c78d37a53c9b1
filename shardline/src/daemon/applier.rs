//! Writes every committed control state into this node's pinned maps, in order, through the
//! swap stage ([`Resharder`]): the same path single re-shards take, so every change is the
//! delta from the tables in force, built then flipped, and moved sessions publish their previous
//! owners for the handoff window.
//!
//! States arrive on the control handle's `watch` channel; a burst of commits is written once,
//! as the newest state. When only placements changed since the last state written, only the
//! changed sessions are visited and written: the sessions the applied entries named (the
//! state's [`journal`](crate::state::journal)) when the state follows the last one written,
//! else those a diff of the persistent maps finds (it skips the nodes they share). Each map
//! write is atomic and the swap stage orders them, so no packet meets a half-written table.
//! What a change moved is logged: per re-placed session its previous owners (the handoff; the
//! first few of a swap one by one, then a count), and the default table's slot moves. Between
//! states, it closes the handoff windows the dataplane still flags as they end
//! (`Resharder::close_due`), [`CLOSE_CHUNK`] at a time, and the handoff board forgets the
//! handoffs whose window ended (not at the next swap, which waits for it): a state committed
//! meanwhile is written before the next chunk (a burst of placements ends tens of thousands of
//! windows at once, and the kernel keeps marking only until each window's end whether it is
//! closed or not).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    maps::DataplaneMaps,
    reshard::{board::HandoffBoard, Resharder, Swap, SwapKind, TableWriter, CLOSE_CHUNK},
    state::ControlState,
    telemetry::Telemetry,
};

/// Applies the current state, then each newer one, until the channel closes, publishing each
/// generation written on `written` (readiness and reloads wait on it) and each swap's handoffs
/// on `board` for the window `handoff_window` holds (`handoff_window_secs`, which a reload may
/// change; zero publishes none). A state of generation 0 (nothing committed yet) is not
/// written: the pinned maps keep routing as they are.
pub async fn run(
    maps: Arc<Mutex<DataplaneMaps>>,
    mut states: watch::Receiver<Arc<ControlState>>,
    written: watch::Sender<u64>,
    telemetry: Arc<Telemetry>,
    (board, handoff_window): (Arc<HandoffBoard>, watch::Receiver<Duration>),
) {
    // Reads the tables in force from the pinned maps at its first write.
    let mut resharder = Resharder::new(*handoff_window.borrow());
    let mut applied = 0;
    // The state last written whole or in part: the next one is written as its delta.
    let mut last: Option<Arc<ControlState>> = None;
    loop {
        let state = states.borrow_and_update().clone();
        if state.generation != applied {
            resharder.set_handoff_window(*handoff_window.borrow());
            let job = (maps.clone(), state.clone(), last.clone(), telemetry.clone());
            let board = board.clone();
            let Some((back, result)) = off_runtime(resharder, move |resharder| {
                let (maps, state, last, telemetry) = job;
                let swap = write(&maps, resharder, &state, last.as_deref(), &telemetry)?;
                // On this thread too, before the generation counts as written: a tick's
                // 10,000 inserts take ms, which on the runtime waited for its worker behind
                // the raft peers' messages (and held that worker from them).
                board.publish(&swap.handoffs, Instant::now());
                anyhow::Ok(swap)
            })
            .await
            else {
                return;
            };
            resharder = back;
            match result {
                Ok(swap) => {
                    applied = state.generation;
                    // Refused placements are retried by the next whole write.
                    let next = swap.placements_refused.is_empty().then(|| state.clone());
                    let previous = std::mem::replace(&mut last, next);
                    written.send_replace(applied);
                    // Freeing the nodes only the previous state held (a tick's re-placements
                    // copied thousands) takes ms: after the generation is announced, and off
                    // the runtime.
                    if previous.is_some() {
                        tokio::task::spawn_blocking(move || drop(previous));
                    }
                }
                Err(e) => {
                    // The maps are read back and the next state written whole.
                    last = None;
                    error!("writing tables of generation {}: {e:#}", state.generation);
                }
            }
        }
        // The next state, or the end of a handoff window the dataplane still flags or the
        // board holds (the board's own ends: a swap's moves beyond the free handoff slots
        // flag no window, so the dataplane's ends alone miss them; a load of a million
        // placements publishes a million, of which 65,536 take a slot), or of a slot's
        // quarantine (then it is cleared).
        let next_close = [resharder.next_close(), board.next_end()]
            .into_iter()
            .flatten()
            .min();
        let closing = async move {
            match next_close {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A newer state first: windows left open a little longer cost nothing but room.
            biased;
            changed = states.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = closing => {
                // A window closing rewrites every session it flagged (a tick's 10,000), a chunk
                // at a time; windows still due wake the loop again at once.
                let (maps, board, now) = (maps.clone(), board.clone(), Instant::now());
                let Some((back, result)) = off_runtime(resharder, move |resharder| {
                    // The board forgets the handoffs whose window ended: here, between
                    // states, not at the next swap's publish, which the generation waits for
                    // (a tick's 10,000 each time, a million after a load of placements).
                    board.publish(&[], now);
                    let mut maps = maps.lock().expect("maps lock");
                    resharder.close_due(&mut *maps, now, CLOSE_CHUNK)
                })
                .await
                else {
                    return;
                };
                resharder = back;
                if let Err(e) = result {
                    error!("closing handoff windows: {e:#}");
                }
            }
        }
    }
}

/// Runs `job` on the swap stage on a blocking thread and hands the stage back with the
/// outcome; `None` when the runtime is shutting down. Thousands of map writes (a tick's
/// re-placements, or the end of their handoff window) take tens of ms: off the runtime, whose
/// workers also answer the raft peers (a follower that answers AppendEntries late is sent the
/// entry again). The job's log lines go where this task's go.
async fn off_runtime<R: Send + 'static>(
    mut resharder: Resharder,
    job: impl FnOnce(&mut Resharder) -> R + Send + 'static,
) -> Option<(Resharder, R)> {
    let logs = tracing::dispatcher::get_default(|d| d.clone());
    let done = tokio::task::spawn_blocking(move || {
        let result = tracing::dispatcher::with_default(&logs, || job(&mut resharder));
        (resharder, result)
    });
    match done.await {
        Ok(done) => Some(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down.
        Err(_) => None,
    }
}

/// Writes one state's tables through `resharder`, logging what moved. With `last` (the state
/// `resharder` wrote before) and only placements changed since, only those are computed and
/// written (incremental apply); otherwise the whole tables are diffed against the maps.
/// Placements a full SESSIONS map refused are counted and logged once for the whole burst;
/// those sessions keep routing as before.
pub fn write<W: TableWriter>(
    maps: &Mutex<W>,
    resharder: &mut Resharder,
    state: &ControlState,
    last: Option<&ControlState>,
    telemetry: &Telemetry,
) -> anyhow::Result<Swap> {
    // The entry's own sessions when the journal covers the step from `last`; else a diff.
    let changes = last.and_then(|last| {
        state
            .journaled_changes(last)
            .or_else(|| state.placement_changes(last))
    });
    let swap = match changes {
        Some(changes) => {
            let mut maps = maps.lock().expect("maps lock");
            resharder.apply_sessions(&mut *maps, &changes, Instant::now())?
        }
        None => {
            // The placements are visited from the state, a chunk at a time, never built whole
            // (a million sessions' shard sets took about 470 bytes a session).
            let target = state.unplaced_tables();
            let mut maps = maps.lock().expect("maps lock");
            resharder.apply_placements(&mut *maps, &target, state, Instant::now())?
        }
    };
    // Every swap that made a change visible is observed, whichever kind of write it was.
    if swap.kind != SwapKind::Unchanged {
        telemetry.swap_seconds.observe(swap.flip.as_secs_f64());
    }
    let refused = swap.placements_refused.len();
    if refused > 0 {
        telemetry.placements_refused.inc_by(refused as u64);
        warn!(
            refused,
            placed = resharder.placed().len(),
            capacity = shardline_common::consts::MAX_SESSIONS,
            first = ?swap.placements_refused.first(),
            "SESSIONS map full: these sessions stay on the default table until there is room"
        );
    }
    log_moves(&swap);
    Ok(swap)
}

/// Sessions of one swap logged a line each; beyond that, one line counts the rest (a tick
/// moving 10,000 sessions would otherwise format 10,000 lines on every node, tens of ms; the
/// API's owners query answers for every one of them).
const LOGGED_PER_SWAP: usize = 32;

fn log_moves(swap: &Swap) {
    log_capped(&swap.handoffs, swap.generation, "re-sharded", |h| {
        // Whole (its plan computed) for the few logged only.
        let h = h.handoff();
        info!(
            service = h.session.service,
            session = h.session.session,
            previous = ?h.previous.members(),
            current = ?h.current.members(),
            plan = ?h.plan,
            "session re-sharded; previous owners hand their keys over"
        )
    });
    log_capped(&swap.placed, swap.generation, "placed", |key| {
        info!(
            service = key.service,
            session = key.session,
            "session placed; it leaves the default table"
        )
    });
    if !swap.maglev_moves.is_empty() {
        let slots: u32 = swap.maglev_moves.iter().map(|m| m.slots).sum();
        info!(slots, moves = ?swap.maglev_moves, "default table re-sharded");
    }
}

/// Logs the first [`LOGGED_PER_SWAP`] of `items` a line each with `each`, then one line
/// counting the rest, sessions `what` (re-sharded, placed) in the swap of `generation`.
fn log_capped<T>(items: &[T], generation: u64, what: &'static str, each: impl Fn(&T)) {
    items.iter().take(LOGGED_PER_SWAP).for_each(each);
    let more = items.len().saturating_sub(LOGGED_PER_SWAP);
    if more > 0 {
        info!(
            more,
            generation,
            what,
            "more sessions in this swap than are logged one by one (the owners query answers \
             for each)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        reshard::{held::Held, TableWriter, DEFAULT_HANDOFF_WINDOW, WHOLE_WRITE_CHUNK},
        state::{Command, SessionRef},
    };

    const CONFIG: &str = r#"
        interface = "lo"
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
        backends = [1]
    "#;

    fn swaps(telemetry: &Telemetry) -> u64 {
        let mut registry = prometheus_client::registry::Registry::default();
        telemetry.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("shardline_swap_seconds_count "))
            .unwrap_or_else(|| panic!("no shardline_swap_seconds_count in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn every_re_shard_moves_the_swap_count_and_an_unchanged_state_does_not() {
        let config = Config::parse(CONFIG, "test").unwrap();
        let mut state = ControlState::from_config(&config);
        let maps = Mutex::new(Held::empty(1024));
        let mut resharder = Resharder::new(DEFAULT_HANDOFF_WINDOW);
        let telemetry = Telemetry::default();
        write(&maps, &mut resharder, &state, None, &telemetry).unwrap();
        assert_eq!(swaps(&telemetry), 1, "the first tables are a swap");
        write(&maps, &mut resharder, &state, None, &telemetry).unwrap();
        assert_eq!(swaps(&telemetry), 1, "nothing changed, nothing swapped");

        let session = SessionRef {
            service: "kv".into(),
            session: 42,
        };
        for (i, backends) in [vec![1, 2], vec![1, 2, 3], vec![3]].into_iter().enumerate() {
            let last = state.clone();
            state
                .apply(&Command::Place {
                    session: session.clone(),
                    backends: backends.clone(),
                })
                .unwrap();
            // Alternately the incremental path and the full diff: both swaps are observed.
            let last = (i % 2 == 0).then_some(&last);
            let swap = write(&maps, &mut resharder, &state, last, &telemetry).unwrap();
            assert_eq!(swap.kind, SwapKind::Session, "re-shard to {backends:?}");
            assert_eq!(swaps(&telemetry), 2 + i as u64, "re-shard to {backends:?}");
        }
        let writes = maps.lock().unwrap().writes;
        assert_eq!(writes, 4, "one delta per swap");
    }

    #[test]
    fn the_journaled_write_leaves_the_maps_a_whole_write_leaves() {
        let config = Config::parse(CONFIG, "test").unwrap();
        let telemetry = Telemetry::default();
        let mut state = ControlState::from_config(&config);
        let maps = Mutex::new(Held::empty(1024));
        let mut resharder = Resharder::new(DEFAULT_HANDOFF_WINDOW);
        write(&maps, &mut resharder, &state, None, &telemetry).unwrap();
        let kv = |session| SessionRef {
            service: "kv".into(),
            session,
        };
        let place = |session, backends: &[u32]| Command::Place {
            session: kv(session),
            backends: backends.to_vec(),
        };
        let last = state.clone();
        state.start_journal();
        state
            .apply(&Command::batch(vec![
                place(7, &[2]),
                place(7, &[2, 3]),
                Command::Unplace { session: kv(42) },
                place(8, &[3]),
            ]))
            .unwrap();
        assert!(state.journaled_changes(&last).is_some(), "the journal path");
        let swap = write(&maps, &mut resharder, &state, Some(&last), &telemetry).unwrap();
        assert_eq!(swap.kind, SwapKind::Session);
        let whole = Mutex::new(Held::empty(1024));
        let mut fresh = Resharder::new(DEFAULT_HANDOFF_WINDOW);
        write(&whole, &mut fresh, &state, None, &telemetry).unwrap();
        assert_eq!(routes(&maps), routes(&whole));
        assert_eq!(
            routes(&maps)
                .iter()
                .map(|(k, _)| k.session)
                .collect::<Vec<_>>(),
            [7, 8],
            "42 is back on the default table"
        );
    }

    /// Routes of every placement `maps` hold: members by session, sorted.
    fn routes(maps: &Mutex<Held>) -> Vec<(shardline_common::maps::SessionKey, Vec<u32>)> {
        let tables = &maps.lock().unwrap().tables;
        let mut placed: Vec<_> = tables
            .sessions
            .iter()
            .map(|(k, s)| (*k, s.members().to_vec()))
            .collect();
        placed.sort_unstable();
        placed
    }

    /// Maps holding `state`'s tables written as one delta (what a whole write did before it
    /// went in parts).
    fn one_delta(state: &ControlState) -> Mutex<Held> {
        let mut held = Held::empty(1 << 20);
        let delta = crate::snapshot::delta::TableDelta::between(&held.tables, &state.tables());
        held.write_delta(&delta).unwrap();
        Mutex::new(held)
    }

    #[test]
    fn a_whole_write_of_more_sessions_than_a_part_leaves_what_one_delta_leaves() {
        let config = Config::parse(CONFIG, "test").unwrap();
        let telemetry = Telemetry::default();
        let mut state = ControlState::from_config(&config);
        let sessions = 2 * WHOLE_WRITE_CHUNK as u64 + 1_000;
        let commands = (0..sessions)
            .map(|session| Command::Place {
                session: SessionRef {
                    service: "kv".into(),
                    session,
                },
                backends: match session % 3 {
                    0 => vec![1],
                    1 => vec![2, 3],
                    _ => vec![3, 1, 2],
                },
            })
            .collect();
        state.apply(&Command::batch(commands)).unwrap();
        // A start: every session written, in parts.
        let maps = Mutex::new(Held::empty(1 << 20));
        let mut resharder = Resharder::new(DEFAULT_HANDOFF_WINDOW);
        let swap = write(&maps, &mut resharder, &state, None, &telemetry).unwrap();
        assert_eq!(
            maps.lock().unwrap().writes,
            3,
            "{sessions} sessions in 3 parts"
        );
        assert_eq!(swap.placed.len() as u64, sessions);
        assert_eq!(routes(&maps).len() as u64, sessions);
        assert_eq!(routes(&maps), routes(&one_delta(&state)));
        // A backend change: every session compared, those on backend 3 re-placed, those on it
        // alone back to the default table.
        let last = state.clone();
        state.apply(&Command::RemoveBackend { id: 1 }).unwrap();
        let swap = write(&maps, &mut resharder, &state, Some(&last), &telemetry).unwrap();
        assert_eq!(
            swap.kind,
            SwapKind::Maglev,
            "the default table lost backend 1"
        );
        assert_eq!(routes(&maps), routes(&one_delta(&state)));
        let left = routes(&maps);
        assert!(
            left.iter().all(|(_, m)| !m.contains(&1)),
            "backend 1 is in no set"
        );
        assert_eq!(
            left.len() as u64,
            sessions - sessions.div_ceil(3),
            "those on 1 alone left"
        );
        assert_eq!(resharder.placed().len(), left.len());
    }
}
