//! `shardline daemon`: loads (or adopts) the dataplane, writes the configured tables, and keeps
//! them in step with the configuration until told to stop. Stopping leaves the program attached
//! and the maps pinned: the dataplane keeps routing while the daemon is away, and the next
//! daemon adopts both.

pub mod applier;
pub mod fleet;
pub mod predict;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};
use tracing::{error, info, warn};

use crate::{
    agent::health::HealthBoard,
    api::{peer_rates::PeerRates, ApiState, Token},
    cluster::Cluster,
    config::Config,
    control::insight::Insights,
    guard::PeerAuth,
    loader::{attach_balancer, interface_mtu, load_balancer},
    maps::DataplaneMaps,
    reshard::board::HandoffBoard,
    state::{Command, ConfigTables, Control},
    telemetry::Telemetry,
};

/// glibc malloc arenas the daemon's threads share. By default each thread that allocates
/// while another holds an arena gets its own (up to 8 per core), and each keeps the memory its
/// frees leave behind: measured with 100,000 sessions placed through the API, one arena saved
/// 15 MiB of 118 (docs in README, `memory.daemon_rss_mib_1m_sessions`). Two leave the control
/// loop's thread one of its own.
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] (`MALLOC_ARENA_MAX`, when set, wins). Call
/// it first thing, before the runtime's threads exist: arenas already made stay.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of the allocator; it returns 0 when refused.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

/// Runs the daemon until SIGINT or SIGTERM; SIGHUP reloads `config_path`.
pub async fn run(config_path: &Path, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    crate::doctor::preflight(&crate::doctor::Host::default(), &config)
        .map_err(anyhow::Error::msg)?;
    let mut ebpf = load_balancer(&config.pin_dir)?;
    forward_bpf_logs(&mut ebpf);
    let attached = attach_balancer(
        &mut ebpf,
        &config.interface,
        config.xdp_mode,
        &config.pin_dir,
    )
    .with_context(|| format!("attaching to interface {:?}", config.interface))?;
    let mut dataplane = DataplaneMaps::open(&config.pin_dir)?;
    // Before the applier's first write: from here on only this daemon writes SESSIONS.
    let walked = dataplane.mark_session_filter()?;
    info!(
        placed = walked,
        "sessions filter set: new clients no placement falls near skip the SESSIONS lookup"
    );
    // What the too-big check compares packets with; unknown (0) turns it off.
    let mtu = interface_mtu(&config.interface).unwrap_or_else(|e| {
        warn!(interface = %config.interface, error = %e, "cannot read the interface MTU; packets too big to encapsulate will not be answered");
        0
    });
    dataplane.set_egress_mtu(mtu)?;
    info!(interface = %config.interface, mtu, "egress MTU recorded for the too-big check");
    // Where FIB-routed backends' packets may be redirected (empty: out of `interface` only).
    let ports = crate::maps::fill_tx_ports(&config.pin_dir, &config.egress_interfaces)?;
    if !ports.is_empty() {
        info!(?ports, "egress interfaces for FIB next hops (TX_PORTS)");
    }
    let maps = Arc::new(Mutex::new(dataplane));
    // The replicated state as this node last applied it (empty on first start: the pinned
    // maps keep routing until the configuration or the leader's state arrives).
    // The daemon serves the peer endpoint itself, to mount the rates route beside raft's.
    let (raft_config, peer_listener) = fleet::bind_peers(&config).await?;
    let cluster = Cluster::start(&raft_config)
        .await
        .context("starting the raft node")?;
    let control: Arc<dyn Control> = cluster.clone();
    let peer_auth = Arc::new(PeerAuth::load(&config.cluster())?);
    let tick = config.control.clone().unwrap_or_default().tick();
    let peer_rates = Arc::new(PeerRates::new(cluster.id(), control.clone(), 2 * tick));
    if let Some(listener) = peer_listener {
        fleet::serve_peers(
            listener,
            cluster.clone(),
            peer_auth.clone(),
            peer_rates.clone(),
        );
    }
    let telemetry = Arc::new(Telemetry::new(config.api.metrics_top_sessions));
    let (written, routed) = tokio::sync::watch::channel(0);
    let handoffs = Arc::new(HandoffBoard::default());
    // A reload sends its `handoff_window_secs`; the applier reads it before each write.
    let (window_tx, window_rx) = tokio::sync::watch::channel(config.handoff_window());
    tokio::spawn(applier::run(
        maps.clone(),
        control.subscribe(),
        written,
        telemetry.clone(),
        (handoffs.clone(), window_rx),
    ));
    let seeded = {
        let (cluster, config) = (cluster.clone(), config.clone());
        // Until the replicated state holds tables: the leader (whichever node it is by then)
        // loads them from its file; a follower waits for them. One failed attempt (no quorum
        // yet, a leader change mid-commit) must not leave the cluster empty for good.
        tokio::spawn(async move {
            loop {
                match cluster.seed(&config).await {
                    Ok(()) if cluster.local().generation > 0 => return,
                    Ok(()) => {}
                    Err(e) => {
                        warn!("loading the configuration into the replicated state: {e}; retrying")
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
    };
    let insights = Arc::new(Insights::default());
    let board = Arc::new(HealthBoard::default());
    let _predict = match &config.control {
        Some(c) => Some(
            predict::start(
                c,
                control.clone(),
                maps.clone(),
                insights.clone(),
                telemetry.clone(),
                board.clone(),
                fleet::FleetTick::start(
                    peer_rates.clone(),
                    control.clone(),
                    telemetry.clone(),
                    &peer_auth,
                    tick,
                )?,
            )
            .await?,
        ),
        None => None,
    };
    let api = serve_api(
        &config,
        &control,
        (&insights, &board, &handoffs),
        &telemetry,
        &maps,
    )
    .await?;
    info!(
        interface = %config.interface,
        ?attached,
        services = config.services.len(),
        backends = config.backends.len(),
        sessions = config.sessions.len(),
        "dataplane routing"
    );
    log_quic_ids(&config);
    if let Some(path) = ready_file {
        // Ready once the configuration is seeded (if this node leads) and the maps hold a
        // committed state.
        let mut routed = routed.clone();
        tokio::spawn(async move {
            let _ = seeded.await;
            if routed.wait_for(|g| *g > 0).await.is_ok() {
                if let Err(e) = std::fs::write(&path, b"ready\n") {
                    error!("writing {}: {e}", path.display());
                }
            }
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut report = tokio::time::interval(std::time::Duration::from_secs(10));
    let mut current = config;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => match reload(config_path, &current, (control.as_ref(), &api, &window_tx), routed.clone()).await {
                Ok(next) => current = next,
                Err(e) => error!("reload refused, keeping the running configuration: {e:#}"),
            },
            _ = report.tick() => log_counters(&maps.lock().expect("maps lock")),
        }
    }
    info!(
        "stopping; the program stays attached and the maps pinned in {}",
        current.pin_dir.display()
    );
    cluster.shutdown().await;
    // Dropping `ebpf` closes our descriptors only: the pinned link keeps the program attached.
    drop(ebpf);
    Ok(())
}

/// Starts the HTTP API on `[api] listen`; a daemon whose API cannot listen does not start.
async fn serve_api(
    config: &Config,
    control: &Arc<dyn Control>,
    (insights, board, handoffs): (&Arc<Insights>, &Arc<HealthBoard>, &Arc<HandoffBoard>),
    telemetry: &Telemetry,
    maps: &Arc<Mutex<DataplaneMaps>>,
) -> anyhow::Result<ApiState> {
    let token = Token::load(&config.api)?;
    if token.is_none() {
        warn!("no API token ([api] token_file or SHARDLINE_API_TOKEN): the API is read-only");
    }
    let state = ApiState::new(
        control.clone(),
        insights.clone(),
        board.clone(),
        handoffs.clone(),
        telemetry,
        Some(maps.clone()),
        token,
    );
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API to {} (`api.listen`)", config.api.listen))?;
    info!(listen = %config.api.listen, "api listening");
    let router = crate::api::router(state.clone(), config.api.body_limit);
    tokio::spawn(async move {
        if let Err(e) = crate::api::serve(listener, router, std::future::pending()).await {
            error!("the API stopped: {e}");
        }
    });
    Ok(state)
}

/// Forwards the XDP program's log records (aya-log; written on error paths only, never per
/// forwarded packet) into the daemon's log for as long as the daemon runs. Without them the
/// dataplane still routes, so a failure here is a warning.
fn forward_bpf_logs(ebpf: &mut aya::Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => return warn!("the XDP program's log records will not be read: {e}"),
    };
    // SAFETY: the logger owns its ring buffer's descriptor, which stays open and the same
    // until the logger (moved into the AsyncFd) is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => return warn!("the XDP program's log records will not be read: {e}"),
    };
    tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut ready) => {
                    ready.get_inner_mut().flush();
                    ready.clear_ready();
                }
                Err(e) => return warn!("stopped reading the XDP program's log records: {e}"),
            }
        }
    });
}

/// Commits a new configuration if it is valid and compatible; nothing is written otherwise.
/// Returns once this node's maps route with it.
async fn reload(
    path: &Path,
    current: &Config,
    (control, api, handoff_window): (
        &dyn Control,
        &ApiState,
        &tokio::sync::watch::Sender<Duration>,
    ),
    mut routed: tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<Config> {
    let next = Config::load(path)?;
    anyhow::ensure!(
        next.interface == current.interface && next.pin_dir == current.pin_dir,
        "`interface` and `pin_dir` cannot change on reload; restart the daemon instead"
    );
    let token = Token::load(&next.api)?;
    let committed = control
        .write(Command::LoadConfig(ConfigTables::of(&next)))
        .await?;
    // The token changes only once the new tables are committed: a refused reload keeps both.
    api.set_token(token);
    api_limit_note(current, &next);
    handoff_window.send_replace(next.handoff_window());
    // "Reloaded" means the dataplane routes by the new tables, not just that they committed.
    let wait = routed.wait_for(|g| *g >= committed.generation);
    if tokio::time::timeout(std::time::Duration::from_secs(5), wait)
        .await
        .is_err()
    {
        anyhow::bail!("committed, but the maps were not written within 5 s (see the errors above)");
    }
    info!("configuration reloaded");
    log_quic_ids(&next);
    Ok(next)
}

/// The API keeps its listener and body limit until a restart (the token follows reloads).
fn api_limit_note(current: &Config, next: &Config) {
    if next.api.listen != current.api.listen || next.api.body_limit != current.api.body_limit {
        warn!("`api.listen` and `api.body_limit` change on restart only");
    }
}

/// Publishes what each quic service's backends must put in their connection ids.
fn log_quic_ids(config: &Config) {
    for line in config.describe_quic_ids().lines() {
        info!("{}", line.trim_start());
    }
}

fn log_counters(maps: &DataplaneMaps) {
    match maps.reason_counts() {
        Ok(counts) => {
            let summary: Vec<String> = counts
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{}={n}", r.name()))
                .collect();
            info!(counters = %summary.join(" "), "dataplane");
        }
        Err(e) => error!("reading counters: {e}"),
    }
}
