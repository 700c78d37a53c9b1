//! The binary encoding of raft log entries, in the store and on the wire.
//!
//! JSON of `#[serde(tag)]` commands is slow to read (each command is buffered before it is
//! decoded) and large: a tick's 10,000 placements made a ~1 MB entry that every node decoded
//! for tens of ms. Here the commands a tick or a session writes in bulk (`Place`, `Unplace`,
//! `PutState`, `DeleteState` and the `Batch` around them) are written field by field, with
//! LEB128 integers and length-prefixed strings; every other command, and membership entries,
//! are carried as their JSON (rare, small, and their JSON already round-trips every serde
//! attribute they use). The API's JSON is unchanged.
//!
//! A record starts with [`FORMAT`]. A store written before this encoding holds JSON entries,
//! which start with `{`: those are still read ([`decode_entry`]). Anything else is refused
//! with an error naming the byte, never guessed at.

pub mod image;

use openraft::{raft::AppendEntriesRequest, CommittedLeaderId, Entry, EntryPayload, LogId};

use super::TypeConfig;
use crate::{
    config::ServiceName,
    state::{Command, SessionRef},
};

/// The first byte of a binary record (version 1). JSON records start with `{` (0x7b).
pub const FORMAT: u8 = 0xb1;

/// Why a record did not decode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is shorter than its fields say.
    #[error("the record ends early (at byte {at})")]
    Truncated {
        /// Where it ended.
        at: usize,
    },
    /// The record's first byte is neither [`FORMAT`] nor a JSON record's `{`.
    #[error("unknown record format {byte:#04x} (written by another shardline version?)")]
    Format {
        /// The byte.
        byte: u8,
    },
    /// A tag names no payload or command.
    #[error("unknown {what} tag {tag} at byte {at}")]
    Tag {
        /// A payload or a command.
        what: &'static str,
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// A string is not UTF-8, an integer overflows, or bytes are left over.
    #[error("malformed record at byte {at}: {problem}")]
    Malformed {
        /// Where.
        at: usize,
        /// What.
        problem: &'static str,
    },
    /// A JSON part (a cold command, a membership, an old-format entry) did not decode.
    #[error("JSON part: {0}")]
    Json(#[from] serde_json::Error),
}

const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

const JSON: u8 = 0;
const PLACE: u8 = 1;
const UNPLACE: u8 = 2;
const PUT_STATE: u8 = 3;
const DELETE_STATE: u8 = 4;
const BATCH: u8 = 5;

/// Batches nest at most this deep, so a hostile record cannot recurse the decoder off the
/// stack. Applying refuses any nested batch, but the log may still carry one a client sent;
/// JSON's own recursion limit (128 levels, 2 a batch) keeps what the API takes below this.
const MAX_DEPTH: usize = 64;

/// `entry` as one record.
pub fn encode_entry(entry: &Entry<TypeConfig>) -> Vec<u8> {
    let mut out = vec![FORMAT];
    put_entry(&mut out, entry);
    out
}

/// A record as [`encode_entry`] wrote it, or an entry of the old JSON format.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, CodecError> {
    match bytes.first() {
        Some(&FORMAT) => {
            let mut r = Reader::new(bytes, 1);
            let entry = r.entry()?;
            r.end()?;
            Ok(entry)
        }
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(&byte) => Err(CodecError::Format { byte }),
        None => Err(CodecError::Truncated { at: 0 }),
    }
}

/// `entries` one after the other, after their count (a message's body part).
pub fn put_entries(out: &mut Vec<u8>, entries: &[Entry<TypeConfig>]) {
    put_uint(out, entries.len() as u64);
    for entry in entries {
        put_entry(out, entry);
    }
}

fn put_entry(out: &mut Vec<u8>, entry: &Entry<TypeConfig>) {
    put_log_id(out, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => out.push(BLANK),
        EntryPayload::Normal(command) => {
            out.push(NORMAL);
            put_command(out, command);
        }
        EntryPayload::Membership(m) => {
            out.push(MEMBERSHIP);
            put_bytes(
                out,
                &serde_json::to_vec(m).expect("a membership serializes"),
            );
        }
    }
}

/// A log id: term, leader node and index.
pub fn put_log_id(out: &mut Vec<u8>, id: &LogId<u64>) {
    put_uint(out, id.leader_id.term);
    put_uint(out, id.leader_id.node_id);
    put_uint(out, id.index);
}

fn put_command(out: &mut Vec<u8>, command: &Command) {
    match command {
        Command::Place { session, backends } => {
            out.push(PLACE);
            put_session(out, session);
            put_uint(out, backends.len() as u64);
            for b in backends {
                put_uint(out, u64::from(*b));
            }
        }
        Command::Unplace { session } => {
            out.push(UNPLACE);
            put_session(out, session);
        }
        Command::PutState {
            session,
            key,
            value,
        } => {
            out.push(PUT_STATE);
            put_session(out, session);
            put_bytes(out, key.as_bytes());
            put_bytes(out, value);
        }
        Command::DeleteState { session, key } => {
            out.push(DELETE_STATE);
            put_session(out, session);
            put_bytes(out, key.as_bytes());
        }
        Command::Batch { commands } => {
            out.push(BATCH);
            put_uint(out, commands.len() as u64);
            for c in commands.iter() {
                put_command(out, c);
            }
        }
        other => {
            out.push(JSON);
            put_bytes(
                out,
                &serde_json::to_vec(other).expect("a command serializes"),
            );
        }
    }
}

fn put_session(out: &mut Vec<u8>, session: &SessionRef) {
    put_bytes(out, session.service.as_bytes());
    put_uint(out, session.session);
}

/// LEB128.
fn put_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads a record front to back.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The service name read last: a tick's placements all name one service, which is then
    /// shared rather than allocated and looked up in the interner per command.
    service: Option<ServiceName>,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from `at`.
    pub fn new(bytes: &'a [u8], at: usize) -> Self {
        Self {
            bytes,
            at,
            service: None,
        }
    }

    /// Fails unless every byte was read.
    pub fn end(&self) -> Result<(), CodecError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.malformed("bytes left over after the record"))
        }
    }

    fn malformed(&self, problem: &'static str) -> CodecError {
        CodecError::Malformed {
            at: self.at,
            problem,
        }
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(CodecError::Truncated { at: self.at })?;
        self.at += 1;
        Ok(b)
    }

    fn uint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.malformed("an integer overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.malformed("an integer overflows 64 bits"))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let v = self.uint()?;
        u32::try_from(v).map_err(|_| self.malformed("a backend id overflows 32 bits"))
    }

    /// A length that must fit in what is left (each element takes at least one byte), so a
    /// forged count cannot make the decoder allocate more than the record's size.
    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.uint()?;
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(CodecError::Truncated {
                at: self.bytes.len(),
            });
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let at = self.at;
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Malformed {
            at,
            problem: "a string is not UTF-8",
        })
    }

    /// Entries as [`put_entries`] wrote them.
    pub fn entries(&mut self) -> Result<Vec<Entry<TypeConfig>>, CodecError> {
        let n = self.len()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.entry()?);
        }
        Ok(out)
    }

    fn entry(&mut self) -> Result<Entry<TypeConfig>, CodecError> {
        let log_id = self.log_id()?;
        let at = self.at;
        let payload = match self.byte()? {
            BLANK => EntryPayload::Blank,
            NORMAL => EntryPayload::Normal(self.command(0)?),
            MEMBERSHIP => EntryPayload::Membership(serde_json::from_slice(self.bytes()?)?),
            tag => {
                return Err(CodecError::Tag {
                    what: "payload",
                    tag,
                    at,
                })
            }
        };
        Ok(Entry { log_id, payload })
    }

    /// A log id as [`put_log_id`] wrote it.
    pub fn log_id(&mut self) -> Result<LogId<u64>, CodecError> {
        let term = self.uint()?;
        let node = self.uint()?;
        let index = self.uint()?;
        Ok(LogId::new(CommittedLeaderId::new(term, node), index))
    }

    fn session(&mut self) -> Result<SessionRef, CodecError> {
        let at = self.at;
        let name = self.bytes()?;
        let service = match &self.service {
            Some(last) if last.as_bytes() == name => last.clone(),
            _ => {
                let text = std::str::from_utf8(name).map_err(|_| CodecError::Malformed {
                    at,
                    problem: "a string is not UTF-8",
                })?;
                let service = ServiceName::new(text);
                self.service = Some(service.clone());
                service
            }
        };
        Ok(SessionRef {
            service,
            session: self.uint()?,
        })
    }

    fn command(&mut self, depth: usize) -> Result<Command, CodecError> {
        let at = self.at;
        Ok(match self.byte()? {
            PLACE => {
                let session = self.session()?;
                let n = self.len()?;
                let mut backends = Vec::with_capacity(n);
                for _ in 0..n {
                    backends.push(self.u32()?);
                }
                Command::Place { session, backends }
            }
            UNPLACE => Command::Unplace {
                session: self.session()?,
            },
            PUT_STATE => Command::PutState {
                session: self.session()?,
                key: self.string()?,
                value: self.bytes()?.to_vec(),
            },
            DELETE_STATE => Command::DeleteState {
                session: self.session()?,
                key: self.string()?,
            },
            BATCH if depth < MAX_DEPTH => {
                let n = self.len()?;
                let mut commands = Vec::with_capacity(n);
                for _ in 0..n {
                    commands.push(self.command(depth + 1)?);
                }
                Command::batch(commands)
            }
            BATCH => return Err(self.malformed("batches nested too deep")),
            JSON => serde_json::from_slice(self.bytes()?)?,
            tag => {
                return Err(CodecError::Tag {
                    what: "command",
                    tag,
                    at,
                })
            }
        })
    }
}

/// The parts of an AppendEntries request besides its entries (small: carried as JSON).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendHead {
    vote: openraft::Vote<u64>,
    prev_log_id: Option<LogId<u64>>,
    leader_commit: Option<LogId<u64>>,
}

/// An AppendEntries request as a binary body: [`FORMAT`], the JSON head, the entries.
pub fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Vec<u8> {
    let head = AppendHead {
        vote: req.vote,
        prev_log_id: req.prev_log_id,
        leader_commit: req.leader_commit,
    };
    let mut out = vec![FORMAT];
    put_bytes(
        &mut out,
        &serde_json::to_vec(&head).expect("a request head serializes"),
    );
    put_entries(&mut out, &req.entries);
    out
}

/// A body [`encode_append`] wrote.
pub fn decode_append(bytes: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    match bytes.first() {
        Some(&FORMAT) => {}
        Some(&byte) => return Err(CodecError::Format { byte }),
        None => return Err(CodecError::Truncated { at: 0 }),
    }
    let mut r = Reader::new(bytes, 1);
    let head: AppendHead = serde_json::from_slice(r.bytes()?)?;
    let entries = r.entries()?;
    r.end()?;
    Ok(AppendEntriesRequest {
        vote: head.vote,
        prev_log_id: head.prev_log_id,
        leader_commit: head.leader_commit,
        entries,
    })
}

#[cfg(test)]
mod tests;
