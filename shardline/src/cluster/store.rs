//! The Raft log, vote and snapshots in one redb file, and the state machine over
//! [`ControlState`].
//!
//! Every log write and vote is committed with redb's immediate durability (fsync) before
//! openraft is told it is persisted. The log's writes go through one writer thread
//! ([`super::writer`]): an append returns as soon as its entries are readable, and openraft
//! hears they are persisted when the fsync is done, so the leader's own fsync overlaps the
//! replication of the same entries, and appends that queue up meanwhile share the next fsync.
//! The state machine lives in memory and is rebuilt at start from the last snapshot plus the
//! committed log entries after it. A snapshot is stored as the compact image of
//! [`super::codec::image`] (a few bytes a session, where the JSON it replaced took ~95), built
//! off the runtime from a state apply has already moved past. The committed index is stored
//! too, so a restarted node serves its state before hearing from a leader, but without an
//! fsync of its own: it reaches the disk with the next log write, and one that is a little old
//! only means a restarted node applies fewer entries until the leader tells it more (openraft
//! treats it as optional). Each applied batch is published on a `watch` channel for the
//! dataplane applier. A large entry is applied ahead, while it replicates, and the state
//! machine takes that result at its commit ([`super::ahead`]).

use std::{
    fmt::{Debug, Display},
    io::Cursor,
    ops::RangeBounds,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use openraft::{
    storage::{LogFlushed, RaftLogStorage, RaftStateMachine},
    AnyError, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    ahead::{blocking, entry_commands, Ahead, BLOCKING_COMMANDS},
    codec::{
        decode_entry, encode_entry,
        image::{check_image, decode_image, encode_image},
    },
    recent::RecentLog,
    writer::LogWriter,
    NodeId, TypeConfig,
};
use crate::state::{ControlState, Response};

pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(super) const VOTE: &str = "vote";
pub(super) const COMMITTED: &str = "committed";
pub(super) const PURGED: &str = "last_purged";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

/// The file under the data directory.
pub const FILE: &str = "raft.redb";

/// Bytes of pages redb keeps in memory (its default is 1 GiB; see `open`).
const STORE_CACHE_BYTES: usize = 16 << 20;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the raft data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// redb refused the file (truncated, not a redb file, locked by another daemon, …).
    #[error("cannot open the raft store {path}: {problem}; if it is damaged, move it away and the node rejoins from its peers (a cluster of one starts from its config file)")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's explanation.
        problem: String,
    },
    /// The file opened but a record in it does not decode.
    #[error("the raft store {path} is corrupt: {record}: {problem}; move it away and the node rejoins from its peers (a cluster of one starts from its config file)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which record.
        record: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn any(e: impl Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("raft records serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Opens (creating if needed) the store in `data_dir` and checks every record decodes, so a
/// damaged file is reported here, by name, rather than deep inside openraft.
pub fn open(data_dir: &Path) -> Result<Arc<Database>, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Dir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(FILE);
    let open_err = |e: &dyn Display| StoreError::Open {
        path: path.clone(),
        problem: e.to_string(),
    };
    // redb can panic on some malformed headers; a daemon must not, so a panic is an error too.
    // redb caches up to 1 GiB of pages by default, which a daemon's RSS then carries: the log
    // and each snapshot (the whole state) pass through it. The log is read back only on
    // start-up and by a lagging follower, so a small cache costs little.
    let db = std::panic::catch_unwind(|| {
        Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(&path)
    })
    .map_err(|_| open_err(&"redb could not parse the file"))?
    .map_err(|e| open_err(&e))?;
    let corrupt = |record: &str, problem: &dyn Display| StoreError::Corrupt {
        path: path.clone(),
        record: record.to_owned(),
        problem: problem.to_string(),
    };
    let txn = db.begin_write().map_err(|e| open_err(&e))?;
    txn.open_table(LOG).map_err(|e| open_err(&e))?;
    txn.open_table(META).map_err(|e| open_err(&e))?;
    txn.commit().map_err(|e| open_err(&e))?;
    let read = db.begin_read().map_err(|e| open_err(&e))?;
    let meta = read.open_table(META).map_err(|e| open_err(&e))?;
    for key in [VOTE, COMMITTED, PURGED, SNAPSHOT_META] {
        if let Some(v) = meta.get(key).map_err(|e| corrupt(key, &e))? {
            decode::<serde_json::Value>(v.value()).map_err(|e| corrupt(key, &e))?;
        }
    }
    if let Some(v) = meta
        .get(SNAPSHOT_DATA)
        .map_err(|e| corrupt(SNAPSHOT_DATA, &e))?
    {
        check_image(v.value()).map_err(|e| corrupt(SNAPSHOT_DATA, &e))?;
    }
    let log = read.open_table(LOG).map_err(|e| open_err(&e))?;
    let mut expected = None;
    for item in log.iter().map_err(|e| corrupt("log", &e))? {
        let (k, v) = item.map_err(|e| corrupt("log", &e))?;
        let index = k.value();
        let entry: Entry<TypeConfig> =
            decode_entry(v.value()).map_err(|e| corrupt(&format!("log entry {index}"), &e))?;
        if entry.log_id.index != index || expected.is_some_and(|e| e != index) {
            return Err(corrupt(
                &format!("log entry {index}"),
                &format!(
                    "holds index {} (a hole or a mislabelled entry)",
                    entry.log_id.index
                ),
            ));
        }
        expected = Some(index + 1);
    }
    drop((log, meta, read));
    Ok(Arc::new(db))
}

fn get_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, AnyError> {
    let read = db.begin_read().map_err(any)?;
    let table = read.open_table(META).map_err(any)?;
    let Some(v) = table.get(key).map_err(any)? else {
        return Ok(None);
    };
    decode(v.value()).map(Some).map_err(any)
}

fn put_meta(db: &Database, pairs: &[(&str, &[u8])]) -> Result<(), AnyError> {
    let txn = db.begin_write().map_err(any)?;
    {
        let mut table = txn.open_table(META).map_err(any)?;
        for (k, v) in pairs {
            table.insert(*k, *v).map_err(any)?;
        }
    }
    txn.commit().map_err(any)
}

/// The log and the vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Every write goes through it, in order, off the runtime.
    writer: LogWriter,
    /// The newest entries, decoded: read back without decoding them again, and readable
    /// before the writer made them durable.
    recent: Arc<Mutex<RecentLog>>,
    /// Where a large entry appended is applied ahead of its commit (the state machine's).
    ahead: Ahead,
}

impl LogStore {
    /// Over an opened store; starts its writer thread. Large entries appended are applied
    /// ahead through `ahead` ([`StateMachine::ahead`]).
    pub fn new(db: Arc<Database>, ahead: Ahead) -> std::io::Result<Self> {
        Ok(Self {
            writer: LogWriter::spawn(db.clone())?,
            db,
            recent: Arc::default(),
            ahead,
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentLog> {
        self.recent.lock().expect("recent log lock")
    }

    /// Waits until every write queued so far is in the file.
    async fn settled(&self) -> Result<(), AnyError> {
        self.writer.barrier().await.map_err(any)
    }

    fn last_entry(&self) -> Result<Option<LogId<NodeId>>, AnyError> {
        let read = self.db.begin_read().map_err(any)?;
        let table = read.open_table(LOG).map_err(any)?;
        let Some((_, v)) = table.last().map_err(any)? else {
            return Ok(None);
        };
        let entry = decode_entry(v.value()).map_err(any)?;
        Ok(Some(entry.log_id))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        if let Some(entries) = self.recent().get(bounds.0, bounds.1) {
            return Ok(entries);
        }
        self.settled().await.map_err(StorageIOError::read_logs)?;
        let read = self
            .db
            .begin_read()
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let table = read
            .open_table(LOG)
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>(bounds)
            .map_err(|e| StorageIOError::read_logs(any(e)))?
        {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(any(e)))?;
            let entry = decode_entry(v.value())
                .map_err(|e| StorageIOError::read_log_at_index(k.value(), any(e)))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        self.settled().await.map_err(StorageIOError::read_logs)?;
        let purged: Option<LogId<NodeId>> =
            get_meta(&self.db, PURGED).map_err(StorageIOError::read_logs)?;
        let last = self.last_entry().map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.writer
            .vote(encode(vote))
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.settled().await.map_err(StorageIOError::read_vote)?;
        Ok(get_meta(&self.db, VOTE).map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // No fsync of its own: see the module header.
        self.writer.committed(encode(&committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.settled().await.map_err(StorageIOError::read_logs)?;
        Ok(get_meta::<Option<LogId<NodeId>>>(&self.db, COMMITTED)
            .map_err(StorageIOError::read_logs)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Readable (from the recent log) when this returns, durable when the writer says so.
        let mut records = Vec::new();
        let mut recent = self.recent();
        for entry in entries {
            records.push((entry.log_id.index, encode_entry(&entry)));
            self.ahead.start(&entry);
            recent.push(entry);
        }
        drop(recent);
        self.writer.append(records, callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.recent().truncate(log_id.index);
        self.writer
            .truncate(log_id.index)
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.recent().purge(log_id.index);
        // The purge point and the removal in one transaction.
        self.writer
            .purge(encode(&log_id), log_id.index)
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }
}

/// The state machine: the control state, the last applied log id and membership.
pub struct StateMachine {
    db: Arc<Database>,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    state: Arc<ControlState>,
    publish: watch::Sender<Arc<ControlState>>,
    snapshots: u64,
    /// Told where the state machine stands after each change; holds an entry applied ahead.
    ahead: Ahead,
}

/// A stored snapshot: its metadata and the serialized state.
type StoredSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
}

impl StateMachine {
    /// Restores the last snapshot (if any) from an opened store.
    pub fn new(db: Arc<Database>) -> Result<Self, AnyError> {
        let mut sm = Self {
            db,
            applied: None,
            membership: StoredMembership::default(),
            state: Arc::new(ControlState::default()),
            publish: watch::channel(Arc::new(ControlState::default())).0,
            snapshots: 0,
            ahead: Ahead::default(),
        };
        if let Some((meta, data)) = sm.stored_snapshot()? {
            sm.applied = meta.last_log_id;
            sm.membership = meta.last_membership;
            sm.state = Arc::new(decode_image(&data).map_err(any)?);
            sm.publish.send_replace(sm.state.clone());
        }
        sm.ahead.settled(sm.applied, sm.state.clone());
        Ok(sm)
    }

    /// Where the log store applies large entries ahead for this state machine.
    pub fn ahead(&self) -> Ahead {
        self.ahead.clone()
    }

    /// The channel every applied state is published on.
    pub fn publisher(&self) -> watch::Sender<Arc<ControlState>> {
        self.publish.clone()
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, AnyError> {
        let Some(record) = get_meta::<SnapshotRecord>(&self.db, SNAPSHOT_META)? else {
            return Ok(None);
        };
        let read = self.db.begin_read().map_err(any)?;
        let table = read.open_table(META).map_err(any)?;
        let data = table
            .get(SNAPSHOT_DATA)
            .map_err(any)?
            .ok_or_else(|| AnyError::error("snapshot metadata without data"))?
            .value()
            .to_vec();
        Ok(Some((record.meta, data)))
    }
}

fn save_snapshot(
    db: &Database,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), AnyError> {
    let record = encode(&SnapshotRecord { meta: meta.clone() });
    put_meta(db, &[(SNAPSHOT_META, &record), (SNAPSHOT_DATA, data)])
}

/// Builds a snapshot of the state as it was when the builder was made.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    state: Arc<ControlState>,
    id: String,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.id.clone(),
        };
        // Encoding a million sessions and the fsync take a while: off the runtime, whose
        // worker meanwhile applies entries and answers the peers.
        let (db, state, record) = (self.db.clone(), self.state.clone(), meta.clone());
        let data = tokio::task::spawn_blocking(move || {
            let data = encode_image(&state);
            drop(state);
            save_snapshot(&db, &record, &data).map(|()| data)
        })
        .await
        .map_err(|e| any(format!("building the snapshot: {e}")))
        .and_then(|saved| saved)
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<Result<Response, crate::state::StateError>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut entries: Vec<_> = entries.into_iter().collect();
        let mut out = Vec::with_capacity(entries.len());
        // The first entry may have been applied ahead ([`super::ahead`]) from exactly where
        // this stands; its journal started here, so the entries after it extend it.
        let mut journal = true;
        let ahead = entries
            .first()
            .and_then(|e| self.ahead.take(e.log_id, self.applied, &self.state));
        if let Some(rx) = ahead {
            // No result (the thread failed): applied below as usual.
            if let Ok((state, response)) = rx.await {
                let entry = entries.remove(0);
                self.state = Arc::new(state);
                self.applied = Some(entry.log_id);
                out.push(response);
                journal = false;
            }
        }
        // A tick's entry (10,000 placements) takes tens of ms to apply: this worker hands its
        // other tasks (the raft peers' messages, the API) to another meanwhile.
        let commands: usize = entries.iter().map(|e| entry_commands(&e.payload)).sum();
        if commands >= BLOCKING_COMMANDS {
            blocking(|| self.apply_entries(entries, journal, &mut out));
        } else if !entries.is_empty() {
            self.apply_entries(entries, journal, &mut out);
        }
        self.publish.send_replace(self.state.clone());
        self.ahead.settled(self.applied, self.state.clone());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            state: self.state.clone(),
            id: format!("{}-{}", self.applied.map_or(0, |l| l.index), self.snapshots),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state = decode_image(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        save_snapshot(&self.db, meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state = Arc::new(state);
        self.publish.send_replace(self.state.clone());
        self.ahead.settled(self.applied, self.state.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .stored_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl StateMachine {
    /// Applies `entries` in order, their responses pushed to `out`; starts the journal unless
    /// told the state's journal already covers the entries applied in this call.
    fn apply_entries(
        &mut self,
        entries: Vec<Entry<TypeConfig>>,
        journal: bool,
        out: &mut Vec<Result<Response, crate::state::StateError>>,
    ) {
        let state = Arc::make_mut(&mut self.state);
        // The applier writes the sessions these entries re-place from the journal.
        if journal {
            state.start_journal();
        }
        for entry in entries {
            self.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Ok(unchanged(state)),
                EntryPayload::Normal(command) => state.apply(&command),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(unchanged(state))
                }
            };
            out.push(response);
        }
    }
}

fn unchanged(state: &ControlState) -> Response {
    Response {
        generation: state.generation,
        placement: None,
        each: Vec::new(),
    }
}
