//! The fronts' epoch (`FRONT_EPOCH`, `BPF_F_MMAPABLE`) mapped into this process: after every
//! update or delete of `SERVICES` or `SESSIONS`, and before that write counts as done, the
//! writer bumps it with one atomic add, which retires every entry the dataplane's per-CPU
//! fronts filled before (`shardline_common::front` explains why that keeps them exact).

use std::{
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use memmap2::{MmapMut, MmapOptions};

/// Errors mapping the epoch.
#[derive(Debug, thiserror::Error)]
pub enum FrontEpochError {
    /// The pinned map could not be opened.
    #[error("cannot open the pinned FRONT_EPOCH map at {path}: {source} (load the program first)")]
    Open {
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// The map could not be mapped.
    #[error("cannot mmap the FRONT_EPOCH map at {path}: {source}")]
    Mmap {
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The epoch word, mapped read-write.
pub struct FrontEpoch {
    mmap: MmapMut,
    _map: MapData,
}

impl FrontEpoch {
    /// Maps the `FRONT_EPOCH` array pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, FrontEpochError> {
        let path = pin_dir.join("FRONT_EPOCH");
        let map = MapData::from_pin(&path).map_err(|source| FrontEpochError::Open {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the kernel owns this page for the map's lifetime; we keep the map's fd with
        // the mapping and touch the word only through an atomic.
        let mmap = unsafe {
            MmapOptions::new()
                .len(4096)
                .map_mut(map.fd().as_fd().as_raw_fd())
        }
        .map_err(|source| FrontEpochError::Mmap { path, source })?;
        Ok(Self { mmap, _map: map })
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: element 0 of the array, 8-byte aligned at the start of the page.
        unsafe { &*(self.mmap.as_ptr() as *const AtomicU64) }
    }

    /// Retires every front entry filled so far. Call after each `SERVICES` / `SESSIONS` write
    /// returns; the write is done when this returns.
    pub fn bump(&self) {
        self.word().fetch_add(1, Ordering::SeqCst);
    }

    /// The epoch now.
    pub fn get(&self) -> u64 {
        self.word().load(Ordering::SeqCst)
    }
}
