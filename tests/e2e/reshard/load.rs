//! The client side of the re-shard test: senders that stamp every request with the table epoch
//! at send time, and the records of what answered.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use shardline_common::packet::encode_header;
use shardline_lab::{
    echo::{ID_LEN, ID_MASK},
    HEADER_PORT, TCP_FLOW_PORT, UDP_FLOW_PORT,
};

/// Requests sent back to back before waiting for their answers.
pub const BURST: usize = 32;
/// How long a burst waits for its last answer.
const BURST_TIMEOUT: Duration = Duration::from_millis(200);

/// One answered request.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// Header session id (0 for flows).
    pub session: u64,
    /// Request key (header mode) or flow index (flow mode).
    pub key: u64,
    /// Client socket.
    pub source: SocketAddr,
    /// Service socket.
    pub destination: SocketAddr,
    /// Table epoch read just before sending.
    pub epoch_sent: u64,
    /// Table epoch read just after the answer arrived.
    pub epoch_answered: u64,
    /// Backend id in the answer.
    pub backend: u32,
}

/// What one sender saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answered requests.
    pub records: Vec<Record>,
    /// Requests sent.
    pub sent: u64,
    /// Requests never answered.
    pub lost: u64,
    /// TCP connections that broke.
    pub broken: u64,
}

fn payload(session: u64, key: u64, seq: u64, epoch: u64) -> Vec<u8> {
    let mut p = encode_header(session, key).to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&epoch.to_be_bytes());
    p
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Sends bursts of header-mode requests for `sessions` from `source` until `stop`.
pub fn header_sender(
    source: IpAddr,
    vip: IpAddr,
    sessions: &[u64],
    seed: u64,
    epoch: &AtomicU64,
    stop: &AtomicBool,
) -> Tally {
    let destination = SocketAddr::new(vip, HEADER_PORT);
    let socket = UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind");
    socket.connect(destination).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let local = socket.local_addr().expect("local addr");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut seq = 0u64;
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let mut outstanding = HashMap::new();
        for _ in 0..BURST {
            let session = sessions[rng.gen_range(0..sessions.len())];
            let key: u64 = rng.gen();
            seq += 1;
            let p = payload(session, key, seq, epoch.load(Ordering::SeqCst));
            if socket.send(&p).is_ok() {
                outstanding.insert(seq, ());
                tally.sent += 1;
            }
        }
        let deadline = std::time::Instant::now() + BURST_TIMEOUT;
        while !outstanding.is_empty() && std::time::Instant::now() < deadline {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            if n != ID_LEN + 36 {
                continue;
            }
            let body = &buf[ID_LEN..n];
            let seq = u64_at(body, 20);
            if outstanding.remove(&seq).is_none() {
                continue;
            }
            tally.records.push(Record {
                session: u64_at(body, 4),
                key: u64_at(body, 12),
                source: local,
                destination,
                epoch_sent: u64_at(body, 28),
                epoch_answered: epoch.load(Ordering::SeqCst),
                backend: u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) & ID_MASK,
            });
        }
        tally.lost += outstanding.len() as u64;
    }
    tally
}

/// Sends requests over `flows` long-lived UDP flows (fixed source ports) from `source`, each
/// flow's answers recorded with `key` = its index, until `stop`.
pub fn flow_sender(
    source: IpAddr,
    vip: IpAddr,
    flows: usize,
    epoch: &AtomicU64,
    stop: &AtomicBool,
) -> Tally {
    let destination = SocketAddr::new(vip, UDP_FLOW_PORT);
    let sockets: Vec<UdpSocket> = (0..flows)
        .map(|_| {
            let s = UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind");
            s.connect(destination).expect("connect");
            s.set_read_timeout(Some(BURST_TIMEOUT)).expect("timeout");
            s
        })
        .collect();
    let mut tally = Tally::default();
    let mut seq = 0u64;
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        for (i, socket) in sockets.iter().enumerate() {
            for _ in 0..BURST / flows.max(1) + 1 {
                seq += 1;
                let p = payload(0, i as u64, seq, epoch.load(Ordering::SeqCst));
                if socket.send(&p).is_ok() {
                    tally.sent += 1;
                }
            }
        }
        for (i, socket) in sockets.iter().enumerate() {
            for _ in 0..BURST / flows.max(1) + 1 {
                match socket.recv(&mut buf) {
                    Ok(n) if n == ID_LEN + 36 => tally.records.push(Record {
                        session: 0,
                        key: i as u64,
                        source: socket.local_addr().expect("local"),
                        destination,
                        epoch_sent: u64_at(&buf[ID_LEN..n], 28),
                        epoch_answered: epoch.load(Ordering::SeqCst),
                        backend: u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"))
                            & ID_MASK,
                    }),
                    _ => tally.lost += 1,
                }
            }
        }
    }
    tally
}

/// Keeps `conns` TCP connections from `source` busy until `stop`; every answer is recorded
/// with `key` = the connection's index. A connection that breaks is counted and not reopened.
pub fn tcp_sender(
    source: IpAddr,
    vip: IpAddr,
    conns: usize,
    epoch: &AtomicU64,
    stop: &AtomicBool,
) -> Tally {
    let destination = SocketAddr::new(vip, TCP_FLOW_PORT);
    let mut tally = Tally::default();
    let mut streams: Vec<Option<TcpStream>> = (0..conns)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            s.bind(&SocketAddr::new(source, 0).into()).expect("bind");
            s.connect_timeout(&destination.into(), Duration::from_secs(2))
                .expect("connect");
            let s: TcpStream = s.into();
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            Some(s)
        })
        .collect();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in streams.iter_mut().enumerate() {
            let Some(stream) = slot else { continue };
            seq += 1;
            let sent_epoch = epoch.load(Ordering::SeqCst);
            let mut req = [0u8; 32];
            req[..8].copy_from_slice(&seq.to_be_bytes());
            let mut answer = [0u8; ID_LEN + 32];
            tally.sent += 1;
            if stream.write_all(&req).is_err()
                || stream.read_exact(&mut answer).is_err()
                || answer[ID_LEN..] != req
            {
                tally.broken += 1;
                *slot = None;
                continue;
            }
            tally.records.push(Record {
                session: 0,
                key: i as u64,
                source: stream.local_addr().expect("local"),
                destination,
                epoch_sent: sent_epoch,
                epoch_answered: epoch.load(Ordering::SeqCst),
                backend: u32::from_be_bytes(answer[..4].try_into().expect("4 bytes")),
            });
        }
    }
    tally
}
