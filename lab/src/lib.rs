//! The netns lab, shardline's main job on one machine: a client, a load balancer running the
//! daemon with XDP on its interface, and backends that decapsulate and answer with their id.
//!
//! - [`topology`]: namespaces, the bridge, addresses.
//! - [`config`]: the daemon's configuration, built as a `Config` value.
//! - [`echo`]: the backends' UDP/TCP echo service.
//! - [`quic`]: the backends' QUIC echo service (QUIC-LB connection ids) and its client.
//! - [`traffic`]: the client's sessions and requests.
//! - [`replay`]: what the tables say each observed request should have reached.
//! - [`load`]: rate-shaped sessions (a ramp, a periodic wave) for the predictive loop.
//! - [`predict`]: the control loop's lab settings, the backends' agents and capacity limits,
//!   and the autoscale hook's new backend.

pub mod bins;
pub mod config;
pub mod echo;
pub mod load;
pub mod netns;
pub mod predict;
pub mod quic;
pub mod replay;
pub mod run;
pub mod topology;
pub mod traffic;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

pub use bins::Binaries;
pub use config::lab_config;
use topology::{Topology, VIP4, VIP6};

use shardline::{config::Config, snapshot::Snapshot};

use crate::netns::NetnsError;

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
    /// The network (dropped last: fields drop in order).
    children: Vec<(String, Child)>,
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
    /// The namespaces.
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
        let topology = Topology::build(&opts.tag, opts.backends, opts.sessions)?;
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
        config.validate()?;
        if let Some(seed) = predict.as_ref().and_then(|p| p.history_seed.as_ref()) {
            let path = predict::history_path(&work_dir);
            std::fs::write(&path, seed).map_err(|source| LabError::Io { path, source })?;
        }
        let config_path = work_dir.join("shardline.toml");
        write_config(&config_path, &toml::to_string(&config)?)?;
        let quic_cert = work_dir.join("quic-cert.pem");
        let quic_key = work_dir.join("quic-key.pem");
        quic::write_certificate(&quic_cert, &quic_key)?;
        let layout = config
            .services
            .iter()
            .find_map(|s| s.cid_layout())
            .expect("the lab config has a quic service");
        let mut lab = Self {
            children: Vec::new(),
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
        lab.spawn(
            "switch port XDP_PASS",
            Which::Switch,
            &exe,
            &["decap", "--iface", "p-lb", "--pass"],
        )?;
        for id in 1..=opts.backends {
            let which = Which::Backend(id as usize - 1);
            let (v4, v6) = (VIP4.to_string(), VIP6.to_string());
            lab.spawn(
                &format!("decap on backend {id}"),
                which,
                &exe,
                &["decap", "--iface", "eth0", "--vip", &v4, "--vip", &v6],
            )?;
            let (id_s, udp, tcp) = (
                id.to_string(),
                format!("{HEADER_PORT},{UDP_FLOW_PORT}"),
                TCP_FLOW_PORT.to_string(),
            );
            let (quic, rotation, sid_len) = (
                QUIC_PORT.to_string(),
                layout.rotation.to_string(),
                layout.server_id_len.to_string(),
            );
            let (cert, key) = (quic_cert.to_string_lossy(), quic_key.to_string_lossy());
            let limit = lab
                .predict
                .as_ref()
                .map(|p| predict::echo_limit_args(p, &lab.work_dir, id))
                .unwrap_or_default();
            let mut args = vec![
                "echo",
                "--id",
                &id_s,
                "--bind",
                &v4,
                "--bind",
                &v6,
                "--udp",
                &udp,
                "--tcp",
                &tcp,
                "--quic",
                &quic,
                "--quic-cert",
                &cert,
                "--quic-key",
                &key,
                "--rotation",
                &rotation,
                "--server-id-len",
                &sid_len,
            ];
            args.extend(limit.iter().map(String::as_str));
            lab.spawn(&format!("echo on backend {id}"), which, &lab_exe, &args)?;
            if let Some(tick_ms) = lab.predict.as_ref().map(|p| p.tick_ms) {
                let agent = predict::agent_args(&lab.work_dir, id, tick_ms);
                let agent: Vec<&str> = agent.iter().map(String::as_str).collect();
                lab.spawn(&format!("agent on backend {id}"), which, &exe, &agent)?;
            }
        }
        lab.start_daemon()?;
        Ok(lab)
    }

    /// Starts the daemon in the load-balancer namespace and waits until it routes.
    pub fn start_daemon(&mut self) -> Result<(), LabError> {
        let exe = self.bins.shardline.to_string_lossy().into_owned();
        let config = self.config_path.to_string_lossy().into_owned();
        self.spawn("daemon", Which::Lb, &exe, &["daemon", "--config", &config])
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill_daemon(&mut self) {
        for (what, child) in &mut self.children {
            if what == "daemon" && child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
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
        let index = self.children.iter().rposition(|(what, _)| what == "daemon");
        let Some(index) = index else {
            return Err(LabError::NotReady {
                what: "daemon".into(),
                seconds: 0,
                log: " (not running)".into(),
            });
        };
        let log = self.work_dir.join(format!("log-{index}"));
        let seen = |needle: &str| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(needle)
                .count()
        };
        let (applied, refused) = (seen("configuration reloaded"), seen("reload refused"));
        let pid = nix::unistd::Pid::from_raw(self.children[index].1.id() as i32);
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
        self.children
            .iter()
            .enumerate()
            .filter(|(_, (w, _))| w == what)
            .filter_map(|(i, _)| {
                std::fs::read_to_string(self.work_dir.join(format!("log-{i}"))).ok()
            })
            .collect()
    }

    /// Kills every process started for `what` with SIGKILL: a backend dying. (The lab reaps
    /// them when it stops; `&self` so traffic can keep flowing meanwhile.)
    pub fn kill(&self, what: &str) {
        for (w, child) in &self.children {
            if w == what {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        self.children
            .iter()
            .rposition(|(what, _)| what == "daemon")
            .and_then(|i| std::fs::read_to_string(self.work_dir.join(format!("log-{i}"))).ok())
            .unwrap_or_default()
    }

    /// Whether the daemon process is running.
    pub fn daemon_running(&mut self) -> bool {
        self.children
            .iter_mut()
            .any(|(what, child)| what == "daemon" && child.try_wait().ok().flatten().is_none())
    }

    fn spawn(
        &mut self,
        what: &str,
        which: Which,
        exe: &str,
        args: &[&str],
    ) -> Result<(), LabError> {
        let ready = self.work_dir.join(format!("ready-{}", self.children.len()));
        let log = self.work_dir.join(format!("log-{}", self.children.len()));
        let ns = match which {
            Which::Switch => &self.topology.switch,
            Which::Lb => &self.topology.lb,
            Which::Backend(i) => &self.topology.backends[i],
        };
        let log_file = std::fs::File::create(&log).map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?;
        let mut cmd = ns.command(exe);
        cmd.args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(std::process::Stdio::null());
        cmd.stdout(log_file.try_clone().map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?);
        cmd.stderr(log_file);
        let child = cmd.spawn().map_err(|source| LabError::Io {
            path: PathBuf::from(exe),
            source,
        })?;
        self.children.push((what.to_owned(), child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            let exited = self
                .children
                .last_mut()
                .and_then(|(_, c)| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(LabError::NotReady {
                    what: what.to_owned(),
                    seconds: 30,
                    log: format!(":\n{log}"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The tables the daemon was configured with, for replaying its decisions.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from_config(&self.config)
    }

    /// Runs the client's sessions for `duration` (or until `stop` says so), calling `tick`
    /// about once a second with everything observed so far.
    pub fn drive(
        &self,
        duration: Duration,
        stop: &(dyn Fn() -> bool + Sync),
        tick: &mut (dyn FnMut(Duration, &Report) + Send),
    ) -> Result<Report, LabError> {
        let client = &self.topology.client;
        let sessions = self.sessions.clone();
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| -> Result<Report, LabError> {
                client.enter_current_thread()?;
                let mut rng = rand::thread_rng();
                let mut report = Report::default();
                let start = Instant::now();
                let mut next_tick = Duration::from_secs(1);
                while start.elapsed() < duration && !stop() {
                    for (i, session) in sessions.iter().enumerate() {
                        match traffic::request(i, session, &mut rng) {
                            Ok(Some(obs)) => report.observations.push(obs),
                            Ok(None) => report.lost += 1,
                            Err(_) => report.errors += 1,
                        }
                    }
                    if start.elapsed() >= next_tick {
                        tick(start.elapsed(), &report);
                        next_tick += Duration::from_secs(1);
                    }
                }
                Ok(report)
            });
            worker.join().expect("lab traffic thread panicked")
        })
    }
}

impl Lab {
    /// Sends the rate-shaped `sessions` from the client for `duration` (or until `stop`).
    pub fn drive_load(
        &self,
        sessions: &[load::Loaded],
        duration: Duration,
        stop: &std::sync::atomic::AtomicBool,
        report: &std::sync::Mutex<load::LoadReport>,
    ) -> Result<(), LabError> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<(), LabError> {
                self.topology.client.enter_current_thread()?;
                load::run(sessions, duration, stop, report).map_err(|source| LabError::Io {
                    path: PathBuf::from("lab load generator"),
                    source,
                })
            })
            .join()
            .expect("lab load thread panicked")
        })
    }

    /// Runs one QUIC connection from the client for `duration` (or until `stop`), moving it to
    /// a new source port and address every second, and records who answered in `report`.
    pub fn drive_quic(
        &self,
        duration: Duration,
        stop: &(dyn Fn() -> bool + Sync),
        report: &std::sync::Mutex<quic::RebindingReport>,
    ) {
        let run = || -> Result<(), String> {
            self.topology
                .client
                .enter_current_thread()
                .map_err(|e| e.to_string())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(async {
                    let from = [topology::CLIENT4.into(), topology::client_alias4(1).into()];
                    let bind = std::net::SocketAddr::new(from[0], 0);
                    let endpoint = quic::client(bind, &self.quic_cert)?;
                    let server = std::net::SocketAddr::new(VIP4.into(), QUIC_PORT);
                    let deadline = Instant::now() + duration;
                    let every = Duration::from_secs(1);
                    quic::rebinding_connection(
                        &endpoint, server, &from, every, deadline, stop, report,
                    )
                    .await
                })
                .map_err(|e| e.to_string())
        };
        // A thread of its own: entering the client's namespace must not move the caller.
        let error = std::thread::scope(|s| s.spawn(run).join())
            .unwrap_or_else(|_| Err("the QUIC client panicked".into()))
            .err();
        report.lock().unwrap_or_else(|e| e.into_inner()).error = error;
    }
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
        .map_err(|source| LabError::Io {
            path: path.to_owned(),
            source,
        })
}

#[derive(Clone, Copy)]
enum Which {
    Switch,
    Lb,
    Backend(usize),
}

/// What the client observed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every answered request.
    pub observations: Vec<traffic::Observation>,
    /// Requests that got no answer in time.
    pub lost: u64,
    /// Requests that failed locally (socket errors).
    pub errors: u64,
}

impl Report {
    /// Per session: answered requests by backend id.
    pub fn by_session(&self) -> BTreeMap<usize, BTreeMap<u32, u64>> {
        let mut out: BTreeMap<usize, BTreeMap<u32, u64>> = BTreeMap::new();
        for o in &self.observations {
            *out.entry(o.session)
                .or_default()
                .entry(o.backend)
                .or_default() += 1;
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (_, child) in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        predict::remove_extras(&self.topology.tag, &self.work_dir);
        let _ = std::fs::remove_dir_all(self.config.cluster().data_dir(&self.pin_dir));
        let _ = shardline::loader::teardown(&self.pin_dir, Some(&self.config.interface));
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}
