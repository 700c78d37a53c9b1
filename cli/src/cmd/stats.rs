//! `shardline stats`.

use std::path::PathBuf;

use clap::Args;
use shardline::{config::Config, maps::DataplaneMaps};

/// Print the dataplane's counters from the pinned maps.
#[derive(Args)]
pub struct StatsArgs {
    /// The daemon's configuration (for its pin directory).
    #[arg(long, default_value = "shardline.toml")]
    config: PathBuf,
}

/// Prints the per-reason and per-backend counters.
pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let maps = DataplaneMaps::open(&config.pin_dir)?;
    for (reason, n) in maps.reason_counts()? {
        println!("{:<22} {n}", reason.name());
    }
    for b in &config.backends {
        let c = maps.backend_counter(b.id)?;
        println!(
            "backend {:<14} packets {:<12} bytes {}",
            b.id, c.packets, c.bytes
        );
    }
    Ok(())
}
