//! The client's side of a veth run: one socket in the client's namespace sending 64-byte
//! datagrams (flat out, or paced to a fixed rate), a second thread counting the echo answers,
//! and the packets that reached the backends' interfaces read from `ip -s link`. A run can
//! also count the CPU its tasks spent ([`super::cputime`]).

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use shardline_common::packet::encode_header;
use shardline_lab::{echo::ID_LEN, netns::Netns, topology::Topology, topology::CLIENT4};

use super::cputime::{Tasks, Usage};
use crate::suite::{io, round, BenchError};

/// Payload bytes: with Ethernet, IPv4 and UDP headers, a 64-byte frame.
pub const PAYLOAD: usize = 64 - 14 - 20 - 8;
/// Upper bound on datagrams one run sends, whatever the duration.
const MAX_SENT: u64 = 50_000_000;
/// How long answers still in flight are counted after sending stops.
const GRACE: Duration = Duration::from_millis(200);
/// Datagrams handed to the kernel per `sendmmsg` call when sending flat out.
const BATCH: usize = 64;
/// Datagrams per `sendmmsg` call when paced: small bursts, so a paced run is nearly smooth.
const PACED_BATCH: usize = 16;
/// How often a paced run's answer counter drains the client socket.
const DRAIN_EVERY: Duration = Duration::from_millis(2);

/// How fast the client sends.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// As fast as one socket can, [`BATCH`] datagrams per call.
    FlatOut,
    /// This many datagrams per second, [`PACED_BATCH`] per call.
    Rate(f64),
}

/// What one run's client saw.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    /// Datagrams the client's socket took.
    pub sent: u64,
    /// Echo answers counted at the client.
    pub answered: u64,
    /// Packets received on the backends' interfaces.
    pub at_backends: u64,
    /// Seconds of sending.
    pub seconds: f64,
    /// CPU of the run's tasks from the first send to the end of the grace period, if measured.
    pub cpu: Option<Usage>,
}

impl Traffic {
    /// Packets delivered to the backends per second: what the forwarder forwarded.
    pub fn pps(&self) -> f64 {
        self.at_backends as f64 / self.seconds
    }

    /// Answers per second.
    pub fn answered_pps(&self) -> f64 {
        self.answered as f64 / self.seconds
    }

    /// Datagrams sent per second.
    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.seconds
    }

    /// Packets forwarded, at most what was sent (the backends' interfaces also see a few
    /// neighbour-discovery frames).
    pub fn forwarded(&self) -> u64 {
        self.at_backends.min(self.sent)
    }

    /// The JSON of a throughput run.
    pub fn json(&self) -> Value {
        json!({
            "forwarded_pps": self.pps().round() as u64,
            "answered_pps": self.answered_pps().round() as u64,
            "offered_pps": self.offered_pps().round() as u64,
            "sent": self.sent,
            "received_at_backends": self.at_backends,
            "answered": self.answered,
            "seconds": round(self.seconds, 2),
        })
    }
}

/// The request every run sends: session 1 (placed by the lab config), one constant key, so
/// every packet goes to one backend.
pub fn payload() -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..20].copy_from_slice(&encode_header(1, 0x5eed));
    p
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
pub fn wait_answering(client: &Netns, target: SocketAddr) -> Result<(), BenchError> {
    let payload = payload();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let socket = client_socket(client, target)?;
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .map_err(io("setting a read timeout"))?;
                let mut buf = [0u8; 2048];
                for _ in 0..50 {
                    let _ = socket.send(&payload);
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

/// Sends [`payload`] to `target` from the client namespace for `duration` at `pace`, counting
/// the answers on a second thread, the packets reaching the backends and, with `tasks`, the
/// CPU those tasks spent.
pub fn blast(
    topo: &Topology,
    target: SocketAddr,
    duration: Duration,
    pace: Pace,
    tasks: Option<&Tasks>,
) -> Result<Traffic, BenchError> {
    let rx_before = backend_rx(topo)?;
    let mut traffic = blast_from(&topo.client, target, duration, pace, tasks)?;
    traffic.at_backends = backend_rx(topo)?.saturating_sub(rx_before);
    Ok(traffic)
}

fn blast_from(
    client: &Netns,
    target: SocketAddr,
    duration: Duration,
    pace: Pace,
    tasks: Option<&Tasks>,
) -> Result<Traffic, BenchError> {
    let payload = payload();
    let payload = payload.as_slice();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let socket = client_socket(client, target)?;
                let receiver = socket.try_clone().map_err(io("cloning the socket"))?;
                match pace {
                    Pace::FlatOut => receiver.set_read_timeout(Some(Duration::from_millis(50))),
                    Pace::Rate(_) => receiver.set_nonblocking(true),
                }
                .map_err(io("setting up the answer counter"))?;
                let stop = AtomicBool::new(false);
                std::thread::scope(|inner| {
                    let counter =
                        inner.spawn(|| count_answers(&receiver, payload.len(), pace, &stop));
                    let first = tasks.map(Tasks::snapshot);
                    let start = Instant::now();
                    let sent = send_for(&socket, payload, duration, pace);
                    let seconds = start.elapsed().as_secs_f64();
                    std::thread::sleep(GRACE);
                    let cpu = tasks
                        .zip(first)
                        .map(|(t, first)| t.usage(&first, &t.snapshot()));
                    stop.store(true, Ordering::Relaxed);
                    let answered = counter.join().unwrap_or(0);
                    Ok(Traffic {
                        sent,
                        answered,
                        at_backends: 0,
                        seconds,
                        cpu,
                    })
                })
            })
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("client thread panicked".into())))
    })
}

/// Counts the echo answers (`ID_LEN + request` bytes) on `receiver` until `stop`. Flat out it
/// blocks in `recv` (50 ms timeout); paced, it wakes every [`DRAIN_EVERY`] and drains the
/// socket without blocking, so the client does not pay a wakeup per answer: that cost would be
/// the same in every run, but it would add its noise to a CPU comparison.
fn count_answers(receiver: &UdpSocket, request: usize, pace: Pace, stop: &AtomicBool) -> u64 {
    let mut buf = [0u8; 2048];
    let mut answered = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Pace::Rate(_) = pace {
            std::thread::sleep(DRAIN_EVERY);
        }
        while let Ok(n) = receiver.recv(&mut buf) {
            if n == ID_LEN + request {
                answered += 1;
            }
            if let Pace::FlatOut = pace {
                break;
            }
        }
    }
    answered
}

/// Sends for `duration` at `pace`; returns the datagrams sent. A paced sender that fell behind
/// (descheduled on the shared cores) catches up, so the average rate holds.
fn send_for(socket: &UdpSocket, payload: &[u8], duration: Duration, pace: Pace) -> u64 {
    let mut batch = SendBatch::new(payload);
    let start = Instant::now();
    let mut sent = 0u64;
    match pace {
        Pace::FlatOut => {
            while sent < MAX_SENT && start.elapsed() < duration {
                sent += batch.send(socket, BATCH);
            }
        }
        Pace::Rate(rate) => {
            let interval = Duration::from_secs_f64(PACED_BATCH as f64 / rate.max(1.0));
            let mut next = start;
            while sent < MAX_SENT && start.elapsed() < duration {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                sent += batch.send(socket, PACED_BATCH);
                next += interval;
            }
        }
    }
    sent
}

/// One `sendmmsg` batch of up to [`BATCH`] copies of a payload on a connected socket: one
/// system call per batch, so the client's syscall overhead does not bound the offered load.
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

    /// Sends `n` (at most [`BATCH`]) datagrams; returns how many the kernel took (0 on an
    /// error such as a full socket buffer, as a plain `send` loop would drop them).
    fn send(&mut self, socket: &UdpSocket, n: usize) -> u64 {
        use std::os::fd::AsRawFd;
        // SAFETY: `msgs` points at `iov`, which points at the borrowed payload; all outlive the
        // call, `n` is at most their length, and the socket is connected, so no address is
        // needed.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n.min(BATCH) as libc::c_uint,
                0,
            )
        };
        sent.max(0) as u64
    }
}
