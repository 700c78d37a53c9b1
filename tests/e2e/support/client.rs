//! The lab's client side: running code inside the client namespace, and reading an echo
//! backend's answer to one datagram.

use std::{
    io,
    net::UdpSocket,
    time::{Duration, Instant},
};

use shardline_lab::{
    echo::{split_prefix, ID_LEN},
    Lab,
};

/// Runs `f` on a thread inside `lab`'s client namespace and returns what it returns (this
/// thread stays where it is); a panic inside `f` panics here.
pub fn in_client<T: Send>(lab: &Lab, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                lab.topology
                    .client
                    .enter_current_thread()
                    .expect("entering the client namespace");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The backend id of the echo of `sent` on `socket`, if one arrives within `wait`: answers to
/// other datagrams are skipped, and so are errors the kernel queues ahead of the answer (a
/// late ICMP error). `socket` needs a read timeout no longer than `wait`.
pub fn echo_answer(socket: &UdpSocket, sent: &[u8], wait: Duration) -> Option<u32> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; ID_LEN + sent.len() + 1];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) if n == ID_LEN + sent.len() && buf[ID_LEN..n] == *sent => {
                let prefix = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                return Some(split_prefix(prefix).0);
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => {}
        }
    }
    None
}
