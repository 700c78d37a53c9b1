//! The `[api]` section: where the HTTP API listens, its token and its body limit.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// The HTTP API's address and credentials.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the API listens on (default `127.0.0.1:7900`).
    #[serde(default = "default_api_listen")]
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token writes and state reads need (surrounding whitespace is
    /// ignored). The environment variable `SHARDLINE_API_TOKEN` overrides it. With neither,
    /// the API is read-only.
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted, bytes (default 65536).
    #[serde(default = "default_api_body_limit")]
    pub body_limit: usize,
    /// Sessions that keep their own series in the per-session metric families
    /// (`shardline_session_shards`, `shardline_forecast_error`): the top K by load; the rest
    /// are aggregated into one `session="_other"` series (default 100, 0 to 100000).
    #[serde(default = "default_metrics_top_sessions")]
    pub metrics_top_sessions: usize,
}

/// Default of `[api] metrics_top_sessions`.
pub const DEFAULT_METRICS_TOP_SESSIONS: usize = 100;

/// Most sessions `[api] metrics_top_sessions` may ask series for.
pub const MAX_METRICS_TOP_SESSIONS: usize = 100_000;

fn default_metrics_top_sessions() -> usize {
    DEFAULT_METRICS_TOP_SESSIONS
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            token_file: None,
            body_limit: default_api_body_limit(),
            metrics_top_sessions: DEFAULT_METRICS_TOP_SESSIONS,
        }
    }
}

fn default_api_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 7900))
}

fn default_api_body_limit() -> usize {
    64 * 1024
}

impl ApiConfig {
    /// The API's limits: a body limit that fits a session's state and is not absurd, and a
    /// token file that names a file (whether it is readable is checked when the API starts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=16 * 1024 * 1024).contains(&self.body_limit) {
            return Err(invalid(
                "api.body_limit",
                "must be 1024 to 16777216 bytes (a session's state alone needs 4096)",
            ));
        }
        if self.metrics_top_sessions > MAX_METRICS_TOP_SESSIONS {
            return Err(invalid(
                "api.metrics_top_sessions",
                format!(
                    "must be 0 to {MAX_METRICS_TOP_SESSIONS} (each session kept is two series \
                     per scrape; the rest are aggregated)"
                ),
            ));
        }
        if self
            .token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "api.token_file",
                "must name a file (leave it out to rely on SHARDLINE_API_TOKEN)",
            ));
        }
        Ok(())
    }
}
