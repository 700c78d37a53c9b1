//! IPv4-in-IPv6 through the lab's veths (issue 19 §2): the balancer's configuration is
//! reloaded with every backend's `ipv4` removed, so an IPv4 client's datagrams reach them
//! IPv4-in-IPv6. Each backend's `shardline decap` strips the IPv6 header and its echo service
//! answers the client directly over IPv4; the balancer counts them forwarded, none
//! `no_backend_address`.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use shardline::maps::DataplaneMaps;
use shardline_common::{packet::encode_header, verdict::Reason};
use shardline_lab::{
    topology::{CLIENT4, VIP4},
    Lab, HEADER_PORT,
};

use crate::support::client::{echo_answer, in_client};

/// Datagrams sent, each waiting [`WAIT`] for its answer.
const DATAGRAMS: u64 = 20;
/// How long one datagram waits for its answer.
const WAIT: Duration = Duration::from_millis(500);

#[test]
fn backends_with_only_ipv6_answer_ipv4_clients_through_shardline_decap() {
    let mut lab = crate::netns::start_lab(4);
    let mut config = lab.config.clone();
    for b in &mut config.backends {
        b.ipv4 = None;
    }
    lab.reload_config(&config)
        .unwrap_or_else(|e| panic!("reloading with IPv6-only backends: {e}"));
    let before = reasons(&lab);
    let answered = in_client(&lab, || {
        let socket = UdpSocket::bind(SocketAddr::new(CLIENT4.into(), 0)).expect("bind");
        socket
            .connect(SocketAddr::new(VIP4.into(), HEADER_PORT))
            .expect("connect");
        socket.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut answered = Vec::new();
        for key in 0..DATAGRAMS {
            // Unplaced sessions, so the default table spreads them over the backends.
            let mut request = encode_header(1_000 + key, key).to_vec();
            request.extend_from_slice(b"four in six");
            socket.send(&request).expect("send");
            if let Some(backend) = echo_answer(&socket, &request, WAIT) {
                answered.push(backend);
            }
        }
        answered
    });
    let after = reasons(&lab);
    let delta = |r: Reason| after[r as usize] - before[r as usize];
    assert_eq!(
        delta(Reason::NoBackendAddress),
        0,
        "no IPv4 datagram was dropped for want of an IPv4 backend address"
    );
    assert_eq!(
        delta(Reason::Forwarded),
        DATAGRAMS,
        "every datagram forwarded IPv4-in-IPv6"
    );
    // A datagram or its answer may be lost on a busy machine, but not most of them.
    assert!(
        answered.len() as u64 * 4 >= DATAGRAMS * 3,
        "only {} of {DATAGRAMS} datagrams answered: {answered:?}",
        answered.len()
    );
    assert!(
        answered.iter().all(|b| (1..=4).contains(b)),
        "answered by {answered:?}"
    );
}

/// The balancer's per-reason counters, summed over CPUs, indexed by `Reason as usize`.
fn reasons(lab: &Lab) -> Vec<u64> {
    let maps =
        DataplaneMaps::open(&lab.pin_dir).unwrap_or_else(|e| panic!("opening the lab's maps: {e}"));
    let mut out = vec![0; Reason::ALL.len()];
    for (reason, n) in maps.reason_counts().expect("read the per-reason counters") {
        out[reason as usize] = n;
    }
    out
}
