//! `shardline-bench`: the benchmarks that need the kernel, written as one JSON file.
//!
//! - [`per_packet`]: nanoseconds per packet of the XDP program under `BPF_PROG_TEST_RUN`,
//!   against trivial `XDP_PASS` / `XDP_TX` baselines measured in the same run.
//! - [`fib`]: the per-packet cases of a FIB-routed backend (out of the receiving interface, and
//!   redirected to a second one through `TX_PORTS`), each run in a namespace of its own.
//! - [`flow_rate`]: the new-flow rate limiter's setting for the per-packet flow cases.
//! - [`live`]: whether `BPF_F_TEST_XDP_LIVE_FRAMES` could time the balancer (a check).
//! - [`swap`]: the cost of a re-sharding swap: Maglev build, idle-half write, the flip, and
//!   session placement updates.
//! - [`memory`]: process RSS and BPF map memory with a million placed sessions.
//! - [`veth`]: packets per second and CPU per forwarded packet through the netns lab,
//!   shardline against nginx's stream proxy and a minimal tokio UDP proxy.
//! - [`proxy`]: the minimal tokio UDP proxy `veth` compares against.
//! - [`raft`]: commit latency and throughput of session-state writes on a 3-node cluster.
//! - [`rings_aom`]: the pools' rings as an array of maps, for the per-packet layout comparison.
//! - [`reshard`]: a 10,000-session decision from the leader to every node's maps, with
//!   1,000,000 sessions placed (`raft.reshard_10k_ms`).
//! - [`tick_full`]: a 1,000,000-session control tick with the counter read and the apply
//!   (`control.tick_1m_full_ms`).
//! - [`daemon_memory`]: the peak RSS of a running daemon with 1,000,000 sessions placed through
//!   its API (`memory.daemon_rss_mib_1m_sessions`), then across a backend change, a restart
//!   and a restart on empty maps (`memory.daemon.rss_mib.peak_backend_change`, `peak_restart`,
//!   `peak_restart_empty_maps`).
//! - [`replay`]: issue 20's goal per shipped trace under `shardline replay`, and its speed.
//! - [`machine`]: what the numbers were measured on.
//!
//! Every figure here comes from a measurement in this run; what cannot be measured yet is
//! written as `{"status": "not built yet", …}`, never as a number. The criterion benchmarks of
//! the control plane live in the `shardline-bench` crate; `cargo xtask bench` merges their
//! results into the same file and writes the Markdown summary.

pub mod daemon_memory;
pub mod fib;
pub mod flow_rate;
pub mod katran;
pub mod live;
pub mod machine;
pub mod memory;
pub mod million;
pub mod misroute;
pub mod per_packet;
pub mod proxy;
pub mod raft;
pub mod replay;
pub mod reshard;
pub mod rings_aom;
pub mod swap;
pub mod tick_full;
pub mod veth;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use shardline::{
    config::Config,
    loader::LoaderError,
    maps::MapsError,
    private::{PrivateDataplane, PrivateError},
    snapshot::Snapshot,
};
use shardline_lab::netns::NetnsError;

/// Errors running a benchmark. A benchmark that cannot measure what it claims fails with one of
/// these rather than write a number.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Loading or attaching a program failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Opening or writing the pinned maps failed.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// A map operation outside `DataplaneMaps` failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// Loading a program or `BPF_PROG_TEST_RUN` of it failed.
    #[error("program {program}: {source}")]
    Program {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Building namespaces or running a command in one failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Listing an egress interface in the `TX_PORTS` devmap failed.
    #[error(transparent)]
    TxPorts(#[from] shardline::maps::TxPortsError),
    /// The netns lab failed.
    #[error(transparent)]
    Lab(#[from] shardline_lab::LabError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A benchmark's own check failed: it would have measured something other than it claims.
    #[error("{0}")]
    Check(String),
}

/// An I/O error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// A map error with what was being done.
pub(crate) fn map_err(what: &'static str) -> impl Fn(aya::maps::MapError) -> BenchError {
    move |source| BenchError::Map {
        what: what.into(),
        source,
    }
}

/// A program error with the program's name.
pub(crate) fn program_err(program: &str) -> impl FnOnce(aya::programs::ProgramError) -> BenchError {
    let program = program.to_owned();
    move |source| BenchError::Program { program, source }
}

/// How long and how hard to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fewer rounds and shorter traffic runs (the whole run stays well under five minutes).
    pub quick: bool,
    /// Only the per-packet cost: printed as a table, and the JSON holds that section alone.
    pub per_packet_only: bool,
    /// Only the veth comparison (throughput and CPU per packet): the JSON holds that section.
    pub veth_only: bool,
    /// Per-packet cases to run (besides the baselines); empty: all of them.
    pub cases: Vec<String>,
    /// Only the million-session cases (`raft.reshard_10k_ms`, `control.tick_1m_full_ms`,
    /// `memory.daemon_rss_mib_1m_sessions`): the JSON holds those sections alone.
    pub scale_only: bool,
    /// Sessions of the million-session cases (1,000,000; fewer for a smoke run).
    pub scale_sessions: u64,
    /// Million-session cases to run (`reshard`, `tick`, `daemon`); empty: all of them.
    pub scale_cases: Vec<String>,
    /// Only the raft commit latency and throughput ([`raft`]): the JSON holds that section.
    pub raft_only: bool,
    /// Where to write the JSON results.
    pub out: PathBuf,
    /// The `shardline` and `shardline-lab` executables, for the processes of the netns lab.
    pub bins: shardline_lab::Binaries,
}

/// Runs every kernel-side benchmark and writes the JSON results to `opts.out`.
pub fn run(opts: &Options) -> Result<Value, BenchError> {
    if opts.raft_only {
        println!("bench: raft commit latency and throughput (3 nodes on loopback)");
        let results = json!({
            "machine": machine::describe(),
            "command": if opts.quick { "shardline-bench --raft-only --quick" } else { "shardline-bench --raft-only" },
            "raft": raft::run(opts.quick)?,
        });
        write_results(&opts.out, &results)?;
        return Ok(results);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::Check(
            "shardline-bench needs root (BPF programs and maps, network namespaces)".into(),
        ));
    }
    let machine = machine::describe();
    if opts.scale_only {
        let (raft, control, memory) = scale(opts);
        let results = json!({
            "machine": machine,
            "command": format!("shardline-bench --scale-only --scale-sessions {}", opts.scale_sessions),
            "raft": raft,
            "control": control,
            "memory": memory,
        });
        write_results(&opts.out, &results)?;
        return Ok(results);
    }
    if opts.veth_only {
        println!("bench: throughput and CPU per packet on veth (netns lab)");
        let results = json!({
            "machine": machine,
            "command": if opts.quick { "shardline-bench --veth-only --quick" } else { "shardline-bench --veth-only" },
            "veth": veth::run(opts)?,
        });
        write_results(&opts.out, &results)?;
        return Ok(results);
    }
    println!("bench: dataplane cost per packet (BPF_PROG_TEST_RUN)");
    let dataplane = per_packet::run(opts.quick, &opts.cases)?;
    if opts.per_packet_only {
        print!("{}", per_packet::table(&dataplane));
        let results = json!({
            "machine": machine,
            "command": "shardline-bench --per-packet-only",
            "dataplane_method": dataplane.method,
            "dataplane_wrapper": dataplane.wrapper,
            "dataplane": dataplane.cases,
            "dataplane_diagnostics": dataplane.diagnostics,
            "dataplane_start_walk_1m": dataplane.start_walk,
        });
        write_results(&opts.out, &results)?;
        return Ok(results);
    }
    println!("bench: live-frames mode check");
    let live = live::run(&per_packet::placed_header_frame())
        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
    println!("bench: re-sharding swap cost");
    let mut swap = swap::run(opts.quick)?;
    println!("bench: packets misrouted while the tables swap");
    swap["during_traffic"] = misroute::run(opts.quick)?;
    println!("bench: memory with 1,000,000 sessions");
    let mut memory = memory::run()?;
    println!("bench: throughput and CPU per packet on veth (netns lab)");
    let veth = veth::run(opts)?;
    println!("bench: raft commit latency and throughput (3 nodes on loopback)");
    let mut raft = raft::run(opts.quick).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    println!("bench: shardline replay on the shipped traces (issue 20's goal, speed)");
    let replay = replay::run(opts.quick).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    print!("{}", replay::summary(&replay));
    let (reshard, tick, daemon) = scale(opts);
    merge(&mut raft, reshard);
    merge(&mut memory, daemon);
    let mut control = json!({
        "status": "filled in by `cargo xtask bench` from the criterion run of the shardline-bench crate"
    });
    merge(&mut control, tick);
    let results = json!({
        "machine": machine,
        "command": if opts.quick { "cargo xtask bench --quick" } else { "cargo xtask bench" },
        "dataplane_method": dataplane.method,
        "dataplane_wrapper": dataplane.wrapper,
        "dataplane": dataplane.cases,
        "dataplane_diagnostics": dataplane.diagnostics,
        "dataplane_start_walk_1m": dataplane.start_walk,
        "dataplane_live_frames_check": live,
        "veth": veth,
        "swap": swap,
        "control": control,
        "raft": raft,
        "forecast_tick": {
            "status": "filled in by `cargo xtask bench` from criterion's control_tick group (bench/benches/tick.rs)"
        },
        "memory": memory,
        "replay": replay,
    });
    write_results(&opts.out, &results)?;
    Ok(results)
}

/// The million-session cases, as fields for the `raft`, `control` and `memory` sections (a
/// case that fails is an `error` field, not a number).
fn scale(opts: &Options) -> (Value, Value, Value) {
    let n = opts.scale_sessions;
    let wanted =
        |case: &str| opts.scale_cases.is_empty() || opts.scale_cases.iter().any(|c| c == case);
    let failed = |case: &str, e: BenchError| json!({ case: { "error": e.to_string() } });
    let (mut reshard, mut tick, mut daemon) = (json!({}), json!({}), json!({}));
    if wanted("reshard") {
        println!(
            "bench: re-placing {} of {n} sessions on 3 raft nodes' maps",
            reshard::MOVED
        );
        let rounds = if opts.quick { 3 } else { 7 };
        reshard = reshard::run(n, rounds).unwrap_or_else(|e| failed("reshard_10k", e));
    }
    if wanted("tick") {
        println!("bench: a {n}-session control tick with the counter read and the apply");
        let ticks = if opts.quick { 3 } else { 5 };
        tick = tick_full::run(n, ticks).unwrap_or_else(|e| failed("tick_1m_full", e));
    }
    if wanted("daemon") {
        println!("bench: a running daemon's memory with {n} sessions placed through its API");
        daemon = daemon_memory::run(opts, n).unwrap_or_else(|e| failed("daemon", e));
    }
    (reshard, tick, daemon)
}

/// `extra`'s fields added to the object `into`.
fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

fn write_results(out: &Path, results: &Value) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(results).expect("JSON values serialise");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    std::fs::write(out, text + "\n").map_err(io(format!("writing {}", out.display())))
}

/// The configuration the kernel benchmarks route with: header-mode services over IPv4 and
/// IPv6, flow-mode UDP and TCP services, a QUIC-LB service (server ids of 2 octets,
/// rotation 0), four dual-stack backends, and placed sessions for the
/// "hit" cases (header session 42, IPv6 header session 7, flow client 192.0.2.10).
pub const BENCH_CONFIG: &str = r#"
interface = "lo"
[encap]
source_v4 = "10.0.0.2"
source_v6 = "fd00::2"

[[services]]
name = "kv"
vip = "10.100.0.1"
port = 7000
protocol = "udp"
mode = "header"

[[services]]
name = "kv6"
vip = "fd00:100::1"
port = 7000
protocol = "udp"
mode = "header"

[[services]]
name = "dns"
vip = "10.100.0.1"
port = 5353
protocol = "udp"
mode = "flow"

[[services]]
name = "web"
vip = "10.100.0.1"
port = 8080
protocol = "tcp"
mode = "flow"

[[services]]
name = "quic"
vip = "10.100.0.1"
port = 4433
protocol = "udp"
mode = "quic"

[[services]]
name = "kvpool"
vip = "10.100.0.1"
port = 7001
protocol = "udp"
mode = "header"
backends = [1, 2, 3]

[[backends]]
id = 1
ipv4 = "10.0.0.11"
ipv6 = "fd00::11"
mac = "02:00:00:00:00:11"

[[backends]]
id = 2
ipv4 = "10.0.0.12"
ipv6 = "fd00::12"
mac = "02:00:00:00:00:12"

[[backends]]
id = 3
ipv4 = "10.0.0.13"
ipv6 = "fd00::13"
mac = "02:00:00:00:00:13"

[[backends]]
id = 4
ipv4 = "10.0.0.14"
ipv6 = "fd00::14"
mac = "02:00:00:00:00:14"

[[sessions]]
service = "kv"
session = 42
backends = [1, 2, 3]

[[sessions]]
service = "kv6"
session = 7
backends = [2, 3]

[[sessions]]
service = "dns"
session = "192.0.2.10"
backends = [1, 4]
"#;

/// A balancer loaded (not attached) in private pinned maps with [`BENCH_CONFIG`] applied.
pub fn loaded_balancer() -> Result<PrivateDataplane, BenchError> {
    let config = Config::parse(BENCH_CONFIG, "bench config")
        .map_err(|e| BenchError::Check(format!("bench config: {e}")))?;
    PrivateDataplane::new("bench", Snapshot::from_config(&config)).map_err(|e| match e {
        PrivateError::Load(e) => BenchError::Loader(e),
        PrivateError::Maps(e) => BenchError::Maps(e),
    })
}

/// Opens the pinned map `dir/name` as `T`.
pub fn open_pinned<T>(dir: &Path, name: &str) -> Result<T, BenchError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map_err = |source| BenchError::Map {
        what: format!("opening pinned map {name}"),
        source,
    };
    let data = aya::maps::MapData::from_pin(dir.join(name)).map_err(map_err)?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err)?;
    T::try_from(map).map_err(map_err)
}

/// Where the daemon code a benchmark runs in-process logs: its lines at the daemon's level
/// (info), formatted as the daemon formats them and thrown away, so the formatting is paid
/// and a terminal's speed is not measured.
pub fn log_sink() -> tracing::Dispatch {
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    )
}

/// Median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `x` rounded to `digits` decimals, so the JSON stays readable.
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}
