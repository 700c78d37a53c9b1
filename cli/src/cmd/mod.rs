//! One module per subcommand: its `#[derive(Args)]` struct and its `run`.

pub mod agent;
pub mod daemon;
pub mod decap;
pub mod detach;
pub mod doctor;
pub mod forecast_eval;
pub mod generate;
pub mod quic_ids;
pub mod replay;
pub mod stats;
pub mod trace;

/// The small runtime the daemon, the agent and the decapsulator run on: one worker (the
/// control loop has its own pinned thread).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

/// Logging flags every subcommand takes.
#[derive(clap::Args)]
pub struct LogArgs {
    /// `text` (coloured only on a terminal) or `json` (one object per event, for log shippers).
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "SHARDLINE_LOG_FORMAT"
    )]
    log_format: shardline::logging::LogFormat,
}

impl LogArgs {
    /// Installs the logger these flags describe.
    pub fn init(&self) {
        shardline::logging::init(self.log_format);
    }
}
