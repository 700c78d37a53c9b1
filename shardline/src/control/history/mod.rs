//! The history store: every session's load series, kept in an embedded database (redb) so the
//! forecasters start warm after a restart, bounded by downsampling tiers.
//!
//! - [`downsample`]: tiers and their buckets (pure).
//!
//! Layout: one table per tier, keyed `(bucket start ms, service, session)` → mean load. Time
//! leads the key so pruning a tier is one range delete at its front, and a restart reads the
//! finest tier in one pass. A `meta` table records the format version.
//!
//! A file that is not a history store, is truncated, or has another format is reported as
//! [`HistoryError::Corrupt`], naming the file and the cause; with [`OnCorrupt::Recover`] the
//! daemon moves it aside (`<file>.corrupt`) and starts empty with a warning. Opening never
//! panics: a panic inside the database library is caught and reported as corruption.

pub mod downsample;

use std::{
    collections::{BTreeMap, HashMap},
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use thiserror::Error;

pub use downsample::{default_tiers, Bucket, Tier};

use crate::config::SessionRef;

/// Version of the on-disk layout; a file with another version is refused as corrupt.
pub const FORMAT: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TIER_NAMES: [&str; 4] = ["tier0", "tier1", "tier2", "tier3"];

pub use crate::config::control::{OnCorrupt, MAX_TIERS};
const _: () = assert!(TIER_NAMES.len() == MAX_TIERS, "one table name per tier");

type SeriesTable = TableDefinition<'static, (u64, &'static str, u64), f64>;

fn tier_table(i: usize) -> SeriesTable {
    TableDefinition::new(TIER_NAMES[i])
}

/// Errors of the history store.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The file exists but is not a readable history store.
    #[error("history file {path} is corrupt or truncated ({cause}); move it away or set `control.history_on_corrupt = \"recover\"` to start empty")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the database said.
        cause: String,
    },
    /// Moving a corrupt file aside failed.
    #[error("cannot move corrupt history file {path} aside: {source}")]
    MoveAside {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Too many or empty tiers.
    #[error("history tiers: {0}")]
    Tiers(String),
    /// A read or write of an open store failed.
    #[error("history store {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the database said.
        cause: String,
    },
}

/// An open history store.
pub struct History {
    db: Database,
    path: PathBuf,
    tiers: Vec<Tier>,
    open: HashMap<SessionRef, Vec<Bucket>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("path", &self.path)
            .field("tiers", &self.tiers)
            .finish()
    }
}

impl History {
    /// Opens (or creates) the store at `path`. A corrupt file is moved aside and replaced by
    /// an empty store when `on_corrupt` says so: the second value is then the warning to log.
    pub fn open(
        path: &Path,
        tiers: Vec<Tier>,
        on_corrupt: OnCorrupt,
    ) -> Result<(Self, Option<String>), HistoryError> {
        if tiers.is_empty() || tiers.len() > MAX_TIERS {
            return Err(HistoryError::Tiers(format!(
                "need 1 to {MAX_TIERS} tiers, got {}",
                tiers.len()
            )));
        }
        match open_db(path) {
            Ok(db) => Ok((Self::with(db, path, tiers), None)),
            Err(cause) if on_corrupt == OnCorrupt::Recover => {
                let aside = path.with_extension("corrupt");
                std::fs::rename(path, &aside).map_err(|source| HistoryError::MoveAside {
                    path: path.to_owned(),
                    source,
                })?;
                let warning = format!(
                    "history file {} is corrupt or truncated ({cause}); moved it to {} and starting with an empty history",
                    path.display(),
                    aside.display()
                );
                let db = open_db(path).map_err(|cause| HistoryError::Corrupt {
                    path: path.to_owned(),
                    cause,
                })?;
                Ok((Self::with(db, path, tiers), Some(warning)))
            }
            Err(cause) => Err(HistoryError::Corrupt {
                path: path.to_owned(),
                cause,
            }),
        }
    }

    fn with(db: Database, path: &Path, tiers: Vec<Tier>) -> Self {
        Self {
            db,
            path: path.to_owned(),
            tiers,
            open: HashMap::new(),
        }
    }

    fn io(&self) -> impl Fn(redb::Error) -> HistoryError + '_ {
        |e| HistoryError::Io {
            path: self.path.clone(),
            cause: e.to_string(),
        }
    }

    /// Records one tick's samples taken at `at_ms` (one transaction): each tier's bucket that
    /// closes is written, and buckets older than their tier keeps are deleted.
    pub fn record(
        &mut self,
        at_ms: u64,
        samples: &[(SessionRef, f64)],
    ) -> Result<(), HistoryError> {
        let mut closed: Vec<(usize, u64, &SessionRef, f64)> = Vec::new();
        for (session, value) in samples {
            if !value.is_finite() {
                continue;
            }
            let buckets = self
                .open
                .entry(session.clone())
                .or_insert_with(|| vec![Bucket::default(); self.tiers.len()]);
            for (i, (bucket, tier)) in buckets.iter_mut().zip(&self.tiers).enumerate() {
                if let Some((start, mean)) = bucket.push(tier, at_ms, *value) {
                    closed.push((i, start, session, mean));
                }
            }
        }
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            for (i, tier) in self.tiers.iter().enumerate() {
                let mut table = txn.open_table(tier_table(i))?;
                for (_, start, session, mean) in closed.iter().filter(|c| c.0 == i) {
                    table.insert((*start, session.service.as_str(), session.session), *mean)?;
                }
                let cutoff = tier.cutoff(at_ms);
                table.retain_in(..(cutoff, "", 0u64), |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })();
        result.map_err(self.io())
    }

    /// Every session's series in tier `tier`, oldest first (a restart warms its forecasters
    /// with tier 0).
    pub fn load(&self, tier: usize) -> Result<BTreeMap<SessionRef, Vec<(u64, f64)>>, HistoryError> {
        let mut out: BTreeMap<SessionRef, Vec<(u64, f64)>> = BTreeMap::new();
        if tier >= self.tiers.len() {
            return Ok(out);
        }
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_read()?;
            let table = match txn.open_table(tier_table(tier)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (at, service, session) = k.value();
                out.entry(SessionRef {
                    service: service.into(),
                    session,
                })
                .or_default()
                .push((at, v.value()));
            }
            Ok(())
        })();
        result.map_err(self.io())?;
        Ok(out)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens or creates the database and checks its format, turning every failure (and a panic
/// inside redb) into a message.
fn open_db(path: &Path) -> Result<Database, String> {
    let opened = catch_unwind(AssertUnwindSafe(|| -> Result<Database, String> {
        let exists = path.metadata().map(|m| m.len() > 0).unwrap_or(false);
        let db = Database::create(path).map_err(|e| e.to_string())?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
            let format = meta
                .get("format")
                .map_err(|e| e.to_string())?
                .map(|v| v.value());
            match format {
                Some(FORMAT) => {}
                Some(other) => return Err(format!("format version {other}, expected {FORMAT}")),
                None if exists => return Err("no format version: not a shardline history".into()),
                None => {
                    meta.insert("format", FORMAT).map_err(|e| e.to_string())?;
                }
            }
        }
        // Tables of the wrong types are corruption too: open each one now.
        for i in 0..MAX_TIERS {
            txn.open_table(tier_table(i)).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())?;
        Ok(db)
    }));
    opened.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the database library panicked".into());
        Err(what)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shardline-history-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("history.redb")
    }

    fn s(n: u64) -> SessionRef {
        SessionRef {
            service: "kv".into(),
            session: n,
        }
    }

    fn tiers() -> Vec<Tier> {
        vec![
            Tier {
                step: Duration::from_secs(1),
                keep: Duration::from_secs(60),
            },
            Tier {
                step: Duration::from_secs(10),
                keep: Duration::from_secs(600),
            },
        ]
    }

    #[test]
    fn series_survive_a_reopen_and_old_buckets_are_pruned() {
        let path = temp("reopen");
        {
            let (mut h, warning) = History::open(&path, tiers(), OnCorrupt::Refuse).unwrap();
            assert!(warning.is_none());
            for sec in 0..120u64 {
                h.record(sec * 1000, &[(s(1), sec as f64), (s(2), 5.0)])
                    .unwrap();
            }
        }
        let (h, _) = History::open(&path, tiers(), OnCorrupt::Refuse).unwrap();
        let fine = h.load(0).unwrap();
        let one = &fine[&s(1)];
        // Kept: the last 60 s (closed buckets up to 118 s).
        assert_eq!(one.first().unwrap().0, 59_000);
        assert_eq!(one.last(), Some(&(118_000, 118.0)));
        let coarse = h.load(1).unwrap();
        assert_eq!(coarse[&s(1)][0], (0, 4.5));
        assert_eq!(coarse[&s(2)].len(), 11);
    }

    #[test]
    fn garbage_and_truncated_files_are_reported_or_recovered() {
        let path = temp("garbage");
        std::fs::write(
            &path,
            b"this is not a database, just some bytes\n".repeat(100),
        )
        .unwrap();
        let err = History::open(&path, tiers(), OnCorrupt::Refuse).unwrap_err();
        assert!(matches!(err, HistoryError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("history.redb"), "{err}");
        let (h, warning) = History::open(&path, tiers(), OnCorrupt::Recover).unwrap();
        assert!(warning.unwrap().contains("starting with an empty history"));
        assert!(h.load(0).unwrap().is_empty());
        assert!(path.with_extension("corrupt").exists());
        drop(h);

        // A real store cut in half.
        let path = temp("truncated");
        {
            let (mut h, _) = History::open(&path, tiers(), OnCorrupt::Refuse).unwrap();
            for sec in 0..30u64 {
                h.record(sec * 1000, &[(s(1), 1.0)]).unwrap();
            }
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        match History::open(&path, tiers(), OnCorrupt::Refuse) {
            Err(HistoryError::Corrupt { .. }) => {}
            // redb may repair a cut file from its last commit; then the data it kept is sane.
            Ok((h, _)) => {
                let _ = h.load(0).unwrap();
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn tiers_are_bounded() {
        let path = temp("tiers");
        let err = History::open(&path, Vec::new(), OnCorrupt::Recover).unwrap_err();
        assert!(matches!(err, HistoryError::Tiers(_)));
    }
}
