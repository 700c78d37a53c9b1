//! Services, backends and static session placements: the part of a configuration that is
//! replicated state ([`ConfigTables`]), the names sessions are known by ([`SessionRef`]), and
//! the rules that tie them together.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use shardline_common::{
    consts::{MAX_RING_SIZE, QUIC_DEFAULT_SERVER_ID_LEN, QUIC_ROTATIONS},
    quic::CidLayout,
};

use super::{name::ServiceName, Config};

mod validate;
pub use validate::validate;

/// How a service finds sessions and request keys.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// The shardline header at the start of the UDP payload.
    Header,
    /// Session = client address, key = 5-tuple hash.
    Flow,
    /// QUIC (UDP only): connection ids carrying a server id go to that backend; otherwise
    /// session = client address, key = hash of the destination connection id.
    Quic,
}

/// How packets reach backends.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// IPIP / IP6IP6 to the backend's address.
    #[default]
    Encap,
    /// MAC rewrite only (backends on this segment holding the VIP).
    L2dsr,
}

/// Where a backend's next-hop MAC comes from.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NextHop {
    /// The configured `mac`.
    #[default]
    Static,
    /// `bpf_fib_lookup` on the backend's address (`mac`, if set, as the fallback).
    Fib,
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Udp => 17,
            Self::Tcp => 6,
        }
    }
}

/// Gives each enum `as_str` and `Display` by its serde name, so tables print what the
/// configuration and the API's JSON say.
macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name the configuration and the API use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(SessionMode { Header => "header", Flow => "flow", Quic => "quic" });
named!(ForwardMode { Encap => "encap", L2dsr => "l2dsr" });
named!(NextHop { Static => "static", Fib => "fib" });
named!(Protocol { Udp => "udp", Tcp => "tcp" });

/// Outer source addresses of encapsulated packets.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Encap {
    /// IPv4 source of IPIP packets (required if any backend has `ipv4` and a service encaps).
    pub source_v4: Option<Ipv4Addr>,
    /// IPv6 source of IP6IP6 packets.
    pub source_v6: Option<Ipv6Addr>,
    /// IPIP sources as a prefix instead of `source_v4`: each packet leaves from an address in
    /// it picked by the packet's hash, so a backend's RSS spreads the tunnelled flows over its
    /// queues (Katran's `IPIP_V4_PREFIX`).
    pub source_v4_prefix: Option<crate::Ipv4Prefix>,
}

impl Encap {
    /// The IPIP source address and the bits of it the packet's hash replaces (all zero: a
    /// fixed source), as the dataplane's globals carry them; `None` with neither set.
    pub fn ipip_source(&self) -> Option<([u8; 4], [u8; 4])> {
        match (self.source_v4_prefix, self.source_v4) {
            (Some(p), _) => Some((p.addr.octets(), p.host_mask())),
            (None, Some(a)) => Some((a.octets(), [0; 4])),
            (None, None) => None,
        }
    }
}

/// What the dataplane does with ICMP to a VIP (`[icmp]`). Errors quoting a flow a VIP sent
/// always go to that flow's backend; this switches what is optional.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IcmpConfig {
    /// Answer ICMP / ICMPv6 echo requests to a VIP in the dataplane (default on, as Katran
    /// does); off, they pass to the balancer host's stack.
    #[serde(default = "echo_reply_default")]
    pub echo_reply: bool,
    /// Answer a client packet that would exceed the interface MTU once encapsulated with ICMP
    /// "fragmentation needed" / ICMPv6 "packet too big" carrying the usable MTU (default on,
    /// as Katran does); off, it is forwarded as it is (and lost if the link cannot carry it).
    #[serde(default = "too_big_reply_default")]
    pub too_big_reply: bool,
}

fn echo_reply_default() -> bool {
    true
}

fn too_big_reply_default() -> bool {
    true
}

impl Default for IcmpConfig {
    fn default() -> Self {
        Self {
            echo_reply: echo_reply_default(),
            too_big_reply: too_big_reply_default(),
        }
    }
}

/// One virtual service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Name, referenced by sessions.
    pub name: String,
    /// Virtual IP.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: Protocol,
    /// `header` (UDP only) or `flow`.
    pub mode: SessionMode,
    /// `encap` (default) or `l2dsr`.
    #[serde(default)]
    pub forward: ForwardMode,
    /// `quic` mode: octets of the server id in connection ids, 1 to 4 (default 2).
    pub server_id_len: Option<u8>,
    /// `quic` mode: QUIC-LB config generation (default 0); connection ids carry it mod 7 as
    /// their config rotation. Bump it when changing `server_id_len`.
    pub cid_generation: Option<u32>,
    /// The service's pool: the backends that serve it, each an id or `{ id, weight }` (the
    /// weight in this service's ring; default the backend's own weight). Absent: every backend
    /// serves the service through the default table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<PoolMember>>,
    /// Slots of the pool's Maglev ring, a prime up to 65,537 (default: the smallest of 251,
    /// 509, 1,021, … 65,537 with at least 100 slots per member). Needs `backends`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_size: Option<u32>,
    /// How the health checker probes the service on each backend, besides the agent's
    /// `/health` (default: not probed).
    #[serde(default)]
    pub probe: Option<ServiceProbe>,
    /// Which way the probe travels (default `auto`: the data path where it can).
    #[serde(default, skip_serializing_if = "ProbePath::is_auto")]
    pub probe_path: ProbePath,
    /// `http` probes: the path they GET (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_http_path: Option<String>,
    /// `http` probes: the one status that passes (default: any 2xx or 3xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_http_status: Option<u16>,
}

impl ServiceConfig {
    /// Whether the probe travels the data path: encapsulated to the backend with the VIP as
    /// inner destination, as the balancer forwards the service's packets (`probe_path`
    /// `datapath`, or `auto` for a tcp or udp probe of an encapsulating service). An `http`
    /// probe takes it only when asked (`datapath`): its TCP connection leaves by the prober
    /// host's route to the VIP, which a host may not have.
    pub fn probes_on_data_path(&self) -> bool {
        match self.probe_path {
            ProbePath::Datapath => true,
            ProbePath::Direct => false,
            ProbePath::Auto => {
                self.data_path_probe_refusal().is_none()
                    && matches!(self.probe, Some(ServiceProbe::Tcp | ServiceProbe::Udp))
            }
        }
    }

    /// Why this service's probe cannot travel the data path, if it cannot.
    pub fn data_path_probe_refusal(&self) -> Option<&'static str> {
        if self.forward != ForwardMode::Encap {
            Some("only encapsulating services (forward = \"encap\") are probed on the data path")
        } else {
            None
        }
    }

    /// The path an `http` probe GETs.
    pub fn probe_http_path(&self) -> &str {
        self.probe_http_path.as_deref().unwrap_or("/")
    }
}

/// Whether `path` may stand in an HTTP request line: absolute, visible ASCII, no spaces.
fn is_request_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

/// Which way a service probe travels.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProbePath {
    /// The data path where the service allows it, else direct.
    #[default]
    Auto,
    /// Encapsulated to the backend with the VIP as the inner destination, as Katran's
    /// healthcheck forwarding does: it proves the backend decapsulates and serves the VIP.
    Datapath,
    /// Straight to the backend's own address and the service port.
    Direct,
}

impl ProbePath {
    /// The default, left out when the configuration is written back.
    pub fn is_auto(&self) -> bool {
        *self == Self::Auto
    }
}

/// A service probe: what the health checker sends to each backend for a service.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProbe {
    /// A TCP connect that completes.
    Tcp,
    /// A UDP datagram that gets any answer.
    Udp,
    /// `GET` of `probe_http_path` answered with the expected status (any 2xx or 3xx by
    /// default).
    Http,
}

/// One member of a service's pool: a backend id, or a backend id with its weight in the pool.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PoolMember {
    /// The backend, at its own weight.
    Id(u32),
    /// The backend at `weight` in this service (0 drains it from this service only).
    Weighted {
        /// Backend id.
        id: u32,
        /// Weight in this service's ring.
        weight: u32,
    },
}

impl PoolMember {
    /// The backend id.
    pub fn id(&self) -> u32 {
        match *self {
            Self::Id(id) | Self::Weighted { id, .. } => id,
        }
    }

    /// The weight in the pool, given the backend's own weight.
    pub fn weight(&self, own: u32) -> u32 {
        match *self {
            Self::Id(_) => own,
            Self::Weighted { weight, .. } => weight,
        }
    }
}

/// Ring sizes a pool gets by default: primes, each about twice the one before.
const RING_SIZES: [u32; 9] = [251, 509, 1_021, 2_039, 4_093, 8_191, 16_381, 32_749, 65_537];

/// The default ring size of a pool of `members` backends: at least 100 slots per member
/// (Maglev's balance within about 1 %), at most the default table's 65,537.
pub fn default_ring_size(members: usize) -> u32 {
    let want = members.saturating_mul(100) as u64;
    RING_SIZES
        .iter()
        .copied()
        .find(|&n| u64::from(n) >= want)
        .unwrap_or(MAX_RING_SIZE)
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

impl ServiceConfig {
    /// The ids of the service's pool, `None` when every backend serves it.
    pub fn pool_ids(&self) -> Option<Vec<u32>> {
        self.backends
            .as_ref()
            .map(|pool| pool.iter().map(PoolMember::id).collect())
    }

    /// Whether backend `id` serves this service (always, for a service without a pool).
    pub fn served_by(&self, id: u32) -> bool {
        self.backends
            .as_ref()
            .is_none_or(|pool| pool.iter().any(|m| m.id() == id))
    }

    /// Slots of the pool's ring (0 for a service without a pool).
    pub fn ring_slots(&self) -> u32 {
        match &self.backends {
            Some(pool) => self
                .ring_size
                .unwrap_or_else(|| default_ring_size(pool.len())),
            None => 0,
        }
    }
}

impl ServiceConfig {
    /// How the servers of a `quic` service lay out their connection ids; `None` for other modes.
    pub fn cid_layout(&self) -> Option<CidLayout> {
        (self.mode == SessionMode::Quic).then(|| CidLayout {
            rotation: (self.cid_generation.unwrap_or(0) % QUIC_ROTATIONS) as u8,
            server_id_len: self.server_id_len.unwrap_or(QUIC_DEFAULT_SERVER_ID_LEN),
        })
    }
}

/// One backend.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Id, `0..4096`, unique.
    pub id: u32,
    /// IPv4 address (IPIP destination).
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address (IP6IP6 destination).
    pub ipv6: Option<Ipv6Addr>,
    /// MAC of the next hop towards it, `aa:bb:cc:dd:ee:ff`; with `nexthop = "fib"`, the
    /// fallback when the FIB has no answer, and optional (empty: none, such packets drop).
    #[serde(default)]
    pub mac: String,
    /// Where the next hop's MAC comes from: `static` (`mac`, the default) or `fib` (the
    /// kernel's routing table and neighbours, looked up per packet).
    #[serde(default)]
    pub nexthop: NextHop,
    /// Relative weight in the default table (0 drains it). Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Its agent's `/health` address (`host:port`), probed by the health checker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Load (packets per second) it can carry; overrides what its agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<f64>,
}

fn default_weight() -> u32 {
    1
}

/// A session placed on a fixed shard set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Service name.
    pub service: String,
    /// Session id (header mode) or client address (flow mode).
    pub session: SessionId,
    /// Backend ids, at most 16.
    pub backends: Vec<u32>,
}

/// A session as written in the config: a number (header mode) or a client address (flow mode).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SessionId {
    /// Header-mode session id.
    Id(u64),
    /// Flow-mode client address.
    Addr(IpAddr),
}

/// A session, named as operators and applications name it: service name and session number
/// (header mode: the session id; flow and quic mode: the client address's hash).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionRef {
    /// Service name (shared with every other reference to the service: see [`ServiceName`]).
    pub service: ServiceName,
    /// Session number.
    pub session: u64,
}

impl std::fmt::Display for SessionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.service, self.session)
    }
}

/// The session number a configured session id stands for.
pub fn session_number(id: &SessionId) -> u64 {
    match id {
        SessionId::Id(n) => *n,
        SessionId::Addr(a) => {
            shardline_common::hash::addr_hash(&shardline_common::maps::ip_addr(*a))
        }
    }
}

/// The part of a configuration file that is replicated state: what the tables are built from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigTables {
    /// Encapsulation sources.
    pub encap: Encap,
    /// Flow stickiness window, seconds.
    pub flow_idle_secs: u32,
    /// ICMP options (absent from records written before it existed: the defaults).
    #[serde(default)]
    pub icmp: IcmpConfig,
    /// Services.
    pub services: Vec<ServiceConfig>,
    /// Backends.
    pub backends: Vec<BackendConfig>,
    /// Static placements.
    pub sessions: Vec<SessionConfig>,
}

impl ConfigTables {
    /// The replicated part of a (validated) configuration.
    pub fn of(config: &Config) -> Self {
        Self {
            encap: config.encap.clone(),
            flow_idle_secs: config.flow_idle_secs,
            icmp: config.icmp.clone(),
            services: config.services.clone(),
            backends: config.backends.clone(),
            sessions: config.sessions.clone(),
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "{text:?} is not a MAC address like 02:00:00:00:00:01"
        ));
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{text:?} is not a MAC address like 02:00:00:00:00:01"))?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        let serde_name = |v: serde_json::Value| v.as_str().unwrap().to_owned();
        for m in [SessionMode::Header, SessionMode::Flow, SessionMode::Quic] {
            assert_eq!(m.to_string(), serde_name(serde_json::json!(m)));
        }
        for f in [ForwardMode::Encap, ForwardMode::L2dsr] {
            assert_eq!(f.to_string(), serde_name(serde_json::json!(f)));
        }
        for p in [Protocol::Udp, Protocol::Tcp] {
            assert_eq!(p.to_string(), serde_name(serde_json::json!(p)));
        }
    }
}
