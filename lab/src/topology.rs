//! The lab's network: a client, a load balancer and N backends, each in its own namespace,
//! joined by a bridge in a switch namespace (one L2 segment, so `XDP_TX` out of the load
//! balancer reaches the backends and the backends answer the client directly). The two-arm
//! variant is in [`two_arm`]; [`wire`] swaps the bridge for an XDP forwarder, so every
//! interface is fed as a NIC feeds its driver.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netns::{Netns, NetnsError};

pub mod two_arm;
pub mod wire;

/// The VIP every backend holds on its loopback.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 77, 100, 1);
/// The IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 1);
/// The load balancer's address (also the IPIP source).
pub const LB4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The load balancer's IPv6 address.
pub const LB6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// The client's main address.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// MAC of the client's interface.
pub const CLIENT_MAC: &str = "02:77:00:00:00:01";
/// MAC of the load balancer's interface.
pub const LB_MAC: &str = "02:77:00:00:00:02";
/// MTU of the client: small enough that an encapsulated frame still fits the segment's 1500.
pub const CLIENT_MTU: &str = "1400";

/// What the client's MTU leaves under the segment's: room for the outer header (40 octets for
/// IP6IP6) and then some, as [`CLIENT_MTU`] does under 1500.
pub const CLIENT_MTU_MARGIN: u32 = 100;

/// The segment MTU of a jumbo lab ([`Topology::build_with_mtu`]): what data centres commonly run.
pub const JUMBO_MTU: u32 = 9000;

/// IPv4 address of backend `id` (1-based).
pub fn backend4(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + id as u8)
}

/// IPv6 address of backend `id`.
pub fn backend6(id: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10 + id as u16)
}

/// MAC of backend `id`'s interface.
pub fn backend_mac(id: u32) -> String {
    format!("02:77:00:00:00:{:02x}", 0x10 + id)
}

/// Extra client addresses, one per flow-mode session (flow sessions are client addresses).
pub fn client_alias4(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 100 + i as u8)
}

/// The namespaces of one lab, removed (with their interfaces) when dropped.
pub struct Topology {
    /// Unique tag of this lab (namespace names end with it).
    pub tag: String,
    /// The XDP forwarder when the segment is wired by XDP ([`Self::wire_by_xdp`]); dropped
    /// first (fields drop in order), before the namespaces.
    pub(crate) wire: std::sync::OnceLock<wire::XdpWire>,
    /// The switch namespace holding the bridge.
    pub switch: Netns,
    /// The client.
    pub client: Netns,
    /// The load balancer.
    pub lb: Netns,
    /// Backends, id `i + 1` at index `i`.
    pub backends: Vec<Netns>,
}

impl Topology {
    /// Builds the lab with `backends` backends and `aliases` extra client IPv4 addresses, on a
    /// 1500-octet segment.
    pub fn build(tag: &str, backends: u32, aliases: u32) -> Result<Self, NetnsError> {
        Self::build_with_mtu(tag, backends, aliases, None)
    }

    /// As [`Self::build`], with every link of the segment (both ends of every veth, so the
    /// bridge too) at `mtu` when given, e.g. [`JUMBO_MTU`], and the client [`CLIENT_MTU_MARGIN`]
    /// under it. Set before any XDP program attaches: a veth with XDP caps its peer's MTU.
    pub fn build_with_mtu(
        tag: &str,
        backends: u32,
        aliases: u32,
        mtu: Option<u32>,
    ) -> Result<Self, NetnsError> {
        let switch = Netns::create(&format!("sl-sw-{tag}"))?;
        // The bridge stands for a switch, which does not run the host's IP firewall on the
        // frames it switches; with br_netfilter built in (as here) every new namespace calls
        // the iptables hooks on bridged frames, which roughly doubled each bridge hop's cost.
        // `-e`: a kernel without br_netfilter has no such keys, and nothing to turn off.
        switch.exec(
            "sysctl",
            &[
                "-qew",
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-ip6tables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ],
        )?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let client = Netns::create(&format!("sl-client-{tag}"))?;
        let lb = Netns::create(&format!("sl-lb-{tag}"))?;
        let mut topo = Self {
            tag: tag.to_owned(),
            switch,
            client,
            lb,
            backends: Vec::new(),
            wire: std::sync::OnceLock::new(),
        };
        plug(&topo.switch, &topo.client, "p-client", CLIENT_MAC, mtu)?;
        plug(&topo.switch, &topo.lb, "p-lb", LB_MAC, mtu)?;
        for id in 1..=backends {
            let ns = Netns::create(&backend_ns_name(tag, id))?;
            plug(
                &topo.switch,
                &ns,
                &format!("p-b{id}"),
                &backend_mac(id),
                mtu,
            )?;
            topo.backends.push(ns);
        }

        let c = &topo.client;
        c.ip(&["addr", "add", &format!("{CLIENT4}/24"), "dev", "eth0"])?;
        c.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{CLIENT6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        for i in 1..=aliases {
            c.ip(&[
                "addr",
                "add",
                &format!("{}/24", client_alias4(i)),
                "dev",
                "eth0",
            ])?;
        }
        let client_mtu = mtu.map_or_else(
            || CLIENT_MTU.to_owned(),
            |m| (m - CLIENT_MTU_MARGIN).to_string(),
        );
        c.ip(&["link", "set", "eth0", "mtu", &client_mtu])?;
        c.ip(&[
            "route",
            "add",
            &format!("{VIP4}/32"),
            "via",
            &LB4.to_string(),
        ])?;
        c.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "via",
            &LB6.to_string(),
        ])?;
        // XDP rewrites frames after the stack left their checksums to the NIC: compute them in
        // software, or the backends drop the packets as corrupt.
        c.exec("ethtool", &["-K", "eth0", "tx", "off"])?;

        // Static neighbours: the lab's first request must not race address resolution.
        for addr in [LB4.to_string(), LB6.to_string()] {
            c.ip(&[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                LB_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        topo.lb
            .ip(&["addr", "add", &format!("{LB4}/24"), "dev", "eth0"])?;
        topo.lb.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{LB6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;

        for (i, ns) in topo.backends.iter().enumerate() {
            configure_backend(ns, i as u32 + 1, aliases)?;
        }
        Ok(topo)
    }

    /// All namespaces of the lab.
    pub fn all(&self) -> impl Iterator<Item = &Netns> {
        [&self.switch, &self.client, &self.lb]
            .into_iter()
            .chain(self.backends.iter())
    }
}

/// Connects `ns` to the bridge in `switch`: `eth0` (with `mac`) inside it, `port` in the
/// switch, both at `mtu` when given (else the veth default, 1500).
fn plug(
    switch: &Netns,
    ns: &Netns,
    port: &str,
    mac: &str,
    mtu: Option<u32>,
) -> Result<(), NetnsError> {
    plug_into(switch, "br0", ns, (port, "eth0"), mac, mtu)
}

/// Connects `ns` to `bridge` in `switch` by a veth: `ends.1` (with `mac`) inside `ns`, `ends.0`
/// in the switch, both at `mtu` when given.
pub(crate) fn plug_into(
    switch: &Netns,
    bridge: &str,
    ns: &Netns,
    (port, inner): (&str, &str),
    mac: &str,
    mtu: Option<u32>,
) -> Result<(), NetnsError> {
    switch.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        inner,
        "netns",
        ns.name(),
    ])?;
    if let Some(mtu) = mtu {
        let mtu = mtu.to_string();
        switch.ip(&["link", "set", port, "mtu", &mtu])?;
        ns.ip(&["link", "set", inner, "mtu", &mtu])?;
    }
    switch.ip(&["link", "set", port, "master", bridge, "up"])?;
    ns.ip(&["link", "set", inner, "address", mac, "up"])?;
    Ok(())
}

/// Makes a backend namespace answer for both VIPs (direct server return: the decapsulated
/// packet is addressed to a VIP): the VIPs on its loopback, and reverse-path filtering off, as
/// its replies leave from a VIP that is not on `eth0`.
pub(crate) fn serve_vips(ns: &Netns) -> Result<(), NetnsError> {
    ns.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{VIP6}/128"),
        "dev",
        "lo",
        "nodad",
    ])?;
    ns.exec(
        "sysctl",
        &[
            "-qw",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.eth0.rp_filter=0",
        ],
    )?;
    Ok(())
}

/// Gives backend `id`'s namespace its addresses, the VIPs, static neighbours for the client's
/// `aliases` addresses and loose reverse-path filtering.
pub fn configure_backend(ns: &Netns, id: u32, aliases: u32) -> Result<(), NetnsError> {
    ns.ip(&[
        "addr",
        "add",
        &format!("{}/24", backend4(id)),
        "dev",
        "eth0",
    ])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{}/64", backend6(id)),
        "dev",
        "eth0",
        "nodad",
    ])?;
    serve_vips(ns)?;
    let mut clients = vec![CLIENT4.to_string(), CLIENT6.to_string()];
    clients.extend((1..=aliases).map(|i| client_alias4(i).to_string()));
    for addr in &clients {
        ns.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            CLIENT_MAC,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// Name of backend `id`'s namespace in lab `tag`.
pub fn backend_ns_name(tag: &str, id: u32) -> String {
    format!("sl-b{id}-{tag}")
}

/// Adds backend `id` to the running lab `tag` (the autoscale hook's new backend): a namespace
/// plugged into the lab's bridge and configured like the others.
pub fn join_backend(tag: &str, id: u32, aliases: u32) -> Result<Netns, NetnsError> {
    let switch = Netns::adopt(&format!("sl-sw-{tag}"));
    let ns = Netns::create(&backend_ns_name(tag, id))?;
    let plugged = plug(&switch, &ns, &format!("p-b{id}"), &backend_mac(id), None)
        .and_then(|()| configure_backend(&ns, id, aliases));
    // The switch belongs to the lab: never delete it from here.
    std::mem::forget(switch);
    plugged?;
    Ok(ns)
}
