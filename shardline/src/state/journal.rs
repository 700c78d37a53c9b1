//! Which sessions the commands applied since a state was published may have re-placed, so the
//! dataplane applier writes a tick's 10,000 re-placements from the entry's own sessions instead
//! of diffing two million-entry session maps ([`ControlState::placement_changes`]).
//!
//! The state machine starts a journal before each apply ([`ControlState::start_journal`]);
//! every applied `Place` and `Unplace` names its session in it, with the members and placement
//! generation the command left (so the applier does not look each one up again in the
//! million-entry session map: 15 ms a tick per node), and any other command that
//! routes (backends, services, pools, health, configuration) closes it, because it can change
//! sessions the entry does not name (a backend going down leaves every shard set holding it):
//! the applier then diffs as before. A state without a journal (restored from a snapshot, built
//! in memory) is diffed too.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use shardline_common::maps::{SessionKey, ShardSet};

use super::{Command, ControlState, Members, SessionRef};

/// The sessions whose placements may have changed since the state of generation `since`, or
/// nothing known. Bookkeeping, not content: two states compare equal whatever their journals
/// hold, and it is never serialized.
#[derive(Clone, Debug, Default)]
pub struct Journal(Option<Arc<Touched>>);

#[derive(Clone, Debug)]
struct Touched {
    /// The generation of the state the journal started from.
    since: u64,
    /// The sessions `Place` and `Unplace` named since, in order (repeats kept), each with its
    /// entry's members and placement generation right after the command.
    sessions: Vec<(SessionRef, Members, u64)>,
}

impl PartialEq for Journal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Journal {
    /// Records what an applied (accepted) plain command may have changed; a `Place` or an
    /// `Unplace` with the members and placement generation it `left` in its session's entry
    /// (none: the session has no entry).
    pub(super) fn record(&mut self, command: &Command, left: Option<(Members, u64)>) {
        let Some(touched) = &mut self.0 else {
            return;
        };
        match command {
            Command::Place { session, .. } | Command::Unplace { session } => {
                let (members, generation) = left.unwrap_or_default();
                // Unique unless a clone of the state was taken meanwhile (then it is copied).
                Arc::make_mut(touched)
                    .sessions
                    .push((session.clone(), members, generation));
            }
            // Never re-places a session: nothing to record.
            Command::SetMeta { .. } | Command::PutState { .. } | Command::DeleteState { .. } => {}
            // Anything else may re-place sessions it does not name: nothing is known.
            _ => self.0 = None,
        }
    }
}

impl ControlState {
    /// Starts recording, from this state on, which sessions the commands applied re-place
    /// (the previous journal is dropped). The state machine calls it before each apply.
    pub fn start_journal(&mut self) {
        self.journal = Journal(Some(Arc::new(Touched {
            since: self.generation,
            sessions: Vec::new(),
        })));
    }

    /// What [`Self::placement_changes`] gives against `before`, from the journal alone: each
    /// session it names with its shard set now (`None`: the default table routes it). `None`
    /// when the journal does not start at `before` (the applier skipped a published state) or
    /// knows nothing (a command beyond placements was applied): then the caller diffs.
    ///
    /// `before` is a state this node's state machine published earlier: states of one log
    /// with the same generation applied the same routing commands, so they route alike.
    pub fn journaled_changes(
        &self,
        before: &ControlState,
    ) -> Option<Vec<(SessionKey, Option<ShardSet>)>> {
        let touched = self.journal.0.as_ref()?;
        if touched.since != before.generation {
            return None;
        }
        // A session named twice is written as the last command left it, every time.
        let mut last: FxHashMap<&SessionRef, usize> = FxHashMap::default();
        last.reserve(touched.sessions.len());
        for (i, (session, ..)) in touched.sessions.iter().enumerate() {
            last.insert(session, i);
        }
        let mut changes = Vec::with_capacity(touched.sessions.len());
        // A tick's sessions are nearly all of one service: its id is looked up once a run.
        let mut service: Option<(&SessionRef, Option<u32>)> = None;
        for (session, ..) in &touched.sessions {
            let id = match service {
                Some((named, id)) if named.service == session.service => id,
                _ => self.service_id(&session.service),
            };
            service = Some((session, id));
            let Some(id) = id else { continue };
            let key = SessionKey {
                service: id,
                _pad: 0,
                session: session.session,
            };
            let (_, members, generation) = &touched.sessions[last[session]];
            let set = self.shard_set(&session.service, members, *generation);
            changes.push((key, set));
        }
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        tests::{config, kv},
        SessionMeta,
    };
    use super::*;
    use crate::snapshot::delta::TableDelta;

    fn place(session: u64, backends: &[u32]) -> Command {
        Command::Place {
            session: kv(session),
            backends: backends.to_vec(),
        }
    }

    /// `before` with a journal started, then `commands` applied as one batch.
    fn after(before: &ControlState, commands: Vec<Command>) -> ControlState {
        let mut after = before.clone();
        after.start_journal();
        after.apply(&Command::batch(commands)).unwrap();
        after
    }

    #[test]
    fn the_journal_names_what_the_diff_finds() {
        let before = ControlState::from_config(&config());
        let after = after(
            &before,
            vec![
                // New, re-placed twice in one entry, back to the default table (42 was
                // placed by the configuration), unchanged, and writes that never route.
                place(7, &[3]),
                place(8, &[1]),
                place(8, &[2, 3]),
                Command::Unplace { session: kv(42) },
                place(9, &[1]),
                place(9, &[1]),
                Command::SetMeta {
                    session: kv(10),
                    meta: SessionMeta::default(),
                },
                Command::PutState {
                    session: kv(11),
                    key: "k".into(),
                    value: vec![1],
                },
            ],
        );
        let journaled = after.journaled_changes(&before).expect("only placements");
        let diffed = after.placement_changes(&before).expect("only placements");
        // The same writes against the placements in force (the diff also names session 10,
        // which metadata added unplaced: no write either way).
        let placed = before.tables().sessions;
        let writes = TableDelta::of_sessions(&placed, &journaled);
        assert_eq!(writes, TableDelta::of_sessions(&placed, &diffed));
        let written: Vec<u64> = writes.sessions.iter().map(|(k, _)| k.session).collect();
        assert_eq!(written, [7, 8, 9]);
        assert_eq!(writes.removed_sessions.len(), 1, "42");
        let tables = after.tables();
        for (key, set) in &journaled {
            assert_eq!(tables.sessions.get(key), set.as_ref(), "{key:?}");
        }
        let eight = journaled.iter().rev().find(|(k, _)| k.session == 8);
        assert_eq!(eight.and_then(|(_, s)| s.map(|s| s.count)), Some(2));
        assert!(journaled
            .iter()
            .any(|(k, s)| k.session == 42 && s.is_none()));
    }

    #[test]
    fn a_command_beyond_placements_leaves_the_diff_to_decide() {
        let before = ControlState::from_config(&config());
        // Backend 1 going down takes it out of session 42's set, which the entry never names.
        let sick = after(
            &before,
            vec![
                place(7, &[3]),
                Command::SetHealth {
                    id: 1,
                    healthy: false,
                },
            ],
        );
        assert!(sick.journaled_changes(&before).is_none());
        assert!(sick.placement_changes(&before).is_none(), "whole tables");
        // A rejected command changes nothing and closes nothing.
        let mut rejected = before.clone();
        rejected.start_journal();
        let response = rejected
            .apply(&Command::batch(vec![place(7, &[3]), place(8, &[99])]))
            .unwrap();
        assert!(response.each[1].is_err());
        assert_eq!(
            rejected.journaled_changes(&before).map(|c| c.len()),
            Some(1)
        );
    }

    #[test]
    fn a_journal_that_does_not_start_at_the_state_written_is_not_used() {
        let first = ControlState::from_config(&config());
        let second = after(&first, vec![place(7, &[3])]);
        let third = after(&second, vec![place(8, &[1])]);
        // The applier wrote `first` and skipped `second`: the journal of `third` misses 7.
        assert!(third.journaled_changes(&first).is_none());
        assert_eq!(third.journaled_changes(&second).map(|c| c.len()), Some(1));
        // Without a journal (a restored or configured state), nothing is known.
        assert!(first.journaled_changes(&first).is_none());
        // The journal is bookkeeping: it neither compares nor serializes.
        let mut plain = third.clone();
        plain.journal = Journal::default();
        assert_eq!(plain, third);
        let text = serde_json::to_string(&third).unwrap();
        assert!(!text.contains("journal"), "{text}");
    }
}
