//! A cluster of real `shardline daemon` processes, one network namespace per node on a bridge
//! (a switch namespace), each with its own pin and data directory, tagged by pid. Partitions
//! are bridge ports set down; the test talks to a node from inside its own namespace, so an
//! isolated node is still reachable by the test. Everything is removed on drop.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use shardline_lab::{
    cluster_lab::{http, outcome},
    netns::Netns,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Raft timing every test cluster runs with (generous: a loaded 2-core VM).
pub const ELECTION_MS: [u64; 2] = [1000, 2000];

/// One daemon.
pub struct Node {
    pub id: u64,
    pub ns: Netns,
    pub addr: String,
    pub pin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    ready: PathBuf,
    child: Option<Child>,
}

/// The namespaces, the nodes and their files.
pub struct TestCluster {
    switch: Netns,
    pub nodes: Vec<Node>,
    work: PathBuf,
    exe: PathBuf,
    snapshot_logs: u64,
    /// The cluster secret every node's `[cluster] secret_file` names.
    pub secret: String,
}

fn ip_of(id: u64) -> String {
    format!("10.78.0.{}", 10 + id)
}

impl TestCluster {
    /// `voters` nodes bootstrapped together, plus `spare` nodes set up (namespace, config with
    /// `join = true`) but not started.
    pub fn new(voters: u64, spare: u64, snapshot_logs: u64) -> Self {
        let tag = format!(
            "r{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let switch = Netns::create(&format!("sl-rsw-{tag}")).expect("switch namespace");
        switch
            .ip(&["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        switch.ip(&["link", "set", "br0", "up"]).expect("bridge up");
        let work = std::env::temp_dir().join(format!("shardline-raft-{tag}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work dir");
        let secret_file = work.join("cluster-secret");
        shardline_lab::write_secret(&secret_file).expect("cluster secret");
        let secret = std::fs::read_to_string(&secret_file).expect("cluster secret");
        let mut cluster = Self {
            switch,
            nodes: Vec::new(),
            work,
            exe: crate::support::bins().shardline,
            snapshot_logs,
            secret,
        };
        for id in 1..=voters + spare {
            let ns = Netns::create(&format!("sl-r{id}-{tag}")).expect("node namespace");
            let port = format!("p{id}");
            cluster
                .switch
                .ip(&[
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns.name(),
                ])
                .expect("veth");
            cluster
                .switch
                .ip(&["link", "set", &port, "master", "br0", "up"])
                .expect("port up");
            ns.ip(&["addr", "add", &format!("{}/24", ip_of(id)), "dev", "eth0"])
                .expect("address");
            ns.ip(&["link", "set", "eth0", "up"]).expect("eth0 up");
            let dir = cluster.work.join(format!("node{id}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            let node = Node {
                id,
                ns,
                addr: format!("{}:7946", ip_of(id)),
                pin_dir: PathBuf::from(format!("/sys/fs/bpf/shardline-raft-{tag}-{id}")),
                data_dir: dir.join("raft"),
                config: dir.join("shardline.toml"),
                log: dir.join("log"),
                ready: dir.join("ready"),
                child: None,
            };
            let members: Vec<String> = (1..=voters)
                .map(|m| format!("{{ id = {m}, addr = \"{}:7946\" }}", ip_of(m)))
                .collect();
            let membership = if id <= voters {
                format!("members = [{}]", members.join(", "))
            } else {
                "join = true".into()
            };
            let membership = format!(
                "{membership}\nsecret_file = \"{}\"",
                cluster.work.join("cluster-secret").display()
            );
            let text = node_config(&node, &membership, cluster.snapshot_logs);
            std::fs::write(&node.config, text).expect("node config");
            cluster.nodes.push(node);
        }
        for id in 1..=voters {
            cluster.start(id);
        }
        cluster
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    /// Starts node `id`'s daemon (again), not waiting.
    pub fn start(&mut self, id: u64) {
        let exe = self.exe.clone();
        let node = &mut self.nodes[id as usize - 1];
        let _ = std::fs::remove_file(&node.ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let child = node
            .ns
            .command(exe.to_str().expect("utf-8 path"))
            .args(["daemon", "--config"])
            .arg(&node.config)
            .arg("--ready-file")
            .arg(&node.ready)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning a daemon");
        node.child = Some(child);
    }

    /// Waits until node `id` routes from a committed state (its ready file).
    pub fn wait_ready(&mut self, id: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let node = &mut self.nodes[id as usize - 1];
            if node.ready.exists() {
                return;
            }
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("node {id} exited ({status}):\n{}", self.log(id));
            }
            if Instant::now() > deadline {
                panic!("node {id} not ready within {within:?}:\n{}", self.log(id));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[id as usize - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Node `id`'s log so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    /// Cuts node `id` off the bridge (or reconnects it).
    pub fn partition(&self, id: u64, cut: bool) {
        let state = if cut { "down" } else { "up" };
        self.switch
            .ip(&["link", "set", &format!("p{id}"), state])
            .expect("port state");
    }

    /// Calls `path` on node `id` (POST with a body, GET without) with the cluster secret; the
    /// JSON answer.
    pub fn call(&self, id: u64, path: &str, body: Option<Value>) -> Result<Value, String> {
        let headers = format!("Authorization: Bearer {}\r\n", self.secret);
        let (status, body) = self.raw(id, path, body.map(|b| b.to_string()), &headers)?;
        if status != 200 {
            return Err(format!("{}{path}: {status}: {body}", self.node(id).addr));
        }
        serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}"))
    }

    /// Sends `path` to node `id` with exactly `headers` (each ending in CRLF) and `body`
    /// (POST, as JSON) or none (GET): the status and the body, whatever they are.
    pub fn raw(
        &self,
        id: u64,
        path: &str,
        body: Option<String>,
        headers: &str,
    ) -> Result<(u16, String), String> {
        let node = self.node(id);
        std::thread::scope(|s| {
            s.spawn(|| {
                node.ns.enter_current_thread().map_err(|e| e.to_string())?;
                http(&node.addr, path, body.as_deref(), headers)
            })
            .join()
            .expect("http thread")
        })
    }

    /// Writes `command` through node `id`: `Ok(answer)` or the error the cluster gave.
    pub fn write(&self, id: u64, command: Value) -> Result<Value, String> {
        let answer = self.call(id, "/cluster/write", Some(command))?;
        outcome(answer)
    }

    /// A linearizable read through node `id`.
    pub fn read(&self, id: u64) -> Result<Value, String> {
        let answer = self.call(id, "/cluster/read", Some(Value::Null))?;
        outcome(answer)
    }

    /// Node `id`'s applied state.
    pub fn local(&self, id: u64) -> Result<Value, String> {
        self.call(id, "/cluster/local", None)
    }

    /// Node `id`'s status.
    pub fn status(&self, id: u64) -> Result<Value, String> {
        self.call(id, "/cluster/status", None)
    }

    /// The leader every node in `among` agrees on, waiting up to `within`.
    pub fn leader(&self, among: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<Option<u64>> = among
                .iter()
                .map(|id| self.status(*id).ok().and_then(|s| s["leader"].as_u64()))
                .collect();
            if let Some(Some(l)) = leaders.first() {
                if among.contains(l) && leaders.iter().all(|x| *x == Some(*l)) {
                    return *l;
                }
            }
            if Instant::now() > deadline {
                panic!("no agreed leader among {among:?} within {within:?}: {leaders:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `id`'s applied state satisfies `ok`.
    pub fn wait_local(&self, id: u64, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(state) = self.local(id) {
                if ok(&state) {
                    return state;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "node {id}'s state did not get there within {within:?}; status {:?}\n{}",
                    self.status(id),
                    self.log(id)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.kill(id);
        }
        for node in &self.nodes {
            let _ = shardline::loader::teardown(&node.pin_dir, None);
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A node's configuration: the shared test tables on `lo`, its pin dir, its cluster section.
fn node_config(node: &Node, membership: &str, snapshot_logs: u64) -> String {
    let tables = crate::support::TEST_CONFIG.replace("interface = \"lo\"", "");
    format!(
        "interface = \"lo\"\nxdp_mode = \"generic\"\npin_dir = \"{}\"\n{tables}\n[cluster]\nnode_id = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\n{membership}\nheartbeat_ms = 100\nelection_timeout_ms = [{}, {}]\nsnapshot_logs = {snapshot_logs}\n",
        node.pin_dir.display(),
        node.id,
        node.addr,
        node.data_dir.display(),
        ELECTION_MS[0],
        ELECTION_MS[1],
    )
}

/// One HTTP/1.1 request with `Connection: close` and `headers`: the status and the body.
fn http(
    addr: &str,
    path: &str,
    body: Option<&str>,
    headers: &str,
) -> Result<(u16, String), String> {
    let request = http::Request {
        method: if body.is_some() { "POST" } else { "GET" },
        path,
        body: body.map(str::to_owned),
        headers: headers.to_owned(),
        timeout: Duration::from_secs(30),
    };
    http::call(addr.parse().map_err(|e| format!("{addr}: {e}"))?, &request)
}

/// A `PutState` command for session `session` of `kv`.
pub fn put(session: u64, key: &str, value: &str) -> Value {
    json!({"op": "put_state", "session": {"service": "kv", "session": session}, "key": key, "value": value.as_bytes()})
}

/// The value of `key` of session `session` in a serialized state, as text.
pub fn get(state: &Value, session: u64, key: &str) -> Option<String> {
    let kv = state["kv"].as_array()?;
    let (_, map) = kv
        .iter()
        .map(|pair| (&pair[0], &pair[1]))
        .find(|(s, _)| s["service"] == "kv" && s["session"] == session)?;
    let bytes: Vec<u8> = map[key]
        .as_array()?
        .iter()
        .map(|b| b.as_u64().unwrap_or(0) as u8)
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
