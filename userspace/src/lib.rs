//! shardline's userspace: the daemon, the CLI's building blocks and the netns lab.
//!
//! - [`objects`]: the eBPF objects built by `build.rs`, embedded.
//! - [`bench`]: `shardline bench-dataplane`, the kernel-side benchmarks.
//! - [`config`]: the TOML configuration and its validation.
//! - [`snapshot`]: the routing tables a configuration implies, in memory (also a replay
//!   `Tables`).
//! - [`loader`]: loading, attaching and adopting the XDP program and its pinned link.
//! - [`maglev_table`]: the double-buffered default table, memory-mapped.
//! - [`maps`]: typed access to the pinned maps: apply a snapshot, read counters, live replay.
//! - [`daemon`]: `shardline daemon`.
//! - [`api`]: the daemon's HTTP API (`/v1`, `/metrics`, OpenAPI).
//! - [`cli`]: the operator commands over the API (`status`, `backends`, …, `top`, `plot`).
//! - [`decap`]: `shardline decap`, the backend-side decapsulator.
//! - [`netns`]: network namespaces for the lab and the tests.
//! - [`lab`]: the netns lab (topology, echo backends, client sessions).
//! - [`signals`]: waiting for SIGINT / SIGTERM.
//! - [`cluster`]: the Raft cluster behind [`state::Control`]: log and snapshots in redb, peers
//!   over HTTP, forwarded writes and linearizable reads.
//! - [`state`]: the replicated control state, its commands and the [`state::Control`] handle.
//! - [`insight`], [`telemetry`]: what the control loop publishes (per-session views, metric
//!   families) for the API, `top`, `plot` and `/metrics`.
//! - [`reshard`]: the swap stage: atomic re-shards, their plans and handoffs.
//! - [`trace`]: `shardline trace`, kernel vs replay verdicts for captured packets.
//! - [`private`]: a balancer in private pinned maps, never attached (tracer, benches, tests).
//! - [`testrun`]: running packets through the loaded program with `BPF_PROG_TEST_RUN`.
//! - [`profile`], [`forecast`], [`decide`], [`tick`]: the predictive control loop's pure
//!   stages — a session's load profile, online forecasters and their selector (and
//!   `forecast-eval`), shard-count and backend decisions, and the per-tick driver.
//! - [`sample`], [`history`], [`control`], [`autoscale`]: the loop around them — per-tick
//!   session loads from the counters, the redb history with downsampling tiers, the loop
//!   thread (placements through [`state::Control`]) and the autoscale hook.
//! - [`agent`]: `shardline agent` (backend resources, `/health`) and the daemon's side of it
//!   (the `/v1/agents` router, the health checker).
pub mod agent;
pub mod api;
pub mod autoscale;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decap;
pub mod decide;
pub mod forecast;
pub mod history;
pub mod insight;
pub mod lab;
pub mod loader;
pub mod maglev_table;
pub mod maps;
pub mod netns;
pub mod objects;
pub mod private;
pub mod profile;
pub mod reshard;
pub mod sample;
pub mod signals;
pub mod snapshot;
pub mod state;
pub mod stats_slots;
pub mod telemetry;
pub mod testrun;
pub mod tick;
pub mod trace;
