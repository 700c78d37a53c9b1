//! One HTTP/1.1 request from inside a network namespace, on a thread of its own (so the caller
//! stays where it is): how a test reaches a node's peer endpoint or API even while the node is
//! cut off from the others.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::netns::Netns;

/// What to send.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// A JSON body, if any.
    pub body: Option<String>,
    /// Extra headers, each ending in CRLF.
    pub headers: String,
    /// Bound on connecting, and on each read and write.
    pub timeout: Duration,
}

/// Sends `request` to `addr` from inside `ns`: the status and the body, whatever they are.
pub fn call_in(ns: &Netns, addr: SocketAddr, request: &Request) -> Result<(u16, String), String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_current_thread().map_err(|e| e.to_string())?;
            call(addr, request)
        })
        .join()
        .unwrap_or_else(|_| Err("the HTTP thread panicked".into()))
    })
}

/// Sends `request` to `addr` with `Connection: close`: the status and the body.
pub fn call(addr: SocketAddr, request: &Request) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, request.timeout)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let timeout = Some(request.timeout);
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| e.to_string())?;
    let (method, path, headers) = (request.method, request.path, &request.headers);
    let body = request.body.as_deref().unwrap_or("");
    let content = if request.body.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}{content}Connection: close\r\n\r\n{body}"
    );
    // A server may answer and close before reading a large body: write from a thread of its
    // own and read the answer meanwhile, so it is not lost to the reset that follows.
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sending = std::thread::spawn(move || writer.write_all(text.as_bytes()));
    let mut reply = Vec::new();
    let read = stream.read_to_end(&mut reply);
    let sent = sending.join();
    if reply.is_empty() {
        if let Ok(Err(e)) = sent {
            return Err(format!("writing to {addr}: {e}"));
        }
        read.map_err(|e| format!("reading from {addr}: {e}"))?;
    }
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer from {addr}{path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}
