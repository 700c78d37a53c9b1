//! The fault test's client: worker threads in the client namespace sending the lab's sessions'
//! requests through the ECMP route, each request recorded with its 5-tuple, key, when it was
//! sent and answered, and which backend answered (or why none did), for the replay to judge.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use rand::Rng;
use shardline_common::packet::encode_header;
use shardline_lab::{
    echo::{ID_LEN, MARK_SHIFT, TCP_REQUEST_LEN},
    netns::Netns,
    traffic::{Observation, Session, SessionKind},
    HEADER_PORT, TCP_FLOW_PORT, UDP_FLOW_PORT,
};

/// How long a request waits for its answer before it counts as lost: generous, since five
/// builds may share the machine's two cores with the test.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a request got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// Nothing answered in time.
    Timeout,
    /// The TCP connection was refused or not established in time.
    Connect,
    /// The TCP connection broke, or the answer was not the echo.
    Broken,
    /// A local socket error.
    Socket,
}

/// One request and what became of it.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// The session's index in the lab's list.
    pub session: usize,
    /// When it was sent, since the test started.
    pub at: Duration,
    /// When it was answered or given up on.
    pub done: Duration,
    /// The client's socket address.
    pub source: SocketAddr,
    /// The service's.
    pub destination: SocketAddr,
    /// The request key (header mode; 0 in flow mode).
    pub key: u64,
    /// The backend that answered, or why none did.
    pub answer: Result<u32, Lost>,
}

impl Sent {
    /// The request as the lab's replay takes it.
    pub fn observation(&self) -> Observation {
        Observation {
            session: self.session,
            source: self.source,
            destination: self.destination,
            key: self.key,
            backend: self.answer.unwrap_or(0),
            mark: 0,
        }
    }
}

/// Pause between two rounds of a worker's sessions: the machine's cores are shared.
const PACE: Duration = Duration::from_millis(2);

/// Sends the `sessions` picked by `mine` from inside `client`, one after the other, until
/// `stop`; every request's record. Times are since `start`.
pub fn run(
    client: &Netns,
    sessions: &[Session],
    mine: impl Fn(usize) -> bool,
    start: Instant,
    stop: &AtomicBool,
) -> Vec<Sent> {
    client
        .enter_current_thread()
        .expect("entering the client namespace");
    let mut rng = rand::thread_rng();
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (i, session) in sessions.iter().enumerate().filter(|(i, _)| mine(*i)) {
            out.push(request(i, session, rng.gen(), start));
        }
        std::thread::sleep(PACE);
    }
    out
}

/// Sends one request of `session` with `key`.
fn request(index: usize, session: &Session, key: u64, start: Instant) -> Sent {
    let at = start.elapsed();
    let mut sent = Sent {
        session: index,
        at,
        done: at,
        source: SocketAddr::new(session.source, 0),
        destination: SocketAddr::new(session.vip, 0),
        key: 0,
        answer: Err(Lost::Socket),
    };
    sent.answer = match session.kind {
        SessionKind::Header { id } => {
            sent.key = key;
            sent.destination.set_port(HEADER_PORT);
            let mut payload = encode_header(id, key).to_vec();
            payload.extend_from_slice(b"shardline faults");
            udp(&mut sent, &payload)
        }
        SessionKind::FlowUdp => {
            sent.destination.set_port(UDP_FLOW_PORT);
            udp(&mut sent, &key.to_be_bytes())
        }
        SessionKind::FlowTcp => {
            sent.destination.set_port(TCP_FLOW_PORT);
            tcp(&mut sent, key)
        }
    };
    sent.done = start.elapsed();
    sent
}

fn udp(sent: &mut Sent, payload: &[u8]) -> Result<u32, Lost> {
    let socket = UdpSocket::bind(sent.source).map_err(|_| Lost::Socket)?;
    sent.source = socket.local_addr().map_err(|_| Lost::Socket)?;
    socket
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .and_then(|()| socket.connect(sent.destination))
        .and_then(|()| socket.send(payload))
        .map_err(|_| Lost::Socket)?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) if n == ID_LEN + payload.len() && buf[ID_LEN..n] == *payload => {
                // The backend, without the handoff mark a moved key's answer carries.
                let prefix = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                return Ok(prefix & !(0xff << MARK_SHIFT));
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    Err(Lost::Timeout)
}

fn tcp(sent: &mut Sent, key: u64) -> Result<u32, Lost> {
    let mut stream = connect(sent)?;
    exchange(&mut stream, key)
}

/// Opens a TCP connection from `sent.source` (port 0: `sent.source` gets the port chosen) to
/// `sent.destination`.
fn connect(sent: &mut Sent) -> Result<TcpStream, Lost> {
    let domain = match sent.source.ip() {
        IpAddr::V4(_) => socket2::Domain::IPV4,
        IpAddr::V6(_) => socket2::Domain::IPV6,
    };
    let socket =
        socket2::Socket::new(domain, socket2::Type::STREAM, None).map_err(|_| Lost::Socket)?;
    socket.bind(&sent.source.into()).map_err(|_| Lost::Socket)?;
    sent.source = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or(Lost::Socket)?;
    socket
        .connect_timeout(&sent.destination.into(), REPLY_TIMEOUT)
        .map_err(|_| Lost::Connect)?;
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|_| Lost::Socket)?;
    Ok(stream)
}

/// One request on an open connection: the backend that answered it.
fn exchange(stream: &mut TcpStream, key: u64) -> Result<u32, Lost> {
    let mut req = [0u8; TCP_REQUEST_LEN];
    req[..8].copy_from_slice(&key.to_be_bytes());
    stream.write_all(&req).map_err(|_| Lost::Broken)?;
    let mut answer = [0u8; ID_LEN + TCP_REQUEST_LEN];
    stream.read_exact(&mut answer).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Lost::Timeout,
        _ => Lost::Broken,
    })?;
    if answer[ID_LEN..] != req {
        return Err(Lost::Broken);
    }
    Ok(u32::from_be_bytes([
        answer[0], answer[1], answer[2], answer[3],
    ]))
}

/// One event of a long-lived connection: when, and the backend that answered or why none did.
pub type Event = (Duration, Result<u32, Lost>);

/// What happened to a long-lived connection: when it was answered by a backend other than
/// the one before (its first answer included), and when it broke (it is then opened again).
pub type Life = Vec<Event>;

/// Keeps one TCP connection from `source` to the TCP flow service open from inside `client`
/// until `stop`, a request every 20 ms, and records its [`Life`]; a broken connection is
/// opened again.
pub fn hold(
    client: &Netns,
    source: IpAddr,
    vip: IpAddr,
    start: Instant,
    stop: &AtomicBool,
) -> Life {
    client
        .enter_current_thread()
        .expect("entering the client namespace");
    let mut rng = rand::thread_rng();
    let mut life = Life::new();
    while !stop.load(Ordering::Relaxed) {
        let mut sent = Sent {
            session: 0,
            at: start.elapsed(),
            done: start.elapsed(),
            source: SocketAddr::new(source, 0),
            destination: SocketAddr::new(vip, TCP_FLOW_PORT),
            key: 0,
            answer: Err(Lost::Socket),
        };
        let mut stream = match connect(&mut sent) {
            Ok(s) => s,
            Err(e) => {
                life.push((start.elapsed(), Err(e)));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let mut last = None;
        while !stop.load(Ordering::Relaxed) {
            match exchange(&mut stream, rng.gen()) {
                Ok(b) if last == Some(b) => {}
                Ok(b) => {
                    life.push((start.elapsed(), Ok(b)));
                    last = Some(b);
                }
                Err(e) => {
                    life.push((start.elapsed(), Err(e)));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    life
}
