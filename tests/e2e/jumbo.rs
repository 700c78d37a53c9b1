//! Jumbo frames through the lab (issue 19 §4): every link of the segment at 9000 octets, the
//! balancer's program (multi-buffer aware, `xdp.frags`) attached to a veth whose frames no
//! longer fit a page. Datagrams needing frames of 4 KB and more cross the balancer, are
//! encapsulated whole, decapsulated by the backend's program and echoed back to the client.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use shardline::maps::DataplaneMaps;
use shardline_common::{packet::encode_header, verdict::Reason};
use shardline_lab::{
    topology::{CLIENT4, CLIENT6, CLIENT_MTU_MARGIN, JUMBO_MTU, VIP4, VIP6},
    Lab, LabOptions, HEADER_PORT,
};

use crate::support::client::{echo_answer, in_client};

/// Datagrams sent per size at most, each waiting [`WAIT`] for its echo.
const ATTEMPTS: u32 = 5;
/// How long one attempt waits for the echo.
const WAIT: Duration = Duration::from_millis(500);

#[test]
fn datagrams_in_jumbo_frames_cross_the_balancer_and_are_answered() {
    crate::support::require_root();
    let opts = LabOptions {
        tag: crate::support::unique_tag("j"),
        backends: 4,
        sessions: 4,
        bins: crate::support::bins(),
    };
    let lab = Lab::start_on(&opts, None, Some(JUMBO_MTU))
        .unwrap_or_else(|e| panic!("starting the jumbo lab: {e}"));
    let client_mtu = (JUMBO_MTU - CLIENT_MTU_MARGIN) as usize;
    // The lab places header session 1 on IPv4 and 2 on IPv6. Sizes are UDP payloads: one
    // needing a frame just over a page, one of 8000 octets, and the largest the client's
    // link carries (its frame a 9000-octet link's once encapsulated, less the margin).
    let families = [
        (IpAddr::V4(CLIENT4), IpAddr::V4(VIP4), 1u64, 28usize),
        (IpAddr::V6(CLIENT6), IpAddr::V6(VIP6), 2, 48),
    ];
    let before = reasons(&lab);
    let mut sent = 0u64;
    for (source, vip, session, headers) in families {
        for len in [4096, 8000, client_mtu - headers] {
            let (backend, tries) = in_client(&lab, || echoed(source, vip, session, len));
            sent += tries;
            assert!(
                (1..=4).contains(&backend),
                "{vip}: {len}-octet datagram answered by backend {backend}"
            );
        }
    }
    let after = reasons(&lab);
    let delta = |r: Reason| after[r as usize] - before[r as usize];
    assert_eq!(
        delta(Reason::Forwarded),
        sent,
        "every datagram forwarded, none answered as too big ({} too big, {} malformed)",
        delta(Reason::IcmpTooBig),
        delta(Reason::MalformedIp) + delta(Reason::MalformedNotVip)
    );
}

/// Sends a header-mode request of `len` UDP payload octets from `source` to `vip` until a
/// backend echoes it whole; returns that backend and the datagrams sent.
fn echoed(source: IpAddr, vip: IpAddr, session: u64, len: usize) -> (u32, u64) {
    let socket = UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind");
    socket
        .connect(SocketAddr::new(vip, HEADER_PORT))
        .expect("connect");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut request = encode_header(session, 0x6a75_6d62).to_vec();
    request.resize(len, 0x4a);
    for tries in 1..=u64::from(ATTEMPTS) {
        socket.send(&request).expect("send a jumbo datagram");
        if let Some(backend) = echo_answer(&socket, &request, WAIT) {
            return (backend, tries);
        }
    }
    panic!("{vip}: no backend echoed a {len}-octet datagram in {ATTEMPTS} tries");
}

/// The daemon's per-reason counters, summed over CPUs.
fn reasons(lab: &Lab) -> Vec<u64> {
    let maps = DataplaneMaps::open(&lab.pin_dir).expect("open the pinned maps");
    let mut out = vec![0; Reason::ALL.len()];
    for (reason, count) in maps.reason_counts().expect("read REASONS") {
        out[reason as usize] = count;
    }
    out
}
