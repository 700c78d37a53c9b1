//! The lab's backend service: UDP and TCP echo servers that prefix every answer with the
//! backend's id, so the client learns which backend served each request (and, for a
//! header-mode request the dataplane marked after a re-shard, which backend owned its key
//! before: "moved from X", [`split_prefix`]); and the command line
//! ([`lab_args`]) every lab backend runs it with, so the hook's backends serve what the first
//! ones do.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use shardline_common::quic::CidLayout;

use crate::{
    topology::{VIP4, VIP6},
    HEADER_PORT, QUIC_PORT, TCP_FLOW_PORT, UDP_FLOW_PORT,
};

/// A backend's capacity limit: UDP requests beyond `capacity` per second are refused (answered
/// with [`REFUSED`] in the id, not served), and each
/// second the served rate, the capacity and whether any request was refused are written to
/// `load_file` as an [`shardline::agent::AppLoad`] (for the backend's agent to report).
#[derive(Debug)]
pub struct Limit {
    capacity: u64,
    served: AtomicU64,
    refused: AtomicU64,
    load_file: PathBuf,
}

impl Limit {
    /// A limit of `capacity` requests per second, reported to `load_file`.
    pub fn new(capacity: u64, load_file: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            load_file,
        })
    }

    fn admit(&self) -> bool {
        if self.served.fetch_add(1, Ordering::Relaxed) < self.capacity {
            true
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Every second: writes the load file and resets the window; logs saturation changes.
    fn report_loop(self: Arc<Self>, id: u32) {
        let mut was = false;
        loop {
            thread::sleep(Duration::from_secs(1));
            let refused = self.refused.swap(0, Ordering::Relaxed);
            let served = self.served.swap(0, Ordering::Relaxed).min(self.capacity);
            let load = shardline::agent::AppLoad {
                load: served as f64,
                capacity: self.capacity as f64,
                saturated: refused > 0,
                services: Default::default(),
            };
            if load.saturated != was {
                if load.saturated {
                    eprintln!(
                        "backend {id} saturated: refused {refused} requests over {} per second",
                        self.capacity
                    );
                } else {
                    eprintln!("backend {id} no longer saturated");
                }
                was = load.saturated;
            }
            let tmp = self.load_file.with_extension("tmp");
            let json = serde_json::to_vec(&load).expect("serializable");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &self.load_file);
            }
        }
    }
}

/// Length of a TCP request; the answer is [`ID_LEN`] + this.
pub const TCP_REQUEST_LEN: usize = 32;
/// Length of the backend-id prefix of every answer (u32, big endian).
pub const ID_LEN: usize = 4;
/// Set in the id prefix of a UDP answer the backend refused over its capacity limit (the
/// payload is echoed as usual): as an HTTP 503, the client learns why it was not served
/// instead of waiting for an answer that never comes.
pub const REFUSED: u32 = 1 << 31;
/// Bits of the id prefix holding the backend id (ids are below 4096).
pub const ID_MASK: u32 = 0xffff;
/// Shift of the handoff mark in the id prefix: the flags byte a header-mode request arrived
/// with when the dataplane marked it (`shardline_common::handoff`), so the answer says "moved
/// from X". The echoed request has the byte back at 0, as the client sent it.
pub const MARK_SHIFT: u32 = 16;

/// An answer's id prefix split: the backend id, whether it refused the request, and the
/// handoff mark of the request (0: not marked; see `shardline_common::handoff::previous_of`).
pub const fn split_prefix(prefix: u32) -> (u32, bool, u8) {
    (
        prefix & ID_MASK,
        prefix & REFUSED != 0,
        (prefix >> MARK_SHIFT) as u8,
    )
}

/// The handoff mark of a marked header-mode request in `payload` (0 for any other payload),
/// cleared in `payload`: the mark moves from the echoed request into the answer's prefix.
fn take_mark(payload: &mut [u8]) -> u8 {
    let flags = shardline_common::handoff::FLAGS_OFFSET;
    let is_header = payload.len() >= shardline_common::consts::HEADER_LEN
        && payload[..2] == shardline_common::consts::HEADER_MAGIC.to_be_bytes();
    if !is_header || payload[flags] & shardline_common::handoff::MOVED == 0 {
        return 0;
    }
    std::mem::take(&mut payload[flags])
}

/// Serves UDP on every `udp` port and TCP on every `tcp` port of every address in `bind` until
/// the process is killed. Binding the VIPs themselves makes UDP answers leave from the VIP (an
/// unbound socket would answer from the host's own address, which the client would not accept).
/// Sockets are bound before this returns, so a caller can signal readiness.
/// With a `limit`, UDP requests are counted and capped (see [`Limit`]).
pub fn serve(
    id: u32,
    bind: &[IpAddr],
    udp: &[u16],
    tcp: &[u16],
    limit: Option<Arc<Limit>>,
) -> std::io::Result<Vec<thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    if let Some(limit) = &limit {
        let limit = limit.clone();
        handles.push(thread::spawn(move || limit.report_loop(id)));
    }
    for addr in bind {
        for port in udp {
            let socket = UdpSocket::bind(SocketAddr::new(*addr, *port))?;
            crate::sockbuf::grow_receive_buffer(&socket, crate::sockbuf::BUSY_UDP_RCVBUF)?;
            let limit = limit.clone();
            handles.push(thread::spawn(move || udp_loop(id, socket, limit)));
        }
        for port in tcp {
            let listener = TcpListener::bind(SocketAddr::new(*addr, *port))?;
            handles.push(thread::spawn(move || tcp_accept(id, listener)));
        }
    }
    Ok(handles)
}

/// What a backend's echo needs to serve QUIC too: the lab's certificate and key (PEM) and the
/// layout its connection ids must carry the server id in (the quic services' layout).
#[derive(Clone, Debug)]
pub struct QuicFiles<'a> {
    /// The certificate.
    pub cert: &'a Path,
    /// Its private key.
    pub key: &'a Path,
    /// The connection-id layout.
    pub layout: CidLayout,
}

/// The arguments of `shardline-lab echo` on lab backend `id`: UDP on the header and flow
/// ports, TCP on the flow port and, with `quic`, QUIC on the quic port, on both VIPs. Every
/// backend joins every service's default table, so every one must serve all of them.
pub fn lab_args(id: u32, quic: Option<&QuicFiles>) -> Vec<String> {
    let mut args = vec![
        "echo".into(),
        "--id".into(),
        id.to_string(),
        "--bind".into(),
        VIP4.to_string(),
        "--bind".into(),
        VIP6.to_string(),
        "--udp".into(),
        format!("{HEADER_PORT},{UDP_FLOW_PORT}"),
        "--tcp".into(),
        TCP_FLOW_PORT.to_string(),
    ];
    if let Some(q) = quic {
        args.extend([
            "--quic".into(),
            QUIC_PORT.to_string(),
            "--quic-cert".into(),
            q.cert.to_string_lossy().into_owned(),
            "--quic-key".into(),
            q.key.to_string_lossy().into_owned(),
            "--rotation".into(),
            q.layout.rotation.to_string(),
            "--server-id-len".into(),
            q.layout.server_id_len.to_string(),
        ]);
    }
    args
}

fn udp_loop(id: u32, socket: UdpSocket, limit: Option<Arc<Limit>>) {
    // Room for a jumbo frame's datagram (a 9000-octet lab segment), echoed whole.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf[ID_LEN..]) else {
            continue;
        };
        let refused = limit.as_ref().is_some_and(|l| !l.admit());
        let mark = take_mark(&mut buf[ID_LEN..ID_LEN + n]);
        let prefix = (if refused { id | REFUSED } else { id }) | u32::from(mark) << MARK_SHIFT;
        buf[..ID_LEN].copy_from_slice(&prefix.to_be_bytes());
        let _ = socket.send_to(&buf[..ID_LEN + n], peer);
    }
}

fn tcp_accept(id: u32, listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut stream = stream;
            let mut req = [0u8; TCP_REQUEST_LEN];
            while stream.read_exact(&mut req).is_ok() {
                let mut answer = id.to_be_bytes().to_vec();
                answer.extend_from_slice(&req);
                if stream.write_all(&answer).is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(String::as_str)
    }

    #[test]
    fn a_marked_request_is_echoed_as_sent_and_its_mark_answered_in_the_prefix() {
        let mut marked = shardline_common::packet::encode_header(42, 7).to_vec();
        marked[3] = shardline_common::handoff::mark(2);
        let mut plain = shardline_common::packet::encode_header(42, 7).to_vec();
        assert_eq!(take_mark(&mut marked), 0x82);
        assert_eq!(marked, plain, "echoed as the client sent it");
        assert_eq!(take_mark(&mut plain), 0);
        let mut short = vec![0x53, 0x48, 1, 0x82];
        assert_eq!(take_mark(&mut short), 0, "not a header");
        let prefix = 5 | REFUSED | 0x82 << MARK_SHIFT;
        assert_eq!(split_prefix(prefix), (5, true, 0x82));
        assert_eq!(split_prefix(5), (5, false, 0));
    }

    #[test]
    fn every_lab_backend_serves_udp_and_tcp_and_quic_when_given_its_files() {
        let plain = lab_args(3, None);
        assert_eq!(value(&plain, "--id"), Some("3"));
        assert_eq!(value(&plain, "--udp"), Some("7000,5353"));
        assert_eq!(value(&plain, "--tcp"), Some("8080"));
        assert!(!plain.iter().any(|a| a == "--quic"));
        let layout = CidLayout {
            rotation: 2,
            server_id_len: 3,
        };
        let files = QuicFiles {
            cert: Path::new("/w/quic-cert.pem"),
            key: Path::new("/w/quic-key.pem"),
            layout,
        };
        let quic = lab_args(3, Some(&files));
        assert_eq!(quic[..plain.len()], plain[..]);
        assert_eq!(value(&quic, "--quic"), Some("4433"));
        assert_eq!(value(&quic, "--quic-cert"), Some("/w/quic-cert.pem"));
        assert_eq!(value(&quic, "--quic-key"), Some("/w/quic-key.pem"));
        assert_eq!(value(&quic, "--rotation"), Some("2"));
        assert_eq!(value(&quic, "--server-id-len"), Some("3"));
    }
}
