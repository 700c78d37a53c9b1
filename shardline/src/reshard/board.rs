//! The handoffs in force, shared between the daemon's applier (which publishes each swap's)
//! and the API (which answers "who owns key K of this session now, and who owned it before?").
//!
//! A backend that receives a key it has never seen asks this (`GET
//! /v1/sessions/{service}/{session}/owners?key=K`) and pulls the key's data from the previous
//! owner while the handoff window is open (docs/handoff.md).

use std::{
    sync::Mutex,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use shardline_common::maps::{SessionKey, ShardSet};

use super::{by_end::ByEnd, placed::CompactSet, CompactHandoff};

/// A moved placement's previous shard set, published until the window closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The placement before the move (its generation included).
    pub previous: ShardSet,
    /// When the window closes.
    pub until: Instant,
    /// The same instant as Unix milliseconds, for answers.
    pub until_unix_ms: u64,
}

/// A [`Published`] as the board holds it, its end aside: the previous set compact (40 bytes
/// an entry where the set whole took 232; a burst of placements keeps rate x window of them).
#[derive(Debug)]
struct Open {
    previous: CompactSet,
    until_unix_ms: u64,
}

/// The open handoffs by session. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug, Default)]
pub struct HandoffBoard {
    /// By session and by end: a publish forgets the closed ones without visiting the open ones
    /// (tens of thousands after a burst of placements, on every node, before the swap counts
    /// as written).
    open: Mutex<ByEnd<Open>>,
}

impl HandoffBoard {
    /// Publishes a swap's handoffs at `now` (each replaces the session's earlier one) and
    /// forgets those whose window has closed.
    pub fn publish(&self, handoffs: &[CompactHandoff], now: Instant) {
        let mut board = self.open.lock().expect("handoff board lock");
        board.forget_due(now);
        // The wall clock read once for the whole swap (a tick publishes 10,000).
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        board.extend(handoffs.iter().filter(|h| h.until > now).map(|h| {
            let open = Open {
                previous: h.previous_compact().clone(),
                until_unix_ms: (wall + h.until.saturating_duration_since(now)).as_millis() as u64,
            };
            (h.session, h.until, open)
        }));
    }

    /// The session's open handoff at `now`, if its window has not closed.
    pub fn get(&self, session: &SessionKey, now: Instant) -> Option<Published> {
        let board = self.open.lock().expect("handoff board lock");
        board
            .get(session)
            .filter(|(until, _)| *until > now)
            .map(|(until, p)| Published {
                previous: p.previous.get(),
                until: *until,
                until_unix_ms: p.until_unix_ms,
            })
    }

    /// The earliest window end it holds: when to forget the handoffs that closed (or, a
    /// handoff published again since, a wake-up that finds nothing to forget).
    pub fn next_end(&self) -> Option<Instant> {
        self.open.lock().expect("handoff board lock").next_end()
    }

    /// Number of handoffs held (closed ones included until the next publish).
    pub fn len(&self) -> usize {
        self.open.lock().expect("handoff board lock").len()
    }

    /// Whether no handoff is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shardline_common::consts::NO_BACKEND;

    use super::*;

    fn set(generation: u64, members: &[u32]) -> ShardSet {
        let mut s = ShardSet {
            generation,
            count: members.len() as u32,
            ..ShardSet::default()
        };
        s.backends = [NO_BACKEND; shardline_common::consts::MAX_SHARDS];
        s.backends[..members.len()].copy_from_slice(members);
        s
    }

    fn handoff(session: u64, previous: ShardSet, until: Instant) -> CompactHandoff {
        let session = SessionKey {
            service: 1,
            _pad: 0,
            session,
        };
        let current = set(previous.generation + 1, &[9]);
        CompactHandoff::new(session, &previous, &current, until)
    }

    #[test]
    fn a_handoff_is_answered_until_its_window_closes_and_a_newer_one_replaces_it() {
        let board = HandoffBoard::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let h = handoff(7, set(3, &[1, 2]), t0 + window);
        board.publish(std::slice::from_ref(&h), t0);
        let got = board.get(&h.session, t0 + window / 2).expect("open");
        assert_eq!(got.previous, set(3, &[1, 2]));
        assert!(got.until_unix_ms > 0);
        assert_eq!(board.get(&h.session, t0 + window), None, "closed");
        // A second move of the same session names the placement just before it.
        let again = handoff(7, set(4, &[9]), t0 + 2 * window);
        board.publish(std::slice::from_ref(&again), t0 + window / 2);
        assert_eq!(
            board.get(&h.session, t0 + window).map(|p| p.previous),
            Some(set(4, &[9]))
        );
        // Publishing after every window closed forgets them.
        board.publish(&[], t0 + 3 * window);
        assert!(board.is_empty());
    }
}
