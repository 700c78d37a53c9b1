//! The operator commands (`shardline status`, `backends`, `services`, `sessions`, `cluster`,
//! `reshard`, `state`, `top`, `plot`): small HTTP calls to a daemon's API, printed as tables
//! or, with `--json`, as the API's JSON.
//!
//! Exit codes scripts can rely on: [`EXIT_OK`], [`EXIT_REFUSED`] (the daemon refused the
//! request: a 4xx, nothing changed), [`EXIT_USAGE`] (bad arguments), [`EXIT_UNAVAILABLE`] (the
//! daemon could not be reached or failed: a 5xx, or not the leader), [`EXIT_LOCAL`] (a local
//! failure such as writing the plot).
//!
//! - [`client`]: the HTTP client and its errors.
//! - [`commands`]: the table and JSON commands.
//! - [`tables`]: how each of the API's views prints as a table.
//! - [`top`]: the live terminal view.
//! - [`plot`]: a session's load, forecast and re-shards as a PNG.

pub mod client;
pub mod commands;
pub mod plot;
pub mod tables;
pub mod top;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use client::{CliError, Client};

use shardline::state::SessionRef;

/// Success.
pub const EXIT_OK: i32 = 0;
/// The daemon refused the request (4xx: bad input, unknown name, no or wrong token).
pub const EXIT_REFUSED: i32 = 1;
/// Bad arguments (clap uses it too).
pub const EXIT_USAGE: i32 = 2;
/// The daemon is unreachable or failing (5xx, or not the leader).
pub const EXIT_UNAVAILABLE: i32 = 3;
/// A local failure (writing a file, the terminal).
pub const EXIT_LOCAL: i32 = 4;

/// Where the API is and how to authenticate, shared by every operator command (and accepted
/// after its subcommands: `shardline backends list --json`).
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// The daemon's API.
    #[arg(
        long,
        global = true,
        env = "SHARDLINE_API",
        default_value = "http://127.0.0.1:7900"
    )]
    pub api: String,
    /// File holding the bearer token (default: the SHARDLINE_API_TOKEN variable).
    #[arg(long, global = true, env = "SHARDLINE_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The operator commands.
#[derive(Subcommand, Debug)]
pub enum Operator {
    /// Node, cluster and dataplane summary.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List backends (default) or change one.
    Backends {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: Option<BackendAction>,
    },
    /// List services with their pools (backends, weights, health) and ring sizes.
    Services {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List sessions (default) or show one.
    Sessions {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: Option<SessionAction>,
    },
    /// Cluster members (default), the leader, or a membership change.
    Cluster {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: Option<ClusterAction>,
    },
    /// Place a session on a shard set by hand, or return it to the default table.
    Reshard {
        #[command(flatten)]
        api: ApiArgs,
        /// The session, SERVICE/NUMBER (e.g. kv/42).
        #[arg(value_parser = parse_session)]
        session: SessionRef,
        /// Backend ids of the new shard set, comma separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "default")]
        backends: Vec<u32>,
        /// Return the session to the default table instead.
        #[arg(long, conflicts_with = "backends")]
        default: bool,
    },
    /// A session's critical state.
    State {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: StateAction,
    },
    /// Live view of sessions, shard counts, rates and forecasts (q quits).
    Top {
        #[command(flatten)]
        api: ApiArgs,
        /// Print one frame as text and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Draw a session's load, forecast, upper bound and re-shards over time into a PNG.
    Plot {
        #[command(flatten)]
        api: ApiArgs,
        /// The session, SERVICE/NUMBER (e.g. kv/42).
        #[arg(value_parser = parse_session)]
        session: SessionRef,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `shardline backends ...`.
#[derive(Subcommand, Debug)]
pub enum BackendAction {
    /// List backends.
    List,
    /// Add a backend (or replace its addresses and weight).
    Add {
        /// Id, 0 to 4095.
        #[arg(long)]
        id: u32,
        /// IPv4 address.
        #[arg(long)]
        ipv4: Option<std::net::Ipv4Addr>,
        /// IPv6 address.
        #[arg(long)]
        ipv6: Option<std::net::Ipv6Addr>,
        /// Next hop's MAC, aa:bb:cc:dd:ee:ff.
        #[arg(long)]
        mac: String,
        /// Weight in the default table.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Also put it in these services' pools (repeatable), at its own weight.
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
    },
    /// Drain a backend (no new share of the default table); --undo stops draining. With
    /// --service, drain it from that service's pool only (weight 0 there).
    Drain {
        /// Backend id.
        id: u32,
        /// Stop draining instead (with --service: back to its own weight there).
        #[arg(long)]
        undo: bool,
        /// Drain it from this service only.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
    },
    /// Remove a backend; it leaves every shard set. With --service, it leaves only that
    /// service's pool.
    Remove {
        /// Backend id.
        id: u32,
        /// Take it out of this service's pool only.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
    },
    /// Set a backend's weight (with --service: its weight in that service's pool, which it
    /// joins if it is not in it).
    Weight {
        /// Backend id.
        id: u32,
        /// New weight (0 takes it out of the default table, or drains it from the service).
        weight: u32,
        /// Set its weight in this service's pool.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
    },
}

/// `shardline sessions ...`.
#[derive(Subcommand, Debug)]
pub enum SessionAction {
    /// List sessions, all of them or those every given filter admits.
    List {
        /// Only this service's sessions.
        #[arg(long)]
        service: Option<String>,
        /// Only sessions of this class.
        #[arg(long)]
        class: Option<String>,
        /// Only sessions carrying this label, NAME=VALUE (repeat it: every one must hold).
        #[arg(long, value_parser = parse_label)]
        label: Vec<String>,
    },
    /// One session: shard set, forecast, history and re-shard events.
    Show {
        /// The session, SERVICE/NUMBER.
        #[arg(value_parser = parse_session)]
        session: SessionRef,
    },
    /// Who owns a request key of a session now, and who owned it before the last re-shard
    /// while the handoff window is open (docs/handoff.md).
    Owners {
        /// The session, SERVICE/NUMBER.
        #[arg(value_parser = parse_session)]
        session: SessionRef,
        /// The request key, as the shardline header carries it.
        #[arg(long)]
        key: u64,
    },
}

/// `shardline cluster ...`.
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Members and their roles.
    Members,
    /// The leader.
    Leader,
    /// Add a node (learner, then voter once caught up).
    Add {
        /// Node id.
        id: u64,
        /// Address peers reach it at, host:port.
        addr: String,
        /// Keep it a learner: it applies every committed state but never votes, so commits
        /// do not wait on it (LB nodes beyond the 3 or 5 voters).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node.
    Remove {
        /// Node id.
        id: u64,
    },
}

/// `shardline state ...`.
#[derive(Subcommand, Debug)]
pub enum StateAction {
    /// Print one key's value.
    Get {
        /// The session, SERVICE/NUMBER.
        #[arg(value_parser = parse_session)]
        session: SessionRef,
        /// Key.
        key: String,
    },
    /// Write one key.
    Put {
        /// The session, SERVICE/NUMBER.
        #[arg(value_parser = parse_session)]
        session: SessionRef,
        /// Key.
        key: String,
        /// Value (text, or hex bytes with --hex).
        value: String,
        /// The value is hex.
        #[arg(long)]
        hex: bool,
    },
    /// Delete one key.
    Delete {
        /// The session, SERVICE/NUMBER.
        #[arg(value_parser = parse_session)]
        session: SessionRef,
        /// Key.
        key: String,
    },
}

/// Parses `SERVICE/NUMBER`.
pub fn parse_session(text: &str) -> Result<SessionRef, String> {
    let (service, number) = text
        .rsplit_once('/')
        .ok_or_else(|| format!("{text:?}: expected SERVICE/NUMBER, e.g. kv/42"))?;
    let session = number
        .parse()
        .map_err(|_| format!("{text:?}: the session number {number:?} is not a number"))?;
    if service.is_empty() {
        return Err(format!("{text:?}: the service name is empty"));
    }
    Ok(SessionRef {
        service: service.into(),
        session,
    })
}

/// Runs an operator command; returns the process's exit code (errors are printed).
pub fn run(command: Operator) -> i32 {
    match commands::run(command) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("shardline: {e}");
            e.exit_code()
        }
    }
}

/// A `--label` value: NAME=VALUE with a non-empty name and no comma (the API's separator).
fn parse_label(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((name, _)) if !name.is_empty() && !text.contains(',') => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not NAME=VALUE (without commas)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_service_slash_number() {
        let r = parse_session("kv/42").unwrap();
        assert_eq!((r.service.as_str(), r.session), ("kv", 42));
        assert!(parse_session("kv").unwrap_err().contains("SERVICE/NUMBER"));
        assert!(parse_session("kv/x").unwrap_err().contains("not a number"));
        assert!(parse_session("/1").is_err());
    }
}
