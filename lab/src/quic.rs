//! The lab's QUIC service (quinn): backends issue QUIC-LB connection ids that carry their
//! server id, so the load balancer pins every packet of a connection to the backend that owns
//! it; the client asks over one connection per session and learns which backend answered.
//!
//! Each request is one bidirectional stream: the client sends a few bytes and finishes, the
//! backend answers with its id (u32, big endian) and the bytes, then finishes.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use quinn::{
    rustls::{
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        RootCertStore,
    },
    ClientConfig, Connection, ConnectionId, ConnectionIdGenerator, Endpoint, EndpointConfig,
    ServerConfig, TokioRuntime,
};
use rand::RngCore;
use shardline_common::{consts::QUIC_MAX_CID_LEN, quic::CidLayout};

use crate::echo::ID_LEN;

/// The name in the lab's self-signed certificate, which the client verifies.
pub const SERVER_NAME: &str = "shardline-lab";
/// Length of the connection ids the lab's backends issue: 1 octet of rotation and length, the
/// server id, and a random nonce filling the rest.
pub const CID_LEN: usize = 12;
/// Longest request the backend reads.
const MAX_REQUEST: usize = 1024;

/// Errors of the lab's QUIC service and client.
#[derive(Debug, thiserror::Error)]
pub enum QuicLabError {
    /// Creating or reading the certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A socket or runtime could not be set up.
    #[error("QUIC I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The connection failed.
    #[error("QUIC connection: {0}")]
    Connection(String),
}

fn cert_err(e: impl std::fmt::Display) -> QuicLabError {
    QuicLabError::Certificate(e.to_string())
}

fn conn_err(e: impl std::fmt::Display) -> QuicLabError {
    QuicLabError::Connection(e.to_string())
}

/// Where a lab working in `work_dir` keeps its QUIC service's certificate and key (PEM).
pub fn certificate_paths(work_dir: &Path) -> (PathBuf, PathBuf) {
    (
        work_dir.join("quic-cert.pem"),
        work_dir.join("quic-key.pem"),
    )
}

/// Writes a fresh self-signed certificate for [`SERVER_NAME`] and its key, as PEM.
pub fn write_certificate(cert: &Path, key: &Path) -> Result<(), QuicLabError> {
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).map_err(cert_err)?;
    std::fs::write(cert, ck.cert.pem())?;
    std::fs::write(key, ck.signing_key.serialize_pem())?;
    Ok(())
}

/// Issues connection ids that carry one server id (QUIC-LB plaintext, self-described length).
#[derive(Clone, Copy, Debug)]
pub struct ServerIdCids {
    /// The service's connection id layout, as the daemon publishes it.
    pub layout: CidLayout,
    /// This backend's server id: its backend id.
    pub server_id: u32,
}

impl ConnectionIdGenerator for ServerIdCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut nonce = [0u8; CID_LEN];
        let nonce_len = CID_LEN - 1 - usize::from(self.layout.server_id_len);
        rand::thread_rng().fill_bytes(&mut nonce[..nonce_len]);
        let mut out = [0u8; QUIC_MAX_CID_LEN];
        let len = shardline_common::quic::encode_cid(
            self.layout,
            self.server_id,
            &nonce[..nonce_len],
            &mut out,
        )
        .expect("the config validated that the server id fits the layout");
        ConnectionId::new(&out[..len])
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Endpoint settings both sides use: RFC 9287 greasing off, as the load balancer drops packets
/// with the fixed bit clear.
fn endpoint_config(cids: Option<ServerIdCids>) -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config.grease_quic_bit(false);
    if let Some(cids) = cids {
        config.cid_generator(move || Box::new(cids));
    }
    config
}

/// Binds a QUIC server on `port` of every address in `bind`, issuing `cids`, and serves it on a
/// thread of its own until the process exits. The sockets are bound before this returns.
pub fn spawn_servers(
    cids: ServerIdCids,
    bind: &[IpAddr],
    port: u16,
    cert: &Path,
    key: &Path,
) -> Result<thread::JoinHandle<()>, QuicLabError> {
    let chain = vec![CertificateDer::from_pem_file(cert).map_err(cert_err)?];
    let key = PrivateKeyDer::from_pem_file(key).map_err(cert_err)?;
    let server = ServerConfig::with_single_cert(chain, key).map_err(cert_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoints = runtime.block_on(async {
        bind.iter()
            .map(|addr| {
                let socket = UdpSocket::bind(SocketAddr::new(*addr, port))?;
                Endpoint::new(
                    endpoint_config(Some(cids)),
                    Some(server.clone()),
                    socket,
                    Arc::new(TokioRuntime),
                )
            })
            .collect::<std::io::Result<Vec<Endpoint>>>()
    })?;
    Ok(thread::spawn(move || {
        runtime.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for endpoint in endpoints {
                tasks.spawn(accept(endpoint, cids.server_id));
            }
            while tasks.join_next().await.is_some() {}
        })
    }))
}

async fn accept(endpoint: Endpoint, id: u32) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let Ok(request) = recv.read_to_end(MAX_REQUEST).await else {
                        return;
                    };
                    let mut answer = id.to_be_bytes().to_vec();
                    answer.extend_from_slice(&request);
                    let _ = send.write_all(&answer).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

/// A client endpoint on `bind` (port 0 for any) that trusts the certificate in `cert`.
/// Call inside a tokio runtime.
pub fn client(bind: SocketAddr, cert: &Path) -> Result<Endpoint, QuicLabError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).map_err(cert_err)?)
        .map_err(cert_err)?;
    let config = ClientConfig::with_root_certificates(Arc::new(roots)).map_err(cert_err)?;
    let mut endpoint = Endpoint::new(
        endpoint_config(None),
        None,
        UdpSocket::bind(bind)?,
        Arc::new(TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects `endpoint` to the service at `server`.
pub async fn connect(endpoint: &Endpoint, server: SocketAddr) -> Result<Connection, QuicLabError> {
    endpoint
        .connect(server, SERVER_NAME)
        .map_err(conn_err)?
        .await
        .map_err(conn_err)
}

/// Sends `payload` on a new stream of `conn` and returns the id of the backend that echoed it.
pub async fn ask(conn: &Connection, payload: &[u8]) -> Result<u32, QuicLabError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(conn_err)?;
    send.write_all(payload).await.map_err(conn_err)?;
    send.finish().map_err(conn_err)?;
    let answer = recv
        .read_to_end(ID_LEN + MAX_REQUEST)
        .await
        .map_err(conn_err)?;
    if answer.len() != ID_LEN + payload.len() || answer[ID_LEN..] != *payload {
        return Err(QuicLabError::Connection(format!(
            "answer {answer:?} does not echo {payload:?}"
        )));
    }
    Ok(u32::from_be_bytes([
        answer[0], answer[1], answer[2], answer[3],
    ]))
}

/// What the lab's rebinding QUIC connection saw so far.
#[derive(Clone, Debug, Default)]
pub struct RebindingReport {
    /// Answers by backend id: one entry while the connection keeps its backend.
    pub answers: BTreeMap<u32, u64>,
    /// Source address changes (new port, alternating client addresses).
    pub rebinds: u32,
    /// Why the connection stopped early, if it did.
    pub error: Option<String>,
}

/// Keeps one QUIC connection to `server` busy until `deadline` or `stop`, moving it to a new
/// source port every `every`, alternating between the client addresses `from`, and records
/// in `report` which backend answered. Call inside a tokio runtime in the client's namespace.
pub async fn rebinding_connection(
    endpoint: &Endpoint,
    server: SocketAddr,
    from: &[IpAddr],
    every: Duration,
    deadline: Instant,
    stop: &(dyn Fn() -> bool + Sync),
    report: &Mutex<RebindingReport>,
) -> Result<(), QuicLabError> {
    let conn = connect(endpoint, server).await?;
    let mut next_move = Instant::now() + every;
    let mut i = 0u64;
    while Instant::now() < deadline && !stop() {
        let backend = tokio::time::timeout(every, ask(&conn, &i.to_be_bytes()))
            .await
            .map_err(|_| QuicLabError::Connection(format!("no answer within {every:?}")))??;
        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
        *r.answers.entry(backend).or_default() += 1;
        if Instant::now() >= next_move && !from.is_empty() {
            r.rebinds += 1;
            let addr = from[r.rebinds as usize % from.len()];
            endpoint.rebind(UdpSocket::bind(SocketAddr::new(addr, 0))?)?;
            next_move += every;
        }
        i += 1;
    }
    conn.close(0u32.into(), b"done");
    Ok(())
}
