//! Replays what the dataplane should have decided for an observed request: rebuild the frame
//! the client sent and run the shared routing decision over the daemon's tables.

use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;
use shardline_common::{packet::encode_header, route::decide};

use crate::traffic::{Observation, Session, SessionKind};
use shardline::snapshot::Snapshot;

/// The backend the tables route `obs` to, or `None` if they would not forward it.
pub fn expected_backend(snapshot: &Snapshot, session: &Session, obs: &Observation) -> Option<u32> {
    let frame = frame_for(session, obs.source, obs.destination, obs.key)?;
    let d = decide(&frame[..], snapshot);
    d.reason.forwards().then_some(d.backend_id)
}

/// An Ethernet frame carrying the first packet of the request.
pub fn frame_for(session: &Session, src: SocketAddr, dst: SocketAddr, key: u64) -> Option<Vec<u8>> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s.octets(), d.octets(), 64),
        _ => return None,
    };
    let mut out = Vec::new();
    match session.kind {
        SessionKind::Header { id } => {
            let payload = encode_header(id, key);
            let b = builder.udp(src.port(), dst.port());
            b.write(&mut out, &payload).ok()?;
        }
        SessionKind::FlowUdp => {
            let b = builder.udp(src.port(), dst.port());
            b.write(&mut out, &[0u8; 8]).ok()?;
        }
        SessionKind::FlowTcp => {
            let b = builder.tcp(src.port(), dst.port(), 1, 65535).syn();
            b.write(&mut out, &[]).ok()?;
        }
    }
    Some(out)
}
