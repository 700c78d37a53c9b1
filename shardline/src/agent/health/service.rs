//! Service probes (`services[].probe`): a TCP connect, a UDP request that gets an answer, or
//! an HTTP GET answered with the expected status ([`super::get`]). A [`Target`] says where one goes: on the data path (encapsulated with
//! the VIP as inner destination, [`super::datapath`]) where the service allows it, else
//! straight to the backend's address and the service's port, which proves the service answers
//! on the backend host but not that the backend serves the VIP.

use std::{net::SocketAddr, time::Duration};

use tokio::{net, time::timeout};

use super::get::HttpCheck;
use crate::config::ServiceProbe;

/// What a UDP probe sends; any answer passes.
pub const UDP_PAYLOAD: &[u8] = b"shardline-probe\n";

/// One service probe of one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// TCP, UDP or HTTP.
    pub kind: ServiceProbe,
    /// The backend's address and the service port.
    pub addr: SocketAddr,
    /// The VIP and port when the probe travels the data path (to `addr`'s IP, of the VIP's
    /// family).
    pub via_vip: Option<SocketAddr>,
    /// What an `http` probe GETs and expects (`None`: `GET /`, any 2xx or 3xx).
    pub http: Option<HttpCheck>,
    /// The next hop's MAC towards the backend (`backends[].mac`), where a data-path `http`
    /// probe's frames go.
    pub mac: [u8; 6],
}

impl Target {
    /// Probes the target within `limit`; the error says what failed.
    pub async fn probe(&self, limit: Duration) -> Result<(), String> {
        match self.via_vip {
            Some(vip) => super::datapath::probe(self, vip, limit).await,
            None if self.kind == ServiceProbe::Http => {
                let check = self.http.clone().unwrap_or_default();
                probe_http(&check, self.addr, limit).await
            }
            None => probe(self.kind, self.addr, limit).await,
        }
    }
}

/// Probes `addr` directly as `kind` says, within `limit`; the error says what failed.
pub async fn probe(kind: ServiceProbe, addr: SocketAddr, limit: Duration) -> Result<(), String> {
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
        ServiceProbe::Http => probe_http(&HttpCheck::default(), addr, limit).await,
    }
}

/// `check`'s GET straight to `addr`, within `limit`; the error says what failed.
pub async fn probe_http(
    check: &HttpCheck,
    addr: SocketAddr,
    limit: Duration,
) -> Result<(), String> {
    let exchange = async {
        let mut stream = net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        check.exchange(&mut stream, addr).await
    };
    match timeout(limit, exchange).await {
        Ok(outcome) => outcome.map_err(|e| format!("http probe of {addr}: {e}")),
        Err(_) => Err(format!("http probe of {addr}: no answer within {limit:?}")),
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
        let listener = net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        for kind in [ServiceProbe::Tcp, ServiceProbe::Http] {
            assert_eq!(probe(kind, addr, LIMIT).await, Ok(()), "{kind:?}");
            let gone = closed().await;
            let err = probe(kind, gone, LIMIT).await.unwrap_err();
            assert!(err.contains(&gone.to_string()), "{err}");
        }
    }

    #[tokio::test]
    async fn a_udp_probe_needs_an_answer() {
        let echo = net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        assert_eq!(probe(ServiceProbe::Udp, addr, LIMIT).await, Ok(()));
        // A silent socket: no answer within the limit.
        let mute = net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = probe(ServiceProbe::Udp, mute.local_addr().unwrap(), LIMIT)
            .await
            .unwrap_err();
        assert!(err.contains("no answer"), "{err}");
    }
}
