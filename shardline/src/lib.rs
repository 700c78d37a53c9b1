//! shardline's control-plane library: everything the `shardline` binary runs, with no lab or
//! benchmark code. The layers, lowest first (a module only uses the ones above it in this
//! list; `cargo xtask cycles` checks that the top-level modules form no import cycle):
//!
//! - [`logging`], [`signals`]: log output and SIGINT / SIGTERM, for every binary; leaves.
//! - [`guard`]: who may use the control channels and what they may send: bearer tokens
//!   (operator, per agent), the cluster secret, strict JSON bodies; a leaf over `config`.
//! - [`http`]: the one HTTP client (reqwest) for agent reports, health probes and the webhook.
//! - [`config`]: the TOML configuration, one file per section, validated: the
//!   `shardline-config` crate, re-exported; a leaf.
//! - [`snapshot`]: the routing tables a configuration or state implies, in memory (also a
//!   replay `Tables`), and the delta of writes between two of them.
//! - Dataplane access: [`objects`] (the eBPF objects `build.rs` embeds), [`loader`] (loading,
//!   attaching and adopting the XDP program and its pinned link), [`maglev_table`] (the
//!   double-buffered default table, memory-mapped), [`stats_slots`] (per-session counter
//!   slots), [`handoff_map`] (the previous placements of sessions in a handoff window),
//!   [`maps`] (typed access to the pinned maps), [`private`] (a balancer in private
//!   pinned maps, never attached: tracer, benches, tests), [`testrun`] (`BPF_PROG_TEST_RUN`).
//! - [`reshard`]: the swap stage, the one path routing changes take into the maps (the daemon's
//!   applier and single re-shards alike): deltas from the tables in force, build-then-flip,
//!   their plans and handoffs.
//! - [`state`]: the replicated control state, its commands and the [`state::Control`] handle.
//! - [`cluster`]: the Raft cluster behind [`state::Control`]: log and snapshots in redb, peers
//!   over HTTP, forwarded writes and linearizable reads.
//! - [`telemetry`]: the metric families the loop and the applier feed.
//! - [`agent`]: `shardline agent` (backend resources, `/health`) and the daemon's side of it
//!   (the `/v1/agents` router, the health checker).
//! - [`control`]: the predictive control loop, one module per stage in the order a tick runs
//!   them (sample → profile → forecast → sizing → placement → tick → core → hook), with its
//!   history and insights.
//! - [`replay`]: `shardline replay`, the control core in virtual time over a fleet model,
//!   against reactive, static and oracle controllers.
//! - [`api`]: the daemon's HTTP API (`/v1`, `/metrics`, OpenAPI) and the typed views the
//!   operator CLI parses.
//! - [`daemon`]: `shardline daemon`: the wiring of all of the above.
//! - [`doctor`]: `shardline doctor`, whether this host can run the dataplane and how well.
//! - [`decap`], [`trace`]: `shardline decap` (the backend-side decapsulator) and `shardline
//!   trace` (kernel vs replay verdicts for captured packets).
pub mod agent;
pub mod api;
pub mod cluster;
pub use shardline_config as config;
pub mod control;
pub mod daemon;
pub mod decap;
pub mod doctor;
#[cfg(test)]
mod fixtures;
pub mod guard;
pub mod handoff_map;
pub mod http;
pub mod loader;
pub mod logging;
pub mod maglev_table;
pub mod maps;
pub mod objects;
pub mod private;
pub mod replay;
pub mod reshard;
pub mod signals;
pub mod snapshot;
pub mod state;
pub mod stats_slots;
pub mod telemetry;
pub mod testrun;
pub mod trace;
