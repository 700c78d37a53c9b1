//! The `http` probe's exchange, the same whichever way the connection went (straight to the
//! backend, or to the VIP on the data path): one `GET` of the service's `probe_http_path` as
//! HTTP/1.0 with `Connection: close`, then the status line alone is read and judged. The body
//! is never read: the status says whether the backend serves, and a probe stays a few packets.

use std::{net::SocketAddr, sync::Arc};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::ServiceConfig;

/// The most of an answer read while looking for the end of its status line.
const STATUS_LINE_MAX: usize = 1024;

/// What an `http` probe asks and which answer passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// The path it GETs (`probe_http_path`, default `/`).
    pub path: Arc<str>,
    /// The one status that passes (`probe_http_status`); `None`: any 2xx or 3xx.
    pub status: Option<u16>,
}

impl Default for HttpCheck {
    /// `GET /`, passing on any 2xx or 3xx.
    fn default() -> Self {
        Self {
            path: "/".into(),
            status: None,
        }
    }
}

impl HttpCheck {
    /// The check `service` configures.
    pub fn of(service: &ServiceConfig) -> Self {
        Self {
            path: service.probe_http_path().into(),
            status: service.probe_http_status,
        }
    }

    /// The request, naming `host` (the VIP, or the backend's address, and the port).
    pub fn request(&self, host: SocketAddr) -> String {
        format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: shardline-probe\r\n\
             Connection: close\r\n\r\n",
            self.path
        )
    }

    /// Whether `status` passes; the error says what was expected.
    pub fn judge(&self, status: u16) -> Result<(), String> {
        match self.status {
            Some(want) if want == status => Ok(()),
            Some(want) => Err(format!("status {status}, expected {want}")),
            None if (200..400).contains(&status) => Ok(()),
            None => Err(format!("status {status}, expected 2xx or 3xx")),
        }
    }

    /// Sends the request on `stream` (connected to `host`), reads the status line and judges
    /// it; the error says what failed.
    pub async fn exchange<S>(&self, stream: &mut S, host: SocketAddr) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        stream
            .write_all(self.request(host).as_bytes())
            .await
            .map_err(|e| format!("sending GET {}: {e}", self.path))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading the answer to GET {}: {e}", self.path))?;
            if n == 0 {
                return Err(format!(
                    "connection closed before a status line ({} octets)",
                    head.len()
                ));
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(status) = status_of(&head)? {
                return self.judge(status);
            }
            if head.len() > STATUS_LINE_MAX {
                return Err(format!("no status line in {STATUS_LINE_MAX} octets"));
            }
        }
    }
}

/// The status of an answer that starts with `head`: `None` while its first line is incomplete,
/// an error when that line is not `HTTP/1.x NNN …`.
pub fn status_of(head: &[u8]) -> Result<Option<u16>, String> {
    let Some(end) = head.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&head[..end]);
    let mut words = line.split(' ');
    let version = words.next().unwrap_or("");
    let code = words.next().unwrap_or("");
    let status = code.parse::<u16>().ok().filter(|s| (100..=599).contains(s));
    match status {
        Some(s) if version.starts_with("HTTP/1.") && code.len() == 3 => Ok(Some(s)),
        _ => Err(format!("not an HTTP status line: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    fn check(status: Option<u16>) -> HttpCheck {
        HttpCheck {
            path: "/healthz".into(),
            status,
        }
    }

    #[test]
    fn the_request_names_the_path_and_the_host_and_closes() {
        let host: SocketAddr = "[fd77:100::1]:8080".parse().unwrap();
        let r = check(None).request(host);
        assert!(r.starts_with("GET /healthz HTTP/1.0\r\n"), "{r}");
        assert!(r.contains("\r\nHost: [fd77:100::1]:8080\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
    }

    #[test]
    fn by_default_2xx_and_3xx_pass_and_an_expected_status_is_the_only_one() {
        let any = check(None);
        for ok in [200, 204, 301, 399] {
            assert_eq!(any.judge(ok), Ok(()), "{ok}");
        }
        for bad in [100, 199, 400, 404, 500, 503] {
            let e = any.judge(bad).unwrap_err();
            assert!(e.contains(&bad.to_string()) && e.contains("2xx"), "{e}");
        }
        let exact = check(Some(204));
        assert_eq!(exact.judge(204), Ok(()));
        let e = exact.judge(200).unwrap_err();
        assert!(e.contains("status 200, expected 204"), "{e}");
    }

    #[test]
    fn a_status_line_is_read_when_whole_and_refused_when_malformed() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Ok(Some(200)));
        assert_eq!(status_of(b"HTTP/1.0 503\r\nServer: x"), Ok(Some(503)));
        assert_eq!(status_of(b"HTTP/1.1 20"), Ok(None), "incomplete");
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 abc OK\r\n",
            b"HTTP/1.1 700 Odd\r\n",
            b"HTTP/2 200\r\n",
        ] {
            assert!(
                status_of(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Serves one answer on the far end of a duplex pipe after reading the whole request.
    async fn served(answer: &'static [u8], check: HttpCheck) -> Result<(), String> {
        let (mut near, mut far) = duplex(4096);
        let host: SocketAddr = "10.77.100.1:8080".parse().unwrap();
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.ends_with(b"\r\n\r\n") {
                let n = far.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ends with an empty line");
                got.extend_from_slice(&buf[..n]);
            }
            // Split across writes, as a slow server would.
            for part in answer.chunks(5) {
                if far.write_all(part).await.is_err() {
                    break;
                }
            }
            String::from_utf8(got).unwrap()
        });
        let outcome = check.exchange(&mut near, host).await;
        drop(near);
        let request = server.await.unwrap();
        assert!(
            request.starts_with(&format!("GET {} ", check.path)),
            "{request}"
        );
        outcome
    }

    #[tokio::test]
    async fn the_exchange_passes_on_the_expected_status_only() {
        let ok = served(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            check(None),
        )
        .await;
        assert_eq!(ok, Ok(()));
        let e = served(b"HTTP/1.1 500 Internal\r\n\r\n", check(None))
            .await
            .unwrap_err();
        assert!(e.contains("status 500"), "{e}");
        let e = served(b"HTTP/1.1 200 OK\r\n\r\n", check(Some(204)))
            .await
            .unwrap_err();
        assert!(e.contains("expected 204"), "{e}");
        let e = served(b"HTTP/1.1 2", check(None)).await.unwrap_err();
        assert!(e.contains("closed before a status line"), "{e}");
    }
}
