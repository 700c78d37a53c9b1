//! `http` probes on the data path: a whole TCP connection to the VIP, encapsulated to each
//! backend by the daemon's tc egress program. Each backend serves HTTP on the VIP alone (a
//! responder in its namespace, bound to the VIPs), answering the probe path with a status the
//! test sets and every other path with 404, so only a GET of the configured path that reached
//! the backend through its decapsulator passes.

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use shardline::config::{Config, ProbePath, ServiceConfig, ServiceProbe};
use shardline_lab::{
    netns::Netns,
    predict::PredictOptions,
    topology::{CLIENT4, CLIENT6, VIP4, VIP6},
    Lab,
};

use super::{
    healthy, id, only_the_victim_left, probes_passed, start_lab, tail, until, BACKENDS, VICTIM,
};

/// The port the http-probed services listen on.
const HTTP_PORT: u16 = 8088;
/// The path the probes GET.
const PATH: &str = "/healthz";

/// One backend's HTTP responder: the status it answers [`PATH`] with, and the GETs of it it
/// served on each VIP.
struct Responder {
    status: AtomicU16,
    served4: AtomicU64,
    served6: AtomicU64,
    /// GETs of the probe path that named another host than the VIP they reached.
    misnamed: AtomicU64,
}

/// Serves HTTP on both VIPs inside `ns` until `stop`, answering as `r` says.
fn serve(ns: &Netns, r: Arc<Responder>, stop: Arc<AtomicBool>) {
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let ns_name = ns.name().to_owned();
    thread::spawn(move || {
        Netns::adopt(&ns_name)
            .enter_current_thread()
            .unwrap_or_else(|e| panic!("entering {ns_name}: {e}"));
        let bind = |ip: IpAddr| {
            let l = TcpListener::bind(SocketAddr::new(ip, HTTP_PORT))
                .unwrap_or_else(|e| panic!("binding {ip}:{HTTP_PORT} in {ns_name}: {e}"));
            l.set_nonblocking(true).unwrap();
            l
        };
        let listeners = [(bind(VIP4.into()), true), (bind(VIP6.into()), false)];
        ready_tx.send(()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let mut idle = true;
            for (l, v4) in &listeners {
                if let Ok((mut conn, _)) = l.accept() {
                    idle = false;
                    answer(&mut conn, &r, *v4);
                }
            }
            if idle {
                thread::sleep(Duration::from_millis(5));
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(5))
        .expect("the responder binds the VIPs");
}

/// Reads one request and answers it: [`PATH`] with the responder's status, anything else 404.
fn answer(conn: &mut std::net::TcpStream, r: &Responder, v4: bool) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 512];
    while !request.ends_with(b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
    let text = String::from_utf8_lossy(&request);
    let vip = if v4 {
        format!("{VIP4}:{HTTP_PORT}")
    } else {
        format!("[{VIP6}]:{HTTP_PORT}")
    };
    let status = if text.starts_with(&format!("GET {PATH} HTTP/1.")) {
        // The probe names the VIP it was sent to.
        if !text.contains(&format!("\r\nHost: {vip}\r\n")) {
            r.misnamed.fetch_add(1, Ordering::Relaxed);
        }
        let served = if v4 { &r.served4 } else { &r.served6 };
        served.fetch_add(1, Ordering::Relaxed);
        r.status.load(Ordering::Relaxed)
    } else {
        404
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} Probe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// Stops the responders when dropped.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Gives the load balancer a default route (the probe's connection leaves by this host's route
/// to the VIP, as on a real LB host: the tc program then sends its frames to the backend
/// itself) and starts every backend's responder, answering 200.
fn serve_all(lab: &Lab) -> (Vec<Arc<Responder>>, Stop) {
    for (family, via) in [("-4", CLIENT4.to_string()), ("-6", CLIENT6.to_string())] {
        lab.topology
            .lb
            .ip(&[family, "route", "add", "default", "via", &via])
            .unwrap_or_else(|e| panic!("a default route on the load balancer: {e}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let responders = lab
        .topology
        .backends
        .iter()
        .map(|ns| {
            let r = Arc::new(Responder {
                status: AtomicU16::new(200),
                served4: AtomicU64::new(0),
                served6: AtomicU64::new(0),
                misnamed: AtomicU64::new(0),
            });
            serve(ns, r.clone(), stop.clone());
            r
        })
        .collect();
    (responders, Stop(stop))
}

/// The `web` service of `config` as an `http`-probed service `name` on `vip`, probed on the data
/// path.
fn http_check(config: &Config, name: &str, vip: IpAddr) -> ServiceConfig {
    let mut s = config
        .services
        .iter()
        .find(|s| s.name == "web")
        .expect("the lab's tcp service")
        .clone();
    s.name = name.into();
    s.vip = vip;
    s.port = HTTP_PORT;
    s.probe = Some(ServiceProbe::Http);
    s.probe_path = ProbePath::Datapath;
    s.probe_http_path = Some(PATH.into());
    assert!(s.probes_on_data_path(), "{name}");
    s
}

/// The victim's members in `v`.
fn victim_of(v: &[(String, Value)]) -> Vec<Value> {
    v.iter()
        .filter(|(_, m)| id(m) == Some(VICTIM))
        .map(|(_, m)| m.clone())
        .collect()
}

/// Stops the victim's decapsulator and waits until it left the `probed` pools for want of an
/// answer; returns how long that took.
fn kill_decap_and_see_the_victim_leave(lab: &mut Lab, probed: &[String]) -> Duration {
    let interval = Duration::from_millis(PredictOptions::default().tick_ms);
    lab.kill(&format!("decap on backend {VICTIM}"));
    let started = Instant::now();
    let view = until(
        lab,
        probed,
        "the backend without decapsulation leaves the http-probed pools",
        interval * 10,
        |v| {
            victim_of(v)
                .iter()
                .all(|m| !healthy(m) && m["probe_failing"].as_bool() == Some(true))
        },
    );
    let took = started.elapsed();
    for m in victim_of(&view) {
        let error = m["probe"]["last_error"].as_str().unwrap_or("");
        assert!(
            error.contains("data-path http") && !error.contains("status"),
            "no answer at all without decapsulation: {error:?}\n{}",
            tail(&lab.daemon_log(), 20)
        );
    }
    took
}

#[test]
fn http_probes_on_the_data_path_pass_through_decapsulation_and_take_down_a_500_or_a_backend_that_stops_it(
) {
    let mut lab = start_lab();
    let (responders, _stop) = serve_all(&lab);

    let mut config = lab.config.clone();
    let mut probed = Vec::new();
    for (name, vip) in [("check", IpAddr::V4(VIP4)), ("check6", IpAddr::V6(VIP6))] {
        let s = http_check(&config, name, vip);
        config.services.push(s);
        probed.push(name.to_owned());
    }
    lab.reload_config(&config)
        .unwrap_or_else(|e| panic!("reloading with http probes: {e}"));

    let interval = Duration::from_millis(PredictOptions::default().tick_ms);
    until(
        &lab,
        &probed,
        "every member passes its data-path http probes",
        interval * 20,
        |v| {
            v.len() == probed.len() * BACKENDS as usize
                && v.iter().all(|(_, m)| healthy(m) && probes_passed(m, 10))
        },
    );
    // Every backend served the probe path on both VIPs: the GETs went through the data path.
    for (i, r) in responders.iter().enumerate() {
        let (four, six) = (
            r.served4.load(Ordering::Relaxed),
            r.served6.load(Ordering::Relaxed),
        );
        assert!(
            four >= 10 && six >= 10,
            "backend {} served {four} GETs on {VIP4} and {six} on {VIP6}",
            i + 1
        );
        assert_eq!(r.misnamed.load(Ordering::Relaxed), 0, "backend {}", i + 1);
    }

    // A 500 fails the probe: the victim leaves both pools, within a few probes.
    let victim = &responders[VICTIM as usize - 1];
    victim.status.store(500, Ordering::Relaxed);
    let started = Instant::now();
    let view = until(
        &lab,
        &probed,
        "a backend answering 500 leaves the http-probed pools",
        interval * 10,
        |v| {
            victim_of(v)
                .iter()
                .all(|m| !healthy(m) && m["probe_failing"].as_bool() == Some(true))
        },
    );
    let took_500 = started.elapsed();
    only_the_victim_left(
        &view,
        "data-path http",
        &["status 500, expected 2xx or 3xx"],
        false,
    );

    // Serving again, it comes back.
    victim.status.store(200, Ordering::Relaxed);
    until(
        &lab,
        &probed,
        "the victim rises again",
        interval * 10,
        |v| {
            victim_of(v)
                .iter()
                .all(|m| healthy(m) && probes_passed(m, 2))
        },
    );

    // Without its decapsulator no GET reaches it: down again, now for want of an answer.
    let took_decap = kill_decap_and_see_the_victim_leave(&mut lab, &probed);
    eprintln!(
        "backend {VICTIM} left the http-probed pools {took_500:?} after answering 500 and \
         {took_decap:?} after its decapsulator stopped"
    );
}

/// An IPv4 VIP's `http` probes to backends with only IPv6: the tc program encapsulates the
/// connection IPv4-in-IPv6, as the balancer forwards the VIP's packets. Before, it dropped them
/// (and a direct GET of the backend's own address finds nothing here): every backend would
/// have been marked dead.
#[test]
fn http_probes_of_an_ipv4_vip_reach_backends_with_only_ipv6_in_ipv6() {
    let mut lab = start_lab();
    let (responders, _stop) = serve_all(&lab);
    let mut config = lab.config.clone();
    for b in &mut config.backends {
        b.ipv4 = None;
    }
    let s = http_check(&config, "check", IpAddr::V4(VIP4));
    config.services.push(s);
    let probed = vec!["check".to_owned()];
    lab.reload_config(&config)
        .unwrap_or_else(|e| panic!("reloading with IPv6-only backends and http probes: {e}"));
    let interval = Duration::from_millis(PredictOptions::default().tick_ms);
    until(
        &lab,
        &probed,
        "every IPv6-only member passes its IPv4 VIP's http probes",
        interval * 20,
        |v| {
            v.len() == BACKENDS as usize
                && v.iter().all(|(_, m)| healthy(m) && probes_passed(m, 10))
        },
    );
    for (i, r) in responders.iter().enumerate() {
        let four = r.served4.load(Ordering::Relaxed);
        assert!(four >= 10, "backend {} served {four} GETs on {VIP4}", i + 1);
        assert_eq!(r.misnamed.load(Ordering::Relaxed), 0, "backend {}", i + 1);
    }
    let took = kill_decap_and_see_the_victim_leave(&mut lab, &probed);
    eprintln!("IPv6-only backend {VICTIM} left the IPv4 VIP's http pool {took:?} after its decapsulator stopped");
}
