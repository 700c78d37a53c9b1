//! Per-CPU counters: no atomics, no contention; userspace sums the CPUs.

use aya_ebpf::bindings::{BPF_ANY, BPF_EXIST};
use shardline_common::{
    maps::{backend_stats_index, Counter, SessionKey},
    verdict::Reason,
};

use crate::maps::{BACKEND_STATS, NEW_FLOW_RATE, REASONS, SESSION_SLOT_STATS, SESSION_STATS};

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

/// Counts one forwarded packet of `bytes` for backend `id` of the session's service, and for
/// `session`: in counters slot `slot` when `session` owns it, else in the LRU counters, where
/// a refused new flow (over the new-flow rate, `NewFlowRate::refused`) counts only if its
/// session already has an entry: a flood of new clients evicts no session's counters.
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
            // A refused new flow's session is only refreshed if present, which it is not.
            let flags = if take_refused() { BPF_EXIST } else { BPF_ANY };
            let _ = SESSION_STATS.insert(session, &Counter { packets: 1, bytes }, u64::from(flags));
        }
    }
}

/// Whether this CPU refused the last new flow (and not since cleared); clears it.
#[inline(always)]
fn take_refused() -> bool {
    match NEW_FLOW_RATE.get_ptr_mut(0) {
        // SAFETY: this CPU's value of a per-CPU array; only this CPU writes it now.
        Some(rate) => unsafe { core::mem::replace(&mut (*rate).refused, 0) != 0 },
        None => false,
    }
}
