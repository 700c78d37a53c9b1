//! The cluster lab's network: one data segment (bridge `br0`) joining the client, the three
//! load balancers and the backends, and a separate peer segment (bridge `br1`) the load
//! balancers' Raft and API traffic use, so a partition cuts the control plane only. The client
//! reaches the VIPs through a multipath route over the three load balancers with an L4 hash, as
//! an ECMP router spreads flows.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{
    netns::{Netns, NetnsError},
    topology::{client_alias4, join_backend, CLIENT4, CLIENT6, CLIENT_MAC, CLIENT_MTU, VIP4, VIP6},
};

/// IPv4 address of load balancer `node` (1-based) on the data segment; node 1 has the
/// single-node lab's [`crate::topology::LB4`].
pub fn lb4(node: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + node as u8)
}

/// IPv6 address of load balancer `node` on the data segment.
pub fn lb6(node: u64) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1 + node as u16)
}

/// MAC of load balancer `node`'s data interface.
pub fn lb_mac(node: u64) -> String {
    format!("02:77:00:00:00:{:02x}", 1 + node)
}

/// Address of load balancer `node` on the peer segment (Raft, forwarded writes).
pub fn peer4(node: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 1, node as u8)
}

/// The namespaces of a cluster lab, removed (with their interfaces) when dropped.
pub struct ClusterNet {
    /// The switch holding both bridges.
    pub switch: Netns,
    /// The client.
    pub client: Netns,
    /// Load balancer `i + 1` at index `i`.
    pub lbs: Vec<Netns>,
    /// Backend `i + 1` at index `i`.
    pub backends: Vec<Netns>,
}

impl ClusterNet {
    /// Builds the network of lab `tag`: `nodes` load balancers, `backends` backends and
    /// `aliases` extra client addresses.
    pub fn build(tag: &str, nodes: u64, backends: u32, aliases: u32) -> Result<Self, NetnsError> {
        // `join_backend` finds the switch by this name.
        let switch = Netns::create(&format!("sl-sw-{tag}"))?;
        for bridge in ["br0", "br1"] {
            switch.ip(&["link", "add", bridge, "type", "bridge"])?;
            switch.ip(&["link", "set", bridge, "up"])?;
        }
        let client = Netns::create(&format!("sl-client-{tag}"))?;
        plug(
            &switch,
            &client,
            ("p-client", "br0"),
            "eth0",
            Some(CLIENT_MAC),
        )?;
        let mut net = Self {
            switch,
            client,
            lbs: Vec::new(),
            backends: Vec::new(),
        };
        for node in 1..=nodes {
            let ns = Netns::create(&format!("sl-lb{node}-{tag}"))?;
            let data = format!("p-lb{node}");
            plug(
                &net.switch,
                &ns,
                (&data, "br0"),
                "eth0",
                Some(&lb_mac(node)),
            )?;
            plug(&net.switch, &ns, (&peer_port(node), "br1"), "peer0", None)?;
            ns.ip(&["addr", "add", &format!("{}/24", lb4(node)), "dev", "eth0"])?;
            let v6 = format!("{}/64", lb6(node));
            ns.ip(&["-6", "addr", "add", &v6, "dev", "eth0", "nodad"])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", peer4(node)),
                "dev",
                "peer0",
            ])?;
            net.lbs.push(ns);
        }
        for id in 1..=backends {
            net.backends.push(join_backend(tag, id, aliases)?);
        }
        net.configure_client(nodes, aliases)?;
        Ok(net)
    }

    /// The client's addresses, static neighbours for every load balancer, and the multipath
    /// routes to the VIPs hashing on L4 (`fib_multipath_hash_policy = 1`).
    fn configure_client(&self, nodes: u64, aliases: u32) -> Result<(), NetnsError> {
        let c = &self.client;
        c.ip(&["addr", "add", &format!("{CLIENT4}/24"), "dev", "eth0"])?;
        let v6 = format!("{CLIENT6}/64");
        c.ip(&["-6", "addr", "add", &v6, "dev", "eth0", "nodad"])?;
        for i in 1..=aliases {
            let alias = format!("{}/24", client_alias4(i));
            c.ip(&["addr", "add", &alias, "dev", "eth0"])?;
        }
        c.ip(&["link", "set", "eth0", "mtu", CLIENT_MTU])?;
        // XDP rewrites frames after the stack left their checksums to the NIC.
        c.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
        c.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1",
            ],
        )?;
        for node in 1..=nodes {
            for addr in [lb4(node).to_string(), lb6(node).to_string()] {
                let mac = lb_mac(node);
                let args = ["neigh", "replace", &addr, "lladdr", &mac, "dev", "eth0"];
                c.ip(&[&args[..], &["nud", "permanent"]].concat())?;
            }
        }
        let route = |family: &str, vip: String, hop: &dyn Fn(u64) -> String| {
            let mut args = vec![family.to_owned(), "route".into(), "add".into(), vip];
            for node in 1..=nodes {
                args.extend(["nexthop", "via", &hop(node), "dev", "eth0"].map(String::from));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            c.ip(&args)
        };
        route("-4", format!("{VIP4}/32"), &|n| lb4(n).to_string())?;
        route("-6", format!("{VIP6}/128"), &|n| lb6(n).to_string())?;
        Ok(())
    }

    /// Cuts load balancer `node` off the peer segment, or reconnects it. Its data interface
    /// stays up: the dataplane keeps forwarding by the tables it has.
    pub fn partition(&self, node: u64, cut: bool) -> Result<(), NetnsError> {
        let state = if cut { "down" } else { "up" };
        self.switch
            .ip(&["link", "set", &peer_port(node), state])
            .map(drop)
    }
}

/// The switch port of load balancer `node` on the peer segment.
fn peer_port(node: u64) -> String {
    format!("q-lb{node}")
}

/// Connects `ns` to `bridge` in `switch`: `inner` (with `mac`, if given) inside it, `port` in
/// the switch.
fn plug(
    switch: &Netns,
    ns: &Netns,
    (port, bridge): (&str, &str),
    inner: &str,
    mac: Option<&str>,
) -> Result<(), NetnsError> {
    let peer = ["peer", "name", inner, "netns", ns.name()];
    switch.ip(&[&["link", "add", port, "type", "veth"][..], &peer].concat())?;
    switch.ip(&["link", "set", port, "master", bridge, "up"])?;
    if let Some(mac) = mac {
        ns.ip(&["link", "set", inner, "address", mac])?;
    }
    ns.ip(&["link", "set", inner, "up"]).map(drop)
}
