//! The lab's predictive side: a `[control]` section for the daemon, a capacity limit and a
//! `shardline agent` on every backend, and the autoscale hook's action — a new backend
//! namespace on the lab's bridge that registers itself (`shardline-lab add-backend`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use shardline::config::{
    control::{ControlConfig, Controller, HookConfig, OnCorrupt},
    BackendConfig, Config,
};
use shardline_common::quic::CidLayout;

use crate::{
    daemon_config_path,
    echo::{self, QuicFiles},
    netns::{Netns, NetnsError},
    quic,
    topology::{backend4, backend6, backend_mac, backend_ns_name, join_backend, LB4, VIP4, VIP6},
    Binaries,
};

/// Port of the daemon's agents' endpoint in the lab.
pub const AGENTS_PORT: u16 = 7070;
/// The services a backend the hook adds registers for: every lab service but the QUIC ones
/// (`config::QUIC_POOL_SERVICES`), whose pool stays on backends 1 and 2.
pub const HOOK_BACKEND_SERVICES: [&str; 4] = ["kv", "kv6", "dns", "web"];

/// Port every backend's agent serves `/health` on.
pub const AGENT_PORT: u16 = 7071;

/// The control loop's settings in a lab.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Requests per second each backend serves before refusing (its capacity limit).
    pub backend_capacity: u64,
    /// `control.per_shard_capacity`.
    pub per_shard_capacity: f64,
    /// Call the hook (a new backend) when the fleet falls short.
    pub hook: bool,
    /// Tick and health-check interval, ms.
    pub tick_ms: u64,
    /// History file contents to start from (e.g. garbage, for the corruption test).
    pub history_seed: Option<Vec<u8>>,
    /// `control.history_on_corrupt`.
    pub on_corrupt: OnCorrupt,
    /// `control.controller`: the predictive loop (default) or the reactive HPA rule.
    pub controller: Controller,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            backend_capacity: 400,
            per_shard_capacity: 250.0,
            hook: false,
            tick_ms: 500,
            history_seed: None,
            on_corrupt: OnCorrupt::Recover,
            controller: Controller::Predictive,
        }
    }
}

/// Where the daemon's agents' endpoint listens.
pub fn agents_endpoint() -> SocketAddr {
    SocketAddr::new(LB4.into(), AGENTS_PORT)
}

/// The history file of a lab working in `work_dir`.
pub fn history_path(work_dir: &Path) -> PathBuf {
    work_dir.join("history.redb")
}

/// The directory of the agents' tokens (`[control] agent_token_dir`) of a lab in `work_dir`.
pub fn agent_token_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("agent-tokens")
}

/// Writes a fresh random token for backend `id`'s agent into the lab's token directory (the
/// daemon reads it there; the agent is given the same file), readable by root only.
pub fn write_agent_token(work_dir: &Path, id: u32) -> std::io::Result<PathBuf> {
    let dir = agent_token_dir(work_dir);
    std::fs::create_dir_all(&dir)?;
    let path = shardline::guard::agents::token_path(&dir, id);
    crate::write_secret(&path)?;
    Ok(path)
}

/// The load file backend `id`'s echo writes and its agent reads.
pub fn load_file(work_dir: &Path, id: u32) -> PathBuf {
    work_dir.join(format!("load-{id}.json"))
}

/// Gives `backend` its agent (whose `/health` the daemon probes) and the capacity limit its
/// echo enforces, so the loop plans with what the backend will really carry.
pub fn add_agent(opts: &PredictOptions, backend: &mut BackendConfig) {
    backend.agent = Some(format!("{}:{AGENT_PORT}", backend4(backend.id)));
    backend.capacity = Some(opts.backend_capacity as f64);
}

/// The daemon's `[control]` section in a lab. Ticks and health checks share `tick_ms`, and the
/// horizon, dwell and scale-in delay are short, so the loop reacts within a test's minutes;
/// with `opts.hook`, the hook runs `exe add-backend` on lab `tag` (`aliases` client aliases).
pub fn control_config(
    opts: &PredictOptions,
    work_dir: &Path,
    exe: &Path,
    tag: &str,
    aliases: u32,
) -> ControlConfig {
    let hook = opts.hook.then(|| HookConfig {
        command: Some(vec![
            exe.to_string_lossy().into_owned(),
            "add-backend".into(),
            "--tag".into(),
            tag.into(),
            "--work-dir".into(),
            work_dir.to_string_lossy().into_owned(),
            "--capacity".into(),
            opts.backend_capacity.to_string(),
            "--aliases".into(),
            aliases.to_string(),
        ]),
        webhook: None,
        lead_secs: 15.0,
        cooldown_secs: 20.0,
    });
    ControlConfig {
        controller: opts.controller,
        tick_ms: opts.tick_ms,
        horizon: 6,
        per_shard_capacity: opts.per_shard_capacity,
        headroom: 0.25,
        min_dwell_secs: 2.0,
        scale_in_delay_secs: 30.0,
        listen: Some(agents_endpoint()),
        agent_token_dir: Some(agent_token_dir(work_dir)),
        health_interval_ms: opts.tick_ms,
        history_path: Some(history_path(work_dir)),
        history_on_corrupt: opts.on_corrupt,
        hook,
        ..ControlConfig::default()
    }
}

/// Echo arguments that add the capacity limit.
pub fn echo_limit_args(opts: &PredictOptions, work_dir: &Path, id: u32) -> Vec<String> {
    vec![
        "--capacity".into(),
        opts.backend_capacity.to_string(),
        "--load-file".into(),
        load_file(work_dir, id).display().to_string(),
    ]
}

/// Arguments of backend `id`'s agent (its token is [`write_agent_token`]'s file).
pub fn agent_args(work_dir: &Path, id: u32, interval_ms: u64) -> Vec<String> {
    let token = shardline::guard::agents::token_path(&agent_token_dir(work_dir), id);
    vec![
        "agent".into(),
        "--backend".into(),
        id.to_string(),
        "--daemon".into(),
        agents_endpoint().to_string(),
        "--listen".into(),
        format!("{}:{AGENT_PORT}", backend4(id)),
        "--interval-ms".into(),
        interval_ms.to_string(),
        "--load-file".into(),
        load_file(work_dir, id).display().to_string(),
        "--token-file".into(),
        token.display().to_string(),
    ]
}

/// File listing the backends the hook added (`id pid pid pid` per line), for the lab to stop.
pub fn extras_file(work_dir: &Path) -> PathBuf {
    work_dir.join("extra-backends")
}

/// `shardline-lab add-backend`: the hook's action. Adds the next backend id to lab `tag`,
/// starts its decapsulator, echo and agent (which registers it with the daemon), and returns
/// once it is registered. The echo serves what the first backends' do (UDP, TCP and, with the
/// lab's certificate, QUIC) with the capacity limit; the backend registers for every service
/// but the QUIC ones, whose pool stays on backends 1 and 2, and joins exactly those pools.
pub fn add_backend(
    tag: &str,
    work_dir: &Path,
    capacity: u64,
    aliases: u32,
) -> Result<u32, NetnsError> {
    let existing = std::fs::read_to_string(extras_file(work_dir)).unwrap_or_default();
    let mut id = 1;
    while Path::new("/var/run/netns")
        .join(backend_ns_name(tag, id))
        .exists()
        || existing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&id.to_string()))
    {
        id += 1;
    }
    let ns = join_backend(tag, id, aliases)?;
    let bins = Binaries::locate().map_err(|e| NetnsError::Spawn {
        command: "a lab backend's processes".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
    })?;
    let opts = PredictOptions {
        backend_capacity: capacity,
        ..PredictOptions::default()
    };
    let (cert, key) = quic::certificate_paths(work_dir);
    let layout = quic_layout(work_dir, &cert, &key);
    if let Err(why) = &layout {
        eprintln!("lab: backend {id} serves UDP and TCP but no QUIC: {why}");
    }
    let quic = layout.ok().map(|layout| QuicFiles {
        cert: &cert,
        key: &key,
        layout,
    });
    let mut echo = echo::lab_args(id, quic.as_ref());
    echo.extend(echo_limit_args(&opts, work_dir, id));
    write_agent_token(work_dir, id).map_err(|e| io(&agent_token_dir(work_dir), e))?;
    let mut agent = agent_args(work_dir, id, 500);
    agent.extend(
        [
            "--register",
            "--ipv4",
            &backend4(id).to_string(),
            "--ipv6",
            &backend6(id).to_string(),
            "--mac",
            &backend_mac(id),
            "--capacity",
            &capacity.to_string(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    for service in HOOK_BACKEND_SERVICES {
        agent.extend(["--service".to_string(), service.to_string()]);
    }
    let (v4, v6) = (VIP4.to_string(), VIP6.to_string());
    let decap: Vec<String> = ["decap", "--iface", "eth0", "--vip", &v4, "--vip", &v6]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut pids = Vec::new();
    // In order, each ready before the next starts: the decapsulator's program attached before
    // the echo binds, and both before the agent registers the backend (from then on the daemon
    // may place keys on it: a packet that arrived before would find no decapsulation or no
    // socket and be lost).
    for (what, exe, mut args) in [
        ("decap", &bins.shardline, decap),
        ("echo", &bins.lab, echo),
        ("agent", &bins.shardline, agent),
    ] {
        let log = work_dir.join(format!("extra-{id}-{what}.log"));
        let ready = work_dir.join(format!("ready-extra-{id}-{what}"));
        args.extend(["--ready-file".into(), ready.display().to_string()]);
        let file = std::fs::File::create(&log).map_err(|e| io(&log, e))?;
        let mut child = ns
            .command(&exe.to_string_lossy())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().map_err(|e| io(&log, e))?)
            .stderr(file)
            .spawn()
            .map_err(|e| io(&log, e))?;
        pids.push(child.id());
        // Recorded before waiting, so the lab stops what started even if this one never
        // becomes ready ([`remove_extras`]).
        let line = format!(
            "{id} {}\n",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let _ = std::fs::write(extras_file(work_dir), format!("{existing}{line}"));
        if let Err(e) = wait_ready(&mut child, &ready, &log) {
            std::mem::forget(ns);
            return Err(e);
        }
    }
    // The namespace outlives this process: the lab removes it.
    std::mem::forget(ns);
    Ok(id)
}

/// How long a new backend's process may take to write its ready file.
const EXTRA_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until `child` writes `ready`; fails, naming its log, if it exits first or takes
/// longer than [`EXTRA_READY_TIMEOUT`].
fn wait_ready(child: &mut std::process::Child, ready: &Path, log: &Path) -> Result<(), NetnsError> {
    let deadline = Instant::now() + EXTRA_READY_TIMEOUT;
    while !ready.exists() {
        let why = match child.try_wait() {
            Ok(Some(status)) => format!("exited ({status}) before it was ready"),
            _ if Instant::now() >= deadline => {
                format!("not ready within {} s", EXTRA_READY_TIMEOUT.as_secs())
            }
            _ => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        return Err(NetnsError::Failed {
            command: format!("a new backend's process (log {})", log.display()),
            stderr: why,
        });
    }
    Ok(())
}

/// The connection-id layout of the lab's quic services, read from the daemon's configuration
/// in `work_dir` (the one the first backends were started with), if the QUIC certificate and
/// key are there too; otherwise why the new backend cannot serve QUIC.
fn quic_layout(work_dir: &Path, cert: &Path, key: &Path) -> Result<CidLayout, String> {
    if let Some(missing) = [cert, key].into_iter().find(|p| !p.is_file()) {
        return Err(format!("{} is missing", missing.display()));
    }
    let config = Config::load(&daemon_config_path(work_dir)).map_err(|e| e.to_string())?;
    config
        .services
        .iter()
        .find_map(|s| s.cid_layout())
        .ok_or_else(|| "the daemon's configuration has no quic service".into())
}

fn io(path: &Path, e: std::io::Error) -> NetnsError {
    NetnsError::Spawn {
        command: format!("a lab backend process logging to {}", path.display()),
        source: e,
    }
}

/// Stops what [`add_backend`] started in lab `tag` and removes its namespaces.
pub fn remove_extras(tag: &str, work_dir: &Path) {
    let text = std::fs::read_to_string(extras_file(work_dir)).unwrap_or_default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(id) = fields.next().and_then(|f| f.parse::<u32>().ok()) else {
            continue;
        };
        for pid in fields.filter_map(|f| f.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        drop(Netns::adopt(&backend_ns_name(tag, id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hooks_backend_serves_quic_only_with_the_labs_certificate_and_config() {
        let dir = std::env::temp_dir().join(format!("shardline-lab-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = quic::certificate_paths(&dir);
        let missing = quic_layout(&dir, &cert, &key).unwrap_err();
        assert!(missing.contains("quic-cert.pem"), "{missing}");
        std::fs::write(&cert, "cert").unwrap();
        std::fs::write(&key, "key").unwrap();
        assert!(
            quic_layout(&dir, &cert, &key).is_err(),
            "no daemon config yet"
        );
        let mut config = crate::lab_config(2, &[], Path::new("/sys/fs/bpf/x"));
        for s in &mut config.services {
            if s.cid_layout().is_some() {
                s.cid_generation = Some(9);
            }
        }
        let text = toml::to_string(&config).unwrap();
        std::fs::write(daemon_config_path(&dir), text).unwrap();
        let layout = quic_layout(&dir, &cert, &key).unwrap();
        assert_eq!((layout.rotation, layout.server_id_len), (2, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
