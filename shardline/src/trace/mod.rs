//! `shardline trace`: runs packets through the XDP program with `BPF_PROG_TEST_RUN` and through
//! the userspace replay of the same tables, and reports per packet the verdict, the backend,
//! the reason, and whether kernel and replay agree.
//!
//! - [`capture`]: pcap / pcapng reading, link-type normalization, hex input.
//! - [`retarget`]: pointing captured packets at a configured service.
//!
//! The program runs on a private copy of the tables (its own maps, never attached): from the
//! live pinned maps when a daemon has pinned them, else from the configuration. So tracing has
//! no side effect on a running dataplane (its flow table is not copied: established flows are
//! traced as new ones).

pub mod capture;
pub mod retarget;

use std::path::Path;

use serde::Serialize;
use shardline_common::{
    consts::NO_BACKEND,
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
    /// Whether the userspace replay decided the same action, reason and backend.
    pub agree: bool,
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
        let replay = decide(frame, &self.dataplane.tables);
        let replay_backend = (replay.backend_id != NO_BACKEND && replay.reason.forwards())
            .then_some(replay.backend_id);
        let agree = replay.action() == run.action
            && Some(replay.reason) == reason
            && replay_backend == backend;
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
            agree,
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
