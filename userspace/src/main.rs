//! The `shardline` binary: the daemon, the operator commands over its API, the backend
//! decapsulator, the netns lab, and the small tools around them.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use shardline::{
    config::{Config, XdpAttachMode},
    lab, loader,
    maps::DataplaneMaps,
};

#[derive(Parser)]
#[command(
    name = "shardline",
    version,
    about = "Predictive session sharding at line rate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP dataplane (or adopt the pinned one) and keep it configured.
    Daemon {
        /// The TOML configuration (see shardline.example.toml).
        #[arg(long, default_value = "shardline.toml")]
        config: PathBuf,
        /// Write this file once the dataplane routes (for scripts and the lab).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Run the netns lab: client, load balancer and backends on this machine, with live traffic.
    Lab {
        /// How long to send traffic, in seconds.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Client sessions (half header mode, half flow mode).
        #[arg(long, default_value_t = 8)]
        sessions: u32,
        /// Backends.
        #[arg(long, default_value_t = 4)]
        backends: u32,
    },
    /// Strip shardline's IPIP / IP6IP6 encapsulation for local VIPs (run on each backend).
    Decap {
        /// Interface receiving encapsulated traffic.
        #[arg(long)]
        iface: String,
        /// VIPs served by this host (repeat for several).
        #[arg(long = "vip")]
        vips: Vec<IpAddr>,
        /// Attach a plain XDP_PASS instead (what a veth peer needs for native XDP_TX).
        #[arg(long)]
        pass: bool,
        /// auto (native, falling back to generic), native or generic.
        #[arg(long, default_value = "auto", value_parser = parse_mode)]
        mode: XdpAttachMode,
        /// Write this file once attached.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Print the dataplane's counters from the pinned maps.
    Stats {
        /// The daemon's configuration (for its pin directory).
        #[arg(long, default_value = "shardline.toml")]
        config: PathBuf,
    },
    /// Print what the servers of each quic service must put in their connection ids: the config
    /// rotation, the server id length, and each backend's server id (its backend id).
    QuicIds {
        /// The daemon's configuration.
        #[arg(long, default_value = "shardline.toml")]
        config: PathBuf,
    },
    /// Detach the dataplane and remove its pinned maps (routing stops).
    Detach {
        /// The daemon's configuration.
        #[arg(long, default_value = "shardline.toml")]
        config: PathBuf,
    },
    /// Run packets through the XDP program (BPF_PROG_TEST_RUN) and the userspace replay.
    Trace {
        /// A pcap or pcapng capture (Ethernet, raw IP, Linux cooked SLL/SLL2).
        #[arg(long, conflicts_with = "hex", required_unless_present = "hex")]
        pcap: Option<PathBuf>,
        /// One frame as hex bytes (Ethernet first).
        #[arg(long)]
        hex: Option<String>,
        /// Tables to trace with when no daemon has pinned live ones (default: the example
        /// configuration shipped with shardline).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Point every IPv4/IPv6 packet at the first service of its family (address and port).
        #[arg(long)]
        retarget: bool,
        /// One JSON object per packet.
        #[arg(long)]
        json: bool,
    },
    /// Replay a CSV series through every forecaster online and print their scores as JSON.
    ForecastEval {
        /// The CSV file (header line, one row per step).
        #[arg(long)]
        csv: PathBuf,
        /// The column holding the values.
        #[arg(long, default_value = "value")]
        column: String,
        /// Steps ahead to forecast.
        #[arg(long, default_value_t = 1)]
        horizon: usize,
        /// Season length in steps, or `auto` to detect it (0: none).
        #[arg(long, default_value = "auto", value_parser = parse_period)]
        period: shardline::forecast::eval::PeriodChoice,
    },
    /// Benchmark the dataplane (BPF_PROG_TEST_RUN), swaps, memory and veth throughput; writes JSON.
    BenchDataplane {
        /// Where to write the results.
        #[arg(long, default_value = "bench/results/latest.json")]
        out: PathBuf,
        /// Fewer rounds and shorter traffic runs.
        #[arg(long)]
        quick: bool,
        /// Only the per-packet cost (`BPF_PROG_TEST_RUN`): a table on stdout and the JSON
        /// with that section alone, for iterating on the XDP program.
        #[arg(long)]
        per_packet_only: bool,
        /// A per-packet case to run (repeatable; the baselines always run). Default: all.
        #[arg(long = "case", value_name = "NAME")]
        cases: Vec<String>,
    },
    /// Operator commands over a daemon's API (status, backends, sessions, top, plot, ...).
    #[command(flatten)]
    Operator(shardline::cli::Operator),
    /// The lab's backend service: UDP/TCP echo that answers with this backend's id.
    #[command(hide = true)]
    Echo {
        /// Backend id to answer with.
        #[arg(long)]
        id: u32,
        /// Addresses to bind (the VIPs).
        #[arg(long = "bind", required = true)]
        bind: Vec<IpAddr>,
        /// UDP ports, comma separated.
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
        /// TCP ports, comma separated.
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        /// Also serve QUIC on this UDP port (needs --quic-cert, --quic-key).
        #[arg(long, requires_all = ["quic_cert", "quic_key"])]
        quic: Option<u16>,
        /// PEM certificate of the QUIC service.
        #[arg(long)]
        quic_cert: Option<PathBuf>,
        /// PEM private key of the QUIC service.
        #[arg(long)]
        quic_key: Option<PathBuf>,
        /// Config rotation codepoint of the connection ids issued (from `shardline quic-ids`).
        #[arg(long, default_value_t = 0)]
        rotation: u8,
        /// Octets of the server id (the backend id) in connection ids.
        #[arg(long, default_value_t = shardline_common::consts::QUIC_DEFAULT_SERVER_ID_LEN)]
        server_id_len: u8,
        /// Serve at most this many UDP requests per second (a capacity limit) and report the
        /// load to --load-file.
        #[arg(long, requires = "load_file")]
        capacity: Option<u64>,
        /// Where to write the served load every second (read by `shardline agent`).
        #[arg(long)]
        load_file: Option<PathBuf>,
        /// Write this file once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// The lab's autoscale hook: add a backend namespace to a running lab; it registers itself.
    #[command(hide = true)]
    LabAddBackend {
        /// The lab's tag.
        #[arg(long)]
        tag: String,
        /// The lab's working directory.
        #[arg(long)]
        work_dir: PathBuf,
        /// The new backend's capacity, requests per second.
        #[arg(long)]
        capacity: u64,
        /// Client alias addresses of the lab (for static neighbours).
        #[arg(long, default_value_t = 0)]
        aliases: u32,
    },
    /// Run on a backend host: report its resources and load to the daemon, answer /health.
    Agent {
        /// This backend's id.
        #[arg(long)]
        backend: u32,
        /// The daemon's agents endpoint, host:port (`control.listen`).
        #[arg(long)]
        daemon: String,
        /// Where to serve /health.
        #[arg(long, default_value = "0.0.0.0:7071")]
        listen: std::net::SocketAddr,
        /// Report interval, ms.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Account CPU and memory of this cgroup v2 directory instead of the host.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// The application's load file (JSON: load, capacity, saturated).
        #[arg(long)]
        load_file: Option<PathBuf>,
        /// Report saturation above this busy-CPU fraction.
        #[arg(long)]
        cpu_limit: Option<f64>,
        /// Register this backend with the daemon first (needs --mac and an address).
        #[arg(long, requires = "mac")]
        register: bool,
        /// Registration: IPv4 address.
        #[arg(long)]
        ipv4: Option<std::net::Ipv4Addr>,
        /// Registration: IPv6 address.
        #[arg(long)]
        ipv6: Option<std::net::Ipv6Addr>,
        /// Registration: next-hop MAC.
        #[arg(long)]
        mac: Option<String>,
        /// Registration: weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Registration: capacity, packets per second.
        #[arg(long)]
        capacity: Option<f64>,
        /// Write this file once registered and serving /health.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
}

fn parse_mode(s: &str) -> Result<XdpAttachMode, String> {
    match s {
        "auto" => Ok(XdpAttachMode::Auto),
        "native" => Ok(XdpAttachMode::Native),
        "generic" => Ok(XdpAttachMode::Generic),
        _ => Err(format!("{s:?}: expected auto, native or generic")),
    }
}

fn parse_period(s: &str) -> Result<shardline::forecast::eval::PeriodChoice, String> {
    use shardline::forecast::eval::PeriodChoice;
    match s {
        "auto" => Ok(PeriodChoice::Auto),
        _ => s
            .parse()
            .map(PeriodChoice::Fixed)
            .map_err(|_| format!("{s:?}: expected a number of steps or auto")),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    };
    match cli.command {
        // Exit codes are part of the operator commands' contract (see shardline::cli).
        Command::Operator(command) => std::process::exit(shardline::cli::run(command)),
        Command::Daemon { config, ready_file } => {
            runtime()?.block_on(shardline::daemon::run(&config, ready_file))
        }
        Command::Decap {
            iface,
            vips,
            pass,
            mode,
            ready_file,
        } => runtime()?.block_on(shardline::decap::run(&iface, &vips, pass, mode, ready_file)),
        Command::Lab {
            duration,
            sessions,
            backends,
        } => lab::run::run(duration, sessions, backends),
        Command::Trace {
            pcap,
            hex,
            config,
            retarget,
            json,
        } => trace(
            pcap.as_deref(),
            hex.as_deref(),
            config.as_deref(),
            retarget,
            json,
        ),
        Command::Stats { config } => stats(&Config::load(&config)?),
        Command::QuicIds { config } => {
            print!("{}", Config::load(&config)?.describe_quic_ids());
            Ok(())
        }
        Command::Detach { config } => {
            let config = Config::load(&config)?;
            loader::teardown(&config.pin_dir, Some(&config.interface))
                .with_context(|| format!("removing {}", config.pin_dir.display()))?;
            println!(
                "detached from {} and removed {}",
                config.interface,
                config.pin_dir.display()
            );
            Ok(())
        }
        Command::ForecastEval {
            csv,
            column,
            horizon,
            period,
        } => {
            let report = shardline::forecast::eval::evaluate_file(&csv, &column, horizon, period)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::BenchDataplane {
            out,
            quick,
            per_packet_only,
            cases,
        } => {
            shardline::bench::run(&shardline::bench::Options {
                quick,
                per_packet_only,
                cases,
                out: out.clone(),
                exe: std::env::current_exe()?,
            })?;
            println!("bench: wrote {}", out.display());
            Ok(())
        }
        Command::LabAddBackend {
            tag,
            work_dir,
            capacity,
            aliases,
        } => {
            let id = lab::predict::add_backend(&tag, &work_dir, capacity, aliases)?;
            println!("lab: backend {id} added and registered");
            Ok(())
        }
        Command::Agent {
            backend,
            daemon,
            listen,
            interval_ms,
            cgroup,
            load_file,
            cpu_limit,
            register,
            ipv4,
            ipv6,
            mac,
            weight,
            capacity,
            ready_file,
        } => {
            let register = register.then(|| shardline::config::BackendConfig {
                id: backend,
                ipv4,
                ipv6,
                mac: mac.unwrap_or_default(),
                weight,
                agent: None,
                capacity,
            });
            let opts = shardline::agent::AgentOptions {
                backend,
                daemon,
                listen,
                interval: Duration::from_millis(interval_ms),
                cgroup,
                load_file,
                cpu_limit,
                register,
            };
            runtime()?.block_on(shardline::agent::run(opts, move || {
                if let Some(path) = ready_file {
                    let _ = std::fs::write(path, b"ready\n");
                }
            }))
        }
        Command::Echo {
            id,
            bind,
            udp,
            tcp,
            quic,
            quic_cert,
            quic_key,
            rotation,
            server_id_len,
            capacity,
            load_file,
            ready_file,
        } => {
            let limit = capacity
                .zip(load_file)
                .map(|(c, f)| lab::echo::Limit::new(c, f));
            let mut handles = lab::echo::serve(id, &bind, &udp, &tcp, limit)?;
            if let (Some(port), Some(cert), Some(key)) = (quic, quic_cert, quic_key) {
                let cids = lab::quic::ServerIdCids {
                    layout: shardline_common::quic::CidLayout {
                        rotation,
                        server_id_len,
                    },
                    server_id: id,
                };
                handles.push(lab::quic::spawn_servers(cids, &bind, port, &cert, &key)?);
            }
            if let Some(path) = ready_file {
                std::fs::write(path, b"ready\n")?;
            }
            for h in handles {
                let _ = h.join();
            }
            Ok(())
        }
    }
}

fn stats(config: &Config) -> anyhow::Result<()> {
    let maps = DataplaneMaps::open(&config.pin_dir)?;
    for (reason, n) in maps.reason_counts()? {
        println!("{:<22} {n}", reason.name());
    }
    for b in &config.backends {
        let c = maps.backend_counter(b.id)?;
        println!(
            "backend {:<14} packets {:<12} bytes {}",
            b.id, c.packets, c.bytes
        );
    }
    Ok(())
}

/// The example configuration, the tracer's default tables.
const EXAMPLE_CONFIG: &str = include_str!("../../shardline.example.toml");

fn trace(
    pcap: Option<&std::path::Path>,
    hex: Option<&str>,
    config: Option<&std::path::Path>,
    retarget: bool,
    json: bool,
) -> anyhow::Result<()> {
    use shardline::trace::{
        capture::{parse_hex, read_capture, CapturedFrame},
        retarget::retarget as point_at_service,
        tables_for, Tracer,
    };
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::parse(EXAMPLE_CONFIG, "shardline.example.toml")?,
    };
    let frames = match (pcap, hex) {
        (Some(path), _) => read_capture(path)?,
        (None, Some(text)) => vec![CapturedFrame::Frame(
            parse_hex(text).map_err(|e| anyhow::anyhow!("--hex: {e}"))?,
        )],
        (None, None) => anyhow::bail!("give --pcap FILE or --hex BYTES"),
    };
    let (tables, live) = tables_for(&config.pin_dir, &config)?;
    let mut dataplane = Tracer::new(tables).context("loading the XDP program")?;
    if live {
        eprintln!(
            "trace: using the live tables pinned in {}",
            config.pin_dir.display()
        );
    }
    if !json {
        println!(
            "{:>6}  {:<8} {:>8}  {:<22} agree",
            "packet", "verdict", "backend", "reason"
        );
    }
    let (mut traced, mut skipped, mut disagree) = (0usize, 0usize, 0usize);
    for (index, captured) in frames.into_iter().enumerate() {
        let CapturedFrame::Frame(mut frame) = captured else {
            skipped += 1;
            continue;
        };
        if retarget {
            point_at_service(&mut frame, &config.services);
        }
        let Some(line) = dataplane.trace(index, &frame) else {
            // Shorter than an Ethernet header or larger than a test-run buffer.
            skipped += 1;
            continue;
        };
        traced += 1;
        disagree += usize::from(!line.agree);
        if json {
            println!("{}", serde_json::to_string(&line)?);
        } else {
            let backend = line
                .backend
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into());
            println!(
                "{:>6}  {:<8} {:>8}  {:<22} {}",
                line.index,
                line.verdict,
                backend,
                line.reason,
                if line.agree { "yes" } else { "NO" }
            );
        }
    }
    eprintln!("trace: {traced} traced, {skipped} skipped, {disagree} disagreements between kernel and replay");
    Ok(())
}
