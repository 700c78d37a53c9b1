//! Per-CPU counters: no atomics, no contention; userspace sums the CPUs.

use aya_ebpf::bindings::BPF_ANY;
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
/// `session`: in counters slot `slot` when `session` owns it, else in the LRU counters, unless
/// the packet is a refused new flow (over the new-flow rate, `NewFlowRate::refused`) of a
/// `flow_mode` service.
#[inline(always)]
pub fn count_forwarded(id: u32, session: &SessionKey, slot: u32, bytes: u64, flow_mode: bool) {
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
    // A refused new flow's packet (over the new-flow rate) is not counted per session outside
    // a slot: a flood of new clients then makes no LRU counters lookup and evicts no session's
    // counters. Its packet and bytes still count for its backend above, and it counts in
    // `NewFlowRate::untracked`. Only flow-mode services start flows, so only their packets
    // look (the other modes' slot-less packets, `default_table_v4`'s, make no access for it).
    if flow_mode && take_refused() {
        return;
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
            let _ =
                SESSION_STATS.insert(session, &Counter { packets: 1, bytes }, u64::from(BPF_ANY));
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
