//! `memory.daemon_rss_mib_1m_sessions`: the peak RSS (`VmHWM`) of a real `shardline daemon`
//! process with 1,000,000 sessions placed through its own API.
//!
//! The daemon runs in a network namespace of its own, attached (generic XDP) to that
//! namespace's loopback, as a cluster of one with its raft store in a temporary directory and
//! its maps pinned in a private directory. A client in the same namespace places the sessions
//! with `PUT /v1/sessions/kv/{id}/placement` from [`WRITERS`] concurrent connections, as an
//! operator's tooling would; the daemon group-commits them into raft entries and its applier
//! writes each into the SESSIONS map. Its log goes to a file, as under systemd to journald.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, MapData};
use serde_json::{json, Value};
use shardline::{
    guard::Token,
    http::{Answer, Client},
};
use shardline_common::maps::{SessionKey, ShardSet};
use shardline_lab::netns::Netns;

use super::{io, open_pinned, round, BenchError, Options};

/// Concurrent API clients placing sessions.
pub const WRITERS: u64 = 64;

/// Backends of the daemon's tables.
const BACKENDS: u64 = 8;

/// The daemon's API address inside its namespace.
const API: &str = "127.0.0.1:7900";

/// The daemon process and its namespace, stopped and removed when dropped (the process first).
struct Daemon {
    child: Child,
    pin_dir: PathBuf,
    dir: PathBuf,
    netns: Option<Netns>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pins (the link's included: the program leaves the loopback), then the namespace.
        let _ = shardline::loader::teardown(&self.pin_dir, Some("lo"));
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        drop(self.netns.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| round(k as f64 / 1024.0, 1))
}

/// Bytes a session adds to the RSS of a ready daemon: (`kib` − `ready`) / `sessions`.
fn per_session(kib: Option<u64>, ready: Option<u64>, sessions: u64) -> Option<f64> {
    let grown = kib?.checked_sub(ready?)?;
    Some((grown as f64 * 1024.0 / sessions.max(1) as f64).round())
}

fn config(dir: &Path, pin_dir: &Path, token: &Path) -> String {
    let mut text = format!(
        "interface = \"lo\"\nxdp_mode = \"generic\"\npin_dir = \"{}\"\n\
         [[services]]\nname = \"kv\"\nvip = \"10.100.0.1\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nforward = \"l2dsr\"\n",
        pin_dir.display()
    );
    for id in 1..=BACKENDS {
        text += &format!(
            "[[backends]]\nid = {id}\nipv4 = \"10.0.1.{id}\"\nmac = \"02:00:00:00:01:{id:02x}\"\n"
        );
    }
    text += &format!(
        "[cluster]\ndata_dir = \"{}\"\n[api]\nlisten = \"{API}\"\ntoken_file = \"{}\"\n",
        dir.join("raft").display(),
        token.display()
    );
    text
}

/// Starts the daemon in a namespace of its own and waits until it routes.
fn start(opts: &Options) -> Result<Daemon, BenchError> {
    let tag = format!("shlmem{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("shardline-bench-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/shardline-bench-{tag}"));
    let token = dir.join("api-token");
    shardline_lab::write_secret(&token).map_err(io("writing the API token"))?;
    let config_path = dir.join("shardline.toml");
    std::fs::write(&config_path, config(&dir, &pin_dir, &token))
        .map_err(io("writing the daemon's configuration"))?;
    let netns = Netns::create(&tag)?;
    let log = std::fs::File::create(dir.join("daemon.log")).map_err(io("creating the log"))?;
    let err = log.try_clone().map_err(io("sharing the log"))?;
    let ready = dir.join("ready");
    // `nsenter --net` enters the namespace and execs: the child's pid is the daemon's.
    let child = netns
        .command(&opts.bins.shardline.to_string_lossy())
        .arg("daemon")
        .arg("--config")
        .arg(&config_path)
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(io("starting shardline daemon"))?;
    let mut daemon = Daemon {
        child,
        pin_dir,
        dir,
        netns: Some(netns),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if Instant::now() > deadline || daemon.child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(daemon.dir.join("daemon.log")).unwrap_or_default();
            return Err(BenchError::Check(format!(
                "the daemon did not become ready within 30 s:\n{log}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

/// Places sessions `0..sessions` through the API from [`WRITERS`] connections, from a thread in
/// the daemon's namespace.
fn place_all(netns: &Netns, token: Token, sessions: u64) -> Result<(), BenchError> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                netns.enter_current_thread()?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(io("building a tokio runtime"))?
                    .block_on(writers(token, sessions))
            })
            .join()
            .map_err(|_| BenchError::Check("the API client thread panicked".into()))?
    })
}

async fn writers(token: Token, sessions: u64) -> Result<(), BenchError> {
    let client = Arc::new(Client::new().with_bearer(Some(token)));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < sessions {
                let url = format!("http://{API}/v1/sessions/kv/{i}/placement");
                let body = json!({ "backends": [1 + i % BACKENDS] });
                let answer = client
                    .put_json(&url, &body, Duration::from_secs(30))
                    .await
                    .map_err(|e| BenchError::Check(format!("placing session {i}: {e}")))?;
                check(i, &answer)?;
                i += WRITERS;
            }
            Ok::<_, BenchError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Check(e.to_string()))??;
    }
    Ok(())
}

fn check(i: u64, answer: &Answer) -> Result<(), BenchError> {
    if answer.status == 200 {
        return Ok(());
    }
    Err(BenchError::Check(format!(
        "placing session {i}: HTTP {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    )))
}

/// Runs the daemon, places `sessions` through its API and reads its memory.
pub fn run(opts: &Options, sessions: u64) -> Result<Value, BenchError> {
    let daemon = start(opts)?;
    let pid = daemon.child.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "shardline" {
        return Err(BenchError::Check(format!(
            "pid {pid} is {comm:?}, not the shardline daemon"
        )));
    }
    let ready_rss = status_kib(pid, "VmRSS");
    let token_text = std::fs::read_to_string(daemon.dir.join("api-token"))
        .map_err(io("reading the API token"))?;
    let token = Token::new(&token_text, "api token")
        .map_err(|e| BenchError::Check(format!("API token: {e}")))?;
    let t = Instant::now();
    place_all(daemon.netns.as_ref().expect("running"), token, sessions)?;
    let placing_s = t.elapsed().as_secs_f64();
    // Every placement answered is committed; wait until the applier wrote the last of them.
    let map: HashMap<MapData, SessionKey, ShardSet> = open_pinned(&daemon.pin_dir, "SESSIONS")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let last = SessionKey {
        service: 1,
        _pad: 0,
        session: sessions - 1,
    };
    while map.get(&last, 0).is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!(
                "session {} is not in the daemon's SESSIONS map 120 s after it was placed",
                sessions - 1
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let in_map = map
        .keys()
        .filter(|k| k.as_ref().is_ok_and(|k| k.service == 1))
        .count();
    // Let the applier, raft snapshotting and the allocator settle.
    std::thread::sleep(Duration::from_secs(3));
    let (peak, now) = (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"));
    println!(
        "bench:   daemon (pid {pid}) with {in_map} sessions placed through its API in {placing_s:.1} s: RSS {:?} MiB, peak {:?} MiB",
        mib(now),
        mib(peak)
    );
    if (in_map as u64) < sessions {
        return Err(BenchError::Check(format!(
            "the daemon's SESSIONS map holds {in_map} of the {sessions} sessions placed"
        )));
    }
    Ok(json!({
        "daemon_rss_mib_1m_sessions": mib(peak),
        "daemon": {
            "sessions": sessions,
            "sessions_in_map": in_map,
            "placing_seconds": round(placing_s, 1),
            "placements_per_second": (sessions as f64 / placing_s).round(),
            "writers": WRITERS,
            "rss_mib": { "ready": mib(ready_rss), "after_placing": mib(now), "peak": mib(peak) },
            "bytes_per_session": {
                "after_placing": per_session(now, ready_rss, sessions),
                "peak": per_session(peak, ready_rss, sessions),
            },
            "target_mib": 256,
            "setup": "a `shardline daemon` process (generic XDP on the loopback of a namespace of its own; cluster of one, redb store; no [control] loop), sessions placed by PUT /v1/sessions/kv/{id}/placement from 64 concurrent connections; peak = VmHWM of its /proc/PID/status, the kernel's map memory not included (see bpf_maps)",
        },
    }))
}
