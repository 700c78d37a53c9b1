//! Writes every committed control state into this node's pinned maps, in order, through the
//! swap stage ([`Resharder`]): the same path single re-shards take, so every change is the
//! delta from the tables in force, built then flipped, and moved sessions publish their previous
//! owners for the handoff window.
//!
//! States arrive on the control handle's `watch` channel; a burst of commits is written once,
//! as the newest state (each map write is atomic and the swap stage orders them so no packet
//! meets a half-written table). What a change moved is logged: per re-placed session its
//! previous owners (the handoff), and the default table's slot moves.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use shardline_common::{consts::MAX_SHARDS, maps::ShardSet};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    maps::DataplaneMaps,
    reshard::{Resharder, Swap, SwapKind, DEFAULT_HANDOFF_WINDOW},
    state::ControlState,
    telemetry::Telemetry,
};

/// Applies the current state, then each newer one, until the channel closes, publishing each
/// generation written on `written` (readiness and reloads wait on it). A state of generation 0
/// (nothing committed yet) is not written: the pinned maps keep routing as they are.
pub async fn run(
    maps: Arc<Mutex<DataplaneMaps>>,
    mut states: watch::Receiver<Arc<ControlState>>,
    written: watch::Sender<u64>,
    telemetry: Arc<Telemetry>,
) {
    // Reads the tables in force from the pinned maps at its first write.
    let mut resharder = Resharder::new(DEFAULT_HANDOFF_WINDOW);
    let mut applied = 0;
    loop {
        let state = states.borrow_and_update().clone();
        if state.generation != applied {
            match write(&maps, &mut resharder, &state, &telemetry) {
                Ok(_) => {
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

/// Writes one state's tables through `resharder`, logging what moved. Placements a full
/// SESSIONS map refused are counted and logged once for the whole burst; those sessions keep
/// routing as before.
pub fn write(
    maps: &Mutex<DataplaneMaps>,
    resharder: &mut Resharder,
    state: &ControlState,
    telemetry: &Telemetry,
) -> anyhow::Result<Swap> {
    let target = state.tables();
    let swap = {
        let mut maps = maps.lock().expect("maps lock");
        resharder.apply(&mut *maps, &target, Instant::now())?
    };
    if swap.kind != SwapKind::Unchanged {
        telemetry.swap_seconds.observe(swap.flip.as_secs_f64());
    }
    let refused = swap.placements_refused.len();
    if refused > 0 {
        telemetry.placements_refused.inc_by(refused as u64);
        warn!(
            refused,
            placed = resharder.tables().sessions.len(),
            capacity = shardline_common::consts::MAX_SESSIONS,
            first = ?swap.placements_refused.first(),
            "SESSIONS map full: these sessions stay on the default table until there is room"
        );
    }
    log_moves(&swap);
    Ok(swap)
}

fn log_moves(swap: &Swap) {
    for h in &swap.handoffs {
        info!(
            service = h.session.service,
            session = h.session.session,
            previous = ?members(&h.previous),
            current = ?members(&h.current),
            plan = ?h.plan,
            "session re-sharded; previous owners hand their keys over"
        );
    }
    for key in &swap.placed {
        info!(
            service = key.service,
            session = key.session,
            "session placed; it leaves the default table"
        );
    }
    if !swap.maglev_moves.is_empty() {
        let slots: u32 = swap.maglev_moves.iter().map(|m| m.slots).sum();
        info!(slots, moves = ?swap.maglev_moves, "default table re-sharded");
    }
}

fn members(set: &ShardSet) -> &[u32] {
    &set.backends[..(set.count as usize).min(MAX_SHARDS)]
}
