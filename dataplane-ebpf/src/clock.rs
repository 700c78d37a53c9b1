//! The flow table's clock: `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_ns` reads and
//! userspace compares `FlowEntry::last_seen_ns` with), read once per scheduler tick and CPU.
//!
//! On this kind of machine every helper call and return is expensive, and the flow paths read
//! the time on every packet (a hit refreshes its entry, a new flow stamps one and the new-flow
//! rate limiter keeps its window). `bpf_jiffies64` is the one clock the verifier inlines (a
//! load of `jiffies`), so the clock calls `bpf_ktime_get_ns` only when the tick moved since
//! this CPU last read it, and otherwise answers the reading it kept. A reading is therefore
//! never ahead of the true time and at most one tick (4 ms at `HZ=250`) behind it, against
//! idle times counted in whole seconds. An empty reading (jiffies 0) never matches: 64-bit
//! `jiffies` starts at 2^32 minus five minutes of ticks and only grows.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};

use crate::maps::CLOCK;

/// One CPU's last reading of the clock.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Reading {
    /// `jiffies` when it was read.
    pub jiffies: u64,
    /// `bpf_ktime_get_ns` then.
    pub ns: u64,
}

/// `CLOCK_MONOTONIC` ns now, to within one tick (see the module header).
///
/// A BPF-to-BPF call, not inlined, so each call site sees one call that returns a scalar, as
/// the `bpf_ktime_get_ns` call it replaces did. Inlined, its map access and branch change
/// LLVM's register allocation across the whole balancer, and the verifier's states with it:
/// the QUIC connection-id loops, far from any flow path, pruned less well and took `shardline`
/// from 802,402 to about 951,000 processed instructions and the bench programs past the
/// million (README, "Flow clock").
#[inline(never)]
pub fn now() -> u64 {
    now_inline()
}

/// [`now`] inlined into its caller: for a caller that is itself a BPF-to-BPF call
/// (`tables::offer_flow`), where it costs no second call and leaves the balancer's register
/// allocation alone.
#[inline(always)]
pub fn now_inline() -> u64 {
    // SAFETY: helper without arguments; the verifier replaces the call by a load of `jiffies`.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(reading) = CLOCK.get_ptr_mut(0) else {
        // SAFETY: helper without arguments.
        return unsafe { bpf_ktime_get_ns() };
    };
    // SAFETY: this CPU's value of a per-CPU array; only this CPU writes it, and XDP runs to
    // completion.
    unsafe {
        if (*reading).jiffies == jiffies {
            return (*reading).ns;
        }
        let ns = bpf_ktime_get_ns();
        *reading = Reading { jiffies, ns };
        ns
    }
}
