//! shardline's userspace: the daemon, the CLI's building blocks and the netns lab.
//!
//! - [`objects`]: the eBPF objects built by `build.rs`, embedded.
//! - [`bench`]: `shardline bench-dataplane`, the kernel-side benchmarks.
//! - [`config`]: the TOML configuration and its validation.
//! - [`snapshot`]: the routing tables a configuration implies, in memory (also a replay
//!   `Tables`).
//! - [`loader`]: loading, attaching and adopting the XDP program and its pinned link.
//! - [`maps`]: typed access to the pinned maps: apply a snapshot, read counters, live replay.
//! - [`daemon`]: `shardline daemon`.
//! - [`decap`]: `shardline decap`, the backend-side decapsulator.
//! - [`netns`]: network namespaces for the lab and the tests.
//! - [`lab`]: the netns lab (topology, echo backends, client sessions).
//! - [`signals`]: waiting for SIGINT / SIGTERM.
//! - [`testrun`]: running packets through the loaded program with `BPF_PROG_TEST_RUN`.
pub mod bench;
pub mod config;
pub mod daemon;
pub mod decap;
pub mod lab;
pub mod loader;
pub mod maps;
pub mod netns;
pub mod objects;
pub mod signals;
pub mod snapshot;
pub mod testrun;
