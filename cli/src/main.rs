//! The `shardline` binary: the daemon, the backend-side agent and decapsulator, the packet
//! tracer and the operator commands over a daemon's API. One module per subcommand under
//! [`cmd`]; the operator commands live in [`operator`]. The netns lab is `shardline-lab`, the
//! kernel-side benchmarks are `shardline-bench`: neither ships here.

mod cmd;
mod operator;

use clap::{CommandFactory, Parser, Subcommand};

use crate::cmd::{
    agent, daemon, decap, detach, doctor, forecast_eval, generate, quic_ids, replay, stats, trace,
};

#[derive(Parser)]
#[command(
    name = "shardline",
    version,
    about = "Predictive session sharding at line rate"
)]
struct Cli {
    #[command(flatten)]
    log: cmd::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP dataplane (or adopt the pinned one) and keep it configured.
    Daemon(daemon::DaemonArgs),
    /// Strip shardline's IPIP / IP6IP6 encapsulation for local VIPs (run on each backend).
    Decap(decap::DecapArgs),
    /// Run on a backend host: report its resources and load to the daemon, answer /health.
    Agent(agent::AgentArgs),
    /// Check whether this host can run the dataplane, and what to do where it cannot.
    Doctor(doctor::DoctorArgs),
    /// Print the dataplane's counters from the pinned maps.
    Stats(stats::StatsArgs),
    /// Print what the servers of each quic service must put in their connection ids: the config
    /// rotation, the server id length, and each backend's server id (its backend id).
    QuicIds(quic_ids::QuicIdsArgs),
    /// Detach the dataplane and remove its pinned maps (routing stops).
    Detach(detach::DetachArgs),
    /// Run packets through the XDP program (BPF_PROG_TEST_RUN) and the userspace replay.
    Trace(trace::TraceArgs),
    /// Replay a CSV series through every forecaster online and print their scores as JSON.
    ForecastEval(forecast_eval::ForecastEvalArgs),
    /// Replay demand series through the control loop in virtual time and compare it with
    /// reactive, static and oracle controllers.
    Replay(replay::ReplayArgs),
    /// Write man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
    /// Operator commands over a daemon's API (status, backends, sessions, top, plot, ...).
    #[command(flatten)]
    Operator(operator::Operator),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        // Exit codes are part of the operator commands' contract (see `operator`).
        Command::Operator(command) => std::process::exit(operator::run(command)),
        Command::Daemon(args) => daemon::run(args),
        Command::Decap(args) => decap::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Stats(args) => stats::run(args),
        Command::QuicIds(args) => quic_ids::run(args),
        Command::Detach(args) => detach::run(args),
        Command::Trace(args) => trace::run(args),
        Command::ForecastEval(args) => forecast_eval::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Generate(args) => generate::run(args, Cli::command()),
    }
}
