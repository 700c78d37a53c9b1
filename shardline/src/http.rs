//! The HTTP client the agent's pushes, the daemon's health probes and the autoscale webhook
//! share: `reqwest` (the client the Raft peers use too), plain `http://`, JSON bodies, one
//! timeout per request covering connect, send and the whole answer. Errors name the peer
//! (`host:port`), so a log line says which agent or daemon did not answer.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::Serialize;
use thiserror::Error;

use crate::config::control::parse_http_url;

/// Why a request got no answer.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Connecting, sending or reading the answer failed.
    #[error("{peer}: {}", root_cause(.source))]
    Transport {
        /// The peer, `host:port`.
        peer: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// No whole answer within the timeout.
    #[error("{peer}: no answer within {timeout:?}")]
    Timeout {
        /// The peer, `host:port`.
        peer: String,
        /// The timeout.
        timeout: Duration,
    },
    /// A URL this client cannot use (what is wrong with it, naming it).
    #[error("unusable URL {0}")]
    Url(String),
}

/// An answer: its status and body, whatever the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// A connection-pooling client; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    inner: reqwest::Client,
    bearer: Option<crate::guard::Token>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client that ignores `HTTP_PROXY` and friends: it only talks to our own daemon,
    /// agents and a webhook on the local network, as the hand-written client it replaced did.
    pub fn new() -> Self {
        let inner = reqwest::Client::builder()
            .no_proxy()
            .build()
            // Building fails only for TLS or system resolver setup, and this client has neither.
            .expect("an HTTP client without TLS or proxies builds");
        Self {
            inner,
            bearer: None,
        }
    }

    /// This client sending `Authorization: Bearer TOKEN` with every request (none: without).
    pub fn with_bearer(mut self, token: Option<crate::guard::Token>) -> Self {
        self.bearer = token;
        self
    }

    /// `GET url`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, HttpError> {
        self.request(Method::GET, url, None::<&()>, timeout).await
    }

    /// `POST url` with `value` as JSON.
    pub async fn post_json<T: Serialize + ?Sized>(
        &self,
        url: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        self.request(Method::POST, url, Some(value), timeout).await
    }

    /// `PUT url` with `value` as JSON.
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        url: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        self.request(Method::PUT, url, Some(value), timeout).await
    }

    async fn request<T: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: Option<&T>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let parsed = parse_http_url(url).map_err(HttpError::Url)?;
        let peer = peer(&parsed);
        let fail = |source: reqwest::Error| {
            if source.is_timeout() {
                HttpError::Timeout {
                    peer: peer.clone(),
                    timeout,
                }
            } else {
                HttpError::Transport {
                    peer: peer.clone(),
                    source,
                }
            }
        };
        let mut request = self.inner.request(method, parsed).timeout(timeout);
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token.secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(fail)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(fail)?.to_vec();
        Ok(Answer { status, body })
    }
}

/// `host:port` of `url`, the port defaulting to 80.
fn peer(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    format!("{host}:{}", url.port_or_known_default().unwrap_or(80))
}

/// The innermost error: "connection refused" rather than "error sending request".
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_host_and_port() {
        let peer_of = |url: &str| peer(&parse_http_url(url).unwrap());
        assert_eq!(peer_of("http://10.0.0.1:9000/hook"), "10.0.0.1:9000");
        assert_eq!(peer_of("http://example"), "example:80");
        assert_eq!(peer_of("http://[::1]:7/"), "[::1]:7");
    }

    #[tokio::test]
    async fn answers_and_failures_name_the_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|body: axum::Json<serde_json::Value>| async move { body }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new();
        let second = Duration::from_secs(1);
        let answer = client.get(&format!("http://{addr}/ok"), second).await;
        assert_eq!(
            answer.unwrap(),
            Answer {
                status: 200,
                body: b"ok".to_vec()
            }
        );
        let sent = serde_json::json!({"backend": 3});
        let answer = client
            .post_json(&format!("http://{addr}/echo"), &sent, second)
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap(),
            sent
        );
        let missing = client.get(&format!("http://{addr}/nope"), second).await;
        assert_eq!(missing.unwrap().status, 404);
        let slow = client
            .get(&format!("http://{addr}/slow"), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(slow, HttpError::Timeout { .. }), "{slow}");
        assert!(slow.to_string().starts_with(&addr.to_string()), "{slow}");
        // A port nobody listens on: bind one, then close it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = client
            .get(&format!("http://{closed}/health"), second)
            .await
            .unwrap_err();
        assert!(matches!(refused, HttpError::Transport { .. }), "{refused}");
        assert!(
            refused.to_string().starts_with(&format!("{closed}: ")),
            "{refused}"
        );
    }
}
