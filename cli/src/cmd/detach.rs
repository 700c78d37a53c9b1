//! `shardline detach`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shardline::{config::Config, loader};

/// Detach the dataplane and remove its pinned maps (routing stops).
#[derive(Args)]
pub struct DetachArgs {
    /// The daemon's configuration.
    #[arg(long, default_value = "shardline.toml")]
    config: PathBuf,
}

/// Detaches the program from the configured interface and removes the pins.
pub fn run(args: DetachArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    loader::teardown(&config.pin_dir, Some(&config.interface))
        .with_context(|| format!("removing {}", config.pin_dir.display()))?;
    println!(
        "detached from {} and removed {}",
        config.interface,
        config.pin_dir.display()
    );
    Ok(())
}
