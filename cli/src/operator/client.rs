//! The CLI's HTTP client: blocking `reqwest` calls to the daemon's API, errors sorted by exit
//! code.

use std::time::Duration;

use reqwest::Method;
use serde::{de::DeserializeOwned, Serialize};

use super::{ApiArgs, EXIT_LOCAL, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE};
use shardline::api::{auth::TOKEN_ENV, views::ErrorBody};

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

/// An answer: the API's view it parses into, and its JSON as the daemon sent it (what
/// `--json` prints).
#[derive(Debug)]
pub struct Answer<T> {
    /// The parsed view.
    pub view: T,
    /// The body, unchanged.
    pub json: String,
}

/// The body of a request that has none.
pub const NO_BODY: Option<&()> = None;

/// A daemon's API.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
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
        // Connecting is quick or fails; an answer may take a while (a membership change
        // waits for the new node to answer and catch up). The daemon is reached directly,
        // never through an HTTP_PROXY from the environment.
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .map_err(|e| CliError::Local(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            base,
            token: token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
            http,
        })
    }

    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, CliError> {
        self.send(Method::GET, path, NO_BODY)
    }

    /// `method path` with an optional JSON body ([`NO_BODY`] for none); the answer as the
    /// view `T`.
    pub fn send<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer<T>, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| CliError::Unreachable {
            url: url.clone(),
            message: causes(e),
        };
        let response = request.send().map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().map_err(unreachable)?;
        if status < 400 {
            return match serde_json::from_str(&text) {
                Ok(view) => Ok(Answer { view, json: text }),
                Err(e) => Err(CliError::Failed {
                    status,
                    code: "bad_answer".into(),
                    message: format!("the answer is not the JSON expected: {e}"),
                }),
            };
        }
        let (code, mut message, leader) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(ErrorBody { error }) => (error.code, error.message, error.leader),
            // Not the API's error shape (a proxy, another server): say so, keep the status.
            Err(_) => ("unknown".into(), "(no message)".into(), None),
        };
        if let Some(leader) = leader {
            message += &format!(" (retry with --api http://{})", leader.addr);
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
}

/// `e` and its causes, without the URL (the caller names it): "error sending request:
/// client error (Connect): tcp connect error: Connection refused (os error 111)".
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out += &format!(": {c}");
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpListener,
    };

    use super::*;
    use shardline::api::views::Response;

    /// A daemon that gives each request the next canned `(status, body)` answer.
    fn daemon(answers: Vec<(u16, &'static str)>) -> ApiArgs {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for (status, body) in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        ApiArgs {
            api,
            token_file: None,
            json: false,
        }
    }

    #[test]
    fn answers_map_to_exit_codes() {
        let error = r#"{"error":{"code":"unknown_backend","message":"unknown backend 9"}}"#;
        let not_leader = r#"{"error":{"code":"not_leader","message":"not the leader","leader":{"id":2,"addr":"h:7900"}}}"#;
        let args = daemon(vec![
            (200, r#"{"generation":3,"placement":null}"#),
            (404, error),
            (421, not_leader),
            (503, "not json"),
            (200, "not json"),
        ]);
        let client = Client::new(&args).unwrap();
        let get = |path| client.get::<Response>(path);
        let written = get("/v1/x").unwrap();
        assert_eq!((written.view.generation, written.view.placement), (3, None));
        assert_eq!(written.json, r#"{"generation":3,"placement":null}"#);
        let refused = get("/v1/x").unwrap_err();
        assert_eq!(refused.exit_code(), EXIT_REFUSED);
        assert!(refused.to_string().contains("unknown_backend"), "{refused}");
        let moved = get("/v1/x").unwrap_err();
        assert_eq!(moved.exit_code(), EXIT_UNAVAILABLE);
        assert!(
            moved.to_string().contains("retry with --api http://h:7900"),
            "{moved}"
        );
        let failed = get("/v1/x").unwrap_err();
        assert_eq!(failed.exit_code(), EXIT_UNAVAILABLE);
        assert!(failed.to_string().contains("(no message)"), "{failed}");
        let garbled = get("/v1/x").unwrap_err();
        assert!(garbled.to_string().contains("bad_answer"), "{garbled}");
    }

    #[test]
    fn an_unreachable_daemon_is_unavailable() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let args = ApiArgs {
            api: format!("http://{closed}"),
            token_file: None,
            json: false,
        };
        let e = Client::new(&args)
            .unwrap()
            .get::<Response>("/v1/status")
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);
        let text = e.to_string();
        assert!(
            text.contains(&format!("http://{closed}/v1/status")) && text.contains("refused"),
            "{text}"
        );
        let bad = ApiArgs {
            api: "https://x".into(),
            ..args
        };
        assert_eq!(Client::new(&bad).err().unwrap().exit_code(), EXIT_USAGE);
    }
}
