//! Throughput on veth: packets per second answered through the netns lab topology, with
//! shardline's XDP, nginx's stream proxy (`hash $remote_addr consistent`) and the minimal tokio
//! proxy of [`super::proxy`] in the load balancer's namespace. One client socket sends 64-byte
//! frames as fast as it can for a fixed time, 64 per `sendmmsg` call; the packets reaching the
//! backends' interfaces are the forwarded rate, and a second thread counts the echo answers at
//! the client. Every packet of a run goes to one backend (one session, one key; one client
//! address), so the backends do the same work in all three runs. Everything is torn down afterwards.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use shardline_common::packet::encode_header;

use super::{io, round, BenchError, Options};
use shardline_lab::{
    echo::ID_LEN,
    netns::Netns,
    topology::{backend4, Topology, CLIENT4, LB4, VIP4},
    Lab, LabOptions, HEADER_PORT,
};

/// Payload bytes: with Ethernet, IPv4 and UDP headers, a 64-byte frame.
pub const PAYLOAD: usize = 64 - 14 - 20 - 8;
/// Backends in the topology.
const BACKENDS: u32 = 4;
/// Port the backends' echo answers on for the proxies (they reach backends by address).
const ECHO_PORT: u16 = 7001;
/// nginx's listening port in the load balancer's namespace.
const NGINX_PORT: u16 = 7100;
/// The tokio proxy's listening port.
const TOKIO_PORT: u16 = 7200;
/// Upper bound on datagrams one run sends, whatever the duration.
const MAX_SENT: u64 = 50_000_000;
/// How long answers still in flight are counted after sending stops.
const GRACE: Duration = Duration::from_millis(200);

/// What one run's client saw.
#[derive(Clone, Copy, Debug)]
struct Traffic {
    sent: u64,
    answered: u64,
    at_backends: u64,
    seconds: f64,
}

impl Traffic {
    /// Packets delivered to the backends per second: what the forwarder forwarded.
    fn pps(&self) -> f64 {
        self.at_backends as f64 / self.seconds
    }

    fn answered_pps(&self) -> f64 {
        self.answered as f64 / self.seconds
    }

    fn json(&self) -> Value {
        json!({
            "forwarded_pps": self.pps().round() as u64,
            "answered_pps": self.answered_pps().round() as u64,
            "offered_pps": (self.sent as f64 / self.seconds).round() as u64,
            "sent": self.sent,
            "received_at_backends": self.at_backends,
            "answered": self.answered,
            "seconds": round(self.seconds, 2),
        })
    }
}

/// Runs the three throughput measurements.
pub fn run(opts: &Options) -> Result<Value, BenchError> {
    let duration = Duration::from_secs(if opts.quick { 3 } else { 10 });
    let tag = format!("bn{}", std::process::id() % 100_000);
    let shardline = shardline_run(opts, &tag, duration);
    let proxies = proxies_run(opts, &tag, duration);
    let (nginx, tokio) = match proxies {
        Ok((n, t)) => (n, t),
        Err(e) => (
            Err(e.to_string()),
            Err("not run: see nginx_error".to_owned()),
        ),
    };
    let pps = |r: &Result<Traffic, String>| r.as_ref().ok().map(|t| t.pps().round());
    let answered = |r: &Result<Traffic, String>| r.as_ref().ok().map(|t| t.answered_pps().round());
    let detail = |r: &Result<Traffic, String>| match r {
        Ok(t) => t.json(),
        Err(e) => json!({ "error": e }),
    };
    let shardline = shardline.map_err(|e| e.to_string());
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round(a / b, 2)),
        _ => None,
    };
    let ratio_nginx = ratio(pps(&shardline), pps(&nginx));
    Ok(json!({
        "shardline_pps": pps(&shardline).map(|x| x as u64),
        "nginx_pps": pps(&nginx).map(|x| x as u64),
        "tokio_proxy_pps": pps(&tokio).map(|x| x as u64),
        "ratio": ratio_nginx,
        "ratio_vs_tokio_proxy": ratio(pps(&shardline), pps(&tokio)),
        "answered_ratio": ratio(answered(&shardline), answered(&nginx)),
        "answered_ratio_vs_tokio_proxy": ratio(answered(&shardline), answered(&tokio)),
        "target_ratio": 5.0,
        "meets_target": ratio_nginx.map(|r| r >= 5.0),
        "frame_bytes": 64,
        "seconds_per_run": duration.as_secs(),
        "shardline": detail(&shardline),
        "nginx": detail(&nginx),
        "tokio_proxy": detail(&tokio),
        "notes": "*_pps (and ratio) = packets received on the backends' interfaces per second of \
                  sending (forwarded by the load balancer); answered_pps = echo answers the client \
                  received per second (both count what arrives within 200 ms after sending stops). \
                  One sending socket, as \
                  fast as it can, 64 datagrams per sendmmsg call: offered load is what the client manages on the shared cores, \
                  reported per run. On veth the receiving side's XDP, and everything after it, runs \
                  in softirq on the sending core (on the sender's time unless deferred to \
                  ksoftirqd), so shardline's offered load is bounded by its own path: compare \
                  forwarded with offered in each run. shardline: XDP (native on veth) with IPIP to the backend's decap, \
                  answers by direct server return. nginx 1 worker and the tokio proxy (current-thread \
                  runtime) proxy both ways. All on one 2-core VM shared with other work.",
    }))
}

fn payload() -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    // Session 1 (placed by the lab config), one constant key: every packet to one backend.
    p[..20].copy_from_slice(&encode_header(1, 0x5eed));
    p
}

fn shardline_run(opts: &Options, tag: &str, duration: Duration) -> Result<Traffic, BenchError> {
    let lab = Lab::start(&LabOptions {
        tag: format!("{tag}x"),
        backends: BACKENDS,
        sessions: 2,
        bins: opts.bins.clone(),
    })?;
    let target = SocketAddr::new(VIP4.into(), HEADER_PORT);
    wait_answering(&lab.topology.client, target, &payload())?;
    let traffic = blast(&lab.topology, target, &payload(), duration)?;
    println!(
        "bench:   shardline: {:.0} forwarded/s, {:.0} answered/s ({:.0} offered/s)",
        traffic.pps(),
        traffic.answered_pps(),
        traffic.sent as f64 / traffic.seconds
    );
    Ok(traffic)
}

/// Child processes killed (SIGTERM, then SIGKILL) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for child in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type ProxyResults = (Result<Traffic, String>, Result<Traffic, String>);

fn proxies_run(opts: &Options, tag: &str, duration: Duration) -> Result<ProxyResults, BenchError> {
    let topo = Topology::build(&format!("{tag}p"), BACKENDS, 0)?;
    let dir = TempDir(std::env::temp_dir().join(format!("shardline-bench-{tag}")));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).map_err(io(format!("creating {}", dir.0.display())))?;
    let mut children = Children(Vec::new());
    for (i, ns) in topo.backends.iter().enumerate() {
        let id = i as u32 + 1;
        let ready = dir.0.join(format!("echo-{id}.ready"));
        let child = ns
            .command(&opts.bins.lab.to_string_lossy())
            .args(["echo", "--id", &id.to_string(), "--bind"])
            .arg(backend4(id).to_string())
            .args(["--udp", &ECHO_PORT.to_string(), "--ready-file"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting an echo backend"))?;
        children.0.push(child);
        wait_file(&ready, "echo backend")?;
    }
    let backends: Vec<SocketAddr> = (1..=BACKENDS)
        .map(|id| SocketAddr::new(backend4(id).into(), ECHO_PORT))
        .collect();

    let nginx = nginx_run(&topo, &dir.0, &backends, duration).map_err(|e| e.to_string());
    let tokio = tokio_run(&topo, &backends, duration).map_err(|e| e.to_string());
    drop(children);
    Ok((nginx, tokio))
}

fn nginx_conf(dir: &Path, backends: &[SocketAddr]) -> String {
    let servers: String = backends
        .iter()
        .map(|b| format!("        server {b};\n"))
        .collect();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         events {{ worker_connections 1024; }}\n\
         stream {{\n    upstream backends {{\n        hash $remote_addr consistent;\n{servers}    }}\n\
         \x20   server {{\n        listen {LB4}:{NGINX_PORT} udp;\n        proxy_pass backends;\n\
         \x20       proxy_timeout 30s;\n    }}\n}}\n",
        dir = dir.display()
    )
}

fn nginx_run(
    topo: &Topology,
    dir: &Path,
    backends: &[SocketAddr],
    duration: Duration,
) -> Result<Traffic, BenchError> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, backends))
        .map_err(io(format!("writing {}", conf.display())))?;
    let log = dir.join("error.log");
    let child = topo
        .lb
        .command("nginx")
        .arg("-e")
        .arg(&log)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting nginx (is it installed? `cargo xtask setup`)"))?;
    let _nginx = Children(vec![child]);
    let target = SocketAddr::new(LB4.into(), NGINX_PORT);
    wait_answering(&topo.client, target, &payload()).map_err(|e| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        BenchError::Check(format!("{e}; nginx error log:\n{log}"))
    })?;
    let traffic = blast(topo, target, &payload(), duration)?;
    println!(
        "bench:   nginx: {:.0} forwarded/s, {:.0} answered/s ({:.0} offered/s)",
        traffic.pps(),
        traffic.answered_pps(),
        traffic.sent as f64 / traffic.seconds
    );
    Ok(traffic)
}

fn tokio_run(
    topo: &Topology,
    backends: &[SocketAddr],
    duration: Duration,
) -> Result<Traffic, BenchError> {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let listen = SocketAddr::new(LB4.into(), TOKIO_PORT);
    let backends = backends.to_vec();
    let lb = &topo.lb;
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let proxy = scope.spawn(move || -> Result<(), BenchError> {
            lb.enter_current_thread()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io("building the tokio runtime"))?;
            runtime.block_on(async move {
                let socket = tokio::net::UdpSocket::bind(listen).await;
                let ok = socket.is_ok();
                let _ = ready_tx.send(ok);
                let socket = socket.map_err(io(format!("binding {listen}")))?;
                super::proxy::run(socket, backends, stopped)
                    .await
                    .map_err(io("tokio proxy"))
            })
        });
        let traffic = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(true) => wait_answering(&topo.client, listen, &payload())
                .and_then(|()| blast(topo, listen, &payload(), duration)),
            _ => Err(BenchError::Check("the tokio proxy did not start".into())),
        };
        let _ = stop.send(());
        let proxied = proxy
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("the tokio proxy panicked".into())));
        let traffic = traffic?;
        proxied?;
        println!(
            "bench:   tokio proxy: {:.0} forwarded/s, {:.0} answered/s ({:.0} offered/s)",
            traffic.pps(),
            traffic.answered_pps(),
            traffic.sent as f64 / traffic.seconds
        );
        Ok(traffic)
    })
}

fn wait_file(path: &Path, what: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!(
                "{what} did not become ready in 20 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A client socket inside `client`'s namespace, connected to `target`.
fn client_socket(client: &Netns, target: SocketAddr) -> Result<UdpSocket, BenchError> {
    client.enter_current_thread()?;
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(CLIENT4), 0))
        .map_err(io("binding the client socket"))?;
    socket
        .connect(target)
        .map_err(io(format!("connecting to {target}")))?;
    Ok(socket)
}

/// Waits (at most 10 s) until a request to `target` is answered.
fn wait_answering(client: &Netns, target: SocketAddr, payload: &[u8]) -> Result<(), BenchError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let socket = client_socket(client, target)?;
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .map_err(io("setting a read timeout"))?;
                let mut buf = [0u8; 2048];
                for _ in 0..50 {
                    let _ = socket.send(payload);
                    if let Ok(n) = socket.recv(&mut buf) {
                        if n == ID_LEN + payload.len() {
                            return Ok(());
                        }
                    }
                }
                Err(BenchError::Check(format!(
                    "nothing answered at {target} within 10 s"
                )))
            })
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("client thread panicked".into())))
    })
}

/// Packets received so far on the backends' interfaces, summed.
fn backend_rx(topo: &Topology) -> Result<u64, BenchError> {
    let mut total = 0;
    for ns in &topo.backends {
        let out = ns.ip(&["-s", "-j", "link", "show", "eth0"])?;
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            BenchError::Check(format!(
                "`ip -s -j link` printed no JSON in {}: {e}",
                ns.name()
            ))
        })?;
        total += v[0]["stats64"]["rx"]["packets"].as_u64().ok_or_else(|| {
            BenchError::Check(format!("no rx packet count for eth0 in {}", ns.name()))
        })?;
    }
    Ok(total)
}

/// Sends `payload` to `target` from the client namespace as fast as one socket can for
/// `duration`, counting the answers on a second thread and the packets reaching the backends.
fn blast(
    topo: &Topology,
    target: SocketAddr,
    payload: &[u8],
    duration: Duration,
) -> Result<Traffic, BenchError> {
    let client = &topo.client;
    let rx_before = backend_rx(topo)?;
    let mut traffic = blast_from(client, target, payload, duration)?;
    traffic.at_backends = backend_rx(topo)?.saturating_sub(rx_before);
    Ok(traffic)
}

fn blast_from(
    client: &Netns,
    target: SocketAddr,
    payload: &[u8],
    duration: Duration,
) -> Result<Traffic, BenchError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let socket = client_socket(client, target)?;
                let receiver = socket.try_clone().map_err(io("cloning the socket"))?;
                receiver
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(io("setting a read timeout"))?;
                let stop = AtomicBool::new(false);
                std::thread::scope(|inner| {
                    let counter = inner.spawn(|| {
                        let mut buf = [0u8; 2048];
                        let mut answered = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok(n) = receiver.recv(&mut buf) {
                                if n == ID_LEN + payload.len() {
                                    answered += 1;
                                }
                            }
                        }
                        answered
                    });
                    let start = Instant::now();
                    let mut batch = SendBatch::new(payload);
                    let mut sent = 0u64;
                    while sent < MAX_SENT && start.elapsed() < duration {
                        sent += batch.send(&socket);
                    }
                    let seconds = start.elapsed().as_secs_f64();
                    std::thread::sleep(GRACE);
                    stop.store(true, Ordering::Relaxed);
                    let answered = counter.join().unwrap_or(0);
                    Ok(Traffic {
                        sent,
                        answered,
                        at_backends: 0,
                        seconds,
                    })
                })
            })
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("client thread panicked".into())))
    })
}

/// Datagrams handed to the kernel per `sendmmsg` call.
const BATCH: usize = 64;

/// One `sendmmsg` batch of [`BATCH`] copies of a payload on a connected socket: one system call
/// per 64 datagrams, so the client's syscall overhead does not bound the offered load.
struct SendBatch<'a> {
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    _payload: &'a [u8],
}

impl<'a> SendBatch<'a> {
    fn new(payload: &'a [u8]) -> Self {
        let iov: Vec<libc::iovec> = (0..BATCH)
            .map(|_| libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) header.
        let msgs = (0..BATCH)
            .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
            .collect();
        let mut batch = Self {
            iov,
            msgs,
            _payload: payload,
        };
        for (msg, iov) in batch.msgs.iter_mut().zip(batch.iov.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        batch
    }

    /// Sends one batch; returns how many datagrams the kernel took (0 on an error such as a
    /// full socket buffer, as a plain `send` loop would drop them).
    fn send(&mut self, socket: &UdpSocket) -> u64 {
        use std::os::fd::AsRawFd;
        // SAFETY: `msgs` points at `iov`, which points at the borrowed payload; all outlive the
        // call, and the socket is connected, so no address is needed.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                0,
            )
        };
        n.max(0) as u64
    }
}
