//! A three-node load-balancer cluster in the netns lab, for fault tests: every node runs
//! `shardline daemon` with the XDP balancer on its own data interface and Raft over a peer
//! segment of its own, the backends run the lab's echo service, decapsulator and agent, and
//! the client spreads flows over the nodes through a multipath route (see [`net`]).
//!
//! - [`net`]: namespaces, bridges, addresses, the client's ECMP routes, partitions.
//! - [`http`]: one HTTP request from inside a namespace (the peer endpoint, the API).
//! - here: the nodes' configurations and processes, backends killed and restarted, the
//!   replicated state read back.
//!
//! Every method takes `&self`, so traffic keeps flowing from other threads while a test kills,
//! partitions and restarts.

pub mod http;
pub mod net;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::{Child, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;
use shardline::{
    config::{
        cluster::{ClusterConfig, PeerConfig},
        control::ControlConfig,
        Config,
    },
    state::ControlState,
};

use crate::{
    children::Children,
    config::lab_config,
    echo,
    netns::Netns,
    predict::{self, AGENTS_PORT, AGENT_PORT},
    topology::{backend4, VIP4, VIP6},
    traffic::{self, Session},
    Binaries, LabError,
};
use net::{lb4, peer4, ClusterNet};

/// Load balancers in a cluster lab.
pub const NODES: u64 = 3;
/// Port of every node's peer endpoint (on the peer segment).
pub const PEER_PORT: u16 = 7946;
/// Raft timing of the lab's nodes: heartbeat, and the election timeout's range (ms).
pub const HEARTBEAT_MS: u64 = 100;
/// See [`HEARTBEAT_MS`].
pub const ELECTION_MS: [u64; 2] = [1000, 2000];
/// Health-check interval of every node (ms): a dead backend is out within about this.
pub const HEALTH_MS: u64 = 500;
/// Drain timeout (s): a drained backend leaves its shard sets after this.
pub const DRAIN_SECS: f64 = 3.0;
/// How long one HTTP call to a node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How to build a cluster lab.
#[derive(Clone, Debug)]
pub struct ClusterLabOptions {
    /// Unique tag for namespace and pin names.
    pub tag: String,
    /// Number of backends.
    pub backends: u32,
    /// Number of client sessions (half header mode, half flow mode).
    pub sessions: u32,
    /// The executables.
    pub bins: Binaries,
}

/// One load balancer's daemon: its files and its process.
struct Node {
    pin_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    ready: PathBuf,
    child: Mutex<Option<Child>>,
}

/// A running cluster lab. Dropping it stops every process and removes every namespace and pin.
pub struct ClusterLab {
    /// The backends' processes and the switch ports' XDP_PASS programs.
    children: Mutex<Children>,
    nodes: Vec<Node>,
    /// Node 1's configuration (the others differ in their node id, addresses and pins).
    pub config: Config,
    /// The client sessions.
    pub sessions: Vec<Session>,
    secret: String,
    api_token: String,
    work_dir: PathBuf,
    bins: Binaries,
    /// The namespaces (dropped last).
    pub net: ClusterNet,
}

impl ClusterLab {
    /// Builds the network, starts every backend and the three daemons, and returns once every
    /// daemon routes from a committed state.
    pub fn start(opts: &ClusterLabOptions) -> Result<Self, LabError> {
        let net = ClusterNet::build(&opts.tag, NODES, opts.backends, opts.sessions)?;
        let work_dir = std::env::temp_dir().join(format!("shardline-faults-{}", opts.tag));
        let _ = std::fs::remove_dir_all(&work_dir);
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| LabError::Io { path, source }
        };
        std::fs::create_dir_all(&work_dir).map_err(io(&work_dir))?;
        let secret_file = work_dir.join("cluster-secret");
        let token_file = work_dir.join("api-token");
        for file in [&secret_file, &token_file] {
            crate::write_secret(file).map_err(io(file))?;
        }
        let read = |file: &PathBuf| std::fs::read_to_string(file).map_err(io(file));
        let (secret, api_token) = (read(&secret_file)?, read(&token_file)?);
        let sessions = traffic::sessions(opts.sessions);
        let mut nodes = Vec::new();
        let mut first = None;
        for node in 1..=NODES {
            let dir = work_dir.join(format!("node{node}"));
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let pin_dir =
                PathBuf::from(format!("/sys/fs/bpf/shardline-faults-{}-{node}", opts.tag));
            let mut config = lab_config(opts.backends, &sessions, &pin_dir);
            config.api.token_file = Some(token_file.clone());
            config.cluster = Some(cluster_config(node, &dir, &secret_file));
            config.control = Some(control_config(node, &work_dir));
            for b in &mut config.backends {
                b.agent = Some(format!("{}:{AGENT_PORT}", backend4(b.id)));
            }
            config.validate()?;
            let path = dir.join("shardline.toml");
            std::fs::write(&path, toml::to_string(&config)?).map_err(io(&path))?;
            first.get_or_insert(config);
            nodes.push(Node {
                pin_dir,
                config: path,
                log: dir.join("log"),
                ready: dir.join("ready"),
                child: Mutex::new(None),
            });
        }
        let lab = Self {
            children: Mutex::new(Children::new(&work_dir)),
            nodes,
            config: first.expect("three nodes"),
            sessions,
            secret,
            api_token,
            work_dir,
            bins: opts.bins.clone(),
            net,
        };
        let exe = lab.bins.shardline.to_string_lossy().into_owned();
        for node in 1..=NODES {
            // Native XDP_TX on a veth reaches the peer only if the peer runs XDP too.
            let port = format!("p-lb{node}");
            lab.spawn(
                &format!("XDP_PASS on {port}"),
                &lab.net.switch,
                &exe,
                &["decap", "--iface", &port, "--pass"],
            )?;
        }
        for id in 1..=opts.backends {
            predict::write_agent_token(&lab.work_dir, id)
                .map_err(io(&predict::agent_token_dir(&lab.work_dir)))?;
            lab.start_backend(id)?;
        }
        for node in 1..=NODES {
            lab.spawn_node(node)?;
        }
        for node in 1..=NODES {
            lab.wait_ready(node, Duration::from_secs(60))?;
        }
        Ok(lab)
    }

    fn spawn(&self, what: &str, ns: &Netns, exe: &str, args: &[&str]) -> Result<(), LabError> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.spawn(what, ns, exe, args)
    }

    /// Starts backend `id`'s decapsulator, echo service and agent (again, after
    /// [`Self::kill_backend`]).
    pub fn start_backend(&self, id: u32) -> Result<(), LabError> {
        let ns = &self.net.backends[id as usize - 1];
        let exe = self.bins.shardline.to_string_lossy().into_owned();
        let (v4, v6) = (VIP4.to_string(), VIP6.to_string());
        let decap = ["decap", "--iface", "eth0", "--vip", &v4, "--vip", &v6];
        self.spawn(&format!("decap on backend {id}"), ns, &exe, &decap)?;
        let lab_exe = self.bins.lab.to_string_lossy().into_owned();
        let args = echo::lab_args(id, None);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(&format!("echo on backend {id}"), ns, &lab_exe, &args)?;
        let agent = predict::agent_args(&self.work_dir, id, HEALTH_MS);
        let agent: Vec<&str> = agent.iter().map(String::as_str).collect();
        self.spawn(&format!("agent on backend {id}"), ns, &exe, &agent)
    }

    /// Kills backend `id` with SIGKILL: its echo service, agent and decapsulator (a host
    /// dying), and reaps them.
    pub fn kill_backend(&self, id: u32) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for what in ["echo", "agent", "decap"] {
            children.kill_and_reap(&format!("{what} on backend {id}"));
        }
    }

    /// Starts node `node`'s daemon, not waiting for it.
    fn spawn_node(&self, node: u64) -> Result<(), LabError> {
        let n = self.node(node);
        let _ = std::fs::remove_file(&n.ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(|source| LabError::Io {
                path: n.log.clone(),
                source,
            })?;
        let copy = log.try_clone().map_err(|source| LabError::Io {
            path: n.log.clone(),
            source,
        })?;
        let exe = self.bins.shardline.to_string_lossy().into_owned();
        let child = self.net.lbs[node as usize - 1]
            .command(&exe)
            .args(["daemon", "--config"])
            .arg(&n.config)
            .arg("--ready-file")
            .arg(&n.ready)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(copy)
            .stderr(log)
            .spawn()
            .map_err(|source| LabError::Io {
                path: self.bins.shardline.clone(),
                source,
            })?;
        *n.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    /// Waits until node `node` routes from a committed state (its ready file).
    pub fn wait_ready(&self, node: u64, within: Duration) -> Result<(), LabError> {
        let n = self.node(node);
        let deadline = Instant::now() + within;
        loop {
            if n.ready.exists() {
                return Ok(());
            }
            let exited = n
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                return Err(LabError::NotReady {
                    what: format!("daemon of node {node}"),
                    seconds: within.as_secs(),
                    log: format!(":\n{}", self.log(node)),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts node `node`'s daemon again and waits until it routes.
    pub fn start_node(&self, node: u64, within: Duration) -> Result<(), LabError> {
        self.spawn_node(node)?;
        self.wait_ready(node, within)
    }

    /// Stops node `node`'s daemon: SIGKILL (`hard`, no chance to clean up) or SIGTERM, then
    /// reaps it. Its XDP program stays attached and its maps pinned, so it keeps forwarding.
    pub fn stop_node(&self, node: u64, hard: bool) {
        let Some(mut child) = self
            .node(node)
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let signal = if hard {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Cuts node `node` off the peer segment, or reconnects it.
    pub fn partition(&self, node: u64, cut: bool) -> Result<(), LabError> {
        Ok(self.net.partition(node, cut)?)
    }

    fn node(&self, node: u64) -> &Node {
        &self.nodes[node as usize - 1]
    }

    /// Node `node`'s daemon log so far.
    pub fn log(&self, node: u64) -> String {
        std::fs::read_to_string(&self.node(node).log).unwrap_or_default()
    }

    /// Where node `node` pins its maps.
    pub fn pin_dir(&self, node: u64) -> &std::path::Path {
        &self.node(node).pin_dir
    }

    /// Calls `path` on node `node`'s peer endpoint (POST with a body, GET without) with the
    /// cluster secret, from inside its namespace: the JSON answer.
    pub fn peer(&self, node: u64, path: &str, body: Option<Value>) -> Result<Value, String> {
        let addr = SocketAddr::new(IpAddr::V4(peer4(node)), PEER_PORT);
        let method = if body.is_some() { "POST" } else { "GET" };
        self.call(node, addr, method, path, body, &self.secret)
    }

    /// Calls `method path` on node `node`'s HTTP API with the API token: the JSON answer.
    pub fn api(
        &self,
        node: u64,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let addr = self.config.api.listen;
        self.call(node, addr, method, path, body, &self.api_token)
    }

    fn call(
        &self,
        node: u64,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> Result<Value, String> {
        let ns = &self.net.lbs[node as usize - 1];
        let request = http::Request {
            method,
            path,
            body: body.map(|b| b.to_string()),
            headers: format!("Authorization: Bearer {token}\r\n"),
            timeout: CALL_TIMEOUT,
        };
        let (status, text) = http::call_in(ns, addr, &request)?;
        if status != 200 {
            return Err(format!("node {node} {method} {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))
    }

    /// Writes `command` through node `node`'s peer endpoint: `Ok(answer)` once committed, or
    /// the error the cluster gave.
    pub fn write(&self, node: u64, command: Value) -> Result<Value, String> {
        outcome(self.peer(node, "/cluster/write", Some(command))?)
    }

    /// A linearizable read of the whole state through node `node`.
    pub fn read(&self, node: u64) -> Result<Value, String> {
        outcome(self.peer(node, "/cluster/read", Some(Value::Null))?)
    }

    /// Node `node`'s applied state, as its daemon writes it into its maps.
    pub fn local(&self, node: u64) -> Result<ControlState, String> {
        let value = self.peer(node, "/cluster/local", None)?;
        serde_json::from_value(value).map_err(|e| format!("node {node}'s state: {e}"))
    }

    /// The leader node `node` knows of, if any.
    pub fn leader_of(&self, node: u64) -> Option<u64> {
        self.peer(node, "/cluster/status", None)
            .ok()
            .and_then(|s| s["leader"].as_u64())
    }

    /// The leader every node in `among` agrees on, waiting up to `within`.
    pub fn leader(&self, among: &[u64], within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<Option<u64>> = among.iter().map(|n| self.leader_of(*n)).collect();
            if let Some(Some(l)) = seen.first() {
                if among.contains(l) && seen.iter().all(|x| *x == Some(*l)) {
                    return Some(*l);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        for node in 1..=NODES {
            self.stop_node(node, true);
        }
        self.children
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .stop_all();
        for n in &self.nodes {
            // No interface: the namespaces' removal detaches the programs.
            let _ = shardline::loader::teardown(&n.pin_dir, None);
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// Node `node`'s `[cluster]` section: Raft on the peer segment, its files under `dir`.
fn cluster_config(
    node: u64,
    dir: &std::path::Path,
    secret_file: &std::path::Path,
) -> ClusterConfig {
    let addr = |n| SocketAddr::new(IpAddr::V4(peer4(n)), PEER_PORT);
    ClusterConfig {
        node_id: node,
        listen: Some(addr(node)),
        data_dir: Some(dir.join("raft")),
        members: (1..=NODES)
            .map(|id| PeerConfig {
                id,
                addr: addr(id).to_string(),
            })
            .collect(),
        heartbeat_ms: HEARTBEAT_MS,
        election_timeout_ms: ELECTION_MS,
        secret_file: Some(secret_file.to_owned()),
        ..ClusterConfig::default()
    }
}

/// Node `node`'s `[control]` section: health checks of every backend's agent every
/// [`HEALTH_MS`], the agents' endpoint on its data address, a short drain timeout, and a shard
/// capacity far above the lab's traffic, so the loop itself re-shards nothing.
fn control_config(node: u64, work_dir: &std::path::Path) -> ControlConfig {
    ControlConfig {
        tick_ms: HEALTH_MS,
        per_shard_capacity: 1e6,
        listen: Some(SocketAddr::new(IpAddr::V4(lb4(node)), AGENTS_PORT)),
        agent_token_dir: Some(predict::agent_token_dir(work_dir)),
        health_interval_ms: HEALTH_MS,
        drain_timeout_secs: DRAIN_SECS,
        ..ControlConfig::default()
    }
}

/// `Ok(value)` of a serialized `Result<T, ControlError>` (what the peer endpoint's writes and
/// reads answer), or its error as text.
pub fn outcome(answer: Value) -> Result<Value, String> {
    if let Some(ok) = answer.get("Ok") {
        return Ok(ok.clone());
    }
    Err(answer
        .get("Err")
        .map(|e| e.to_string())
        .unwrap_or_else(|| answer.to_string()))
}
