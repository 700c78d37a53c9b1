//! The default Maglev table's double buffer (`MAGLEV`, `BPF_F_MMAPABLE`) mapped into this
//! process with memmap2: a half is filled with plain stores (≈ 0.1 ms for 65,537 slots) instead
//! of 65,537 update syscalls, then published by one globals write.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::atomic::{fence, Ordering},
};

use aya::maps::MapData;
use memmap2::{MmapMut, MmapOptions};
use shardline_common::{
    consts::{MAGLEV_ENTRIES, MAGLEV_SIZE, NO_BACKEND},
    maps::maglev_index,
};

/// Errors mapping the table.
#[derive(Debug, thiserror::Error)]
pub enum MaglevTableError {
    /// The pinned map could not be opened.
    #[error("cannot open the pinned MAGLEV map at {path}: {source}")]
    Open {
        /// The pin path.
        path: String,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// The map could not be mapped (an older daemon pinned it without `BPF_F_MMAPABLE`?).
    #[error("cannot mmap the MAGLEV map at {path}: {source} (if an older shardline pinned it, `shardline detach` and restart)")]
    Mmap {
        /// The pin path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Bytes per array element: the kernel rounds an array's value size up to 8.
const STRIDE: usize = 8;

/// Both halves of the Maglev table, mapped read-write.
pub struct MaglevTable {
    mmap: MmapMut,
    _map: MapData,
}

impl MaglevTable {
    /// Maps the `MAGLEV` array pinned at `path`.
    pub fn open(path: &Path) -> Result<Self, MaglevTableError> {
        let name = path.display().to_string();
        let map = MapData::from_pin(path).map_err(|source| MaglevTableError::Open {
            path: name.clone(),
            source,
        })?;
        let len = (MAGLEV_ENTRIES as usize * STRIDE).div_ceil(4096) * 4096;
        // SAFETY: the kernel owns this memory for the map's lifetime; we keep the map's fd
        // open with the mapping and access it only through volatile stores and loads.
        let mmap = unsafe {
            MmapOptions::new()
                .len(len)
                .map_mut(map.fd().as_fd().as_raw_fd())
        }
        .map_err(|source| MaglevTableError::Mmap { path: name, source })?;
        Ok(Self { mmap, _map: map })
    }

    /// Where slot `slot` of half `half` lives; `None` past a half's end.
    fn slot_ptr(&self, half: u32, slot: u32) -> Option<*const u32> {
        let index = maglev_index(half, slot)? as usize;
        // SAFETY: index < MAGLEV_ENTRIES, inside the mapping.
        Some(unsafe { self.mmap.as_ptr().add(index * STRIDE) as *const u32 })
    }

    /// Writes `table` (at most `MAGLEV_SIZE` slots) into half `half`. The caller publishes it
    /// afterwards; a full fence orders these stores before that write.
    pub fn write_half(&mut self, half: u32, table: &[u32]) {
        for (slot, id) in table.iter().enumerate() {
            let Some(p) = self.slot_ptr(half, slot as u32) else {
                break;
            };
            // SAFETY: in the mapping; the dataplane reads this half only after the flip.
            unsafe { (p as *mut u32).write_volatile(*id) };
        }
        fence(Ordering::SeqCst);
    }

    /// The slots of half `half`.
    pub fn read_half(&self, half: u32) -> Vec<u32> {
        (0..MAGLEV_SIZE).map(|slot| self.slot(half, slot)).collect()
    }

    /// Writes `table` at array index `start` on (a pool's ring half); `false`, writing nothing,
    /// if it does not fit in the array. The caller publishes it afterwards; a full fence orders
    /// these stores before that write.
    pub fn write_at(&mut self, start: u32, table: &[u32]) -> bool {
        let end = u64::from(start) + table.len() as u64;
        if end > u64::from(MAGLEV_ENTRIES) {
            return false;
        }
        for (i, id) in table.iter().enumerate() {
            // SAFETY: start + i < MAGLEV_ENTRIES, inside the mapping; the dataplane reads this
            // range only after the flip.
            unsafe {
                (self.mmap.as_mut_ptr().add((start as usize + i) * STRIDE) as *mut u32)
                    .write_volatile(*id)
            };
        }
        fence(Ordering::SeqCst);
        true
    }

    /// Array entry `index` ([`NO_BACKEND`] past the array's end, as in the kernel).
    pub fn at(&self, index: u32) -> u32 {
        if index >= MAGLEV_ENTRIES {
            return NO_BACKEND;
        }
        // SAFETY: index < MAGLEV_ENTRIES, inside the mapping.
        unsafe { (self.mmap.as_ptr().add(index as usize * STRIDE) as *const u32).read_volatile() }
    }

    /// `len` entries from array index `start` (a pool's ring half).
    pub fn read_at(&self, start: u32, len: u32) -> Vec<u32> {
        (0..len).map(|i| self.at(start.saturating_add(i))).collect()
    }

    /// Slot `slot` of half `half` ([`NO_BACKEND`] past a half's end, as in the kernel).
    pub fn slot(&self, half: u32, slot: u32) -> u32 {
        match self.slot_ptr(half, slot) {
            // SAFETY: in the mapping.
            Some(p) => unsafe { p.read_volatile() },
            None => NO_BACKEND,
        }
    }
}
