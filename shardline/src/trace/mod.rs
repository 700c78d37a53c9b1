//! `shardline trace`: runs packets through the XDP program with `BPF_PROG_TEST_RUN` and through
//! the userspace replay of the same tables, and reports per packet the verdict, the backend,
//! the reason, and whether kernel and replay agree.
//!
//! - [`capture`]: pcap / pcapng reading, link-type normalization, hex input.
//! - [`encap`]: the encapsulation a forwarded packet leaves with (IPIP, IP6IP6, IPv4-in-IPv6,
//!   L2 DSR), from the kernel's bytes and from the replay's decision.
//! - [`retarget`]: pointing captured packets at a configured service.
//!
//! The replay reads each frame as the kernel hands it to the program
//! ([`XdpView::test_run`]): a frame longer than a page (a jumbo frame) is a linear part, where
//! headers are read, and fragments that only count towards its length. When the two disagree,
//! the line carries the replay's verdict, reason and backend beside the kernel's.
//!
//! The program runs on a private copy of the tables (its own maps, never attached): from the
//! live pinned maps when a daemon has pinned them, else from the configuration. So tracing has
//! no side effect on a running dataplane (its flow table is not copied: established flows are
//! traced as new ones).

pub mod capture;
pub mod encap;
pub mod retarget;

use std::path::Path;

use serde::Serialize;
use shardline_common::{
    consts::NO_BACKEND,
    frame::XdpView,
    route::decide,
    verdict::{Action, Reason},
};

use crate::{
    maps::{DataplaneMaps, MapsError},
    private::PrivateDataplane,
    snapshot::Snapshot,
};

/// Errors setting up a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The program could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::private::PrivateError),
    /// The private maps could not be written or read.
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// The verdict for one traced packet.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TraceLine {
    /// Position in the input (0-based, skipped packets included).
    pub index: usize,
    /// The kernel's action: `tx`, `redirect`, `pass`, `drop` or `aborted`.
    pub verdict: &'static str,
    /// The backend the kernel sent it to.
    pub backend: Option<u32>,
    /// The reason the kernel counted.
    pub reason: &'static str,
    /// How the kernel's forwarded frame is encapsulated (`ipip`, `ip6ip6`, `4in6`, `l2dsr`).
    pub encap: Option<&'static str>,
    /// Whether the userspace replay decided the same action, reason, backend and
    /// encapsulation.
    pub agree: bool,
    /// Whether the frame is longer than the linear part the program's loads reach (a
    /// multi-buffer frame, as a jumbo frame is).
    pub multi_buffer: bool,
    /// What the replay decided: printed beside the kernel's verdict when they disagree.
    pub replay: ReplayVerdict,
}

/// The userspace replay's verdict for one traced packet.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReplayVerdict {
    /// The action: `tx`, `pass` or `drop`.
    pub verdict: &'static str,
    /// The backend it sends the packet to.
    pub backend: Option<u32>,
    /// The reason it counts.
    pub reason: &'static str,
    /// The encapsulation its decision implies.
    pub encap: Option<&'static str>,
}

impl TraceLine {
    /// The header row of [`Self::text`]'s columns.
    pub const TEXT_HEADER: &'static str = "packet  verdict   backend  reason                 agree";

    /// The line as text: the kernel's verdict, backend, reason and whether the replay agrees;
    /// when it does not, a second line under it with the replay's.
    pub fn text(&self) -> String {
        let backend = |b: Option<u32>| b.map_or_else(|| "-".into(), |b| b.to_string());
        let mut out = format!(
            "{:>6}  {:<8} {:>8}  {:<22} {}\n",
            self.index,
            self.verdict,
            backend(self.backend),
            self.reason,
            if self.agree { "yes" } else { "NO" }
        );
        if !self.agree {
            let r = &self.replay;
            out.push_str(&format!(
                "{:>6}  {:<8} {:>8}  {:<22} (replay{})\n",
                "",
                r.verdict,
                backend(r.backend),
                r.reason,
                if self.multi_buffer {
                    "; a multi-buffer frame"
                } else {
                    ""
                }
            ));
        }
        out
    }
}

/// Traces frames through a [`PrivateDataplane`] and its replay.
pub struct Tracer {
    dataplane: PrivateDataplane,
    backends: Vec<u32>,
    /// Every service id the tables hold: the counter rows a traced packet can count in.
    services: Vec<u32>,
}

impl Tracer {
    /// Loads the program with `tables` in private maps.
    pub fn new(tables: Snapshot) -> Result<Self, TraceError> {
        let mut backends: Vec<u32> = tables.backends.keys().copied().collect();
        backends.sort_unstable();
        let services = tables.services.values().map(|s| s.id).collect();
        Ok(Self {
            dataplane: PrivateDataplane::new("trace", tables)?,
            backends,
            services,
        })
    }

    /// Traces one Ethernet frame; `None` if the kernel cannot run it (shorter than an Ethernet
    /// header, or larger than a test-run buffer).
    pub fn trace(&mut self, index: usize, frame: &[u8]) -> Option<TraceLine> {
        let reasons_before = self.dataplane.maps.reason_counts().ok()?;
        let backends_before = self.backend_packets();
        let run = self.dataplane.run(frame).ok()?;
        let reasons_after = self.dataplane.maps.reason_counts().ok()?;
        let reason = reasons_before
            .iter()
            .zip(&reasons_after)
            .find(|(b, a)| a.1 > b.1)
            .map(|(_, a)| a.0);
        let backend = self
            .backend_packets()
            .iter()
            .zip(&backends_before)
            .find(|(a, b)| a.1 > b.1)
            .map(|(a, _)| a.0);
        let view = XdpView::test_run(frame);
        let replay = decide(&view, &self.dataplane.tables);
        let replay_backend = (replay.backend_id != NO_BACKEND && replay.reason.forwards())
            .then_some(replay.backend_id);
        let kernel_encap = reason
            .filter(|r| r.forwards())
            .and_then(|_| encap::of_output(frame, &run.output));
        let replay_encap = encap::of_decision(
            &replay,
            self.dataplane.tables.backends.get(&replay.backend_id),
        );
        let agree = replay.action() == run.action
            && Some(replay.reason) == reason
            && replay_backend == backend
            && replay_encap == kernel_encap;
        Some(TraceLine {
            index,
            verdict: run.action.name(),
            backend,
            reason: reason
                .map(Reason::name)
                .unwrap_or(if run.action == Action::Aborted {
                    "aborted"
                } else {
                    "uncounted"
                }),
            encap: kernel_encap,
            agree,
            multi_buffer: view.has_frags(),
            replay: ReplayVerdict {
                verdict: replay.action().name(),
                backend: replay_backend,
                reason: replay.reason.name(),
                encap: replay_encap,
            },
        })
    }

    fn backend_packets(&self) -> Vec<(u32, u64)> {
        self.backends
            .iter()
            .map(|id| {
                (
                    *id,
                    self.dataplane
                        .maps
                        .backend_counter_of(*id, &self.services)
                        .map(|c| c.packets)
                        .unwrap_or(0),
                )
            })
            .collect()
    }
}

/// The tables to trace with: the live ones pinned in `pin_dir` if a daemon left them there,
/// else `config`'s. Returns them and whether they are live.
pub fn tables_for(
    pin_dir: &Path,
    config: &crate::config::Config,
) -> Result<(Snapshot, bool), TraceError> {
    if pin_dir.join("SERVICES").exists() {
        let live = DataplaneMaps::open(pin_dir)?;
        return Ok((live.read_snapshot()?, true));
    }
    Ok((Snapshot::from_config(config), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(agree: bool) -> TraceLine {
        TraceLine {
            index: 3,
            verdict: "pass",
            backend: None,
            reason: "malformed_ip",
            encap: None,
            agree,
            multi_buffer: true,
            replay: ReplayVerdict {
                verdict: "tx",
                backend: Some(2),
                reason: "forwarded",
                encap: Some("ipip"),
            },
        }
    }

    #[test]
    fn a_disagreement_prints_both_verdicts_and_reasons() {
        let text = line(false).text();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(
            rows[0].contains("pass") && rows[0].contains("malformed_ip") && rows[0].ends_with("NO"),
            "{text}"
        );
        assert!(
            rows[1].contains("tx") && rows[1].contains(" 2 ") && rows[1].contains("forwarded"),
            "{text}"
        );
        assert!(rows[1].contains("(replay; a multi-buffer frame)"), "{text}");
        assert_eq!(line(true).text().lines().count(), 1, "agreement: one line");
        // The header names the columns the rows fill.
        assert!(TraceLine::TEXT_HEADER.starts_with("packet"));
    }
}
