//! The daemon's drain timer: a drained backend keeps its placed sessions and established flows
//! for `control.drain_timeout_secs`, then the leader commits `DrainTimedOut` and the backend
//! leaves every shard set (`ControlState::tables` marks it down, so its flows are re-decided).
//!
//! The clock starts when this node first sees the backend draining as leader, so a new leader
//! gives a drain at most one more timeout, never less.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::state::{Command, Control, ControlState};

/// Every `interval`, commits `DrainTimedOut` for each backend draining for `timeout` or more.
/// Runs until the task is dropped.
pub async fn run(control: Arc<dyn Control>, timeout: Duration, interval: Duration) {
    let mut since = BTreeMap::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if control.status().await.role != "leader" {
            since.clear();
            continue;
        }
        for id in due(&control.local(), &mut since, Instant::now(), timeout) {
            info!(
                backend = id,
                "drain timeout ({timeout:?}) passed; removing it from every shard set"
            );
            if let Err(e) = control.write(Command::DrainTimedOut { id }).await {
                warn!(backend = id, "committing the end of its drain: {e}");
            }
        }
    }
}

/// The backends whose drain began `timeout` or more before `now`. `since` remembers when each
/// draining backend was first seen; backends no longer draining (or already drained) are
/// forgotten.
pub fn due(
    state: &ControlState,
    since: &mut BTreeMap<u32, Instant>,
    now: Instant,
    timeout: Duration,
) -> Vec<u32> {
    since.retain(|id, _| {
        state
            .backends
            .get(id)
            .is_some_and(|b| b.draining && !b.drained)
    });
    let mut out = Vec::new();
    for (id, b) in &state.backends {
        if !b.draining || b.drained {
            continue;
        }
        let start = *since.entry(*id).or_insert(now);
        if now.duration_since(start) >= timeout {
            out.push(*id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ControlState {
        let config = crate::fixtures::kv_config(&[1, 2], None);
        ControlState::from_config(&config)
    }

    #[test]
    fn a_drain_ends_after_its_timeout_and_an_undrain_forgets_it() {
        let mut st = state();
        let (t0, timeout) = (Instant::now(), Duration::from_secs(30));
        let mut since = BTreeMap::new();
        assert!(due(&st, &mut since, t0, timeout).is_empty());
        st.apply(&Command::Drain {
            id: 2,
            draining: true,
        })
        .unwrap();
        assert!(due(&st, &mut since, t0, timeout).is_empty(), "just started");
        let later = t0 + Duration::from_secs(29);
        assert!(due(&st, &mut since, later, timeout).is_empty());
        assert_eq!(due(&st, &mut since, t0 + timeout, timeout), [2]);
        st.apply(&Command::DrainTimedOut { id: 2 }).unwrap();
        assert!(st.backends[&2].drained && !st.backends[&2].usable());
        assert!(due(&st, &mut since, t0 + timeout * 2, timeout).is_empty());
        assert!(since.is_empty(), "a drained backend is forgotten");
        // Undrained, then drained again: a fresh timeout.
        st.apply(&Command::Drain {
            id: 2,
            draining: false,
        })
        .unwrap();
        assert!(st.backends[&2].usable());
        st.apply(&Command::Drain {
            id: 2,
            draining: true,
        })
        .unwrap();
        let t1 = t0 + timeout * 3;
        assert!(due(&st, &mut since, t1, timeout).is_empty());
        assert_eq!(due(&st, &mut since, t1 + timeout, timeout), [2]);
    }
}
