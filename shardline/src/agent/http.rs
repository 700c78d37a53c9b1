//! A minimal HTTP/1.1 client for the agent's pushes, the daemon's health probes and the
//! autoscale webhook: one request per connection, JSON bodies, plain `http://` only. Enough
//! for talking to our own axum servers and to a webhook on the local network without pulling
//! in a full client stack.

use std::time::Duration;

use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Why a request failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("{addr}: {source}")]
    Io {
        /// The peer.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout {
        /// The peer.
        addr: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The answer is not HTTP.
    #[error("{addr}: malformed HTTP answer")]
    Malformed {
        /// The peer.
        addr: String,
    },
    /// A URL this client cannot use.
    #[error("url {0:?}: only http://host:port/path is supported")]
    Url(String),
}

/// Splits `http://host:port/path` into (`host:port`, `/path`).
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.into()));
    }
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

/// Sends one request to `addr` (`host:port`) and returns the status and body.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), HttpError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            addr: addr.into(),
            timeout,
        })?
        .map_err(|source| HttpError::Io {
            addr: addr.into(),
            source,
        })?;
    parse_answer(&answer).ok_or_else(|| HttpError::Malformed { addr: addr.into() })
}

/// Sends `value` as JSON with POST.
pub async fn post_json<T: serde::Serialize>(
    addr: &str,
    path: &str,
    value: &T,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), HttpError> {
    let body = serde_json::to_vec(value).expect("serializable");
    request(addr, "POST", path, Some(&body), timeout).await
}

fn parse_answer(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &answer[end + 4..];
    // Our servers answer `Connection: close` requests with a length or a chunked body; only
    // the length form is decoded, a chunked body is returned as is.
    Some((status, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://10.0.0.1:9000/hook").unwrap(),
            ("10.0.0.1:9000".into(), "/hook".into())
        );
        assert_eq!(
            split_url("http://example").unwrap(),
            ("example:80".into(), "/".into())
        );
        assert!(split_url("https://x/").is_err());
    }

    #[test]
    fn answers() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse_answer(a), Some((200, b"ok".to_vec())));
        assert_eq!(parse_answer(b"garbage"), None);
    }
}
