//! Per-CPU counters: no atomics, no contention; userspace sums the CPUs.

use shardline_common::{
    maps::{backend_stats_index, Counter, SessionKey},
    verdict::Reason,
};

use crate::maps::{BACKEND_STATS, REASONS, SESSION_SLOT_STATS, SESSION_STATS};

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

/// Counts one forwarded packet of `bytes` for backend `id` of the session's service, and for
/// `session`: in counters slot `slot` when `session` owns it, else in the LRU counters.
#[inline(always)]
pub fn count_forwarded(id: u32, session: &SessionKey, slot: u32, bytes: u64) {
    let index = backend_stats_index(session.service, id).unwrap_or(u32::MAX);
    if let Some(c) = BACKEND_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if slot != 0 {
        if let Some(c) = SESSION_SLOT_STATS.get_ptr_mut(slot) {
            // SAFETY: per-CPU slot; the daemon writes the owner only while the slot is free.
            unsafe {
                if (*c).owner == *session {
                    (*c).counter.packets += 1;
                    (*c).counter.bytes += bytes;
                    return;
                }
            }
        }
    }
    match SESSION_STATS.get_ptr_mut(session) {
        // SAFETY: per-CPU value of an LRU per-CPU hash.
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        },
        None => {
            // A full table evicts the least recently used session; losing a racing insert on
            // another CPU only loses that CPU's first packet count.
            let _ = SESSION_STATS.insert(session, &Counter { packets: 1, bytes }, 0);
        }
    }
}
