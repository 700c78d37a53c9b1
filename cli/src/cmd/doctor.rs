//! `shardline doctor`.

use std::path::PathBuf;

use clap::Args;
use shardline::{
    config::Config,
    doctor::{self, Host, Status},
};

/// Check whether this host can run the dataplane: kernel, BTF, bpffs, JIT, privileges, the
/// interface's XDP driver, queues and MTU, decapsulation, memory for the maps.
#[derive(Args)]
pub struct DoctorArgs {
    /// The interface to check (default: the configuration's, if one is given).
    #[arg(long)]
    iface: Option<String>,
    /// A configuration to check against (its interface, forwarding modes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// An array of `{"check", "status", "detail", "fix"}` objects instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints every check; exits 1 when one fails.
pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let checks = doctor::run(&Host::default(), args.iface.as_deref(), config.as_ref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", doctor::table(&checks));
    }
    if checks.iter().any(|c| c.status == Status::Fail) {
        std::process::exit(1);
    }
    Ok(())
}
