//! Applying a large entry while it replicates, instead of after it commits; and how the state
//! machine runs the apply of one ([`blocking`]).
//!
//! A tick's entry (10,000 placements) takes tens of ms to apply to a million-session state,
//! and every node used to start only once it learned the entry committed: after the quorum's
//! round trip on the leader (whose write returns after its own apply), after one more message
//! on a follower. Applying is deterministic, so the state an entry leads to is known as soon
//! as the entry is in the log and the state machine has applied everything before it. When a
//! large entry is appended ([`Ahead::start`]) and the state machine stands right before it, the
//! entry is applied on a blocking thread to a copy of that state (which shares all but the
//! paths it changes); when the entry commits, the state machine takes that result instead of
//! applying again ([`Ahead::take`]), but only if it still stands exactly where the copy
//! started (the same applied log id and the same state object), and the entry has the same
//! log id, which in Raft names one entry. Anything else (a truncated entry, a snapshot
//! installed meanwhile, an entry appended before the one before it applied) is applied as
//! usual. Nothing is published or stored ahead: only the state machine's apply does that, at
//! commit, so durability and what every node holds are unchanged.

use std::sync::{Arc, Mutex};

use openraft::{Entry, EntryPayload, LogId};
use tokio::sync::oneshot;

use super::{NodeId, TypeConfig};
use crate::state::{Command, ControlState, Response, StateError};

/// Commands an entry carries from which it is applied ahead: smaller ones apply in less time
/// than the hand-over to a thread costs (the threshold of the blocking apply, for the same
/// reason).
pub const AHEAD_COMMANDS: usize = BLOCKING_COMMANDS;

/// What an entry applied ahead left: the state after it (its journal started at the copy) and
/// the entry's response.
pub type Applied = (ControlState, Result<Response, StateError>);

/// The state machine's position and the one entry being applied ahead of it; shared by the
/// log store (which starts it) and the state machine (which takes it).
#[derive(Clone, Default)]
pub struct Ahead(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    /// The last applied log id and the state after it, as the state machine last left them.
    base: Option<(Option<LogId<NodeId>>, Arc<ControlState>)>,
    /// The entry applied ahead (in flight or done).
    pending: Option<Pending>,
}

struct Pending {
    log_id: LogId<NodeId>,
    base_applied: Option<LogId<NodeId>>,
    base: Arc<ControlState>,
    result: oneshot::Receiver<Applied>,
}

/// A result [`Ahead::take`] found for the entry: await it (a dropped sender means none).
pub type Taken = oneshot::Receiver<Applied>;

impl Ahead {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records where the state machine stands: `applied` and the state after it.
    pub fn settled(&self, applied: Option<LogId<NodeId>>, state: Arc<ControlState>) {
        self.slot().base = Some((applied, state));
    }

    /// Starts applying `entry`, just appended, on a blocking thread if it is large and the
    /// state machine stands right before it; otherwise does nothing.
    pub fn start(&self, entry: &Entry<TypeConfig>) {
        let EntryPayload::Normal(command) = &entry.payload else {
            return;
        };
        if commands(command) < AHEAD_COMMANDS {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut slot = self.slot();
        let Some((applied, base)) = slot.base.clone() else {
            return;
        };
        if applied.map_or(0, |l| l.index + 1) != entry.log_id.index {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let (command, from) = (command.clone(), base.clone());
        runtime.spawn_blocking(move || {
            let mut state = (*from).clone();
            drop(from);
            state.start_journal();
            let response = state.apply(&command);
            let _ = tx.send((state, response));
        });
        slot.pending = Some(Pending {
            log_id: entry.log_id,
            base_applied: applied,
            base,
            result: rx,
        });
    }

    /// The result for the entry `log_id` if it was applied ahead from exactly `applied` and
    /// `state` (the same object); any other result is dropped.
    pub fn take(
        &self,
        log_id: LogId<NodeId>,
        applied: Option<LogId<NodeId>>,
        state: &Arc<ControlState>,
    ) -> Option<Taken> {
        let mut slot = self.slot();
        let pending = slot.pending.take_if(|p| p.log_id.index <= log_id.index)?;
        (pending.log_id == log_id
            && pending.base_applied == applied
            && Arc::ptr_eq(&pending.base, state))
        .then_some(pending.result)
    }
}

/// The commands `command` carries (a batch's each).
fn commands(command: &Command) -> usize {
    match command {
        Command::Batch { commands } => commands.len(),
        _ => 1,
    }
}

/// Commands in entries applied at once from which the state machine's apply leaves the
/// runtime worker ([`blocking`]): below, the hand-over costs more than it saves.
pub(super) const BLOCKING_COMMANDS: usize = 256;

/// The commands an entry carries (a batch's each).
pub(super) fn entry_commands(payload: &EntryPayload<TypeConfig>) -> usize {
    match payload {
        EntryPayload::Normal(command) => commands(command),
        _ => 1,
    }
}

/// Runs `f` without holding up the other tasks of this runtime worker: on a multi-thread
/// runtime the worker hands them to another first (`block_in_place`); on any other, in place.
pub(super) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use openraft::{storage::RaftStateMachine, CommittedLeaderId};

    use super::*;
    use crate::{
        cluster::store::{self, StateMachine},
        config::Config,
        state::{ConfigTables, SessionRef},
    };

    fn config() -> Config {
        let mut text = String::from(
            "interface = \"eth0\"\n[[services]]\nname = \"kv\"\nvip = \"10.100.0.1\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nforward = \"l2dsr\"\n",
        );
        for id in 1..=3 {
            text += &format!(
                "[[backends]]\nid = {id}\nipv4 = \"10.0.0.{id}\"\nmac = \"02:00:00:00:00:0{id}\"\n"
            );
        }
        Config::parse(&text, "test").unwrap()
    }

    fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    /// `n` placements, one of them rejected (an unknown backend).
    fn batch(n: u64) -> Command {
        let place = |i: u64| Command::Place {
            session: SessionRef {
                service: "kv".into(),
                session: i,
            },
            backends: if i == 5 {
                vec![9]
            } else {
                vec![1 + (i % 3) as u32]
            },
        };
        Command::batch((0..n).map(place).collect())
    }

    fn load() -> Command {
        Command::LoadConfig(ConfigTables::of(&config()))
    }

    #[tokio::test]
    async fn a_result_is_taken_only_where_it_started_and_for_its_entry() {
        let ahead = Ahead::default();
        let base = Arc::new(ControlState::from_config(&config()));
        let one = Some(LogId::new(CommittedLeaderId::new(1, 1), 1));
        ahead.settled(one, base.clone());
        let big = entry(2, batch(AHEAD_COMMANDS as u64));
        ahead.start(&big);
        let (state, response) = ahead.take(big.log_id, one, &base).unwrap().await.unwrap();
        let mut want = (*base).clone();
        let EntryPayload::Normal(command) = &big.payload else {
            unreachable!()
        };
        assert_eq!(response, want.apply(command));
        assert_eq!(state, want);
        assert!(response.unwrap().each[5].is_err());
        // Taken once.
        assert!(ahead.take(big.log_id, one, &base).is_none());
        // An equal state that is another object, another applied id, another entry at the
        // index (another term): applied as usual.
        ahead.start(&big);
        let twin = Arc::new((*base).clone());
        assert!(ahead.take(big.log_id, one, &twin).is_none());
        ahead.start(&big);
        assert!(ahead.take(big.log_id, None, &base).is_none());
        ahead.start(&big);
        let other = LogId::new(CommittedLeaderId::new(2, 1), 2);
        assert!(ahead.take(other, one, &base).is_none());
        // Not right after where the state machine stands, or small: never started.
        ahead.start(&entry(3, batch(AHEAD_COMMANDS as u64)));
        let three = LogId::new(CommittedLeaderId::new(1, 1), 3);
        assert!(ahead.take(three, one, &base).is_none());
        ahead.start(&entry(2, batch(AHEAD_COMMANDS as u64 - 1)));
        assert!(ahead.take(big.log_id, one, &base).is_none());
    }

    #[tokio::test]
    async fn the_state_machine_takes_an_entry_applied_ahead_as_it_would_apply_it() {
        let dir = std::env::temp_dir().join(format!("shardline-ahead-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut machines = Vec::new();
        for name in ["ahead", "plain"] {
            let db = store::open(&dir.join(name)).unwrap();
            let mut sm = StateMachine::new(db).unwrap();
            sm.apply(vec![entry(1, load())]).await.unwrap();
            machines.push(sm);
        }
        let before = machines[0].publisher().borrow().clone();
        // What the log store does on append, on one of the two.
        let big = entry(2, batch(2 * AHEAD_COMMANDS as u64));
        machines[0].ahead().start(&big);
        let mut results = Vec::new();
        for sm in &mut machines {
            // The entry and a small one after it, committed together.
            let small = entry(3, batch(2));
            let out = sm.apply(vec![big.clone(), small]).await.unwrap();
            let state = sm.publisher().borrow().clone();
            let applied = sm.applied_state().await.unwrap().0;
            results.push((out, state, applied));
        }
        // The result was taken (nothing left pending) and is the plain apply's, journal too.
        assert!(machines[0].ahead().0.lock().unwrap().pending.is_none());
        let (ahead, plain) = (&results[0], &results[1]);
        assert_eq!(ahead.0, plain.0);
        assert_eq!(ahead.1, plain.1);
        assert_eq!(ahead.2.map(|l| l.index), Some(3));
        assert_eq!(ahead.2, plain.2);
        let journaled = |s: &ControlState| s.journaled_changes(&before).map(|c| c.len());
        assert_eq!(journaled(&ahead.1), journaled(&plain.1));
        assert_eq!(journaled(&ahead.1), Some(2 * AHEAD_COMMANDS + 2 - 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
