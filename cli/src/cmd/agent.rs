//! `shardline agent`.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use shardline::{
    agent::{self, AgentOptions, Registration},
    config::BackendConfig,
    guard::Keyring,
};

/// Run on a backend host: report its resources and load to the daemon, answer /health.
#[derive(Args)]
pub struct AgentArgs {
    /// This backend's id.
    #[arg(long)]
    backend: u32,
    /// The daemon's agents endpoint, host:port (`control.listen`).
    #[arg(long)]
    daemon: String,
    /// Where to serve /health.
    #[arg(long, default_value = "0.0.0.0:7071")]
    listen: SocketAddr,
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
    /// Bytes per second this backend's network carries, for the daemon's placement (default:
    /// the sum of the link speeds in /sys/class/net).
    #[arg(long)]
    net_capacity: Option<f64>,
    /// Register this backend with the daemon first (needs --mac and an address).
    #[arg(long, requires = "mac")]
    register: bool,
    /// Registration: IPv4 address.
    #[arg(long)]
    ipv4: Option<Ipv4Addr>,
    /// Registration: IPv6 address.
    #[arg(long)]
    ipv6: Option<Ipv6Addr>,
    /// Registration: next-hop MAC.
    #[arg(long)]
    mac: Option<String>,
    /// Registration: weight.
    #[arg(long, default_value_t = 1)]
    weight: u32,
    /// Registration: capacity, packets per second.
    #[arg(long)]
    capacity: Option<f64>,
    /// Registration: a service this backend serves (repeatable): it joins that service's
    /// pool. Services without a pool are served by every backend already.
    #[arg(long = "service", value_name = "NAME", requires = "register")]
    services: Vec<String>,
    /// Write this file once registered and serving /health.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// File holding this backend's token, the twin of `ID.token` in the daemon's
    /// `[control] agent_token_dir` (first line is sent). Without it the agent sends none,
    /// which only a daemon with `insecure_agents = true` accepts.
    #[arg(long, env = "SHARDLINE_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// Runs the agent until it is killed.
pub fn run(a: AgentArgs) -> anyhow::Result<()> {
    let register = a.register.then(|| Registration {
        backend: BackendConfig {
            id: a.backend,
            ipv4: a.ipv4,
            ipv6: a.ipv6,
            mac: a.mac.unwrap_or_default(),
            weight: a.weight,
            agent: None,
            capacity: a.capacity,
            nexthop: Default::default(),
        },
        services: a.services,
    });
    let token = a
        .token_file
        .as_deref()
        .map(|path| Keyring::read(path, "--token-file").map(|ring| ring.current().clone()))
        .transpose()?;
    let opts = AgentOptions {
        backend: a.backend,
        daemon: a.daemon,
        listen: a.listen,
        interval: Duration::from_millis(a.interval_ms),
        cgroup: a.cgroup,
        load_file: a.load_file,
        cpu_limit: a.cpu_limit,
        net_capacity: a.net_capacity,
        register,
        token,
    };
    let ready_file = a.ready_file;
    super::runtime()?.block_on(agent::run(opts, move || {
        if let Some(path) = ready_file {
            let _ = std::fs::write(path, b"ready\n");
        }
    }))
}
