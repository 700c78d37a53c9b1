//! Writes every committed control state into this node's pinned maps, in order.
//!
//! States arrive on the control handle's `watch` channel; a burst of commits is written once,
//! as the newest state (each map write is atomic and `DataplaneMaps::apply` orders them so no
//! packet meets a half-written table). What a change moved is logged: per re-placed session
//! its previous owners (the handoff), and the default table's slot moves.

use std::sync::{Arc, Mutex};

use shardline_common::{
    maps::SessionKey,
    plan::{maglev_plan, session_plan, SessionPlan},
};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{maps::DataplaneMaps, snapshot::Snapshot, state::ControlState, telemetry::Telemetry};

/// Applies the current state, then each newer one, until the channel closes, publishing each
/// generation written on `written` (readiness and reloads wait on it). A state of generation 0
/// (nothing committed yet) is not written: the pinned maps keep routing as they are.
pub async fn run(
    maps: Arc<Mutex<DataplaneMaps>>,
    mut states: watch::Receiver<Arc<ControlState>>,
    written: watch::Sender<u64>,
    telemetry: Arc<Telemetry>,
) {
    let mut applied = 0;
    loop {
        let state = states.borrow_and_update().clone();
        if state.generation != applied {
            match write(&maps, &state, &telemetry) {
                Ok(()) => {
                    applied = state.generation;
                    written.send_replace(applied);
                }
                Err(e) => error!("writing tables of generation {}: {e:#}", state.generation),
            }
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// Writes one state's tables, logging what moved. Placements a full SESSIONS map refused are
/// counted and logged once for the whole burst; those sessions keep the default table.
pub fn write(
    maps: &Mutex<DataplaneMaps>,
    state: &ControlState,
    telemetry: &Telemetry,
) -> anyhow::Result<()> {
    let mut maps = maps.lock().expect("maps lock");
    let before = maps.read_snapshot()?;
    let after = state.tables();
    // The swap: idle half and shard sets written, then the flip; what `shardline_swap_seconds`
    // reports for every state applied.
    let started = std::time::Instant::now();
    let applied = maps.apply(&after)?;
    telemetry
        .swap_seconds
        .observe(started.elapsed().as_secs_f64());
    let refused = applied.placements_refused.len();
    if refused > 0 {
        telemetry.placements_refused.inc_by(refused as u64);
        warn!(
            refused,
            placed = after.sessions.len() - refused,
            capacity = shardline_common::consts::MAX_SESSIONS,
            first = ?applied.placements_refused.first(),
            "SESSIONS map full: these sessions stay on the default table until there is room"
        );
    }
    log_moves(&before, &after, &applied.placements_refused);
    Ok(())
}

fn log_moves(before: &Snapshot, after: &Snapshot, refused: &[SessionKey]) {
    for (key, set) in &after.sessions {
        if refused.contains(key) {
            continue;
        }
        let old = before.sessions.get(key);
        let plan = session_plan(old, set);
        if plan != SessionPlan::Unchanged {
            let previous: Vec<u32> = old
                .map(|o| o.backends[..o.count as usize].to_vec())
                .unwrap_or_default();
            let current = &set.backends[..set.count as usize];
            info!(
                service = key.service,
                session = key.session,
                ?previous,
                ?current,
                ?plan,
                "session re-sharded; previous owners hand their keys over"
            );
        }
    }
    let moves = maglev_plan(&before.maglev, &after.maglev);
    if !moves.is_empty() {
        let slots: u32 = moves.iter().map(|m| m.slots).sum();
        info!(slots, ?moves, "default table re-sharded");
    }
}
