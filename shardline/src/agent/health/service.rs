//! Service probes (`services[].probe`): a TCP connect, a UDP request that gets an answer, or
//! `GET /` below 500. A [`Target`] says where one goes: on the data path (encapsulated with
//! the VIP as inner destination, [`super::datapath`]) where the service allows it, else
//! straight to the backend's address and the service's port, which proves the service answers
//! on the backend host but not that the backend serves the VIP.

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::Duration,
};

use tokio::{net, time::timeout};

use crate::{config::ServiceProbe, http};

/// What a UDP probe sends; any answer passes.
pub const UDP_PAYLOAD: &[u8] = b"shardline-probe\n";

/// One service probe of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// TCP, UDP or HTTP.
    pub kind: ServiceProbe,
    /// The backend's address and the service port.
    pub addr: SocketAddr,
    /// The VIP and port when the probe travels the data path (to `addr`'s IP).
    pub via_vip: Option<SocketAddrV4>,
}

impl Target {
    /// Probes the target within `limit`; the error says what failed.
    pub async fn probe(&self, client: &http::Client, limit: Duration) -> Result<(), String> {
        match (self.via_vip, self.addr) {
            (Some(vip), SocketAddr::V4(backend)) => {
                super::datapath::probe(self.kind, *backend.ip(), vip, limit).await
            }
            _ => probe(client, self.kind, self.addr, limit).await,
        }
    }
}

/// Probes `addr` directly as `kind` says, within `limit`; the error says what failed.
pub async fn probe(
    client: &http::Client,
    kind: ServiceProbe,
    addr: SocketAddr,
    limit: Duration,
) -> Result<(), String> {
    let late = |what: &str| format!("{kind:?} probe of {addr}: no {what} within {limit:?}");
    match kind {
        ServiceProbe::Tcp => match timeout(limit, net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("tcp probe of {addr}: {e}")),
            Err(_) => Err(late("connection")),
        },
        ServiceProbe::Udp => {
            let any: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("an address")
            } else {
                "[::]:0".parse().expect("an address")
            };
            let io = async {
                let socket = net::UdpSocket::bind(any).await?;
                socket.connect(addr).await?;
                socket.send(UDP_PAYLOAD).await?;
                let mut buf = [0u8; 1500];
                socket.recv(&mut buf).await
            };
            match timeout(limit, io).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("udp probe of {addr}: {e}")),
                Err(_) => Err(late("answer")),
            }
        }
        ServiceProbe::Http => match client.get(&format!("http://{addr}/"), limit).await {
            Ok(answer) if answer.status < 500 => Ok(()),
            Ok(answer) => Err(format!("http probe of {addr}: status {}", answer.status)),
            Err(e) => Err(format!("http probe of {addr}: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(500);

    /// A port nothing listens on (bound, then closed).
    async fn closed() -> SocketAddr {
        let l = net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn tcp_and_http_probes_pass_on_a_server_and_fail_on_a_closed_port() {
        let client = http::Client::new();
        let listener = net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        for kind in [ServiceProbe::Tcp, ServiceProbe::Http] {
            assert_eq!(probe(&client, kind, addr, LIMIT).await, Ok(()), "{kind:?}");
            let gone = closed().await;
            let err = probe(&client, kind, gone, LIMIT).await.unwrap_err();
            assert!(err.contains(&gone.to_string()), "{err}");
        }
    }

    #[tokio::test]
    async fn a_udp_probe_needs_an_answer() {
        let client = http::Client::new();
        let echo = net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        assert_eq!(probe(&client, ServiceProbe::Udp, addr, LIMIT).await, Ok(()));
        // A silent socket: no answer within the limit.
        let mute = net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = probe(
            &client,
            ServiceProbe::Udp,
            mute.local_addr().unwrap(),
            LIMIT,
        )
        .await
        .unwrap_err();
        assert!(err.contains("no answer"), "{err}");
    }
}
