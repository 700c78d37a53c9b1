//! The bench's comparison point written in a few lines: a minimal tokio UDP proxy. Each client
//! address gets one upstream socket to the backend its IP hashes to (as nginx's
//! `hash $remote_addr consistent` pins a client to one backend) and a task relaying the
//! backend's answers back. No timeouts, no limits: a lower bound on what a userspace proxy
//! costs, not a product.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use shardline_common::{hash::addr_hash, maps::ip_to_16};
use tokio::{net::UdpSocket, sync::oneshot, task::JoinSet};

/// Proxies datagrams arriving on `listener` to `backends` until `shutdown` fires (or its
/// sender is dropped). Binding is the caller's job, so a test can bind port 0.
pub async fn run(
    listener: UdpSocket,
    backends: Vec<SocketAddr>,
    mut shutdown: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    if backends.is_empty() {
        return Err(std::io::Error::other(
            "the proxy needs at least one backend",
        ));
    }
    let listener = Arc::new(listener);
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut relays = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = tokio::select! {
            _ = &mut shutdown => break,
            received = listener.recv_from(&mut buf) => received?,
        };
        let upstream = match upstreams.get(&client) {
            Some(u) => Arc::clone(u),
            None => {
                let index = addr_hash(&ip_to_16(client.ip())) % backends.len() as u64;
                let backend = backends[index as usize];
                let bind: SocketAddr = if backend.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal address")
                } else {
                    "[::]:0".parse().expect("literal address")
                };
                let socket = UdpSocket::bind(bind).await?;
                socket.connect(backend).await?;
                let socket = Arc::new(socket);
                let (from, to) = (Arc::clone(&socket), Arc::clone(&listener));
                relays.spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = from.recv(&mut buf).await {
                        let _ = to.send_to(&buf[..n], client).await;
                    }
                });
                upstreams.insert(client, Arc::clone(&socket));
                socket
            }
        };
        // A full socket buffer drops the datagram, as a kernel queue would.
        let _ = upstream.send(&buf[..n]).await;
    }
    relays.abort_all();
    Ok(())
}
