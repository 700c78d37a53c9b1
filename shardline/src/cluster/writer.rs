//! The log's writer: one thread that owns every log write, so openraft's core never waits for
//! the disk.
//!
//! `append` hands the encoded entries over and returns at once (the entries are readable from
//! the recent log meanwhile); the writer commits them with an fsync and then tells openraft
//! they are persisted. On the leader that fsync runs while the same entries replicate to the
//! followers, instead of before. Whatever queued up while the disk synced (appends of the
//! next batches, the committed index, a truncation, a purge, the vote) goes into the next
//! transaction together, in the order it was sent, so N appends cost one fsync and the log
//! never has a hole. A read that the recent log cannot answer first waits for the writer
//! ([`LogWriter::barrier`]), so it sees every entry appended before it.

use std::sync::{mpsc, Arc};

use openraft::storage::LogFlushed;
use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::{
    store::{COMMITTED, LOG, META, PURGED, VOTE},
    TypeConfig,
};

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 4096;

/// What the writer could not do, as text (it is told to several waiters).
pub type WriteResult = Result<(), String>;

enum Job {
    /// Encoded entries by index; `done` is told once they are on disk.
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    /// The encoded committed log id: needs no fsync of its own.
    Committed(Vec<u8>),
    /// The encoded vote.
    Vote(Vec<u8>, oneshot::Sender<WriteResult>),
    /// Remove the entries from this index on.
    Truncate(u64, oneshot::Sender<WriteResult>),
    /// Record the purge point (encoded) and remove the entries up to the index.
    Purge(Vec<u8>, u64, oneshot::Sender<WriteResult>),
    /// Answer once everything sent before is written.
    Barrier(oneshot::Sender<WriteResult>),
}

impl Job {
    fn needs_fsync(&self) -> bool {
        !matches!(self, Job::Committed(_) | Job::Barrier(_))
    }

    fn finish(self, result: &WriteResult) {
        match self {
            Job::Append(_, done) => {
                done.log_io_completed(result.clone().map_err(std::io::Error::other));
            }
            Job::Committed(_) => {}
            Job::Vote(_, done)
            | Job::Truncate(_, done)
            | Job::Purge(_, _, done)
            | Job::Barrier(done) => {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// The handle the log store sends its writes to; the thread ends when the last handle drops.
#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::Sender<Job>,
}

impl LogWriter {
    /// Starts the writer thread over `db`.
    pub fn spawn(db: Arc<Database>) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || run(&db, &rx))?;
        Ok(Self { jobs })
    }

    fn send(&self, job: Job) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            job.finish(&Err("the raft log writer stopped".into()));
        }
    }

    /// Queues encoded entries; `done` is told when they are durable.
    pub fn append(&self, records: Vec<(u64, Vec<u8>)>, done: LogFlushed<TypeConfig>) {
        self.send(Job::Append(records, done));
    }

    /// Queues the committed log id (written with the next transaction, no fsync of its own).
    pub fn committed(&self, encoded: Vec<u8>) {
        self.send(Job::Committed(encoded));
    }

    /// Writes the vote durably, after everything queued before it.
    pub async fn vote(&self, encoded: Vec<u8>) -> WriteResult {
        self.wait(|done| Job::Vote(encoded, done)).await
    }

    /// Removes the entries from `index` on, after everything queued before.
    pub async fn truncate(&self, index: u64) -> WriteResult {
        self.wait(|done| Job::Truncate(index, done)).await
    }

    /// Records the purge point `encoded` and removes the entries up to `index`, in one
    /// transaction.
    pub async fn purge(&self, encoded: Vec<u8>, index: u64) -> WriteResult {
        self.wait(|done| Job::Purge(encoded, index, done)).await
    }

    /// Waits until everything queued before is written.
    pub async fn barrier(&self) -> WriteResult {
        self.wait(Job::Barrier).await
    }

    async fn wait(&self, job: impl FnOnce(oneshot::Sender<WriteResult>) -> Job) -> WriteResult {
        let (done, answer) = oneshot::channel();
        self.send(job(done));
        answer
            .await
            .unwrap_or_else(|_| Err("the raft log writer stopped".into()))
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let result = write(db, &jobs).map_err(|e| format!("writing the raft log: {e}"));
        for job in jobs {
            job.finish(&result);
        }
    }
}

/// Writes `jobs` in one transaction, in order; durable if any of them needs it.
fn write(db: &Database, jobs: &[Job]) -> Result<(), redb::Error> {
    if jobs.iter().all(|j| matches!(j, Job::Barrier(_))) {
        return Ok(());
    }
    let mut txn = db.begin_write()?;
    let durable = jobs.iter().any(Job::needs_fsync);
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for job in jobs {
            match job {
                Job::Append(records, _) => {
                    for (index, bytes) in records {
                        log.insert(*index, bytes.as_slice())?;
                    }
                }
                Job::Committed(bytes) => {
                    meta.insert(COMMITTED, bytes.as_slice())?;
                }
                Job::Vote(bytes, _) => {
                    meta.insert(VOTE, bytes.as_slice())?;
                }
                Job::Truncate(index, _) => {
                    log.retain_in(*index.., |_, _| false)?;
                }
                Job::Purge(bytes, index, _) => {
                    meta.insert(PURGED, bytes.as_slice())?;
                    log.retain_in(..=*index, |_, _| false)?;
                }
                Job::Barrier(_) => {}
            }
        }
    }
    txn.commit()?;
    Ok(())
}
