//! `shardline quic-ids`.

use std::path::PathBuf;

use clap::Args;
use shardline::config::Config;

/// Print what the servers of each quic service must put in their connection ids.
#[derive(Args)]
pub struct QuicIdsArgs {
    /// The daemon's configuration.
    #[arg(long, default_value = "shardline.toml")]
    config: PathBuf,
}

/// Prints each quic service's connection-id layout and server ids.
pub fn run(args: QuicIdsArgs) -> anyhow::Result<()> {
    print!("{}", Config::load(&args.config)?.describe_quic_ids());
    Ok(())
}
