//! The two-arm lab: the load balancer receives clients on `eth0` (the client segment, bridge
//! `br0`) and reaches the backends through `eth1` on a segment of their own (bridge `br1`),
//! as a balancer with a client-facing and a backend-facing NIC does. The backends are
//! `nexthop = "fib"` with no MAC in the configuration: the balancer's FIB finds them (routes
//! and neighbours the kernel resolved), and their packets leave by `XDP_REDIRECT` into `eth1`.
//! The backends answer the clients directly through the balancer's namespace, which routes
//! (forwarding on) like the router a backend network would have.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::{backend_mac, backend_ns_name, plug_into, serve_vips, Topology};
use crate::netns::{Netns, NetnsError};

/// The balancer's backend-facing interface (in `egress_interfaces`).
pub const ARM_IFACE: &str = "eth1";
/// The switch port at the other end of [`ARM_IFACE`]: it runs an `XDP_PASS` program, without
/// which a veth drops the frames redirected into its peer.
pub const ARM_PORT: &str = "p-lb2";
/// MAC of [`ARM_IFACE`].
pub const ARM_MAC: &str = "02:78:00:00:00:02";
/// The balancer's address on the backend segment: the backends' default route.
pub const ARM_LB4: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
/// Its IPv6 address there.
pub const ARM_LB6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 2);

/// IPv4 address of backend `id` on the backend segment.
pub fn arm_backend4(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 10 + id as u8)
}

/// IPv6 address of backend `id` on the backend segment.
pub fn arm_backend6(id: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0x10 + id as u16)
}

/// How long [`resolve_backends`] waits for the neighbours.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Topology {
    /// Builds the two-arm lab with `backends` backends and `aliases` extra client addresses.
    pub fn build_two_arm(tag: &str, backends: u32, aliases: u32) -> Result<Self, NetnsError> {
        let mut topo = Self::build(tag, 0, aliases)?;
        topo.switch.ip(&["link", "add", "br1", "type", "bridge"])?;
        topo.switch.ip(&["link", "set", "br1", "up"])?;
        plug_into(
            &topo.switch,
            "br1",
            &topo.lb,
            (ARM_PORT, ARM_IFACE),
            ARM_MAC,
            None,
        )?;
        let lb = &topo.lb;
        lb.ip(&["addr", "add", &format!("{ARM_LB4}/24"), "dev", ARM_IFACE])?;
        lb.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ARM_LB6}/64"),
            "dev",
            ARM_IFACE,
            "nodad",
        ])?;
        // The FIB answers for a forwarding receiving interface only, and the backends' answers
        // to the clients are routed through here (from the VIP: no reverse-path filter).
        lb.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.conf.all.forwarding=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.eth0.rp_filter=0",
                "net.ipv4.conf.eth1.rp_filter=0",
            ],
        )?;
        for id in 1..=backends {
            let ns = Netns::create(&backend_ns_name(tag, id))?;
            plug_into(
                &topo.switch,
                "br1",
                &ns,
                (&format!("p-b{id}"), "eth0"),
                &backend_mac(id),
                None,
            )?;
            configure_arm_backend(&ns, id)?;
            topo.backends.push(ns);
        }
        Ok(topo)
    }
}

/// Backend `id` on the backend segment: its addresses, the VIPs, and the balancer's namespace
/// as its router towards the clients.
fn configure_arm_backend(ns: &Netns, id: u32) -> Result<(), NetnsError> {
    let v4 = format!("{}/24", arm_backend4(id));
    let v6 = format!("{}/64", arm_backend6(id));
    ns.ip(&["addr", "add", &v4, "dev", "eth0"])?;
    ns.ip(&["-6", "addr", "add", &v6, "dev", "eth0", "nodad"])?;
    serve_vips(ns)?;
    ns.ip(&["route", "add", "default", "via", &ARM_LB4.to_string()])?;
    ns.ip(&["-6", "route", "add", "default", "via", &ARM_LB6.to_string()])?;
    Ok(())
}

/// Has the balancer's kernel resolve every backend's neighbour entry on the backend segment,
/// as its own traffic to them (health probes) does in production: one UDP datagram to each
/// address (the discard port) from inside `lb`, then waits until `ip neigh` shows them all
/// resolved. The FIB answers only for resolved neighbours; nothing here writes a MAC.
pub fn resolve_backends(lb: &Netns, backends: u32) -> Result<(), NetnsError> {
    let addrs: Vec<SocketAddr> = (1..=backends)
        .flat_map(|id| {
            [
                SocketAddr::new(arm_backend4(id).into(), 9),
                SocketAddr::new(arm_backend6(id).into(), 9),
            ]
        })
        .collect();
    let sent = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), NetnsError> {
            lb.enter_current_thread()?;
            let io = |source| NetnsError::Enter {
                name: lb.name().to_owned(),
                source,
            };
            let v4 = UdpSocket::bind("0.0.0.0:0").map_err(io)?;
            let v6 = UdpSocket::bind("[::]:0").map_err(io)?;
            for a in &addrs {
                let socket = if a.is_ipv4() { &v4 } else { &v6 };
                // An unanswered datagram is fine: the neighbour is resolved to send it.
                let _ = socket.send_to(b"", a);
            }
            Ok(())
        })
        .join()
        .unwrap_or(Ok(()))
    });
    sent?;
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    loop {
        let out = lb.ip(&["neigh", "show", "dev", ARM_IFACE])?;
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let missing: Vec<String> = addrs
            .iter()
            .map(|a| a.ip().to_string())
            .filter(|ip| !resolved(&table, ip))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NetnsError::Failed {
                command: format!("resolving the backends' neighbours on {ARM_IFACE}"),
                stderr: format!("unresolved after {RESOLVE_TIMEOUT:?}: {missing:?}\n{table}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `ip neigh show` output `table` holds a resolved entry (with a link-layer address)
/// for `ip`.
fn resolved(table: &str, ip: &str) -> bool {
    table.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(ip) && line.contains("lladdr") && !line.contains("FAILED")
    })
}
