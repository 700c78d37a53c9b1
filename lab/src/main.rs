//! `shardline-lab`: the netns lab on one machine (`run`), and the processes it starts in its
//! namespaces: the backends' echo service (`echo`) and the autoscale hook's new backend
//! (`add-backend`). Not shipped with the `shardline` binary.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use shardline_common::{consts::QUIC_DEFAULT_SERVER_ID_LEN, quic::CidLayout};
use shardline_lab::{echo, predict, quic, run};

#[derive(Parser)]
#[command(name = "shardline-lab", version, about = "shardline's netns lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the lab: client, load balancer and backends on this machine, with live traffic.
    Run(RunArgs),
    /// A backend's UDP/TCP (and QUIC) echo service that answers with its backend id.
    Echo(EchoArgs),
    /// The autoscale hook: add a backend namespace to a running lab; it registers itself.
    AddBackend(AddBackendArgs),
}

#[derive(Args)]
struct RunArgs {
    /// How long to send traffic, in seconds.
    #[arg(long, default_value_t = run::DEFAULT_DURATION)]
    duration: u64,
    /// Client sessions (half header mode, half flow mode).
    #[arg(long, default_value_t = run::DEFAULT_SESSIONS)]
    sessions: u32,
    /// Backends.
    #[arg(long, default_value_t = run::DEFAULT_BACKENDS)]
    backends: u32,
    /// MTU of every link of the segment (the client's is 100 octets under it, room for the
    /// encapsulation), e.g. 9000 for jumbo frames; default: the veth default, 1500.
    #[arg(long)]
    mtu: Option<u32>,
}

#[derive(Args)]
struct EchoArgs {
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
    #[arg(long, default_value_t = QUIC_DEFAULT_SERVER_ID_LEN)]
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
}

#[derive(Args)]
struct AddBackendArgs {
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
}

fn main() -> anyhow::Result<()> {
    shardline::logging::init(shardline::logging::LogFormat::Text);
    match Cli::parse().command {
        Command::Run(a) => run::run(a.duration, a.sessions, a.backends, a.mtu),
        Command::Echo(a) => run_echo(a),
        Command::AddBackend(a) => {
            let id = predict::add_backend(&a.tag, &a.work_dir, a.capacity, a.aliases)?;
            println!("lab: backend {id} added and registered");
            Ok(())
        }
    }
}

fn run_echo(a: EchoArgs) -> anyhow::Result<()> {
    let limit = a
        .capacity
        .zip(a.load_file)
        .map(|(c, f)| echo::Limit::new(c, f));
    let mut handles = echo::serve(a.id, &a.bind, &a.udp, &a.tcp, limit)?;
    if let (Some(port), Some(cert), Some(key)) = (a.quic, a.quic_cert, a.quic_key) {
        let cids = quic::ServerIdCids {
            layout: CidLayout {
                rotation: a.rotation,
                server_id_len: a.server_id_len,
            },
            server_id: a.id,
        };
        handles.push(quic::spawn_servers(cids, &a.bind, port, &cert, &key)?);
    }
    if let Some(path) = a.ready_file {
        std::fs::write(path, b"ready\n")?;
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}
