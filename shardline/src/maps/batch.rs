//! Whole-map and range reads with `BPF_MAP_LOOKUP_BATCH`, and keyed writes with
//! `BPF_MAP_UPDATE_BATCH` (Linux 5.6+; aya 0.14 has no wrapper): one
//! syscall reads or writes thousands of entries, where aya's iterator makes two per entry
//! (`get_next_key`, then `lookup`) and its `insert` one per entry. A per-CPU value comes back
//! as every possible CPU's copy, each padded to 8 bytes, exactly as a single lookup returns it.
//! A batch write changes each entry exactly as a single update does (atomically, one at a
//! time), so what a packet can see is what it could see between single updates.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{maps::IterableMap, Pod};

/// `BPF_MAP_LOOKUP_BATCH` (`enum bpf_cmd` in `include/uapi/linux/bpf.h`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per syscall: large enough for any hash bucket (a batch never splits one;
/// ENOSPC asks for more), small enough to keep the buffers at a few MiB.
const CHUNK: u32 = 8_192;

/// The `batch` member of `union bpf_attr` (`BPF_MAP_*_BATCH`).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The descriptor of a map, for the batched calls.
pub(super) fn fd<K: Pod, V>(map: &impl IterableMap<K, V>) -> BorrowedFd<'_> {
    map.map().fd().as_fd()
}

/// Where a batch read starts and what it stops at.
pub(super) enum Span {
    /// Every entry of a map (a hash map's buckets in order; an array from index 0).
    All,
    /// An array's indices `first..first + len`.
    Indices {
        /// The first index read.
        first: u32,
        /// How many indices.
        len: u32,
    },
}

/// Reads the entries of `span` of the map behind `fd` (keys `K`, per-CPU values `V` over
/// `cpus` possible CPUs), calling `each(key, values)` with one value per CPU. Entries that
/// vanish during the read are skipped (the kernel retries or drops them).
pub(super) fn read_per_cpu<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    cpus: usize,
    span: Span,
    each: impl FnMut(&K, &[V]),
) -> io::Result<()> {
    // A per-CPU value is padded to 8 bytes per CPU: `V`s of a multiple of 8 bytes lie back to
    // back as the kernel writes them.
    const { assert!(size_of::<V>().is_multiple_of(8) && size_of::<V>() > 0) };
    read_raw(fd, cpus, span, each)
}

/// Like [`read_per_cpu`] for a map with one value per key (no per-CPU copies).
pub(super) fn read<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    span: Span,
    mut each: impl FnMut(&K, &V),
) -> io::Result<()> {
    read_raw::<K, V>(fd, 1, span, |k, v| each(k, &v[0]))
}

/// The batch loop: `cpus` values of `V` per key.
fn read_raw<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    cpus: usize,
    span: Span,
    mut each: impl FnMut(&K, &[V]),
) -> io::Result<()> {
    let (mut token, mut remaining) = match span {
        Span::All => (None, u64::MAX),
        // The batch starts after the token's key: index `first - 1` (first 0 is no token).
        Span::Indices { first, len } => (first.checked_sub(1).map(u64::from), u64::from(len)),
    };
    let mut chunk = CHUNK;
    let mut keys: Vec<MaybeUninit<K>> = Vec::new();
    let mut values: Vec<MaybeUninit<V>> = Vec::new();
    // Big enough for a hash map's u32 bucket token and an array's u32 key.
    let mut next_token = 0u64;
    while remaining > 0 {
        let want = chunk.min(u32::try_from(remaining).unwrap_or(u32::MAX));
        keys.resize(want as usize, MaybeUninit::uninit());
        values.resize(want as usize * cpus, MaybeUninit::uninit());
        let mut attr = BatchAttr {
            in_batch: token.as_ref().map_or(0, |t| t as *const u64 as u64),
            out_batch: &mut next_token as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers holding `want` keys and `want * cpus` values (the
        // kernel writes at most `count` of each), and at an 8-byte token it reads and writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let done = match &err {
            None => false,
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            // A hash bucket holds more than `want` entries: ask for more at once.
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.count == 0 => {
                chunk = chunk.saturating_mul(2);
                continue;
            }
            Some(_) => return Err(err.expect("an error")),
        };
        let got = attr.count as usize;
        for i in 0..got {
            // SAFETY: the kernel filled the first `got` keys and `got * cpus` values, and
            // both types are plain data.
            let (key, per_cpu) = unsafe {
                (
                    keys[i].assume_init_ref(),
                    std::slice::from_raw_parts(values[i * cpus].as_ptr(), cpus),
                )
            };
            each(key, per_cpu);
        }
        remaining = remaining.saturating_sub(got as u64);
        if done || got == 0 {
            return Ok(());
        }
        token = Some(next_token);
    }
    Ok(())
}

/// `BPF_MAP_UPDATE_BATCH` (`enum bpf_cmd`).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// How far a batch write got: the entries written before it stopped, and why it stopped early
/// (`None`: every entry was written).
pub(super) struct Written {
    /// Entries written, from the first.
    pub done: usize,
    /// The error of entry `done`, if the batch stopped there.
    pub error: Option<io::Error>,
}

/// Writes `keys[i]` → `values[i]` into the map behind `fd` (a map with one value per key), in
/// order, with `BPF_MAP_UPDATE_BATCH`: the kernel updates each entry as a single update does
/// (each one atomic on its own), one syscall for up to [`CHUNK`] of them. It stops at the
/// first entry the map refuses; the caller decides whether to go on after it.
pub(super) fn update<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> Written {
    assert_eq!(keys.len(), values.len(), "one value per key");
    write_raw(fd, BPF_MAP_UPDATE_BATCH, keys, values)
}

fn write_raw<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    cmd: libc::c_long,
    keys: &[K],
    values: &[V],
) -> Written {
    let mut done = 0;
    while done < keys.len() {
        let want = (keys.len() - done).min(CHUNK as usize);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: want as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at `want` keys (and as many values) that the kernel only
        // reads; it writes back `count`, the entries it processed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        // On an error `count` is the entries processed before the one that failed, unless
        // the kernel refused the call before any entry (then it is `want` still, unchanged).
        let processed = attr.count as usize;
        if rc >= 0 {
            done += want;
        } else if processed < want {
            done += processed;
        }
        if rc < 0 {
            return Written {
                done,
                error: Some(io::Error::last_os_error()),
            };
        }
    }
    Written { done, error: None }
}
