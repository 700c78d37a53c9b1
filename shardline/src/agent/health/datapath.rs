//! Service probes on the data path, as Katran's healthcheck forwarding sends them: the probe is
//! encapsulated to the backend with the VIP as the inner destination, exactly as the balancer
//! forwards the service's packets (IPIP for an IPv4 VIP, IPv6-in-IPv6 for an IPv6 one, and
//! IPv4-in-IPv6 for an IPv4 VIP's backend with only IPv6: `shardline_common::encap::outer_v6`),
//! so passing proves the backend decapsulates and serves that VIP, not only that its host
//! answers on its own address.
//!
//! The inner source is this node's own address towards the backend ([`inner_source`]), so the
//! backend answers it directly from the VIP (direct server return, as it answers clients):
//! - `udp`: one datagram; any answer from the VIP and port passes.
//! - `tcp`: a SYN; a SYN-ACK from the VIP and port passes, and an encapsulated RST then closes
//!   the half-open connection on the backend (a RST back means nothing listens: it fails).
//! - `http`: a whole TCP connection, so not through raw sockets (the host's kernel would reset
//!   the connection it never opened): an ordinary socket to the VIP carries a probe mark, and
//!   the tc egress program [`steer`] attaches encapsulates its packets to the backend. The
//!   inner source is this node's address on its route to the VIP, which it must have (a
//!   default route does); the connection then leaves by that route's interface.
//!
//! `tcp` and `udp` need a raw socket (`CAP_NET_RAW`, which the daemon has for XDP), `http`
//! `CAP_BPF` and `CAP_NET_ADMIN` (the mark and the tc program); the errors say so when they are
//! missing. Packets are built and read by [`inner`], pure functions tested there; the socket
//! work runs on a blocking thread, bounded by the probe's limit.

mod inner;
pub mod steer;

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use self::inner::{answer_to, ipv4_tcp_payload, tcp_segment, udp_probe, Answer, Inner, RST, SYN};
use super::{
    get::HttpCheck,
    service::{Target, UDP_PAYLOAD},
};
use crate::config::ServiceProbe;

/// Probes `vip` on `target`'s backend (its address of the VIP's family, or its IPv6 one for an
/// IPv4 VIP when it has no IPv4) through the data path as its kind says, within `limit`; the
/// error says what failed.
pub async fn probe(target: &Target, vip: SocketAddr, limit: Duration) -> Result<(), String> {
    let (kind, backend) = (target.kind, target.addr.ip());
    let what = format!("data-path {kind:?} probe of {vip} on {backend}").to_lowercase();
    let outcome = match kind {
        ServiceProbe::Http => {
            let check = target.http.clone().unwrap_or_default();
            probe_http(backend, target.mac, vip, check, limit).await
        }
        ServiceProbe::Udp | ServiceProbe::Tcp => {
            let run = move || match kind {
                ServiceProbe::Udp => probe_udp(backend, vip, limit),
                _ => probe_tcp(backend, vip, limit),
            };
            tokio::task::spawn_blocking(run)
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    outcome.map_err(|e| format!("{what}: {e}"))
}

/// A GET of `check`'s path from the VIP, on a marked connection the tc program encapsulates
/// to `backend` through the next hop `mac`.
async fn probe_http(
    backend: IpAddr,
    mac: [u8; 6],
    vip: SocketAddr,
    check: HttpCheck,
    limit: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mark = tokio::task::spawn_blocking(move || {
        let source = source_towards(vip.ip()).map_err(|e| {
            format!(
                "{e}: an http probe leaves by this host's route to the VIP (a default route does)"
            )
        })?;
        if source == vip.ip() {
            return Err(format!(
                "{vip} is an address of this host: its probes would never leave it"
            ));
        }
        let interface = interface_of(source)?;
        // The outer source of IPv4-in-IPv6 (an IPv4 VIP, a backend with only IPv6): required
        // then, written for every IPv6 backend, whose mark both kinds of probe share.
        let source6 = match (backend, source_towards(backend)) {
            (IpAddr::V6(_), Ok(IpAddr::V6(s))) => Some(s),
            (IpAddr::V6(_), Err(e)) if vip.is_ipv4() => return Err(e),
            _ => None,
        };
        steer::prepare(&interface, backend, mac, source6).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))?;
    let socket = match vip {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("opening a socket: {e}"))?;
    set_mark(&socket, mark)?;
    let exchange = async {
        let mut stream = socket
            .connect(vip)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        check.exchange(&mut stream, vip).await
    };
    tokio::time::timeout_at(deadline, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// Marks every packet of `socket` with `mark` (`SO_MARK`, which needs `CAP_NET_ADMIN`).
fn set_mark(socket: &impl AsRawFd, mark: u32) -> Result<(), String> {
    // SAFETY: setsockopt(2) reads a u32 of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "marking the probe's socket needs CAP_NET_ADMIN: {e}"
        ));
    }
    Ok(())
}

/// The interface holding `addr` (where this host's packets from it leave).
fn interface_of(addr: IpAddr) -> Result<String, String> {
    let all = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing interfaces: {e}"))?;
    for ifa in all {
        let Some(a) = ifa.address else { continue };
        let ip: Option<IpAddr> = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => Some(v4.ip().into()),
            (_, Some(v6)) => Some(v6.ip().into()),
            _ => None,
        };
        if ip == Some(addr) {
            return Ok(ifa.interface_name);
        }
    }
    Err(format!("no interface holds {addr}"))
}

/// One datagram to the VIP; passes on any answer from it.
fn probe_udp(backend: IpAddr, vip: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let source = inner_source(backend, vip.ip())?;
    let inner = Inner::new(source, vip.ip())?;
    let socket = UdpSocket::bind((source, 0)).map_err(|e| format!("binding a port: {e}"))?;
    let sport = socket.local_addr().map_err(|e| e.to_string())?.port();
    let raw = RawSocket::tunnel(backend, vip.ip())?;
    raw.send_to(&udp_probe(inner, sport, vip.port(), UDP_PAYLOAD), backend)?;
    let mut buf = [0u8; 1500];
    loop {
        let left = remaining(deadline).ok_or_else(|| format!("no answer within {limit:?}"))?;
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((_, from)) if from == vip => return Ok(()),
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => return Err(format!("no answer within {limit:?}")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A SYN to the VIP; passes on its SYN-ACK, then resets the half-open connection.
fn probe_tcp(backend: IpAddr, vip: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let source = inner_source(backend, vip.ip())?;
    let inner = Inner::new(source, vip.ip())?;
    // Holds the source port while the probe runs, so no local connection takes it.
    let held = TcpListener::bind((source, 0)).map_err(|e| format!("binding a port: {e}"))?;
    let sport = held.local_addr().map_err(|e| e.to_string())?.port();
    let answers = RawSocket::tcp_receiver(vip.ip())?;
    let raw = RawSocket::tunnel(backend, vip.ip())?;
    let isn = initial_sequence(sport, vip);
    raw.send_to(&tcp_segment(inner, sport, vip.port(), isn, 0, SYN), backend)?;
    let mut buf = [0u8; 1500];
    loop {
        let left = remaining(deadline).ok_or_else(|| format!("no SYN-ACK within {limit:?}"))?;
        let Some((n, from)) = answers.recv_from(&mut buf, left)? else {
            return Err(format!("no SYN-ACK within {limit:?}"));
        };
        // A raw IPv4 socket hands over the IP header too, a raw IPv6 one the segment alone.
        let tcp = match source {
            IpAddr::V4(to) => ipv4_tcp_payload(&buf[..n], to),
            IpAddr::V6(_) => Some(&buf[..n]),
        };
        match tcp.and_then(|tcp| answer_to(tcp, from, sport, vip)) {
            Some(Answer::SynAck { seq, ack }) if ack == isn.wrapping_add(1) => {
                // Close the backend's half-open connection, through the data path too.
                let rst = tcp_segment(inner, sport, vip.port(), ack, seq, RST);
                let _ = raw.send_to(&rst, backend);
                return Ok(());
            }
            Some(Answer::Reset) => return Err("reset: nothing listens on the VIP".to_owned()),
            _ => continue,
        }
    }
}

/// The inner source of a probe of `vip` on `backend`: this node's address the backend answers
/// at, of the VIP's family. Its address towards the backend when the families agree; for
/// IPv4-in-IPv6 (an IPv4 VIP, a backend with only IPv6) the IPv4 address of the interface the
/// backend is reached by, as the backend's answer goes back over IPv4.
fn inner_source(backend: IpAddr, vip: IpAddr) -> Result<IpAddr, String> {
    let towards = source_towards(backend)?;
    if towards.is_ipv4() == vip.is_ipv4() {
        return Ok(towards);
    }
    let interface = interface_of(towards)?;
    ipv4_of(&interface)?.map(IpAddr::V4).ok_or_else(|| {
        format!(
            "IPv4-in-IPv6 to {backend} leaves by {interface}, which has no IPv4 address for \
             the backend to answer the IPv4 VIP's probe at"
        )
    })
}

/// The first IPv4 address of `interface`, if it has one.
fn ipv4_of(interface: &str) -> Result<Option<Ipv4Addr>, String> {
    let all = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing interfaces: {e}"))?;
    Ok(all
        .filter(|ifa| ifa.interface_name == interface)
        .find_map(|ifa| ifa.address?.as_sockaddr_in().map(|a| a.ip())))
}

/// This node's address towards `backend`, as routing picks it (the source a connected UDP
/// socket gets; nothing is sent).
fn source_towards(backend: IpAddr) -> Result<IpAddr, String> {
    let any: IpAddr = match backend {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind((any, 0)).map_err(|e| e.to_string())?;
    s.connect((backend, 9))
        .map_err(|e| format!("no route to {backend}: {e}"))?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.ip())
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
fn initial_sequence(sport: u16, vip: SocketAddr) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let ip = match vip.ip() {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .fold(0, |h, c| h ^ u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
    };
    nanos ^ (u32::from(sport) << 16) ^ ip ^ u32::from(vip.port())
}

/// A raw socket of the backend's family.
struct RawSocket(OwnedFd);

impl RawSocket {
    /// Sends the balancer's encapsulation of `vip`'s packets towards `backend`: the kernel
    /// writes the outer header (this node → the backend: IPv4 protocol 4, IPv6 next header 41,
    /// or IPv6 next header 4 for an IPv4 VIP), the caller the inner packet.
    fn tunnel(backend: IpAddr, vip: IpAddr) -> Result<Self, String> {
        match (backend, vip) {
            (IpAddr::V4(_), _) => Self::open(libc::AF_INET, libc::IPPROTO_IPIP),
            (IpAddr::V6(_), IpAddr::V6(_)) => Self::open(libc::AF_INET6, libc::IPPROTO_IPV6),
            (IpAddr::V6(_), IpAddr::V4(_)) => Self::open(libc::AF_INET6, libc::IPPROTO_IPIP),
        }
    }

    /// Receives a copy of every TCP segment of `vip`'s family (the inner packets', which the
    /// backend answers in) addressed to this host (the kernel keeps handling them as usual).
    fn tcp_receiver(vip: IpAddr) -> Result<Self, String> {
        let family = if vip.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        Self::open(family, libc::IPPROTO_TCP)
    }

    fn open(family: libc::c_int, protocol: libc::c_int) -> Result<Self, String> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
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
    fn send_to(&self, inner: &[u8], to: IpAddr) -> Result<(), String> {
        let (storage, len) = sockaddr(to);
        // SAFETY: the buffer and the address outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                inner.as_ptr().cast(),
                inner.len(),
                0,
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if sent < 0 {
            return Err(format!("sending to {to}: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Receives one packet and its sender within `limit`; `None` when none came.
    fn recv_from(
        &self,
        buf: &mut [u8],
        limit: Duration,
    ) -> Result<Option<(usize, IpAddr)>, String> {
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
        // SAFETY: zeroed sockaddr_storage is a valid (unspecified) address.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the buffer and the address are valid for their lengths.
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if is_timeout(&e) {
                Ok(Some((0, Ipv4Addr::UNSPECIFIED.into())))
            } else {
                Err(format!("receiving: {e}"))
            };
        }
        Ok(Some((n as usize, peer(&from))))
    }
}

/// `addr` as a socket address for sendto(2) (port 0: raw sockets have none), with its length.
fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; each arm writes a smaller sockaddr into it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                (&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                (&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The address recvfrom(2) wrote (unspecified for a family other than IPv4 and IPv6).
fn peer(from: &libc::sockaddr_storage) -> IpAddr {
    match libc::c_int::from(from.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into()
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Ipv6Addr::from(sin6.sin6_addr.s6_addr).into()
        }
        _ => Ipv4Addr::UNSPECIFIED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_address_reads_back_as_it_was_written() {
        for (ip, len) in [("10.77.0.12", 16), ("fd77::12", 28)] {
            let ip: IpAddr = ip.parse().unwrap();
            let (storage, got) = sockaddr(ip);
            assert_eq!(got as usize, len, "{ip}");
            assert_eq!(peer(&storage), ip);
        }
    }
}
