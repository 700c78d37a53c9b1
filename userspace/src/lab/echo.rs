//! The lab's backend service: UDP and TCP echo servers that prefix every answer with the
//! backend's id, so the client learns which backend served each request.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    thread,
};

/// Length of a TCP request; the answer is [`ID_LEN`] + this.
pub const TCP_REQUEST_LEN: usize = 32;
/// Length of the backend-id prefix of every answer (u32, big endian).
pub const ID_LEN: usize = 4;

/// Serves UDP on every `udp` port and TCP on every `tcp` port of every address in `bind` until
/// the process is killed. Binding the VIPs themselves makes UDP answers leave from the VIP (an
/// unbound socket would answer from the host's own address, which the client would not accept).
/// Sockets are bound before this returns, so a caller can signal readiness.
pub fn serve(
    id: u32,
    bind: &[IpAddr],
    udp: &[u16],
    tcp: &[u16],
) -> std::io::Result<Vec<thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for addr in bind {
        for port in udp {
            let socket = UdpSocket::bind(SocketAddr::new(*addr, *port))?;
            handles.push(thread::spawn(move || udp_loop(id, socket)));
        }
        for port in tcp {
            let listener = TcpListener::bind(SocketAddr::new(*addr, *port))?;
            handles.push(thread::spawn(move || tcp_accept(id, listener)));
        }
    }
    Ok(handles)
}

fn udp_loop(id: u32, socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf[ID_LEN..]) else {
            continue;
        };
        buf[..ID_LEN].copy_from_slice(&id.to_be_bytes());
        let _ = socket.send_to(&buf[..ID_LEN + n], peer);
    }
}

fn tcp_accept(id: u32, listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut stream = stream;
            let mut req = [0u8; TCP_REQUEST_LEN];
            while stream.read_exact(&mut req).is_ok() {
                let mut answer = id.to_be_bytes().to_vec();
                answer.extend_from_slice(&req);
                if stream.write_all(&answer).is_err() {
                    break;
                }
            }
        });
    }
}
