//! Group commit: many concurrent writers, few log entries.
//!
//! A Raft write costs a round trip to a quorum and an fsync on each node, whatever its size.
//! Callers [`GroupCommit::submit`] a command and await its own result; one task drains up to
//! [`MAX_BATCH`] queued commands (at most [`MAX_BATCH_BYTES`] of JSON) into one
//! [`Command::Batch`] entry, with at most [`IN_FLIGHT`] entries in flight so the next batch
//! fills while the previous one replicates (pipelining). There is no timer: a lone writer is
//! not delayed (with nothing queued, its command goes out at once, unwrapped), and the writes
//! that arrive while the slots are busy ride the next entry. A command that can never apply
//! ([`Command::check`]) is refused before it is queued; in a batch, each command applies or
//! fails on its own, so one bad write never fails the others.

use std::{future::Future, pin::Pin, sync::Arc};

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::state::{Command, ControlError, Response};

/// Most commands in one log entry.
pub const MAX_BATCH: usize = 512;

/// Most JSON bytes of commands in one log entry (a command larger than this goes alone), so
/// an entry stays far below the peer endpoint's body limit whatever the values' sizes.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Most batches committing at once.
pub const IN_FLIGHT: usize = 2;

/// A future committing one command (plain or a batch).
pub type Commit = Pin<Box<dyn Future<Output = Result<Response, ControlError>> + Send>>;

/// What commits a (batch) command: the cluster's routed write.
pub type Sink = Arc<dyn Fn(Command) -> Commit + Send + Sync>;

type Reply = oneshot::Sender<Result<Response, ControlError>>;

/// The queue in front of the log; cheap to share, the task ends when the last handle drops.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<(Command, Reply)>,
}

impl GroupCommit {
    /// Starts the draining task on the current tokio runtime.
    pub fn spawn(sink: Sink) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(drain(rx, sink));
        Self { queue }
    }

    /// Commits `command` with whatever else is queued; returns its own result.
    pub async fn submit(&self, command: Command) -> Result<Response, ControlError> {
        command.check().map_err(ControlError::Rejected)?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((command, reply))
            .map_err(|_| ControlError::Unavailable("the group-commit writer stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(ControlError::Unavailable(
                "the group-commit writer dropped the write; the outcome is unknown".into(),
            ))
        })
    }
}

/// JSON bytes of `command`, counted without keeping them.
fn json_len(command: &Command) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, command);
    count.0
}

async fn drain(mut rx: mpsc::UnboundedReceiver<(Command, Reply)>, sink: Sink) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A command that did not fit the last entry: the first of the next.
    let mut held = None;
    loop {
        // Take a slot first: while both are busy the queue keeps filling the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = json_len(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            let size = json_len(&next.0);
            if bytes + size > MAX_BATCH_BYTES {
                held = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let sink = sink.clone();
        tokio::spawn(async move {
            commit(&sink, batch).await;
            drop(slot);
        });
    }
}

async fn commit(sink: &Sink, mut batch: Vec<(Command, Reply)>) {
    if batch.len() == 1 {
        let (command, reply) = batch.pop().expect("one");
        let _ = reply.send(sink(command).await);
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let n = commands.len();
    match sink(Command::batch(commands)).await {
        Ok(response) if response.each.len() == n => {
            for (reply, each) in replies.into_iter().zip(response.each) {
                let _ = reply.send(each.map_err(ControlError::Rejected));
            }
        }
        Ok(response) => {
            let e = ControlError::Unavailable(format!(
                "a batch of {n} answered {} results; the outcome is unknown",
                response.each.len()
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use super::*;
    use crate::{
        config::Config,
        state::{Control, ControlState, LocalControl, SessionRef, StateError},
    };

    fn state() -> ControlState {
        let config = Config::parse(
            "interface = \"lo\"\n[[services]]\nname = \"kv\"\nvip = \"10.100.0.1\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nforward = \"l2dsr\"\n",
            "test",
        )
        .unwrap();
        ControlState::from_config(&config)
    }

    fn put(service: &str, i: u64) -> Command {
        Command::PutState {
            session: SessionRef {
                service: service.into(),
                session: i,
            },
            key: format!("k{i}"),
            value: i.to_le_bytes().to_vec(),
        }
    }

    /// A sink over a [`LocalControl`] that counts entries and how many are in flight at once.
    struct Counting {
        control: LocalControl,
        entries: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: Mutex<usize>,
    }

    fn sink(c: Arc<Counting>) -> Sink {
        Arc::new(move |command| {
            let c = c.clone();
            Box::pin(async move {
                c.entries.fetch_add(1, Ordering::SeqCst);
                let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                {
                    let mut most = c.most_in_flight.lock().unwrap();
                    *most = (*most).max(now);
                }
                // A commit takes a while: the queue fills meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let r = c.control.write(command).await;
                c.in_flight.fetch_sub(1, Ordering::SeqCst);
                r
            })
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_concurrent_submitter_gets_its_own_result_in_few_entries() {
        let counting = Arc::new(Counting {
            control: LocalControl::new(state()),
            entries: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: Mutex::new(0),
        });
        let group = GroupCommit::spawn(sink(counting.clone()));
        let writers = 64u64;
        let per = 20u64;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let group = group.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..per {
                    let n = w * per + i;
                    // Every 7th write names an unknown service: only that one fails.
                    let service = if n.is_multiple_of(7) { "nope" } else { "kv" };
                    out.push((n, group.submit(put(service, n)).await));
                }
                out
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.extend(t.await.unwrap());
        }
        assert_eq!(results.len() as u64, writers * per);
        let state = counting.control.local();
        for (n, r) in results {
            let session = SessionRef {
                service: "kv".into(),
                session: n,
            };
            if n.is_multiple_of(7) {
                assert!(
                    matches!(r, Err(ControlError::Rejected(StateError::UnknownService(ref s))) if s == "nope"),
                    "write {n}: {r:?}"
                );
            } else {
                let r = r.unwrap_or_else(|e| panic!("write {n}: {e}"));
                assert!(r.each.is_empty(), "write {n} got a batch's answer");
                assert_eq!(
                    state.kv[&session][&format!("k{n}")],
                    n.to_le_bytes().to_vec()
                );
            }
        }
        let entries = counting.entries.load(Ordering::SeqCst);
        assert!(
            entries < (writers * per) as usize / 4,
            "{entries} entries for {} writes: not batched",
            writers * per
        );
        assert!(*counting.most_in_flight.lock().unwrap() <= IN_FLIGHT);
    }

    #[tokio::test]
    async fn a_lone_write_goes_out_unwrapped_and_a_failed_commit_reaches_everyone() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let group = GroupCommit::spawn(Arc::new(move |command: Command| {
            s.lock().unwrap().push(command);
            Box::pin(async { Err(ControlError::Unavailable("no quorum".into())) }) as Commit
        }));
        let r = group.submit(put("kv", 1)).await;
        assert!(matches!(r, Err(ControlError::Unavailable(_))));
        assert_eq!(seen.lock().unwrap()[0], put("kv", 1));
    }

    #[tokio::test]
    async fn an_impossible_write_is_refused_before_it_takes_a_place_in_an_entry() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let group = GroupCommit::spawn(Arc::new(move |command: Command| {
            s.lock().unwrap().push(command);
            Box::pin(async { Err(ControlError::Unavailable("no quorum".into())) }) as Commit
        }));
        let mut big = put("kv", 1);
        if let Command::PutState { value, .. } = &mut big {
            *value = vec![0; crate::state::SESSION_STATE_LIMIT];
        }
        let r = group.submit(big).await;
        assert!(
            matches!(
                r,
                Err(ControlError::Rejected(StateError::StateTooLarge { .. }))
            ),
            "{r:?}"
        );
        assert!(seen.lock().unwrap().is_empty(), "it reached the log");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_values_split_a_burst_into_entries_under_the_byte_cap() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let control = Arc::new(LocalControl::new(state()));
        let (s, c) = (sizes.clone(), control.clone());
        let group = GroupCommit::spawn(Arc::new(move |command: Command| {
            s.lock().unwrap().push(json_len(&command));
            let c = c.clone();
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                c.write(command).await
            }) as Commit
        }));
        // Each about 16 KB of JSON: some 64 fit an entry.
        let writes = 300u64;
        let tasks: Vec<_> = (0..writes)
            .map(|n| {
                let group = group.clone();
                tokio::spawn(async move {
                    let mut command = put("kv", n);
                    if let Command::PutState { value, .. } = &mut command {
                        *value = vec![255; 4000];
                    }
                    group.submit(command).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("every write commits");
        }
        let sizes = sizes.lock().unwrap();
        assert!(
            sizes.len() > 1 && sizes.len() < writes as usize / 8,
            "{} entries",
            sizes.len()
        );
        // The cap plus the `Batch` wrapping.
        assert!(
            sizes.iter().all(|s| *s <= MAX_BATCH_BYTES + 64),
            "{sizes:?}"
        );
        assert_eq!(control.local().kv.len() as u64, writes);
    }
}
