//! The bench's comparison point written in a few lines: a minimal tokio UDP proxy. Each client
//! address gets one upstream socket to the backend its IP hashes to (as nginx's
//! `hash $remote_addr consistent` pins a client to one backend) and a task relaying the
//! backend's answers back. No timeouts, no limits: a lower bound on what a userspace proxy
//! costs, not a product.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use shardline_common::{hash::addr_hash, maps::ip_addr};
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
                let index = addr_hash(&ip_addr(client.ip())) % backends.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_to_one_backend() {
        let backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, peer)) = backend.recv_from(&mut buf).await {
                let _ = backend.send_to(&buf[..n], peer).await;
            }
        });
        let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let proxy = tokio::spawn(run(listener, vec![backend_addr], stopped));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy_addr).await.unwrap();
        let mut buf = [0u8; 64];
        for i in 0..3u8 {
            client.send(&[i; 8]).await.unwrap();
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("the proxy answers within 5 s")
                .unwrap();
            assert_eq!(&buf[..n], &[i; 8]);
        }
        stop.send(()).unwrap();
        proxy.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn refuses_an_empty_backend_list() {
        let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (_stop, stopped) = oneshot::channel();
        assert!(run(listener, Vec::new(), stopped).await.is_err());
    }
}
