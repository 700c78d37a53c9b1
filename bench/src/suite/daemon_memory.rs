//! `memory.daemon_rss_mib_1m_sessions`: the peak RSS (`VmHWM`) of a real `shardline daemon`
//! process with 1,000,000 sessions placed through its own API.
//!
//! The daemon runs in a network namespace of its own, attached (generic XDP) to that
//! namespace's loopback, as a cluster of one with its raft store in a temporary directory and
//! its maps pinned in a private directory. A client in the same namespace places the sessions
//! with `PUT /v1/sessions/kv/{id}/placement` from [`WRITERS`] concurrent connections, as an
//! operator's tooling would; the daemon group-commits them into raft entries and its applier
//! writes each into the SESSIONS map. Its log goes to a file, as under systemd to journald.
//!
//! Then the two writes that compare every session with the maps (the applier's whole write):
//! a backend is added through the API (`POST /v1/backends`: a new default table, so the
//! applier writes the state whole; the peak across it is read after resetting `VmHWM` through
//! `/proc/PID/clear_refs`), and the daemon is restarted on the same store and pins, as
//! systemd restarts it (its peak until it is ready, which is once it has written the state it
//! loaded to the maps). Last, the restart after a reboot: the daemon's pins removed, it starts
//! on its store with empty maps and writes every session again, each a first placement (its
//! peak until every session is back in `SESSIONS`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, MapData};
use serde_json::{json, Value};
use shardline::{
    guard::Token,
    http::{Answer, Client},
};
use shardline_common::maps::{backend_flags, Backend, SessionKey, ShardSet};
use shardline_lab::netns::Netns;

use super::{io, open_pinned, round, BenchError, Options};

/// Concurrent API clients placing sessions.
pub const WRITERS: u64 = 64;

/// Backends of the daemon's tables.
const BACKENDS: u64 = 8;

/// The daemon's API address inside its namespace.
const API: &str = "127.0.0.1:7900";

/// The backend the backend change adds (the configuration has `1..=BACKENDS`).
const ADDED: u32 = BACKENDS as u32 + 1;

/// What a restart does with the daemon's pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pins {
    /// Kept: the new process adopts the maps as they are (a daemon restart).
    Kept,
    /// Removed: the new process starts on empty maps and writes every session (a reboot).
    Removed,
}

/// The daemon process and its namespace, stopped and removed when dropped (the process first).
struct Daemon {
    child: Child,
    pin_dir: PathBuf,
    dir: PathBuf,
    netns: Option<Netns>,
}

impl Daemon {
    /// Stops the process: SIGTERM, then SIGKILL after 30 s (a daemon that loaded a million
    /// sessions takes a while to free them). The pins and the store stay.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process and starts it again on the same configuration and store; waits until
    /// it routes again. Its pins stay, unless `pins` is [`Pins::Removed`]: then its pinned maps
    /// and link go first, as a reboot empties bpffs (this instance's pin directory only).
    fn restart(&mut self, opts: &Options, pins: Pins) -> Result<(), BenchError> {
        self.stop();
        if pins == Pins::Removed {
            shardline::loader::teardown(&self.pin_dir, Some("lo")).map_err(io(format!(
                "removing the daemon's pins in {}",
                self.pin_dir.display()
            )))?;
        }
        let netns = self.netns.as_ref().expect("running");
        self.child = launch(opts, netns, &self.dir)?;
        self.wait_ready(Duration::from_secs(300))
    }

    /// Waits until the daemon wrote its ready file (it routes by a committed state).
    fn wait_ready(&mut self, patience: Duration) -> Result<(), BenchError> {
        let ready = self.dir.join("ready");
        let deadline = Instant::now() + patience;
        while !ready.exists() {
            if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
                let tail = &log[log.len().saturating_sub(4000)..];
                return Err(BenchError::Check(format!(
                    "the daemon did not become ready within {patience:?}:\n{tail}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
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
    let child = launch(opts, &netns, &dir)?;
    let mut daemon = Daemon {
        child,
        pin_dir,
        dir,
        netns: Some(netns),
    };
    daemon.wait_ready(Duration::from_secs(30))?;
    Ok(daemon)
}

/// Starts `shardline daemon` in `netns` on the configuration in `dir` (its log appended to
/// `dir/daemon.log`), its ready file removed first.
fn launch(opts: &Options, netns: &Netns, dir: &Path) -> Result<Child, BenchError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .map_err(io("opening the log"))?;
    let err = log.try_clone().map_err(io("sharing the log"))?;
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    // `nsenter --net` enters the namespace and execs: the child's pid is the daemon's.
    netns
        .command(&opts.bins.shardline.to_string_lossy())
        .arg("daemon")
        .arg("--config")
        .arg(dir.join("shardline.toml"))
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(io("starting shardline daemon"))
}

/// Runs `job` (API calls) on a thread in the daemon's namespace.
fn in_netns<F>(netns: &Netns, job: F) -> Result<(), BenchError>
where
    F: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                netns.enter_current_thread()?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(io("building a tokio runtime"))?
                    .block_on(job)
            })
            .join()
            .map_err(|_| BenchError::Check("the API client thread panicked".into()))?
    })
}

/// Adds backend [`ADDED`] through the API.
async fn add_backend(token: Token) -> Result<(), BenchError> {
    let client = Client::new().with_bearer(Some(token));
    let body = json!({
        "id": ADDED,
        "ipv4": format!("10.0.1.{ADDED}"),
        "mac": format!("02:00:00:00:01:{ADDED:02x}"),
    });
    let answer = client
        .post_json(
            &format!("http://{API}/v1/backends"),
            &body,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| BenchError::Check(format!("adding backend {ADDED}: {e}")))?;
    match answer.status {
        200 | 201 => Ok(()),
        status => Err(BenchError::Check(format!(
            "adding backend {ADDED}: HTTP {status}: {}",
            String::from_utf8_lossy(&answer.body)
        ))),
    }
}

/// Resets the process's `VmHWM` to its RSS now (`clear_refs` 5, Linux 4.0+), so a later read
/// is the peak since.
fn reset_peak(pid: u32) -> Result<(), BenchError> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").map_err(io("resetting VmHWM"))
}

/// Waits until `done` holds, polling every 100 ms, at most `patience`.
fn wait_until(
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!("{what} not within {patience:?}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
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
    let mut daemon = start(opts)?;
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
    let netns = daemon.netns.as_ref().expect("running");
    in_netns(netns, writers(token.clone(), sessions))?;
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
    let (change, change_s) = backend_change(&daemon, token)?;
    let (restart, restart_s) = restart_peak(&mut daemon, opts, sessions, Pins::Kept)?;
    let (empty, empty_s) = restart_peak(&mut daemon, opts, sessions, Pins::Removed)?;
    let peak_any = [peak, change, restart, empty].into_iter().flatten().max();
    println!(
        "bench:   the same daemon adding backend {ADDED} ({change_s:.1} s): peak {:?} MiB; restarted on its store ({restart_s:.1} s to ready): peak {:?} MiB; restarted on its store with its pins removed ({empty_s:.1} s until every session was in the maps): peak {:?} MiB",
        mib(change),
        mib(restart),
        mib(empty)
    );
    Ok(json!({
        "daemon_rss_mib_1m_sessions": mib(peak),
        "daemon": {
            "sessions": sessions,
            "sessions_in_map": in_map,
            "placing_seconds": round(placing_s, 1),
            "placements_per_second": (sessions as f64 / placing_s).round(),
            "writers": WRITERS,
            "rss_mib": {
                "ready": mib(ready_rss),
                "after_placing": mib(now),
                "peak": mib(peak),
                "peak_backend_change": mib(change),
                "peak_restart": mib(restart),
                "peak_restart_empty_maps": mib(empty),
                "peak_any": mib(peak_any),
            },
            "bytes_per_session": {
                "after_placing": per_session(now, ready_rss, sessions),
                "peak": per_session(peak, ready_rss, sessions),
                "peak_backend_change": per_session(change, ready_rss, sessions),
                "peak_restart": per_session(restart, ready_rss, sessions),
                "peak_restart_empty_maps": per_session(empty, ready_rss, sessions),
            },
            "backend_change_seconds": round(change_s, 1),
            "restart_seconds": round(restart_s, 1),
            "restart_empty_maps_seconds": round(empty_s, 1),
            "target_mib": 256,
            "setup": "a `shardline daemon` process (generic XDP on the loopback of a namespace of its own; cluster of one, redb store; no [control] loop), sessions placed by PUT /v1/sessions/kv/{id}/placement from 64 concurrent connections; peak = VmHWM of its /proc/PID/status, the kernel's map memory not included (see bpf_maps); peak_backend_change: VmHWM reset, then POST /v1/backends (a whole write: every session compared) until the backend is in BACKENDS, plus 3 s; peak_restart: SIGTERM, the same daemon started on its store and pins, VmHWM once ready (the loaded state written) plus 3 s; peak_restart_empty_maps: SIGTERM, the daemon's pins (maps and link) removed as a reboot does, the same daemon started on its store, VmHWM once every session is back in SESSIONS plus 3 s",
        },
    }))
}

/// Adds a backend through the API and reads the peak RSS from just before it until the
/// applier wrote it (and 3 s more); the peak (KiB) and the seconds until it was in the maps.
fn backend_change(daemon: &Daemon, token: Token) -> Result<(Option<u64>, f64), BenchError> {
    let pid = daemon.child.id();
    let backends: Array<MapData, Backend> = open_pinned(&daemon.pin_dir, "BACKENDS")?;
    let present = || {
        backends
            .get(&ADDED, 0)
            .is_ok_and(|b| b.flags & backend_flags::PRESENT != 0)
    };
    if present() {
        return Err(BenchError::Check(format!(
            "backend {ADDED} is already in BACKENDS"
        )));
    }
    reset_peak(pid)?;
    let t = Instant::now();
    in_netns(daemon.netns.as_ref().expect("running"), add_backend(token))?;
    // Only a whole write writes BACKENDS: the applier went through every session.
    wait_until(
        &format!("backend {ADDED} in BACKENDS"),
        Duration::from_secs(300),
        present,
    )?;
    let took = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    Ok((status_kib(pid, "VmHWM"), took))
}

/// Restarts the daemon on its store (its pins kept or removed, `pins`) and reads the new
/// process's peak RSS once it is ready (it wrote the state it loaded: every session compared
/// with the maps), every session is in `SESSIONS` (on empty maps, every one written again) and
/// 3 s more; the peak (KiB) and the seconds from the restart until the sessions were there.
fn restart_peak(
    daemon: &mut Daemon,
    opts: &Options,
    sessions: u64,
    pins: Pins,
) -> Result<(Option<u64>, f64), BenchError> {
    let t = Instant::now();
    daemon.restart(opts, pins)?;
    // A new map when the pins were removed: opened after the restart.
    let map: HashMap<MapData, SessionKey, ShardSet> = open_pinned(&daemon.pin_dir, "SESSIONS")?;
    let in_map = || {
        map.keys()
            .filter(|k| k.as_ref().is_ok_and(|k| k.service == 1))
            .count() as u64
    };
    let last = SessionKey {
        service: 1,
        _pad: 0,
        session: sessions - 1,
    };
    // The last session first (one lookup a poll), then the count (a walk of the map).
    let patience = Duration::from_secs(300);
    wait_until(
        "the last session in SESSIONS after the restart",
        patience,
        || map.get(&last, 0).is_ok(),
    )?;
    let mut count = 0;
    wait_until(
        &format!("all {sessions} sessions in SESSIONS after the restart"),
        patience,
        || {
            count = in_map();
            count >= sessions
        },
    )
    .map_err(|e| BenchError::Check(format!("{e} (it holds {count})")))?;
    let took = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    Ok((status_kib(daemon.child.id(), "VmHWM"), took))
}
