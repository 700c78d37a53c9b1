//! `shardline daemon`: loads (or adopts) the dataplane, writes the configured tables, and keeps
//! them in step with the configuration until told to stop. Stopping leaves the program attached
//! and the maps pinned: the dataplane keeps routing while the daemon is away, and the next
//! daemon adopts both.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use shardline_common::plan::{maglev_plan, session_plan, SessionPlan};

use crate::{
    config::Config,
    loader::{attach_balancer, load_balancer},
    maps::DataplaneMaps,
    snapshot::Snapshot,
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
    let mut maps = DataplaneMaps::open(&config.pin_dir)?;
    maps.apply(&Snapshot::from_config(&config))
        .context("writing the tables")?;
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
        std::fs::write(&path, b"ready\n").with_context(|| format!("writing {}", path.display()))?;
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut report = tokio::time::interval(std::time::Duration::from_secs(10));
    let mut current = config;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => match reload(config_path, &current, &mut maps) {
                Ok(next) => current = next,
                Err(e) => error!("reload refused, keeping the running configuration: {e:#}"),
            },
            _ = report.tick() => log_counters(&maps),
        }
    }
    info!(
        "stopping; the program stays attached and the maps pinned in {}",
        current.pin_dir.display()
    );
    // Dropping `ebpf` closes our descriptors only: the pinned link keeps the program attached.
    drop(ebpf);
    Ok(())
}

/// Applies a new configuration if it is valid and compatible; nothing is written otherwise.
fn reload(path: &Path, current: &Config, maps: &mut DataplaneMaps) -> anyhow::Result<Config> {
    let next = Config::load(path)?;
    anyhow::ensure!(
        next.interface == current.interface && next.pin_dir == current.pin_dir,
        "`interface` and `pin_dir` cannot change on reload; restart the daemon instead"
    );
    let before = maps.read_snapshot()?;
    let after = Snapshot::from_config(&next);
    maps.apply(&after)?;
    log_moves(&before, &after);
    info!("configuration reloaded");
    log_quic_ids(&next);
    Ok(next)
}

/// Logs what a reload moved: per re-placed session its plan and its previous owners (the
/// handoff: the new owners fetch state from them), and the default table's slot moves.
fn log_moves(before: &Snapshot, after: &Snapshot) {
    for (key, set) in &after.sessions {
        let old = before.sessions.get(key);
        let plan = session_plan(old, set);
        if plan != SessionPlan::Unchanged {
            let previous: Vec<u32> = old
                .map(|o| o.backends[..o.count as usize].to_vec())
                .unwrap_or_default();
            let current = &set.backends[..set.count as usize];
            info!(
                service = key.service,
                session = key.session,
                ?previous,
                ?current,
                ?plan,
                "session re-sharded; previous owners hand their keys over"
            );
        }
    }
    let moves = maglev_plan(&before.maglev, &after.maglev);
    if !moves.is_empty() {
        let slots: u32 = moves.iter().map(|m| m.slots).sum();
        info!(slots, ?moves, "default table re-sharded");
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
