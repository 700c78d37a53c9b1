//! The CLI's HTTP client: blocking calls to the daemon's API, errors sorted by exit code.

use std::time::Duration;

use serde_json::Value;

use super::{ApiArgs, EXIT_LOCAL, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE};
use shardline::api::auth::TOKEN_ENV;

/// Why an operator command failed; [`CliError::exit_code`] says how scripts see it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon answered 4xx: the request was refused and nothing changed.
    #[error("refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The daemon answered 5xx or 421: it cannot do it now.
    #[error("the daemon failed ({status} {code}): {message}")]
    Failed {
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// No answer at all.
    #[error(
        "cannot reach the daemon's API at {url}: {message} (is the daemon running? see --api)"
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The transport error.
        message: String,
    },
    /// Bad arguments or a token file that cannot be read.
    #[error("{0}")]
    Usage(String),
    /// A local failure (writing a file, the terminal).
    #[error("{0}")]
    Local(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Refused { .. } => EXIT_REFUSED,
            Self::Failed { .. } | Self::Unreachable { .. } => EXIT_UNAVAILABLE,
            Self::Usage(_) => EXIT_USAGE,
            Self::Local(_) => EXIT_LOCAL,
        }
    }
}

/// A daemon's API.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `args.api` with the token from `--token-file` or `SHARDLINE_API_TOKEN`.
    pub fn new(args: &ApiArgs) -> Result<Self, CliError> {
        let token = match &args.token_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!("cannot read --token-file {}: {e}", path.display()))
            })?),
            None => std::env::var(TOKEN_ENV).ok(),
        };
        let base = args.api.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(CliError::Usage(format!(
                "--api {base:?}: expected http://HOST:PORT"
            )));
        }
        Ok(Self {
            base,
            token: token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
            // Connecting is quick or fails; an answer may take a while (a membership change
            // waits for the new node to answer and catch up).
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .build(),
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send("GET", path, None)
    }

    /// `method path` with an optional JSON body; the answer's JSON.
    pub fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.request(method, &url);
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match result {
            Ok(response) => response.into_json().map_err(|e| CliError::Failed {
                status: 200,
                code: "bad_answer".into(),
                message: format!("the answer is not JSON: {e}"),
            }),
            Err(ureq::Error::Status(status, response)) => {
                let body: Value = response.into_json().unwrap_or(Value::Null);
                let code = body["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned();
                let mut message = body["error"]["message"]
                    .as_str()
                    .unwrap_or("(no message)")
                    .to_owned();
                if let Some(addr) = body["error"]["leader"]["addr"].as_str() {
                    message += &format!(" (retry with --api http://{addr})");
                }
                if (400..500).contains(&status) && status != 421 {
                    Err(CliError::Refused {
                        status,
                        code,
                        message,
                    })
                } else {
                    Err(CliError::Failed {
                        status,
                        code,
                        message,
                    })
                }
            }
            Err(e) => Err(CliError::Unreachable {
                url,
                message: e.to_string(),
            }),
        }
    }
}
