//! Service probes on the data path, as Katran's healthcheck forwarding sends them: the probe is
//! encapsulated (IPIP) to the backend with the VIP as the inner destination, exactly as the
//! balancer forwards the service's packets, so passing proves the backend decapsulates and
//! serves that VIP, not only that its host answers on its own address.
//!
//! The inner source is this node's own address towards the backend, so the backend answers it
//! directly from the VIP (direct server return, as it answers clients):
//! - `udp`: one datagram; any answer from the VIP and port passes.
//! - `tcp`: a SYN; a SYN-ACK from the VIP and port passes, and an encapsulated RST then closes
//!   the half-open connection on the backend (a RST back means nothing listens: it fails).
//!
//! Sending needs a raw socket (`CAP_NET_RAW`, which the daemon has for XDP); the error says so
//! when it is missing. Packets are built by [`udp_probe`] and [`tcp_segment`], pure functions
//! tested below; the socket work runs on a blocking thread, bounded by the probe's limit.

use std::{
    io,
    mem::size_of,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::config::ServiceProbe;

use super::service::UDP_PAYLOAD;

/// IP protocol numbers used here.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// TCP flags.
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
/// TTL of the inner packets (the backend's stack sees them after decapsulation).
const INNER_TTL: u8 = 64;

/// Probes `vip` on the backend at `backend` through the data path as `kind` says, within
/// `limit`; the error says what failed.
pub async fn probe(
    kind: ServiceProbe,
    backend: Ipv4Addr,
    vip: SocketAddrV4,
    limit: Duration,
) -> Result<(), String> {
    let what = format!("data-path {kind:?} probe of {vip} on {backend}").to_lowercase();
    let run = move || match kind {
        ServiceProbe::Udp => probe_udp(backend, vip, limit),
        ServiceProbe::Tcp => probe_tcp(backend, vip, limit),
        ServiceProbe::Http => Err("http probes do not travel the data path".to_owned()),
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(outcome) => outcome.map_err(|e| format!("{what}: {e}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// One datagram to the VIP; passes on any answer from it.
fn probe_udp(backend: Ipv4Addr, vip: SocketAddrV4, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let source = source_towards(backend)?;
    let socket = UdpSocket::bind((source, 0)).map_err(|e| format!("binding a port: {e}"))?;
    let sport = socket.local_addr().map_err(|e| e.to_string())?.port();
    let raw = RawSocket::ipip()?;
    raw.send_to(&udp_probe(source, sport, vip, UDP_PAYLOAD), backend)?;
    let mut buf = [0u8; 1500];
    loop {
        let left = remaining(deadline).ok_or_else(|| format!("no answer within {limit:?}"))?;
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((_, SocketAddr::V4(from))) if from == vip => return Ok(()),
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => return Err(format!("no answer within {limit:?}")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A SYN to the VIP; passes on its SYN-ACK, then resets the half-open connection.
fn probe_tcp(backend: Ipv4Addr, vip: SocketAddrV4, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let source = source_towards(backend)?;
    // Holds the source port while the probe runs, so no local connection takes it.
    let held = TcpListener::bind((source, 0)).map_err(|e| format!("binding a port: {e}"))?;
    let sport = held.local_addr().map_err(|e| e.to_string())?.port();
    let answers = RawSocket::tcp_receiver()?;
    let raw = RawSocket::ipip()?;
    let isn = initial_sequence(sport, vip);
    raw.send_to(&tcp_segment(source, sport, vip, isn, 0, SYN), backend)?;
    let mut buf = [0u8; 1500];
    loop {
        let left = remaining(deadline).ok_or_else(|| format!("no SYN-ACK within {limit:?}"))?;
        let n = answers.recv(&mut buf, left)?;
        let Some(n) = n else {
            return Err(format!("no SYN-ACK within {limit:?}"));
        };
        match answer_to(&buf[..n], source, sport, vip) {
            Some(Answer::SynAck { seq, ack }) if ack == isn.wrapping_add(1) => {
                // Close the backend's half-open connection, through the data path too.
                let _ = raw.send_to(&tcp_segment(source, sport, vip, ack, seq, RST), backend);
                return Ok(());
            }
            Some(Answer::Reset) => return Err("reset: nothing listens on the VIP".to_owned()),
            _ => continue,
        }
    }
}

/// This node's address towards `backend`, as routing picks it (the source a connected UDP
/// socket gets; nothing is sent).
fn source_towards(backend: Ipv4Addr) -> Result<Ipv4Addr, String> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
    s.connect((backend, 9))
        .map_err(|e| format!("no route to {backend}: {e}"))?;
    match s.local_addr().map_err(|e| e.to_string())? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(a) => Err(format!("an IPv6 source {a} towards an IPv4 backend")),
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// An initial sequence number that differs per probe.
fn initial_sequence(sport: u16, vip: SocketAddrV4) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ (u32::from(sport) << 16) ^ u32::from(*vip.ip()) ^ u32::from(vip.port())
}

/// What came back to a TCP probe.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The VIP accepted: its sequence number and what it acknowledged.
    SynAck { seq: u32, ack: u32 },
    /// The VIP refused.
    Reset,
}

/// Reads an IPv4 packet (as a raw TCP socket hands it over) as the VIP's answer to the probe
/// from `source:sport`, if it is one.
fn answer_to(packet: &[u8], source: Ipv4Addr, sport: u16, vip: SocketAddrV4) -> Option<Answer> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet[0] >> 4 != 4 || ihl < 20 || packet.get(9) != Some(&IPPROTO_TCP) {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv4Addr> {
        Some(Ipv4Addr::from(
            <[u8; 4]>::try_from(packet.get(at..at + 4)?).ok()?,
        ))
    };
    if addr(12)? != *vip.ip() || addr(16)? != source {
        return None;
    }
    let tcp = packet.get(ihl..ihl + 20)?;
    let word16 = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    let word32 = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    if word16(0) != vip.port() || word16(2) != sport {
        return None;
    }
    let flags = tcp[13];
    if flags & RST != 0 {
        Some(Answer::Reset)
    } else if flags & (SYN | ACK) == SYN | ACK {
        Some(Answer::SynAck {
            seq: word32(4),
            ack: word32(8),
        })
    } else {
        None
    }
}

/// The inner packet of a UDP probe: IPv4 `source:sport` → `vip`, carrying `payload` (UDP
/// checksum 0, which IPv4 allows).
pub fn udp_probe(source: Ipv4Addr, sport: u16, vip: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = ipv4_header(source, *vip.ip(), IPPROTO_UDP, udp_len);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&vip.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The inner packet of a TCP probe segment: IPv4 `source:sport` → `vip` with `flags`, its
/// sequence and acknowledgement numbers, and a valid checksum.
pub fn tcp_segment(
    source: Ipv4Addr,
    sport: u16,
    vip: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&vip.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(12 + tcp.len());
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&vip.ip().octets());
    pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let sum = internet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut p = ipv4_header(source, *vip.ip(), IPPROTO_TCP, tcp.len());
    p.extend_from_slice(&tcp);
    p
}

/// A 20-byte IPv4 header with its checksum, for a payload of `len` octets.
fn ipv4_header(source: Ipv4Addr, dest: Ipv4Addr, protocol: u8, len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(20 + len);
    h.extend_from_slice(&[0x45, 0]);
    h.extend_from_slice(&((20 + len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
    h.extend_from_slice(&[INNER_TTL, protocol, 0, 0]);
    h.extend_from_slice(&source.octets());
    h.extend_from_slice(&dest.octets());
    let sum = internet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// The RFC 1071 checksum of `bytes`.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw IPv4 socket.
struct RawSocket(OwnedFd);

impl RawSocket {
    /// Sends IPIP: the kernel writes the outer header (this node → the backend), the caller
    /// the inner packet.
    fn ipip() -> Result<Self, String> {
        Self::open(libc::IPPROTO_IPIP)
    }

    /// Receives a copy of every TCP segment addressed to this host (the kernel keeps handling
    /// them as usual).
    fn tcp_receiver() -> Result<Self, String> {
        Self::open(libc::IPPROTO_TCP)
    }

    fn open(protocol: libc::c_int) -> Result<Self, String> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::PermissionDenied {
                format!("a raw socket needs CAP_NET_RAW ({e}); run as root or set probe_path = \"direct\"")
            } else {
                format!("opening a raw socket: {e}")
            });
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `inner` to `to` (the outer destination).
    fn send_to(&self, inner: &[u8], to: Ipv4Addr) -> Result<(), String> {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the address outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                inner.as_ptr().cast(),
                inner.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(format!("sending to {to}: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Receives one packet within `limit`; `None` when none came.
    fn recv(&self, buf: &mut [u8], limit: Duration) -> Result<Option<usize>, String> {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = limit.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            return Err(format!("poll: {}", io::Error::last_os_error()));
        }
        if ready == 0 {
            return Ok(None);
        }
        // SAFETY: the buffer is valid for its length.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if is_timeout(&e) {
                Ok(Some(0))
            } else {
                Err(format!("receiving: {e}"))
            };
        }
        Ok(Some(n as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 100, 1), 7000);

    #[test]
    fn a_udp_probe_is_a_valid_ipv4_datagram_to_the_vip() {
        let p = udp_probe(SRC, 40000, VIP, b"hi");
        assert_eq!(p.len(), 20 + 8 + 2);
        assert_eq!(
            internet_checksum(&p[..20]),
            0,
            "the IPv4 header checksum holds"
        );
        assert_eq!(&p[12..16], &SRC.octets());
        assert_eq!(&p[16..20], &VIP.ip().octets());
        assert_eq!(p[9], IPPROTO_UDP);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 30, "total length");
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 40000);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 7000);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 10, "UDP length");
        assert_eq!(&p[28..], b"hi");
    }

    #[test]
    fn a_tcp_segment_carries_a_checksum_its_receiver_accepts() {
        let p = tcp_segment(SRC, 40000, VIP, 0x0102_0304, 7, SYN);
        assert_eq!(p.len(), 40);
        assert_eq!(internet_checksum(&p[..20]), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&SRC.octets());
        pseudo.extend_from_slice(&VIP.ip().octets());
        pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, 20]);
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(internet_checksum(&pseudo), 0, "the TCP checksum holds");
        assert_eq!(p[20 + 13], SYN);
        assert_eq!(&p[24..28], &[1, 2, 3, 4]);
    }

    /// The VIP's answer to the probe as the raw socket hands it over: IPv4, VIP → source.
    fn answer(flags: u8, sport: u16, from: SocketAddrV4) -> Vec<u8> {
        let mut p = tcp_segment(
            *from.ip(),
            from.port(),
            SocketAddrV4::new(SRC, sport),
            9,
            43,
            flags,
        );
        p[20 + 13] = flags;
        p
    }

    #[test]
    fn only_the_vip_s_answer_to_this_probe_counts() {
        let syn_ack = answer(SYN | ACK, 40000, VIP);
        assert_eq!(
            answer_to(&syn_ack, SRC, 40000, VIP),
            Some(Answer::SynAck { seq: 9, ack: 43 })
        );
        assert_eq!(
            answer_to(&answer(RST | ACK, 40000, VIP), SRC, 40000, VIP),
            Some(Answer::Reset)
        );
        assert_eq!(answer_to(&syn_ack, SRC, 40001, VIP), None, "another port's");
        let other = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 11), 7000);
        assert_eq!(
            answer_to(&answer(SYN | ACK, 40000, other), SRC, 40000, VIP),
            None
        );
        assert_eq!(answer_to(&answer(ACK, 40000, VIP), SRC, 40000, VIP), None);
        assert_eq!(
            answer_to(&syn_ack[..30], SRC, 40000, VIP),
            None,
            "cut short"
        );
        assert_eq!(answer_to(&[], SRC, 40000, VIP), None);
    }
}
