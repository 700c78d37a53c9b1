//! The *sample* stage: per-tick session loads (packets and bytes per second) from the
//! dataplane's cumulative per-CPU session counters. Pure: counter totals in, rates out.
//!
//! Reading: [`crate::maps::DataplaneMaps::session_counters`] reads the `SESSION_STATS` per-CPU
//! LRU hash (sessions on the default table) and the placed sessions' `SESSION_SLOT_STATS` slots
//! once per tick with `BPF_MAP_LOOKUP_BATCH`: thousands of sessions per syscall, each with every
//! CPU's values. The control loop only needs the deltas, which this module computes. See
//! `docs/predict.md` for the cost.

use std::{collections::HashMap, time::Duration};

use shardline_common::maps::{Counter, SessionKey};

/// One session's load over a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    /// Packets per second (what shard counts and forecasts are in).
    pub packets: f64,
    /// Bytes per second (what a per-shard byte capacity sizes).
    pub bytes: f64,
}

/// Turns cumulative counters into packets and bytes per second.
#[derive(Debug, Default)]
pub struct Sampler {
    last: HashMap<SessionKey, Counter>,
}

impl Sampler {
    /// A sampler with no previous reading.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rates (packets and bytes per second) of every session in `counters` over `elapsed`
    /// since the previous call, into `out` (cleared first). A session seen for the first time
    /// has no rate yet; a counter that went backwards (an LRU eviction and re-insert) restarts
    /// from its new value. Sessions that vanished are forgotten.
    pub fn rates(
        &mut self,
        counters: &HashMap<SessionKey, Counter>,
        elapsed: Duration,
        out: &mut Vec<(SessionKey, Rate)>,
    ) {
        out.clear();
        let secs = elapsed.as_secs_f64();
        self.last.retain(|k, _| counters.contains_key(k));
        for (key, counter) in counters {
            match self.last.insert(*key, *counter) {
                Some(before) if secs > 0.0 => {
                    let delta = |now: u64, then: u64| now.checked_sub(then).unwrap_or(now);
                    out.push((
                        *key,
                        Rate {
                            packets: delta(counter.packets, before.packets) as f64 / secs,
                            bytes: delta(counter.bytes, before.bytes) as f64 / secs,
                        },
                    ));
                }
                _ => {}
            }
        }
        out.sort_by_key(|(k, _)| (k.service, k.session));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: u64) -> SessionKey {
        SessionKey::new(1, session)
    }

    fn counters(pairs: &[(u64, u64)]) -> HashMap<SessionKey, Counter> {
        pairs
            .iter()
            .map(|&(s, packets)| {
                (
                    key(s),
                    Counter {
                        packets,
                        bytes: packets * 100,
                    },
                )
            })
            .collect()
    }

    /// `packets` per second of 100-byte packets (as [`counters`] counts them).
    fn rate(packets: f64) -> Rate {
        Rate {
            packets,
            bytes: packets * 100.0,
        }
    }

    #[test]
    fn deltas_over_elapsed_time() {
        let mut s = Sampler::new();
        let mut out = Vec::new();
        s.rates(&counters(&[(1, 100)]), Duration::from_secs(1), &mut out);
        assert!(out.is_empty(), "first sight has no rate");
        s.rates(
            &counters(&[(1, 300), (2, 50)]),
            Duration::from_millis(500),
            &mut out,
        );
        assert_eq!(out, vec![(key(1), rate(400.0))]);
        // Session 1 was evicted and re-inserted: its counter restarted at 20.
        s.rates(
            &counters(&[(1, 20), (2, 150)]),
            Duration::from_secs(2),
            &mut out,
        );
        assert_eq!(out, vec![(key(1), rate(10.0)), (key(2), rate(50.0))]);
        // Session 2 vanished, then came back: first sight again.
        s.rates(&counters(&[(1, 20)]), Duration::from_secs(1), &mut out);
        s.rates(
            &counters(&[(1, 20), (2, 500)]),
            Duration::from_secs(1),
            &mut out,
        );
        assert_eq!(out, vec![(key(1), rate(0.0))]);
    }
}
