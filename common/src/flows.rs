//! The per-CPU flow table read across CPUs: what a CPU adopts when its own value of an
//! established flow's key is not live.
//!
//! `FLOWS` is a per-CPU LRU hash: a key inserted on one CPU reads as a zeroed entry on every
//! other. On a NIC, RSS keeps a flow on one CPU; on veth (and with RPS off, or after an IRQ
//! moves) XDP runs on the sender's CPU, which migrates. A packet landing on a CPU without a
//! live value would be decided afresh from the current tables and, after a table change (a
//! drain), leave its backend mid-connection. So that CPU looks at the other CPUs' values and
//! takes a live one: the backend the replay reads too ([`FlowEntry::freshest_live`]).

use crate::{consts::MAX_FLOW_CPUS, maps::FlowEntry};

/// The first entry live at `now` among CPUs `0..MAX_FLOW_CPUS`, as `value_on(cpu)` reads
/// them, with `last_seen_ns` set to `now`: the entry the asking CPU adopts as its own. `None`
/// ends the scan (the kernel's per-CPU lookup answers NULL for a CPU past the last one, or for
/// a key deleted meanwhile); none live returns `None`. The first, not the freshest as the
/// replay reads ([`FlowEntry::freshest_live`]): the live values of one flow name one backend
/// (each CPU either adopted it or routed the flow's first packet), and stopping at the first
/// is what lets the kernel run it as a `bpf_loop` whose callback the verifier walks once.
#[inline(always)]
pub fn adopt_live(
    mut value_on: impl FnMut(u32) -> Option<FlowEntry>,
    now: u64,
    idle_secs: u32,
) -> Option<FlowEntry> {
    for cpu in 0..MAX_FLOW_CPUS {
        if let Some(entry) = adopted(&value_on(cpu)?, now, idle_secs) {
            return Some(entry);
        }
    }
    None
}

/// One step of [`adopt_live`]: `other` (another CPU's value) as this CPU adopts it at `now`,
/// `None` if it is not live. The kernel runs it from a `bpf_loop` callback.
#[inline(always)]
pub fn adopted(other: &FlowEntry, now: u64, idle_secs: u32) -> Option<FlowEntry> {
    if !other.is_live(now, idle_secs) {
        return None;
    }
    Some(FlowEntry {
        last_seen_ns: now,
        ..*other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn entry(backend: u32, last_seen_s: u64) -> FlowEntry {
        FlowEntry {
            backend,
            stats_slot: backend + 100,
            last_seen_ns: last_seen_s * SEC,
        }
    }

    fn adopt(per_cpu: &[FlowEntry], now_s: u64) -> Option<FlowEntry> {
        adopt_live(|cpu| per_cpu.get(cpu as usize).copied(), now_s * SEC, 30)
    }

    #[test]
    fn adopts_a_live_value_and_refreshes_it() {
        let per_cpu = [
            FlowEntry::default(),
            entry(4, 50),
            entry(2, 95),
            entry(2, 90),
        ];
        let adopted = adopt(&per_cpu, 100).expect("a live value");
        assert_eq!((adopted.backend, adopted.stats_slot), (2, 102));
        assert_eq!(adopted.last_seen_ns, 100 * SEC, "refreshed");
        assert_eq!(
            FlowEntry::freshest_live(&per_cpu, 100 * SEC, 30),
            Some(adopted.backend),
            "the replay's choice"
        );
    }

    #[test]
    fn nothing_live_adopts_nothing() {
        assert_eq!(adopt(&[], 100), None);
        assert_eq!(adopt(&[FlowEntry::default(); 4], 100), None);
        assert_eq!(adopt(&[entry(1, 60), entry(2, 69)], 100), None, "idle");
    }

    #[test]
    fn the_scan_is_bounded_and_ends_at_the_first_missing_cpu() {
        let mut asked = 0;
        let found = adopt_live(
            |_| {
                asked += 1;
                Some(FlowEntry::default())
            },
            100 * SEC,
            30,
        );
        assert_eq!(found, None);
        assert_eq!(asked, MAX_FLOW_CPUS);
        let per_cpu = [FlowEntry::default(), FlowEntry::default(), entry(1, 99)];
        let short = [FlowEntry::default(), FlowEntry::default()];
        assert_eq!(adopt(&per_cpu, 100).map(|e| e.backend), Some(1));
        assert_eq!(adopt(&short, 100), None, "CPU 2 is past the end");
    }
}
