//! `shardline decap`: the backend-side decapsulator (or, with `--pass`, a plain `XDP_PASS`),
//! attached until the process is stopped.

use std::{net::IpAddr, path::PathBuf};

use anyhow::Context;
use aya::maps::HashMap;
use shardline_common::maps::{ip_addr, Addr};
use tracing::{info, warn};

use crate::{
    config::XdpAttachMode,
    loader::{load_aux, xdp_program},
};

/// Attaches the decapsulator for `vips` (or the pass program) to `iface` and waits for
/// SIGINT / SIGTERM; the program is detached when the process ends.
pub async fn run(
    iface: &str,
    vips: &[IpAddr],
    pass: bool,
    mode: XdpAttachMode,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut ebpf = load_aux()?;
    let name = if pass {
        "shardline_pass"
    } else {
        "shardline_decap"
    };
    let program = xdp_program(&mut ebpf, name)?;
    program.load().with_context(|| format!("loading {name}"))?;
    let modes: &[aya::programs::XdpMode] = match mode {
        XdpAttachMode::Native => &[aya::programs::XdpMode::Driver],
        XdpAttachMode::Generic => &[aya::programs::XdpMode::Skb],
        XdpAttachMode::Auto => &[aya::programs::XdpMode::Driver, aya::programs::XdpMode::Skb],
    };
    let mut attached = None;
    for m in modes {
        match program.attach(iface, *m) {
            Ok(_) => {
                attached = Some(*m);
                break;
            }
            Err(e) => warn!(iface, mode = ?m, error = %e, "attach failed"),
        }
    }
    let mode = attached.with_context(|| format!("cannot attach {name} to {iface}"))?;
    if !pass {
        let mut table: HashMap<_, Addr, u32> = HashMap::try_from(
            ebpf.map_mut("DECAP_VIPS")
                .context("DECAP_VIPS map missing")?,
        )?;
        for vip in vips {
            table
                .insert(ip_addr(*vip), 1, 0)
                .with_context(|| format!("adding VIP {vip}"))?;
        }
    }
    info!(iface, ?mode, program = name, vips = vips.len(), "attached");
    if let Some(path) = ready_file {
        std::fs::write(&path, b"ready\n").with_context(|| format!("writing {}", path.display()))?;
    }
    crate::signals::wait_for_stop().await?;
    Ok(())
}
