//! The netns lab, shardline's main job on one machine: a client, a load balancer running the
//! daemon with XDP on its interface, and backends that decapsulate and answer with their id.
//!
//! - [`topology`]: namespaces, the bridge, addresses.
//! - [`config`]: the daemon's configuration, built as a `Config` value.
//! - `children`: the processes the lab starts, their logs and ready files.
//! - `drive`: traffic from the client (requests, shaped load, a migrating QUIC connection).
//! - [`echo`]: the backends' UDP/TCP echo service.
//! - [`quic`]: the backends' QUIC echo service (QUIC-LB connection ids) and its client.
//! - [`traffic`]: the client's sessions and requests.
//! - [`replay`]: what the tables say each observed request should have reached.
//! - [`cluster_lab`]: three load balancers in a Raft cluster behind an ECMP route, for fault
//!   tests.
//! - [`sockbuf`]: receive buffers for the busy UDP sockets.
//! - [`load`]: rate-shaped sessions (a ramp, a periodic wave) for the predictive loop.
//! - [`predict`]: the control loop's lab settings, the backends' agents and capacity limits,
//!   and the autoscale hook's new backend.

pub mod bins;
mod children;
pub mod cluster_lab;
pub mod config;
mod drive;
pub mod echo;
pub mod load;
pub mod netns;
pub mod predict;
pub mod quic;
pub mod replay;
pub mod run;
pub mod sockbuf;
pub mod topology;
pub mod traffic;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use bins::Binaries;
pub use config::lab_config;
pub use drive::Report;
use shardline::{config::Config, snapshot::Snapshot};

use crate::{
    children::Children,
    netns::NetnsError,
    topology::{Topology, VIP4, VIP6},
};

/// The lab's process holding the `XDP_PASS` on the switch port facing the load balancer.
const SWITCH_PASS: &str = "switch port XDP_PASS";

/// UDP port of the header-mode service.
pub const HEADER_PORT: u16 = 7000;
/// UDP port of the flow-mode UDP service.
pub const UDP_FLOW_PORT: u16 = 5353;
/// TCP port of the flow-mode TCP service.
pub const TCP_FLOW_PORT: u16 = 8080;
/// UDP port of the quic-mode service.
pub const QUIC_PORT: u16 = 4433;

/// Errors building or running the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Building the network failed.
    #[error("building the lab network: {0}")]
    Network(#[from] NetnsError),
    /// A lab process did not become ready.
    #[error("{what} did not become ready within {seconds} s{log}")]
    NotReady {
        /// Which process.
        what: String,
        /// How long we waited.
        seconds: u64,
        /// Its log, if any.
        log: String,
    },
    /// A file of the lab could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The generated configuration is invalid (a bug).
    #[error("lab config: {0}")]
    Config(#[from] shardline::config::ConfigError),
    /// The generated configuration cannot be written as TOML (a bug).
    #[error("writing the lab config as TOML: {0}")]
    ConfigToml(#[from] toml::ser::Error),
    /// Wiring the segment by XDP failed.
    #[error(transparent)]
    Wire(#[from] topology::wire::WireError),
    /// The QUIC service's certificate could not be made.
    #[error("lab QUIC service: {0}")]
    Quic(#[from] quic::QuicLabError),
}

/// How to build a lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Unique tag for namespace and pin names.
    pub tag: String,
    /// Number of backends.
    pub backends: u32,
    /// Number of client sessions (half header mode, half flow mode).
    pub sessions: u32,
    /// The executables to run the daemon, decap, agent and echo processes with.
    pub bins: Binaries,
}

/// A running lab. Dropping it stops every process and removes every namespace and pin.
pub struct Lab {
    /// The processes, stopped first (by `drop`), before the namespaces they run in.
    children: Children,
    /// The daemon's configuration.
    pub config: Config,
    /// The file holding the daemon's API token (the API listens on the default address
    /// inside the load balancer's namespace).
    pub api_token: PathBuf,
    /// The QUIC service's self-signed certificate (PEM), for clients to trust.
    pub quic_cert: PathBuf,
    /// Where the daemon pins its maps.
    pub pin_dir: PathBuf,
    /// The client sessions.
    pub sessions: Vec<traffic::Session>,
    work_dir: PathBuf,
    bins: Binaries,
    config_path: PathBuf,
    predict: Option<predict::PredictOptions>,
    /// The namespaces (dropped last: fields drop in order).
    pub topology: Topology,
}

impl Lab {
    /// Builds the network and starts the daemon, the decapsulators and the echo services,
    /// returning once all of them are ready.
    pub fn start(opts: &LabOptions) -> Result<Self, LabError> {
        Self::start_with(opts, None)
    }

    /// As [`Self::start`], with the predictive control loop on when `predict` is given: the
    /// daemon gets a `[control]` section, every backend a capacity limit and an agent.
    pub fn start_with(
        opts: &LabOptions,
        predict: Option<predict::PredictOptions>,
    ) -> Result<Self, LabError> {
        Self::start_on(opts, predict, None)
    }

    /// As [`Self::start_with`], on a segment whose links run at `mtu` when given
    /// ([`Topology::build_with_mtu`]; e.g. `topology::JUMBO_MTU`, 9000-octet frames).
    pub fn start_on(
        opts: &LabOptions,
        predict: Option<predict::PredictOptions>,
        mtu: Option<u32>,
    ) -> Result<Self, LabError> {
        let topology = Topology::build_with_mtu(&opts.tag, opts.backends, opts.sessions, mtu)?;
        Self::start_in(opts, predict, topology, false)
    }

    /// As [`Self::start`], in the two-arm topology ([`topology::two_arm`]): clients on the
    /// balancer's `eth0`, backends behind its `eth1`, configured `nexthop = "fib"` without
    /// MACs and reached by `XDP_REDIRECT` through the `TX_PORTS` devmap.
    pub fn start_two_arm(opts: &LabOptions) -> Result<Self, LabError> {
        let topology = Topology::build_two_arm(&opts.tag, opts.backends, opts.sessions)?;
        topology::two_arm::resolve_backends(&topology.lb, opts.backends)?;
        Self::start_in(opts, None, topology, true)
    }

    fn start_in(
        opts: &LabOptions,
        predict: Option<predict::PredictOptions>,
        topology: Topology,
        two_arm: bool,
    ) -> Result<Self, LabError> {
        let work_dir = std::env::temp_dir().join(format!("shardline-lab-{}", opts.tag));
        let _ = std::fs::remove_dir_all(&work_dir);
        std::fs::create_dir_all(&work_dir).map_err(|source| LabError::Io {
            path: work_dir.clone(),
            source,
        })?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/shardline-lab-{}", opts.tag));
        let sessions = traffic::sessions(opts.sessions);
        let exe = opts.bins.shardline.to_string_lossy().into_owned();
        let lab_exe = opts.bins.lab.to_string_lossy().into_owned();
        let api_token = work_dir.join("api-token");
        write_api_token(&api_token)?;
        let config = config::daemon_config(
            opts,
            &sessions,
            &work_dir,
            &pin_dir,
            &api_token,
            predict.as_ref(),
        );
        let mut config = config;
        if two_arm {
            config::two_arm(&mut config);
        }
        config.validate()?;
        if let Some(seed) = predict.as_ref().and_then(|p| p.history_seed.as_ref()) {
            let path = predict::history_path(&work_dir);
            std::fs::write(&path, seed).map_err(|source| LabError::Io { path, source })?;
        }
        let config_path = daemon_config_path(&work_dir);
        write_config(&config_path, &toml::to_string(&config)?)?;
        let (quic_cert, quic_key) = quic::certificate_paths(&work_dir);
        quic::write_certificate(&quic_cert, &quic_key)?;
        let layout = config
            .services
            .iter()
            .find_map(|s| s.cid_layout())
            .expect("the lab config has a quic service");
        let mut lab = Self {
            children: Children::new(&work_dir),
            api_token,
            config,
            quic_cert: quic_cert.clone(),
            pin_dir,
            sessions,
            work_dir,
            bins: opts.bins.clone(),
            config_path,
            predict,
            topology,
        };

        // Native XDP_TX on a veth reaches the peer only if the peer runs XDP too.
        lab.children.spawn(
            SWITCH_PASS,
            &lab.topology.switch,
            &exe,
            &["decap", "--iface", "p-lb", "--pass"],
        )?;
        // So is a redirect into the backend arm's veth.
        if two_arm {
            lab.children.spawn(
                "backend arm port XDP_PASS",
                &lab.topology.switch,
                &exe,
                &["decap", "--iface", topology::two_arm::ARM_PORT, "--pass"],
            )?;
        }
        let quic = echo::QuicFiles {
            cert: &quic_cert,
            key: &quic_key,
            layout,
        };
        for id in 1..=opts.backends {
            let ns = &lab.topology.backends[id as usize - 1];
            let (v4, v6) = (VIP4.to_string(), VIP6.to_string());
            lab.children.spawn(
                &format!("decap on backend {id}"),
                ns,
                &exe,
                &["decap", "--iface", "eth0", "--vip", &v4, "--vip", &v6],
            )?;
            let mut args = echo::lab_args(id, Some(&quic));
            if let Some(p) = &lab.predict {
                args.extend(predict::echo_limit_args(p, &lab.work_dir, id));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.children
                .spawn(&format!("echo on backend {id}"), ns, &lab_exe, &args)?;
            if let Some(tick_ms) = lab.predict.as_ref().map(|p| p.tick_ms) {
                predict::write_agent_token(&lab.work_dir, id).map_err(|source| LabError::Io {
                    path: predict::agent_token_dir(&lab.work_dir),
                    source,
                })?;
                let agent = predict::agent_args(&lab.work_dir, id, tick_ms);
                let agent: Vec<&str> = agent.iter().map(String::as_str).collect();
                lab.children
                    .spawn(&format!("agent on backend {id}"), ns, &exe, &agent)?;
            }
        }
        lab.start_daemon()?;
        Ok(lab)
    }

    /// Starts the daemon in the load-balancer namespace and waits until it routes.
    pub fn start_daemon(&mut self) -> Result<(), LabError> {
        let exe = self.bins.shardline.to_string_lossy().into_owned();
        let config = self.config_path.to_string_lossy().into_owned();
        let args = ["daemon", "--config", &config];
        self.children
            .spawn("daemon", &self.topology.lb, &exe, &args)
    }

    /// Wires the lab's segment by XDP instead of the bridge ([`Topology::wire_by_xdp`]): the
    /// switch port facing the load balancer trades its `XDP_PASS` for the forwarder, which
    /// takes the balancer's `XDP_TX`ed frames on to their backend's port as `xdp_frame`s.
    pub fn wire_by_xdp(&self) -> Result<(), LabError> {
        if self.topology.wired_by_xdp() {
            return Ok(());
        }
        // Reaped when the lab stops; the pass program detaches as soon as its process is gone
        // (its link's descriptor closed), and the forwarder cannot attach before.
        self.children.kill(SWITCH_PASS);
        let deadline = Instant::now() + Duration::from_secs(5);
        while topology::wire::xdp_prog_id(&self.topology.switch, "p-lb").is_some() {
            if Instant::now() > deadline {
                return Err(LabError::NotReady {
                    what: "the switch port's XDP_PASS to detach".into(),
                    seconds: 5,
                    log: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.topology.wire_by_xdp()?;
        Ok(())
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill_daemon(&mut self) {
        self.children.kill_and_reap("daemon");
    }

    /// Makes `config` the daemon's configuration, as [`Self::reload_config_text`] does with
    /// its TOML. A `config` without an API token file keeps the lab's.
    pub fn reload_config(&mut self, config: &Config) -> Result<(), LabError> {
        let mut config = config.clone();
        if config.api.token_file.is_none() {
            config.api.token_file = Some(self.api_token.clone());
        }
        self.reload_config_text(&toml::to_string(&config)?)
    }

    /// Replaces the daemon's configuration file with `text` (which may be invalid, to see it
    /// refused), sends the daemon SIGHUP and waits (at most 10 s) until its log says the reload
    /// was applied or refused. A `text` without an `[api]` section keeps the lab's.
    pub fn reload_config_text(&mut self, text: &str) -> Result<(), LabError> {
        let mut text = text.to_owned();
        if !text.contains("[api]") {
            text += &format!("\n[api]\ntoken_file = \"{}\"\n", self.api_token.display());
        }
        // Parsed here only to track the tables; the daemon judges the file itself.
        let config = Config::parse(&text, "lab config");
        write_config(&self.config_path, &text)?;
        let Some((index, pid)) = self.children.last("daemon") else {
            return Err(LabError::NotReady {
                what: "daemon".into(),
                seconds: 0,
                log: " (not running)".into(),
            });
        };
        let log = self.children.log_path(index);
        let seen = |needle: &str| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(needle)
                .count()
        };
        let (applied, refused) = (seen("configuration reloaded"), seen("reload refused"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if seen("configuration reloaded") > applied {
                self.config = config?;
                return Ok(());
            }
            if seen("reload refused") > refused {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(LabError::NotReady {
            what: "configuration reload".into(),
            seconds: 10,
            log: format!(":\n{log}"),
        })
    }

    /// The lab's working directory (configuration, logs, history, load files).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The logs of every process started for `what` (e.g. `echo on backend 2`), joined.
    pub fn log_of(&self, what: &str) -> String {
        self.children.logs(what)
    }

    /// Kills every process started for `what` with SIGKILL: a backend dying. (The lab reaps
    /// them when it stops; `&self` so traffic can keep flowing meanwhile.)
    pub fn kill(&self, what: &str) {
        self.children.kill(what);
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        self.children.last_log("daemon")
    }

    /// Whether the daemon process is running.
    pub fn daemon_running(&mut self) -> bool {
        self.children.running("daemon")
    }

    /// The tables the daemon was configured with, for replaying its decisions.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from_config(&self.config)
    }

    /// Per namespace of this lab (the hook's backends included): its UDP drop counters when
    /// any is non-zero, or why they could not be read. Where a lost datagram died inside a host.
    pub fn udp_drops(&self) -> std::collections::BTreeMap<String, String> {
        let suffix = format!("-{}", self.topology.tag);
        let names = std::fs::read_dir("/var/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(&suffix));
        names
            .filter_map(|name| match netns::udp_drops(&name) {
                Ok(d) if d.is_zero() => None,
                Ok(d) => Some((name, format!("{d:?}"))),
                Err(e) => Some((name, e.to_string())),
            })
            .collect()
    }
}

/// The daemon's configuration file in a lab working in `work_dir`.
pub fn daemon_config_path(work_dir: &Path) -> PathBuf {
    work_dir.join("shardline.toml")
}

/// Writes the daemon's configuration file.
fn write_config(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|source| LabError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a fresh random API token, readable by root only.
fn write_api_token(path: &Path) -> Result<(), LabError> {
    write_secret(path).map_err(|source| LabError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes 32 fresh random bytes, in hex, to `path`, readable by root only: an API token, an
/// agent's token or a cluster secret.
pub fn write_secret(path: &Path) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.children.stop_all();
        predict::remove_extras(&self.topology.tag, &self.work_dir);
        let _ = std::fs::remove_dir_all(self.config.cluster().data_dir(&self.pin_dir));
        let _ = shardline::loader::teardown(&self.pin_dir, Some(&self.config.interface));
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}
