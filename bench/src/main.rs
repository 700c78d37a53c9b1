//! `shardline-bench`: the kernel-side benchmarks (per-packet cost under `BPF_PROG_TEST_RUN`,
//! swaps, memory, veth throughput against nginx and a tokio proxy, Raft), written as one JSON
//! file. `cargo xtask bench` runs it after criterion and renders the summary.

use std::path::PathBuf;

use clap::Parser;
use shardline_bench::suite::{self, Options};

/// Benchmark the dataplane (BPF_PROG_TEST_RUN), swaps, memory and veth throughput; writes JSON.
#[derive(Parser)]
#[command(name = "shardline-bench", version)]
struct Args {
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Fewer rounds and shorter traffic runs.
    #[arg(long)]
    quick: bool,
    /// Only the per-packet cost (`BPF_PROG_TEST_RUN`): a table on stdout and the JSON with
    /// that section alone, for iterating on the XDP program.
    #[arg(long)]
    per_packet_only: bool,
    /// Only the veth throughput and CPU-per-packet comparison (shardline, nginx, the tokio
    /// proxy): the JSON holds that section alone.
    #[arg(long)]
    veth_only: bool,
    /// A per-packet case to run (repeatable; the baselines always run). Default: all.
    #[arg(long = "case", value_name = "NAME")]
    cases: Vec<String>,
    /// Only the million-session cases (a decision to every raft node's maps, the full control
    /// tick, a running daemon's memory): the JSON holds those sections alone.
    #[arg(long)]
    scale_only: bool,
    /// Sessions of the million-session cases (fewer for a smoke run).
    #[arg(long, default_value_t = 1_000_000)]
    scale_sessions: u64,
    /// A million-session case to run (`reshard`, `tick`, `daemon`; repeatable). Default: all.
    #[arg(long = "scale-case", value_name = "NAME")]
    scale_cases: Vec<String>,
    /// Only the raft commit latency and throughput on 3 loopback nodes (no root needed): the
    /// JSON holds that section alone.
    #[arg(long)]
    raft_only: bool,
}

fn main() -> anyhow::Result<()> {
    shardline::logging::init(shardline::logging::LogFormat::Text);
    let args = Args::parse();
    suite::run(&Options {
        quick: args.quick,
        per_packet_only: args.per_packet_only,
        veth_only: args.veth_only,
        cases: args.cases,
        scale_only: args.scale_only,
        scale_sessions: args.scale_sessions,
        scale_cases: args.scale_cases,
        raft_only: args.raft_only,
        out: args.out.clone(),
        bins: shardline_lab::Binaries::locate()?,
    })?;
    println!("bench: wrote {}", args.out.display());
    Ok(())
}
