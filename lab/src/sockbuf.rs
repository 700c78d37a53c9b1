//! Receive buffers for the lab's busy UDP sockets. The default (`net.core.rmem_default`,
//! about 208 KiB, a few hundred small datagrams) overflows when a backend's echo or the load's
//! receiving thread is kept off the CPU for a fraction of a second under a ramp of thousands of
//! requests a second, and the kernel then drops datagrams silently (`RcvbufErrors`). A server
//! sized for its load sets a larger buffer; the lab's do too.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

/// Receive buffer of the lab's busy UDP sockets: seconds of the lab's highest rate.
pub const BUSY_UDP_RCVBUF: usize = 8 << 20;

/// Gives `socket` a receive buffer of `bytes`: past `net.core.rmem_max` when run as root
/// (`SO_RCVBUFFORCE`, as the lab is), else as much of it as that limit allows.
pub fn grow_receive_buffer<S: AsFd + AsRawFd>(socket: &S, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid descriptor borrowed for the call, and a pointer to a c_int with its size.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced == 0 {
        return Ok(());
    }
    socket2::SockRef::from(socket).set_recv_buffer_size(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_gets_at_least_the_default_buffer_and_as_root_all_it_asks() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .expect("read");
        grow_receive_buffer(&socket, BUSY_UDP_RCVBUF).expect("grow");
        let after = socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .expect("read");
        assert!(after >= before, "{before} -> {after}");
        if nix::unistd::geteuid().is_root() {
            // The kernel doubles the value for its bookkeeping.
            assert!(after >= BUSY_UDP_RCVBUF, "{after}");
        }
    }
}
