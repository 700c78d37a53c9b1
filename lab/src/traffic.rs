//! The lab's client: sessions in both modes sending requests through the load balancer and
//! recording which backend answered each one.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use rand::Rng;
use shardline_common::packet::encode_header;

use crate::{
    echo::{ID_LEN, ID_MASK, REFUSED, TCP_REQUEST_LEN},
    topology::{client_alias4, CLIENT4, CLIENT6, VIP4, VIP6},
    HEADER_PORT, TCP_FLOW_PORT, UDP_FLOW_PORT,
};

/// How long a request waits for its answer before it counts as lost.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// What a lab session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// Header mode over UDP: the session id travels in the shardline header.
    Header {
        /// The session id.
        id: u64,
    },
    /// Flow mode over UDP from one client address.
    FlowUdp,
    /// Flow mode over TCP from one client address.
    FlowTcp,
}

/// One lab session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Short label for the live view.
    pub label: String,
    /// Mode and protocol.
    pub kind: SessionKind,
    /// Client source address.
    pub source: IpAddr,
    /// VIP it talks to.
    pub vip: IpAddr,
}

/// One answered request.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    /// Index of the session in the driver's list.
    pub session: usize,
    /// The client's socket address.
    pub source: SocketAddr,
    /// The service's socket address.
    pub destination: SocketAddr,
    /// Request key (header mode; 0 in flow mode, where the 5-tuple is the key).
    pub key: u64,
    /// Backend id from the answer.
    pub backend: u32,
    /// The handoff mark the request reached the backend with (header mode; 0: not marked),
    /// as the echo reports it ([`crate::echo::split_prefix`]).
    pub mark: u8,
}

/// The lab's sessions: `n` of them, half header mode (alternating IPv4 / IPv6), half flow mode
/// (alternating UDP / TCP, each from its own client address).
pub fn sessions(n: u32) -> Vec<Session> {
    let headers = n.div_ceil(2);
    let mut out = Vec::new();
    for i in 0..headers {
        let v6 = i % 2 == 1;
        out.push(Session {
            label: format!("hdr-{}{}", i + 1, if v6 { "/v6" } else { "" }),
            kind: SessionKind::Header {
                id: u64::from(i) + 1,
            },
            source: if v6 { CLIENT6.into() } else { CLIENT4.into() },
            vip: if v6 { VIP6.into() } else { VIP4.into() },
        });
    }
    for i in 0..n - headers {
        let tcp = i % 2 == 1;
        out.push(Session {
            label: format!(
                "flow-{}{}",
                client_alias4(i + 1),
                if tcp { "/tcp" } else { "/udp" }
            ),
            kind: if tcp {
                SessionKind::FlowTcp
            } else {
                SessionKind::FlowUdp
            },
            source: client_alias4(i + 1).into(),
            vip: VIP4.into(),
        });
    }
    out
}

/// Why a request got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LossReason {
    /// The backend answered that it is over its capacity limit (see [`crate::echo::REFUSED`]):
    /// a reason the backend itself reported.
    Refused,
    /// Nothing answered within [`REPLY_TIMEOUT`].
    Timeout,
    /// The TCP connection was refused or not established within [`REPLY_TIMEOUT`].
    ConnectFailed,
    /// The TCP connection broke (reset, closed, or an answer that was not the echo).
    Broken,
}

impl LossReason {
    /// Whether the loss has a reported cause (today: the backend said it refused the request).
    /// Every other loss is unexplained, and a default lab run must have none.
    pub fn explained(self) -> bool {
        matches!(self, Self::Refused)
    }

    /// A short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused by a saturated backend",
            Self::Timeout => "no answer in time",
            Self::ConnectFailed => "tcp connect failed",
            Self::Broken => "tcp connection broken",
        }
    }
}

/// A request that got no answer, with what the replay needs to say where it went.
#[derive(Clone, Copy, Debug)]
pub struct Loss {
    /// Index of the session in the driver's list.
    pub session: usize,
    /// Why.
    pub reason: LossReason,
    /// The backend that refused it ([`LossReason::Refused`]), if one said so.
    pub backend: Option<u32>,
}

impl Loss {
    fn outcome(session: usize, reason: LossReason, backend: Option<u32>) -> Outcome {
        Outcome::Lost(Self {
            session,
            reason,
            backend,
        })
    }
}

/// What became of one request.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// A backend answered it.
    Answered(Observation),
    /// Nothing served it.
    Lost(Loss),
}

/// Sends one request for session `index` and returns what answered, or `None` if nothing did
/// (see [`attempt`] for why).
pub fn request(
    index: usize,
    session: &Session,
    rng: &mut impl Rng,
) -> std::io::Result<Option<Observation>> {
    Ok(match attempt(index, session, rng)? {
        Outcome::Answered(obs) => Some(obs),
        Outcome::Lost(_) => None,
    })
}

/// Sends header-mode session `index`'s request for `key` (a header session's only) and says
/// who answered it, with the handoff mark it arrived with, or why nothing did.
pub fn header_request(index: usize, session: &Session, key: u64) -> std::io::Result<Outcome> {
    let SessionKind::Header { id } = session.kind else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a keyed request needs a header-mode session",
        ));
    };
    let mut payload = encode_header(id, key).to_vec();
    payload.extend_from_slice(b"shardline lab");
    udp_request(index, session, HEADER_PORT, &payload, key)
}

/// Sends one request for session `index` and says who answered it or why nothing did within
/// [`REPLY_TIMEOUT`]. Flow-mode requests each use a fresh source port, so a flow session's
/// requests spread like separate connections of one client. Errors are local socket errors.
pub fn attempt(index: usize, session: &Session, rng: &mut impl Rng) -> std::io::Result<Outcome> {
    let key: u64 = rng.gen();
    let lost = |reason, backend| Loss::outcome(index, reason, backend);
    match session.kind {
        SessionKind::Header { id } => {
            let mut payload = encode_header(id, key).to_vec();
            payload.extend_from_slice(b"shardline lab");
            udp_request(index, session, HEADER_PORT, &payload, key)
        }
        SessionKind::FlowUdp => udp_request(index, session, UDP_FLOW_PORT, &key.to_be_bytes(), 0),
        SessionKind::FlowTcp => {
            let destination = SocketAddr::new(session.vip, TCP_FLOW_PORT);
            let socket = socket_from(session.source)?;
            let Ok(mut stream) = connect_from(socket, destination) else {
                return Ok(lost(LossReason::ConnectFailed, None));
            };
            stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
            let mut req = [0u8; TCP_REQUEST_LEN];
            req[..8].copy_from_slice(&key.to_be_bytes());
            if stream.write_all(&req).is_err() {
                return Ok(lost(LossReason::Broken, None));
            }
            let mut answer = [0u8; ID_LEN + TCP_REQUEST_LEN];
            if let Err(e) = stream.read_exact(&mut answer) {
                let reason = match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        LossReason::Timeout
                    }
                    _ => LossReason::Broken,
                };
                return Ok(lost(reason, None));
            }
            if answer[ID_LEN..] != req {
                return Ok(lost(LossReason::Broken, None));
            }
            Ok(Outcome::Answered(Observation {
                session: index,
                source: stream.local_addr()?,
                destination,
                key: 0,
                backend: u32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]),
                mark: 0,
            }))
        }
    }
}

/// Sends `payload` from a fresh socket of `session` to its VIP on `port` and waits for the
/// answer; `key` is recorded in the observation.
fn udp_request(
    index: usize,
    session: &Session,
    port: u16,
    payload: &[u8],
    key: u64,
) -> std::io::Result<Outcome> {
    let destination = SocketAddr::new(session.vip, port);
    let socket = UdpSocket::bind(SocketAddr::new(session.source, 0))?;
    socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
    socket.connect(destination)?;
    socket.send(payload)?;
    let answer = udp_answer(&socket, payload)?;
    let lost = |reason, backend| Loss::outcome(index, reason, backend);
    Ok(match answer {
        None => lost(LossReason::Timeout, None),
        Some(id) if id & REFUSED != 0 => lost(LossReason::Refused, Some(id & ID_MASK)),
        Some(id) => Outcome::Answered(Observation {
            session: index,
            source: socket.local_addr().unwrap_or(destination),
            destination,
            key,
            backend: id & ID_MASK,
            mark: crate::echo::split_prefix(id).2,
        }),
    })
}

/// The id prefix of the answer to `sent` (a backend id, with [`REFUSED`] if it refused the
/// request), ignoring stray datagrams that echo something else.
fn udp_answer(socket: &UdpSocket, sent: &[u8]) -> std::io::Result<Option<u32>> {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) if n == ID_LEN + sent.len() && buf[ID_LEN..n] == *sent => {
                return Ok(Some(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])));
            }
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}

fn socket_from(source: IpAddr) -> std::io::Result<socket2::Socket> {
    let domain = if source.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    Ok(socket)
}

fn connect_from(socket: socket2::Socket, destination: SocketAddr) -> std::io::Result<TcpStream> {
    socket.connect_timeout(&destination.into(), REPLY_TIMEOUT)?;
    Ok(socket.into())
}
