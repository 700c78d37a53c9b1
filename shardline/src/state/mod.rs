//! The control state every daemon of a cluster agrees on, and the commands that change it.
//!
//! This is the replicated state machine's content (the Raft log carries [`Command`]s) and the
//! single source the dataplane tables are computed from: a node applies a committed command to
//! its [`ControlState`], then writes [`ControlState::tables`] into its own pinned maps. Applying
//! is deterministic and a rejected command changes nothing, so every node that applied the same
//! log holds the same state and routes every packet identically.
//!
//! - [`command`]: what can be written, and what a write answers.
//! - [`control`]: the [`Control`] handle the API, the CLI and the control loop write through
//!   (a Raft cluster, or [`LocalControl`] in memory).

pub mod command;
pub mod control;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_with::serde_as;
use shardline_common::{
    consts::MAX_BACKENDS,
    maps::{scheme, SessionKey, ShardSet},
};

pub use command::{Command, Response, StateError};
pub use control::{ClusterStatus, Control, ControlError, LocalControl, Member};

pub use crate::config::{session_number, ConfigTables, SessionRef};
use crate::{
    config::{BackendConfig, Config, Encap, ServiceConfig},
    snapshot::Snapshot,
};

/// Bytes of critical state one session may keep (keys plus values).
pub const SESSION_STATE_LIMIT: usize = 4096;

/// A backend as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendEntry {
    /// Addresses, next-hop MAC and configured weight.
    pub config: BackendConfig,
    /// Passing its health checks (new backends start healthy).
    pub healthy: bool,
    /// Draining: keeps its placed sessions' flows but gets no new share of the default table.
    pub draining: bool,
}

impl BackendEntry {
    /// Whether it may carry traffic at all.
    pub fn usable(&self) -> bool {
        self.healthy
    }

    /// Its weight in the default table: zero while unhealthy or draining.
    pub fn effective_weight(&self) -> u32 {
        if self.healthy && !self.draining {
            self.config.weight
        } else {
            0
        }
    }
}

/// What the application and the profiler said about a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// Class giving a new session its prior, e.g. `interactive`, `bulk`, `stream`.
    pub class: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A session's placement and metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Its shard set: backend ids, 1 to 16 (empty: not placed, the default table routes it).
    pub backends: Vec<u32>,
    /// Placement generation: bumped by every change of `backends`.
    pub generation: u64,
    /// Class and labels.
    #[serde(default)]
    pub meta: SessionMeta,
}

/// The replicated control state.
#[serde_as]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// Encapsulation sources.
    pub encap: Encap,
    /// Flow stickiness window, seconds.
    pub flow_idle_secs: u32,
    /// Services, in id order (service id = position + 1).
    pub services: Vec<ServiceConfig>,
    /// Backends by id.
    pub backends: BTreeMap<u32, BackendEntry>,
    /// Sessions with a placement or metadata.
    #[serde_as(as = "Vec<(_, _)>")]
    pub sessions: BTreeMap<SessionRef, SessionEntry>,
    /// Per-session critical state: key → value, at most [`SESSION_STATE_LIMIT`] bytes each.
    #[serde_as(as = "Vec<(_, _)>")]
    pub kv: BTreeMap<SessionRef, BTreeMap<String, Vec<u8>>>,
    /// Count of applied commands that changed routing (the tables' generation).
    pub generation: u64,
}

impl ControlState {
    /// The state a configuration file describes (services, backends, static placements).
    pub fn from_config(config: &Config) -> Self {
        let mut state = ControlState::default();
        let _ = state.apply(&Command::LoadConfig(ConfigTables::of(config)));
        state
    }

    /// Applies one command: either all of it or, with an error, nothing.
    pub fn apply(&mut self, command: &Command) -> Result<Response, StateError> {
        command::apply(self, command)
    }

    /// The service id (1-based) of a service name.
    pub fn service_id(&self, name: &str) -> Option<u32> {
        self.services
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u32 + 1)
    }

    /// Bytes of critical state a session holds.
    pub fn state_bytes(&self, session: &SessionRef) -> usize {
        self.kv
            .get(session)
            .map(|m| m.iter().map(|(k, v)| k.len() + v.len()).sum())
            .unwrap_or(0)
    }

    /// The dataplane tables this state implies. Unhealthy backends are left out of every shard
    /// set (a set with none left is unplaced: the default table routes it) and draining or
    /// unhealthy ones get no share of the default table.
    pub fn tables(&self) -> Snapshot {
        let tables = ConfigTables {
            encap: self.encap.clone(),
            flow_idle_secs: self.flow_idle_secs,
            services: self.services.clone(),
            backends: self
                .backends
                .values()
                .map(|b| BackendConfig {
                    weight: b.effective_weight(),
                    ..b.config.clone()
                })
                .collect(),
            sessions: Vec::new(),
        };
        let mut snap = Snapshot::from_tables(&tables);
        for (session, entry) in &self.sessions {
            let Some(service) = self.service_id(&session.service) else {
                continue;
            };
            let live: Vec<u32> = entry
                .backends
                .iter()
                .copied()
                .filter(|id| self.backends.get(id).is_some_and(BackendEntry::usable))
                .collect();
            // None left (or, never for a committed placement, not a shard set): unplaced.
            let Ok(set) = ShardSet::from_members(&live, scheme::HASH, entry.generation.max(1))
            else {
                continue;
            };
            snap.sessions.insert(
                SessionKey {
                    service,
                    _pad: 0,
                    session: session.session,
                },
                set,
            );
        }
        snap
    }
}

/// Whether `id` can name a backend.
pub fn valid_backend_id(id: u32) -> bool {
    id < MAX_BACKENDS
}

#[cfg(test)]
mod tests;
