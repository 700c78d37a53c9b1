//! Cluster-wide load, the daemon's side ([`crate::control::fleet`] is the pure summing): the
//! peer endpoint served with the rates route beside raft's, the follower's sender, and the
//! per-tick choice of what the loop samples (the cluster's sum on the leader, the node's own
//! rates on a follower, which keeps its forecasters warm for when it leads).

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, warn};

use crate::{
    api::peer_rates::{self, PeerRates, RatesReport},
    cluster::Cluster,
    config::{Config, SessionRef},
    control::sample::Rate,
    guard::PeerAuth,
    state::Control,
    telemetry::Telemetry,
};

/// Binds the peer endpoint (`cluster.listen`) for [`serve_peers`], so the daemon can mount the
/// rates route beside raft's. Returns the configuration to start the raft node with: the same,
/// but with the listening left to the daemon (and the address it advertises kept).
pub async fn bind_peers(config: &Config) -> anyhow::Result<(Config, Option<TcpListener>)> {
    let mut raft_config = config.clone();
    let Some(cc) = raft_config.cluster.as_mut() else {
        return Ok((raft_config, None));
    };
    let Some(addr) = cc.listen else {
        return Ok((raft_config, None));
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the peer endpoint on {addr} (cluster.listen)"))?;
    cc.advertise = Some(cc.advertised());
    cc.listen = None;
    Ok((raft_config, Some(listener)))
}

/// Serves raft's peer routes and the rates route on `listener`, both behind `auth`.
pub fn serve_peers(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    auth: Arc<PeerAuth>,
    rates: Arc<PeerRates>,
) {
    if matches!(*auth, PeerAuth::Insecure) {
        warn!("cluster.insecure = true: any host that reaches the peer endpoint is a peer");
    }
    let app =
        crate::cluster::api::router(cluster, auth.clone()).merge(peer_rates::router(rates, auth));
    // Answers are small and awaited: send them at once, not after the peer's delayed ACK (as
    // `Cluster::start` does when it serves the peer endpoint itself).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("peer endpoint stopped: {e}");
        }
    });
}

/// A report for the leader at `addr`.
#[derive(Clone, Debug)]
struct Outgoing {
    addr: String,
    report: RatesReport,
}

/// What the sampler thread does with each tick's rates.
pub struct FleetTick {
    rates: Arc<PeerRates>,
    control: Arc<dyn Control>,
    runtime: tokio::runtime::Handle,
    telemetry: Arc<Telemetry>,
    /// The newest report not yet sent (a watch: a slow send skips to the newest).
    outbox: watch::Sender<Option<Outgoing>>,
    summed: Vec<(SessionRef, Rate)>,
}

impl FleetTick {
    /// Sends reports with `auth`'s secret, each given up after `tick`, and sums `rates`.
    /// Must be called inside the tokio runtime (it spawns the sender).
    pub fn start(
        rates: Arc<PeerRates>,
        control: Arc<dyn Control>,
        telemetry: Arc<Telemetry>,
        auth: &PeerAuth,
        tick: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500).min(tick))
            .timeout(tick)
            .default_headers(auth.headers())
            .build()
            .context("building the peer HTTP client")?;
        let (outbox, pending) = watch::channel(None);
        tokio::spawn(send(client, pending));
        Ok(Self {
            rates,
            control,
            runtime: tokio::runtime::Handle::current(),
            telemetry,
            outbox,
            summed: Vec::new(),
        })
    }

    /// The rates the loop samples this tick, given this node's `local` ones read at `now`
    /// (`tick_ms` on the wall clock): on the leader, the sum with every fresh report; on a
    /// follower its own, which it also queues for the leader.
    pub fn rates<'a>(
        &'a mut self,
        local: &'a [(SessionRef, Rate)],
        now: Instant,
        tick_ms: u64,
    ) -> &'a [(SessionRef, Rate)] {
        let status = self.runtime.block_on(self.control.status());
        let members: BTreeSet<u64> = status.members.iter().map(|m| m.id).collect();
        if status.role == "leader" {
            self.rates.sum(local, &members, now, &mut self.summed);
            self.rates.publish(&self.telemetry, now);
            return &self.summed;
        }
        let leader = status
            .leader
            .filter(|l| *l != status.node)
            .and_then(|l| status.members.iter().find(|m| m.id == l));
        if let Some(leader) = leader {
            self.outbox.send_replace(Some(Outgoing {
                addr: leader.addr.clone(),
                report: RatesReport::of(status.node, tick_ms, local),
            }));
        }
        local
    }
}

/// Posts each newest report to its leader until the sampler goes.
async fn send(client: reqwest::Client, mut pending: watch::Receiver<Option<Outgoing>>) {
    while pending.changed().await.is_ok() {
        let Some(out) = pending.borrow_and_update().clone() else {
            continue;
        };
        let url = format!("http://{}{}", out.addr, peer_rates::PATH);
        match client.post(&url).json(&out.report).send().await {
            Ok(reply) if reply.status().is_success() => {}
            Ok(reply) => {
                let status = reply.status();
                let body = reply.text().await.unwrap_or_default();
                warn!(leader = %out.addr, %status, "the leader refused this node's rates: {body}");
            }
            // The leader is changing or away: the next tick's report goes to the next one.
            Err(e) => debug!(leader = %out.addr, "sending this node's rates: {e}"),
        }
    }
}
