//! End to end: a quinn client in the lab's client namespace talks to the quinn servers on the
//! backends through the attached XDP program. The connection changes its source port, then its
//! address (and an IPv6 one its port), and the default table is re-sharded under it; every
//! answer must still come from the backend that accepted it, which after the re-shard only the
//! server id in its connection ids can explain.

use std::{
    future::Future,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use quinn::{Connection, Endpoint};
use shardline::{
    config::{SessionConfig, SessionId},
    maps::DataplaneMaps,
    snapshot::Snapshot,
};
use shardline_lab::{
    quic::{ask, client, connect},
    topology::{client_alias4, CLIENT4, CLIENT6, VIP4, VIP6},
    Lab, LabOptions, QUIC_PORT,
};

/// Requests per phase: each one a stream, all of them over the one connection.
const REQUESTS: usize = 20;
/// How long one request may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {TIMEOUT:?}"))
}

/// Asks `REQUESTS` times and returns the one backend that answered them all.
async fn owner(conn: &Connection, phase: &str) -> u32 {
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..REQUESTS {
        let payload = format!("{phase} {i}");
        let id = within(phase, ask(conn, payload.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{phase}, request {i}: {e}"));
        seen.insert(id);
    }
    assert_eq!(seen.len(), 1, "{phase}: answers from {seen:?}");
    seen.into_iter().next().unwrap_or_default()
}

fn rebind(endpoint: &Endpoint, addr: impl Into<std::net::IpAddr>) -> SocketAddr {
    let socket = UdpSocket::bind(SocketAddr::new(addr.into(), 0)).expect("bind a client socket");
    endpoint.rebind(socket).expect("rebind the client endpoint");
    endpoint.local_addr().expect("local address")
}

#[test]
fn a_quic_connection_survives_rebinding_and_a_reshard() {
    crate::support::require_root();
    let opts = LabOptions {
        tag: format!("q{}", std::process::id() % 100_000),
        backends: 4,
        sessions: 2,
        bins: crate::support::bins(),
    };
    let lab = Lab::start(&opts).unwrap_or_else(|e| panic!("starting the lab: {e}"));
    let client_ns = &lab.topology.client;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                client_ns.enter_current_thread().expect("enter the client");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(drive(&lab))
            })
            .join()
            .expect("the client thread panicked")
    });
}

async fn drive(lab: &Lab) {
    let endpoint = client(SocketAddr::new(CLIENT4.into(), 0), &lab.quic_cert)
        .unwrap_or_else(|e| panic!("client endpoint: {e}"));
    let server = SocketAddr::new(VIP4.into(), QUIC_PORT);
    let conn = within("handshake", connect(&endpoint, server))
        .await
        .unwrap_or_else(|e| panic!("connecting: {e}"));
    let first = endpoint.local_addr().expect("local address");
    let backend = owner(&conn, "first").await;

    // NAT rebinding: a new source port, then a new source address.
    let moved = rebind(&endpoint, CLIENT4);
    assert_ne!(moved.port(), first.port(), "the port changed");
    assert_eq!(owner(&conn, "new port").await, backend);
    let alias = client_alias4(1);
    assert_eq!(rebind(&endpoint, alias).ip(), std::net::IpAddr::from(alias));
    assert_eq!(owner(&conn, "new address").await, backend);

    // Over IPv6 (IP6IP6 to the backend): a new port keeps the connection's backend too.
    let endpoint6 = client(SocketAddr::new(CLIENT6.into(), 0), &lab.quic_cert)
        .unwrap_or_else(|e| panic!("client endpoint: {e}"));
    let conn6 = within(
        "IPv6 handshake",
        connect(&endpoint6, SocketAddr::new(VIP6.into(), QUIC_PORT)),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting over IPv6: {e}"));
    let backend6 = owner(&conn6, "IPv6").await;
    let before = endpoint6.local_addr().expect("local address");
    assert_ne!(rebind(&endpoint6, CLIENT6), before);
    assert_eq!(owner(&conn6, "IPv6, new port").await, backend6);
    conn6.close(0u32.into(), b"done");

    // Re-shard: drain the connection's backend and place both client addresses' quic sessions
    // on the other backends of the pool; nothing but the server id leads there now.
    let mut next = lab.config.clone();
    for b in &mut next.backends {
        if b.id == backend {
            b.weight = 0;
        }
    }
    // The other backends of the quic service's pool: a shard set outside it would be
    // re-decided by the pool check on every packet naming a server outside the pool.
    let pool = lab
        .config
        .services
        .iter()
        .find(|s| s.name == "quic")
        .and_then(|s| s.pool_ids())
        .unwrap_or_else(|| (1..=4).collect());
    let others: Vec<u32> = pool.into_iter().filter(|id| *id != backend).collect();
    assert!(!others.is_empty(), "the quic pool has another backend");
    for addr in [CLIENT4, alias] {
        next.sessions.push(SessionConfig {
            service: "quic".into(),
            session: SessionId::Addr(addr.into()),
            backends: others.clone(),
        });
    }
    let mut maps = DataplaneMaps::open(&lab.pin_dir).expect("open the lab's maps");
    maps.apply(&Snapshot::from_config(&next))
        .expect("apply the re-shard");
    assert_eq!(owner(&conn, "after the re-shard").await, backend);
    rebind(&endpoint, CLIENT4);
    assert_eq!(owner(&conn, "re-shard, then a new port").await, backend);

    // A new connection takes the re-sharded path: never the drained backend.
    let fresh = within("second handshake", connect(&endpoint, server))
        .await
        .unwrap_or_else(|e| panic!("connecting again: {e}"));
    let other = owner(&fresh, "new connection").await;
    assert!(
        others.contains(&other),
        "new connection on {other}, want one of {others:?}"
    );
    eprintln!(
        "connection on backend {backend} through 3 rebinds (new port, new address, new port) and \
         a re-shard draining it; a new connection went to {other}"
    );
    conn.close(0u32.into(), b"done");
    fresh.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}
