//! `shardline decap`.

use std::{net::IpAddr, path::PathBuf};

use clap::Args;
use shardline::config::XdpAttachMode;

/// Strip shardline's IPIP / IP6IP6 encapsulation for local VIPs (run on each backend).
#[derive(Args)]
pub struct DecapArgs {
    /// Interface receiving encapsulated traffic.
    #[arg(long)]
    iface: String,
    /// VIPs served by this host (repeat for several).
    #[arg(long = "vip")]
    vips: Vec<IpAddr>,
    /// Attach a plain XDP_PASS instead (what a veth peer needs for native XDP_TX).
    #[arg(long)]
    pass: bool,
    /// auto (native, falling back to generic), native or generic.
    #[arg(long, default_value = "auto", value_parser = parse_mode)]
    mode: XdpAttachMode,
    /// Write this file once attached.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<XdpAttachMode, String> {
    match s {
        "auto" => Ok(XdpAttachMode::Auto),
        "native" => Ok(XdpAttachMode::Native),
        "generic" => Ok(XdpAttachMode::Generic),
        _ => Err(format!("{s:?}: expected auto, native or generic")),
    }
}

/// Attaches the decapsulator and waits for SIGINT or SIGTERM.
pub fn run(a: DecapArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(shardline::decap::run(
        &a.iface,
        &a.vips,
        a.pass,
        a.mode,
        a.ready_file,
    ))
}
