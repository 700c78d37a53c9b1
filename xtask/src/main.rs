//! `cargo xtask`: the one entry point for preparing a machine and building, testing,
//! benchmarking and running shardline, so CI and developers run the same commands.
//!
//! Layout:
//! - `main.rs`: command-line parsing (clap) and dispatch.
//! - [`setup`]: idempotent machine preparation: nightly `rust-src`, Debian packages,
//!   bpf-linker built against nightly's LLVM, and the bpffs mount.
//! - [`cycles`]: `cycles`, the import graph of each crate's top-level modules.
//! - [`commands`]: `test`, `lab`, `bench` and `daemon`, each a setup/build followed by a run.
//! - [`package`]: `package`, the Debian package (`dpkg-deb` on a staged tree).
//! - [`chart`]: `bench`'s PNG chart of the dataplane cases (plotters).
//! - [`report`]: `bench`'s JSON merge (criterion) and Markdown summary.
//! - [`scale`]: `bench`'s million-session figures: kept through the criterion merge, rendered.
//! - [`run`]: spawning child processes, echoing each command and naming it in errors.

mod chart;
mod commands;
mod cycles;
mod package;
mod report;
mod run;
mod scale;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Developer tasks for shardline.
#[derive(Parser)]
#[command(bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install or check everything a build and test run needs (idempotent).
    Setup,
    /// Setup, then `cargo fmt --check`, clippy with -D warnings and release tests (needs root).
    Test {
        /// Passed verbatim to `cargo test`, e.g. `-- lab_ -- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup (what the lab needs), release build, then `shardline-lab run` with the given flags.
    Lab {
        /// How long the lab runs, in seconds (shardline's default if omitted).
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// How many client sessions the lab opens (shardline's default if omitted).
        #[arg(long, value_name = "N")]
        sessions: Option<u64>,
        /// Further arguments for `shardline-lab run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, release build, criterion benchmarks, then the dataplane benchmark if built.
    Bench {
        /// Reduced criterion settings for a fast smoke run.
        #[arg(long)]
        quick: bool,
        /// Measure nothing: render the summary and chart again from the last run's
        /// `bench/results/latest.json` and criterion output (after a change to the report).
        #[arg(long)]
        report_only: bool,
    },
    /// Print each crate's top-level module graph; fail on an import cycle.
    Cycles,
    /// Release build, then the Debian package (binary, systemd unit, example config, man pages,
    /// completions) in `target/debian/`.
    Package {
        /// Package the release binary already built instead of building it.
        #[arg(long)]
        no_build: bool,
    },
    /// Release build, then run `shardline daemon` with the given arguments.
    Daemon {
        /// Arguments for `shardline daemon`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(setup::Purpose::Everything),
        Cmd::Cycles => cycles::check(true),
        Cmd::Test { args } => commands::test(&args),
        Cmd::Lab {
            duration,
            sessions,
            args,
        } => commands::lab(duration, sessions, &args),
        Cmd::Bench { quick, report_only } => commands::bench(quick, report_only),
        Cmd::Daemon { args } => commands::daemon(&args),
        Cmd::Package { no_build } => package::package(no_build).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .expect("arguments parse")
            .command
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_forwards_everything_after_the_first_separator() {
        let Cmd::Test { args } = parse(&["test", "--", "lab_", "--", "--nocapture"]) else {
            panic!("expected test");
        };
        assert_eq!(args, ["lab_", "--", "--nocapture"]);
    }

    #[test]
    fn lab_keeps_its_own_flags_and_forwards_unknown_ones() {
        let Cmd::Lab {
            duration,
            sessions,
            args,
        } = parse(&["lab", "--duration", "5", "--backends", "3"])
        else {
            panic!("expected lab");
        };
        assert_eq!((duration, sessions), (Some(5), None));
        assert_eq!(args, ["--backends", "3"]);
    }

    #[test]
    fn daemon_forwards_flags() {
        let Cmd::Daemon { args } = parse(&["daemon", "--config", "x.toml"]) else {
            panic!("expected daemon");
        };
        assert_eq!(args, ["--config", "x.toml"]);
    }
}
