//! `shardline daemon`.

use std::path::PathBuf;

use clap::Args;

/// Load the XDP dataplane (or adopt the pinned one) and keep it configured.
#[derive(Args)]
pub struct DaemonArgs {
    /// The TOML configuration (see shardline.example.toml).
    #[arg(long, default_value = "shardline.toml")]
    config: PathBuf,
    /// Write this file once the dataplane routes (for scripts and the lab).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    shardline::daemon::limit_malloc_arenas();
    super::runtime()?.block_on(shardline::daemon::run(&args.config, args.ready_file))
}
