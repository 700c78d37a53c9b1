//! Throughput and CPU per packet on veth, through the netns lab topology, with shardline's
//! XDP, nginx's stream proxy (`hash $remote_addr consistent`) and the minimal tokio proxy of
//! [`super::proxy`] in the load balancer's namespace. Every packet of a run goes to one backend
//! (one session, one key; one client address), so the backends do the same work in all three.
//! Everything is torn down afterwards.
//!
//! - Throughput: one client socket sends 64-byte frames as fast as it can for a fixed time;
//!   the packets reaching the backends' interfaces are the forwarded rate. That figure is
//!   bounded by the sending client on two shared cores, so:
//! - CPU per forwarded packet ([`cpu`]): at one fixed rate that every forwarder forwards in
//!   full, each forwarder's run against a baseline run (the client sending to a backend
//!   directly) in the same topology and round; the CPU of every task of the lab is summed
//!   ([`cputime`]) and the difference is the load balancer's side; a profiled run per
//!   forwarder ([`profile`]) splits it by stage of the path ([`stages`]) and times the lab's XDP
//!   programs; [`summary`] writes the JSON of it. The CPU rounds run twice per topology: first
//!   through the bridge (the load balancer's veth fed the skbs the senders' sockets built:
//!   `*_bridge_fed`), then with the segment wired by XDP (`topology::wire`: the load balancer
//!   fed `xdp_frame`s as from a NIC, the switch's work counted as the wire's): the headline.
//! - [`traffic`]: the client's side of a run, flat out or paced.

mod cpu;
mod cputime;
mod profile;
mod stages;
mod summary;
mod traffic;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use summary::Delivery;
pub use traffic::PAYLOAD;
use traffic::{blast, wait_answering, Pace, Traffic};

use super::{io, round, BenchError, Options};
use shardline_lab::{
    netns::Netns,
    topology::{backend4, Topology, LB4, VIP4},
    Lab, LabOptions, HEADER_PORT,
};

/// Backends in the topology.
const BACKENDS: u32 = 4;
/// Port the backends' echo answers on for the proxies and the baselines (they reach backends
/// by address).
const ECHO_PORT: u16 = 7001;
/// nginx's listening port in the load balancer's namespace.
const NGINX_PORT: u16 = 7100;
/// The tokio proxy's listening port.
const TOKIO_PORT: u16 = 7200;
/// Offered rate of the CPU runs: about a third of what nginx and the tokio proxy forward flat
/// out here (≈ 32k pkt/s), so none of the three saturates; each run checks it.
const CPU_RATE: f64 = 10_000.0;
/// The CPU target: shardline at most a tenth of nginx's CPU per packet.
const CPU_TARGET_RATIO: f64 = 10.0;

/// A result, or why there is none.
type Outcome<T> = Result<T, String>;

/// Runs the throughput and CPU measurements.
pub fn run(opts: &Options) -> Result<Value, BenchError> {
    let duration = Duration::from_secs(if opts.quick { 3 } else { 10 });
    let plan = cpu::Plan {
        rate: CPU_RATE,
        duration: Duration::from_secs(if opts.quick { 2 } else { 4 }),
        rounds: if opts.quick { 4 } else { 7 },
    };
    let tag = format!("bn{}", std::process::id() % 100_000);
    let not_run = |what: &str| Cpu {
        bridge: Err(format!("not run: see {what}")),
        wire: Err(format!("not run: see {what}")),
    };
    let (shardline, shardline_cpu) = match shardline_run(opts, &tag, duration, &plan) {
        Ok((t, c)) => (Ok(t), c),
        Err(e) => (Err(e.to_string()), not_run("shardline")),
    };
    let (nginx, tokio, proxies_cpu) = match proxies_run(opts, &tag, duration, &plan) {
        Ok(r) => r,
        Err(e) => (
            Err(e.to_string()),
            Err("not run: see nginx_error".to_owned()),
            not_run("nginx"),
        ),
    };
    let pps = |r: &Outcome<Traffic>| r.as_ref().ok().map(|t| t.pps().round());
    let answered = |r: &Outcome<Traffic>| r.as_ref().ok().map(|t| t.answered_pps().round());
    let detail = |r: &Outcome<Traffic>| match r {
        Ok(t) => t.json(),
        Err(e) => json!({ "error": e }),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round(a / b, 2)),
        _ => None,
    };
    let ratio_nginx = ratio(pps(&shardline), pps(&nginx));
    let (cpu_ns, cpu_detail) = summary::cpu_json(
        &plan,
        Delivery::XdpWire,
        &shardline_cpu.wire,
        &proxies_cpu.wire,
    );
    let (bridge_ns, bridge_detail) = summary::cpu_json(
        &plan,
        Delivery::Bridge,
        &shardline_cpu.bridge,
        &proxies_cpu.bridge,
    );
    let cpu_ratio = ratio(cpu_ns["nginx"].as_f64(), cpu_ns["shardline"].as_f64());
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
        "cpu_ns_per_pkt": cpu_ns,
        "cpu_ratio": cpu_ratio,
        "cpu_ratio_vs_tokio_proxy": ratio(cpu_ns["tokio_proxy"].as_f64(), cpu_ns["shardline"].as_f64()),
        "cpu_target_ratio": CPU_TARGET_RATIO,
        "cpu_meets_target": cpu_ratio.map(|r| r >= CPU_TARGET_RATIO),
        "cpu": cpu_detail,
        "cpu_delivery": Delivery::XdpWire.name(),
        "cpu_ns_per_pkt_bridge_fed": bridge_ns,
        "cpu_ratio_bridge_fed": ratio(bridge_ns["nginx"].as_f64(), bridge_ns["shardline"].as_f64()),
        "cpu_ratio_vs_tokio_proxy_bridge_fed": ratio(bridge_ns["tokio_proxy"].as_f64(), bridge_ns["shardline"].as_f64()),
        "cpu_bridge_fed": bridge_detail,
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
                  runtime) proxy both ways. All on one 2-core VM shared with other work. \
                  cpu_ns_per_pkt: CPU per forwarded packet of the load balancer's side at one fixed \
                  offered rate (cpu.offered_pps, 16 datagrams per sendmmsg call, paced; answers drained every 2 ms) that all three \
                  forward in full (cpu.all_forwarded). It starts from cpu.whole_lab_ns_per_pkt: the runtime \
                  (schedstat, ns) of every thread of every process in the lab's namespaces, of ksoftirqd and \
                  of the bench's own client and proxy threads, summed over the run, per forwarded packet, \
                  minus the same for a baseline run in the same round and topology in which the client \
                  sends to a backend directly (shardline's lab: the client's route to the VIP switched to \
                  backend 1, so the same echo answers from the VIP; the proxies' topology: backend 1's \
                  address), median over rounds; so the sender's, the backends' and the answers' work \
                  cancels and everything that runs because the load balancer is there is counted, wherever \
                  the kernel ran it (on veth a packet's softirq work, the receiving side's XDP included, runs \
                  inside the sending task: this kernel accounts by ticks, so /proc/stat's softirq column, \
                  kept per run as a cross-check, would count it twice if added to process time). From \
                  shardline's whole-lab figure the backends' decapsulation is taken out and reported in \
                  cpu.backend_decap_ns_per_pkt: the run time (kernel BPF statistics) of the backends' \
                  decap XDP program per packet minus the same in the baseline, where it passes packets \
                  untouched. Delivery (cpu_delivery, cpu.delivery = xdp_wire): for these runs the \
                  lab's switch is not the bridge but an XDP L2 forwarder on its veth ports \
                  (shardline_wire: devmap redirect by destination MAC, broadcast flooded), so every \
                  interface receives xdp_frames (pages with headroom) as a NIC's driver receives DMA \
                  buffers: the load balancer's XDP runs on them without the copy native XDP on veth \
                  makes of every socket-built skb, and an interface without XDP builds skbs around the \
                  pages (GRO on); the one copy left is of each skb a sender transmits, made on the \
                  switch port it enters (the wire's work). Senders compute checksums in software (tx \
                  offload off on every eth0: a redirected frame loses the skb's offload state). Nothing \
                  else is taken out: shardline's figure includes its XDP program, the NAPI poll, XDP_TX \
                  into the switch port, the extra switch hop (the forwarder and its redirect) and the \
                  scheduling effects on the echo; the proxies' includes both directions through their \
                  namespace (the skbs built around the frames, GRO, IP, UDP), their process and their \
                  two extra switch hops with the copies of what they send. cpu_bridge_fed, \
                  cpu_ns_per_pkt_bridge_fed and cpu_ratio_bridge_fed: the same rounds, before the \
                  wiring, through the bridge (no netfilter hooks, see the README), where the load \
                  balancer's veth receives the skbs the senders' sockets built and native XDP copies \
                  each into a page-pool buffer first (a veth artifact), and the switch port facing it \
                  runs an XDP_PASS. \
                  cpu.by_stage_ns_per_pkt: one profiled run per case after the rounds (perf record -a -g, \
                  cpu-clock every 250 us of CPU, samples of the same tasks plus softirq run in the idle \
                  task, each sample given the stage of the innermost frame of its call chain that names \
                  one), case minus its topology's baseline, ns per forwarded packet (the baselines \
                  themselves are given whole). cpu.topology_hop_ns_per_pkt = the difference of the \
                  switch's stages, the hops any load balancer in this one-arm topology adds (shardline \
                  one, the proxies two): wired by XDP the switch stage (the forwarder, the devmap \
                  redirect and its flush) plus veth_skb_to_xdp_copy (every copy is made on a switch \
                  port), through the bridge bridge_hop; cpu.without_hop_ns_per_pkt = cpu_ns_per_pkt minus it, and \
                  cpu.ratio_without_hop nginx over shardline on those. cpu.bpf_programs: run time per \
                  forwarded packet of the lab's XDP programs from the kernel's BPF statistics (on only \
                  during the profiled runs). Per-run figures and the per-namespace split in cpu.runs and \
                  cpu.by_role_ns_per_pkt (by namespace, which on veth is not by cause). \
                  cpu_ratio = nginx / shardline on cpu_ns_per_pkt; cpu.whole_lab_ratio on the whole-lab \
                  figures.",
    }))
}

/// A topology's CPU rounds, through the bridge and wired by XDP.
struct Cpu {
    /// Through the bridge (the load balancer fed socket-built skbs).
    bridge: Outcome<cpu::Measured>,
    /// Wired by XDP (the load balancer fed `xdp_frame`s, as from a NIC).
    wire: Outcome<cpu::Measured>,
}

/// A throughput run (flat out), printed.
fn throughput(
    name: &str,
    topo: &Topology,
    target: SocketAddr,
    duration: Duration,
) -> Result<Traffic, BenchError> {
    let traffic = blast(topo, target, duration, Pace::FlatOut, None)?;
    println!(
        "bench:   {name}: {:.0} forwarded/s, {:.0} answered/s ({:.0} offered/s)",
        traffic.pps(),
        traffic.answered_pps(),
        traffic.offered_pps()
    );
    Ok(traffic)
}

/// shardline's throughput, then its CPU rounds through the bridge, then wired by XDP, in one
/// lab.
fn shardline_run(
    opts: &Options,
    tag: &str,
    duration: Duration,
    plan: &cpu::Plan,
) -> Result<(Traffic, Cpu), BenchError> {
    let lab = Lab::start(&LabOptions {
        tag: format!("{tag}x"),
        backends: BACKENDS,
        sessions: 2,
        bins: opts.bins.clone(),
    })?;
    let target = SocketAddr::new(VIP4.into(), HEADER_PORT);
    wait_answering(&lab.topology.client, target)?;
    let traffic = throughput("shardline", &lab.topology, target, duration)?;
    // The baseline: the client sends to the VIP on backend 1 directly (its route to the VIP
    // switched from the load balancer to the backend), so the same echo answers from the same
    // address as through shardline, and only the load balancer's path differs.
    let client = &lab.topology.client;
    let route = |case: &str| -> Result<(), BenchError> {
        let via = if case == cpu::BASELINE {
            backend4(1)
        } else {
            LB4
        };
        client.ip(&[
            "route",
            "replace",
            &format!("{VIP4}/32"),
            "via",
            &via.to_string(),
        ])?;
        wait_answering(client, target)
    };
    let measure = |topo: &Topology| {
        println!("bench:   shardline, {}:", delivery_of(topo).name());
        let cpu = cpu::measure(topo, target, &[("shardline", target)], &route, plan);
        let restored = route("shardline");
        cpu.and_then(|c| restored.map(|()| c))
            .map_err(|e| e.to_string())
    };
    let bridge = measure(&lab.topology);
    let wire = lab
        .wire_by_xdp()
        .map_err(BenchError::from)
        .and_then(|()| wait_answering(&lab.topology.client, target))
        .map_err(|e| e.to_string())
        .and_then(|()| measure(&lab.topology));
    Ok((traffic, Cpu { bridge, wire }))
}

/// How `topo` delivers frames to the load balancer.
fn delivery_of(topo: &Topology) -> Delivery {
    if topo.wired_by_xdp() {
        Delivery::XdpWire
    } else {
        Delivery::Bridge
    }
}

/// Starts `shardline-lab echo` as backend `id` on its own address, UDP port [`ECHO_PORT`], and
/// waits until it is ready.
fn spawn_echo(opts: &Options, ns: &Netns, id: u32, dir: &Path) -> Result<Child, BenchError> {
    let ready = dir.join(format!("echo-{id}.ready"));
    let _ = std::fs::remove_file(&ready);
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
    let child = Children(vec![child]);
    wait_file(&ready, "echo backend")?;
    Ok(child.into_inner())
}

type ProxyResults = (Outcome<Traffic>, Outcome<Traffic>, Cpu);

/// nginx's and the tokio proxy's throughput, then their CPU rounds through the bridge, then
/// wired by XDP, in one topology with both proxies running throughout (each idle while the
/// other or the baseline runs).
fn proxies_run(
    opts: &Options,
    tag: &str,
    duration: Duration,
    plan: &cpu::Plan,
) -> Result<ProxyResults, BenchError> {
    let topo = Topology::build(&format!("{tag}p"), BACKENDS, 0)?;
    let dir = TempDir(std::env::temp_dir().join(format!("shardline-bench-{tag}")));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).map_err(io(format!("creating {}", dir.0.display())))?;
    let mut children = Children(Vec::new());
    for (i, ns) in topo.backends.iter().enumerate() {
        children.0.push(spawn_echo(opts, ns, i as u32 + 1, &dir.0)?);
    }
    let backends: Vec<SocketAddr> = (1..=BACKENDS)
        .map(|id| SocketAddr::new(backend4(id).into(), ECHO_PORT))
        .collect();
    let nginx_target = SocketAddr::new(LB4.into(), NGINX_PORT);
    let nginx = start_nginx(&topo, &dir.0, &backends, nginx_target);
    let ((nginx_traffic, tokio_traffic, cpu), proxied) =
        with_tokio_proxy(&topo, &backends, |tokio| {
            let nginx_traffic = match &nginx {
                Ok(_) => {
                    throughput("nginx", &topo, nginx_target, duration).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let tokio_traffic = tokio.and_then(|t| {
                throughput("tokio proxy", &topo, t, duration).map_err(|e| e.to_string())
            });
            let mut cases = Vec::new();
            if nginx_traffic.is_ok() {
                cases.push(("nginx", nginx_target));
            }
            if tokio_traffic.is_ok() {
                cases.push(("tokio_proxy", SocketAddr::new(LB4.into(), TOKIO_PORT)));
            }
            let measure = || {
                println!("bench:   proxies, {}:", delivery_of(&topo).name());
                cpu::measure(&topo, backends[0], &cases, &|_| Ok(()), plan)
                    .map_err(|e| e.to_string())
            };
            let bridge = measure();
            let wire = topo
                .wire_by_xdp()
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    cases
                        .iter()
                        .try_for_each(|(_, t)| wait_answering(&topo.client, *t))
                        .map_err(|e| e.to_string())
                })
                .and_then(|()| measure());
            (nginx_traffic, tokio_traffic, Cpu { bridge, wire })
        });
    drop(nginx);
    drop(children);
    Ok((nginx_traffic, proxied.and(tokio_traffic), cpu))
}

/// Starts nginx (one worker, UDP stream proxy to `backends`) in the load balancer's namespace
/// and waits until it answers at `target`.
fn start_nginx(
    topo: &Topology,
    dir: &Path,
    backends: &[SocketAddr],
    target: SocketAddr,
) -> Result<Children, BenchError> {
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
    let nginx = Children(vec![child]);
    wait_answering(&topo.client, target).map_err(|e| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        BenchError::Check(format!("{e}; nginx error log:\n{log}"))
    })?;
    Ok(nginx)
}

/// Runs the tokio proxy (current-thread runtime, on a thread in the load balancer's namespace)
/// while `f` runs, `f` getting its address once it answers (or why it does not). Returns `f`'s
/// result and whether the proxy itself ran without an error.
fn with_tokio_proxy<R>(
    topo: &Topology,
    backends: &[SocketAddr],
    f: impl FnOnce(Outcome<SocketAddr>) -> R,
) -> (R, Outcome<()>) {
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
        let started = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(true) => wait_answering(&topo.client, listen)
                .map(|()| listen)
                .map_err(|e| e.to_string()),
            _ => Err("the tokio proxy did not start".to_owned()),
        };
        let r = f(started);
        let _ = stop.send(());
        let proxied = proxy
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("the tokio proxy panicked".into())));
        (r, proxied.map_err(|e| e.to_string()))
    })
}

/// Child processes killed (SIGTERM, then SIGKILL) when dropped.
struct Children(Vec<Child>);

impl Children {
    /// The last child, no longer killed on drop.
    fn into_inner(mut self) -> Child {
        self.0.pop().expect("a child was pushed")
    }
}

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
