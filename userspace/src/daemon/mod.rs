//! `shardline daemon`: loads (or adopts) the dataplane, writes the configured tables, and keeps
//! them in step with the configuration until told to stop. Stopping leaves the program attached
//! and the maps pinned: the dataplane keeps routing while the daemon is away, and the next
//! daemon adopts both.

pub mod applier;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use crate::{
    cluster::Cluster,
    config::Config,
    loader::{attach_balancer, load_balancer},
    maps::DataplaneMaps,
    state::{Command, ConfigTables, Control},
};

/// Runs the daemon until SIGINT or SIGTERM; SIGHUP reloads `config_path`.
pub async fn run(config_path: &Path, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let mut ebpf = load_balancer(&config.pin_dir)?;
    let attached = attach_balancer(
        &mut ebpf,
        &config.interface,
        config.xdp_mode,
        &config.pin_dir,
    )
    .with_context(|| format!("attaching to interface {:?}", config.interface))?;
    let maps = Arc::new(Mutex::new(DataplaneMaps::open(&config.pin_dir)?));
    // The replicated state as this node last applied it (empty on first start: the pinned
    // maps keep routing until the configuration or the leader's state arrives).
    let cluster = Cluster::start(&config)
        .await
        .context("starting the raft node")?;
    let control: Arc<dyn Control> = cluster.clone();
    let (written, routed) = tokio::sync::watch::channel(0);
    tokio::spawn(applier::run_reporting(
        maps.clone(),
        control.subscribe(),
        written,
    ));
    let seeded = {
        let (cluster, config) = (cluster.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(e) = cluster.seed(&config).await {
                error!("loading the configuration into the replicated state: {e}");
            }
        })
    };
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
            _ = hup.recv() => match reload(config_path, &current, control.as_ref(), routed.clone()).await {
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

/// Commits a new configuration if it is valid and compatible; nothing is written otherwise.
/// Returns once this node's maps route with it.
async fn reload(
    path: &Path,
    current: &Config,
    control: &dyn Control,
    mut routed: tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<Config> {
    let next = Config::load(path)?;
    anyhow::ensure!(
        next.interface == current.interface && next.pin_dir == current.pin_dir,
        "`interface` and `pin_dir` cannot change on reload; restart the daemon instead"
    );
    let committed = control
        .write(Command::LoadConfig(ConfigTables::of(&next)))
        .await?;
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
