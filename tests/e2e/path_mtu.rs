//! Path MTU through the lab (issue 19 §4): with the client's link at 1500 octets like the load
//! balancer's, a full-size client datagram no longer fits the balancer's link once the outer
//! header is added. The balancer answers it with ICMP "fragmentation needed" / ICMPv6 "packet
//! too big" carrying the usable MTU; the client's kernel delivers that error to the socket and
//! lowers its path MTU to the VIP, and a datagram of the usable size is then answered by a
//! backend.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use shardline::maps::DataplaneMaps;
use shardline_common::{packet::encode_header, verdict::Reason};
use shardline_lab::{
    topology::{CLIENT4, CLIENT6, VIP4, VIP6},
    Lab, HEADER_PORT,
};

use crate::support::client::{echo_answer, in_client};

/// The MTU of every lab link in this test: the client's, the balancer's and the backends'.
const LINK_MTU: u32 = 1500;
/// Oversized datagrams sent at most, each waiting [`WAIT`] for the balancer's answer.
const ATTEMPTS: u32 = 5;
/// How long one attempt waits for an ICMP error or a backend's answer.
const WAIT: Duration = Duration::from_millis(500);
/// Errors read from a socket's error queue at most per attempt.
const QUEUED_ERRORS_MAX: usize = 8;

/// What differs between the families.
struct Family {
    name: &'static str,
    source: IpAddr,
    vip: IpAddr,
    /// A lab header session of the family (the lab places `hdr-1` on IPv4, `hdr-2` on IPv6).
    session: u64,
    /// IP and UDP header octets.
    headers: u32,
    /// The outer header the balancer adds.
    outer: u32,
    /// Socket option level, the error-queue option (also the control message's type), the
    /// path-MTU-discovery option and its "always set DF, never fragment" value, the path MTU
    /// option.
    level: libc::c_int,
    recverr: libc::c_int,
    mtu_discover: libc::c_int,
    pmtudisc_do: libc::c_int,
    mtu: libc::c_int,
    /// The error queue's origin, ICMP type and code of the balancer's answer.
    origin: u8,
    icmp: (u8, u8),
}

const V4: Family = Family {
    name: "IPv4",
    source: IpAddr::V4(CLIENT4),
    vip: IpAddr::V4(VIP4),
    session: 1,
    headers: 20 + 8,
    outer: 20,
    level: libc::SOL_IP,
    recverr: libc::IP_RECVERR,
    mtu_discover: libc::IP_MTU_DISCOVER,
    pmtudisc_do: libc::IP_PMTUDISC_DO,
    mtu: libc::IP_MTU,
    origin: libc::SO_EE_ORIGIN_ICMP,
    // Destination unreachable, fragmentation needed.
    icmp: (3, 4),
};

const V6: Family = Family {
    name: "IPv6",
    source: IpAddr::V6(CLIENT6),
    vip: IpAddr::V6(VIP6),
    session: 2,
    headers: 40 + 8,
    outer: 40,
    level: libc::SOL_IPV6,
    recverr: libc::IPV6_RECVERR,
    mtu_discover: libc::IPV6_MTU_DISCOVER,
    pmtudisc_do: libc::IPV6_PMTUDISC_DO,
    mtu: libc::IPV6_MTU,
    origin: libc::SO_EE_ORIGIN_ICMP6,
    // Packet too big.
    icmp: (2, 0),
};

#[test]
fn a_1500_octet_datagram_over_a_1500_octet_link_is_answered_with_the_usable_mtu() {
    let lab = crate::netns::start_lab(4);
    // The lab's client normally sits at 1400 so that encapsulated frames fit; here it may send
    // what its link carries.
    lab.topology
        .client
        .ip(&["link", "set", "eth0", "mtu", &LINK_MTU.to_string()])
        .unwrap_or_else(|e| panic!("setting the client's MTU: {e}"));
    for family in [V4, V6] {
        let before = too_big_count(&lab);
        let oversized = in_client(&lab, || learn_and_use_the_path_mtu(&family));
        let counted = too_big_count(&lab) - before;
        assert_eq!(
            counted, oversized,
            "{}: icmp_too_big counts each of the {oversized} oversized datagrams sent, and not the \
             one that fits",
            family.name
        );
    }
}

/// Sends full-size datagrams until the balancer's ICMP error arrives, checks it and the path
/// MTU the kernel learnt, then has a backend answer a datagram of that size. Returns the
/// oversized datagrams sent.
fn learn_and_use_the_path_mtu(f: &Family) -> u64 {
    let usable = LINK_MTU - f.outer;
    let socket = UdpSocket::bind(SocketAddr::new(f.source, 0)).expect("bind");
    socket
        .connect(SocketAddr::new(f.vip, HEADER_PORT))
        .expect("connect");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let fd = socket.as_raw_fd();
    set_option(fd, f.level, f.recverr, 1);
    // DF on every datagram and no local fragmentation: the kernel's path MTU shows as is.
    set_option(fd, f.level, f.mtu_discover, f.pmtudisc_do);
    assert_eq!(
        option(fd, f.level, f.mtu),
        LINK_MTU as i32,
        "{}: the client starts with its link's MTU as the path MTU",
        f.name
    );

    let full = request(f.session, (LINK_MTU - f.headers) as usize);
    let mut sent = 0u64;
    let started = Instant::now();
    let error = loop {
        assert!(
            sent < u64::from(ATTEMPTS),
            "{}: no ICMP error for {sent} datagrams of {LINK_MTU} octets in {:?}",
            f.name,
            started.elapsed()
        );
        socket.send(&full).expect("send a full-size datagram");
        sent += 1;
        if let Some(e) = icmp_error(fd, f) {
            break e;
        }
    };
    assert_eq!(
        (error.ee_type, error.ee_code),
        f.icmp,
        "{}: the answer's ICMP type and code",
        f.name
    );
    assert_eq!(error.ee_errno, libc::EMSGSIZE as u32, "{}", f.name);
    assert_eq!(
        error.ee_info, usable,
        "{}: the answer carries the usable MTU ({LINK_MTU} less the {}-octet outer header)",
        f.name, f.outer
    );
    assert_eq!(
        option(fd, f.level, f.mtu),
        usable as i32,
        "{}: the client's kernel took the usable MTU as its path MTU to the VIP",
        f.name
    );
    // The kernel now refuses the full size itself: nothing more reaches the balancer.
    let refused = socket
        .send(&full)
        .expect_err("a datagram over the path MTU");
    assert_eq!(refused.raw_os_error(), Some(libc::EMSGSIZE), "{}", f.name);
    drain_errors(fd, f);

    let fits = request(f.session, (usable - f.headers) as usize);
    for _ in 0..ATTEMPTS {
        socket
            .send(&fits)
            .expect("send a datagram of the usable size");
        if let Some(backend) = echo_answer(&socket, &fits, WAIT) {
            assert!(
                (1..=4).contains(&backend),
                "{}: answered by backend {backend}",
                f.name
            );
            return sent;
        }
    }
    panic!(
        "{}: no backend answered {ATTEMPTS} datagrams of {usable} octets",
        f.name
    );
}

/// A header-mode request of `len` UDP payload octets for `session`.
fn request(session: u64, len: usize) -> Vec<u8> {
    let mut payload = encode_header(session, 0x6d74_7531).to_vec();
    payload.resize(len, 0xa5);
    payload
}

/// The first ICMP error in the socket's error queue within [`WAIT`], skipping errors of
/// other origins (the kernel's own, for a send it refused).
fn icmp_error(fd: libc::c_int, f: &Family) -> Option<libc::sock_extended_err> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut poll = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd; POLLERR is reported whatever `events` asks for.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis() as libc::c_int) };
        if ready <= 0 || poll.revents & libc::POLLERR == 0 {
            continue;
        }
        for _ in 0..QUEUED_ERRORS_MAX {
            match queued_error(fd, f) {
                Some(e) if e.ee_origin == f.origin => return Some(e),
                Some(_) => {}
                None => break,
            }
        }
    }
}

/// Empties the socket's error queue (bounded).
fn drain_errors(fd: libc::c_int, f: &Family) {
    for _ in 0..QUEUED_ERRORS_MAX {
        if queued_error(fd, f).is_none() {
            return;
        }
    }
}

/// One error from the socket's error queue (`MSG_ERRQUEUE`), without waiting.
fn queued_error(fd: libc::c_int, f: &Family) -> Option<libc::sock_extended_err> {
    let mut data = [0u8; 2048];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // u64s: the control buffer must be aligned for `cmsghdr`.
    let mut control = [0u64; 64];
    // SAFETY: an all-zero msghdr is valid (no name, no buffers); the pointers set next outlive
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    // SAFETY: the kernel filled `msg_controllen` octets of `control`; the CMSG macros stay
    // inside them, and an extended error's data is a `sock_extended_err`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == f.level && (*cmsg).cmsg_type == f.recverr {
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    panic!(
        "{}: an error-queue message without an extended error",
        f.name
    );
}

/// Sets an integer socket option, panicking with its name on failure.
fn set_option(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `value` is a live c_int of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}, {value}): {}",
        io::Error::last_os_error()
    );
}

/// Reads an integer socket option, panicking with its name on failure.
fn option(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` states `value`'s size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt({level}, {name}): {}",
        io::Error::last_os_error()
    );
    value
}

/// The balancer's `icmp_too_big` counter, summed over CPUs.
fn too_big_count(lab: &Lab) -> u64 {
    let maps =
        DataplaneMaps::open(&lab.pin_dir).unwrap_or_else(|e| panic!("opening the lab's maps: {e}"));
    maps.reason_counts()
        .expect("read the per-reason counters")
        .into_iter()
        .find(|(reason, _)| *reason == Reason::IcmpTooBig)
        .map_or(0, |(_, n)| n)
}
