//! The daemon's TOML configuration: interface, services, backends and static session
//! placements, validated so that an error names the field and says what is wrong.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

pub mod cluster;
pub mod control;

use serde::{Deserialize, Serialize};
use shardline_common::{
    consts::{
        MAX_BACKENDS, MAX_SHARDS, QUIC_DEFAULT_SERVER_ID_LEN, QUIC_MAX_SERVER_ID_LEN,
        QUIC_ROTATIONS,
    },
    quic::CidLayout,
};

/// Errors reading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has fields of the wrong type.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the line and the field.
        message: String,
    },
    /// A field has a value the daemon cannot use.
    #[error("invalid config: `{field}`: {problem}")]
    Invalid {
        /// Path of the field, e.g. `services[0].mode`.
        field: String,
        /// What is wrong and what would be right.
        problem: String,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

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

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interface the XDP program is attached to.
    pub interface: String,
    /// Attach mode (default `auto`).
    #[serde(default)]
    pub xdp_mode: XdpAttachMode,
    /// Directory on bpffs for pinned maps and the program link.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Seconds a flow-mode connection keeps its backend after its last packet, across table
    /// changes (0 disables stickiness). Default 30.
    #[serde(default = "default_flow_idle_secs")]
    pub flow_idle_secs: u32,
    /// Outer source addresses for encapsulation.
    #[serde(default)]
    pub encap: Encap,
    /// Virtual services.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Backends.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Sessions placed on a fixed shard set.
    #[serde(default)]
    pub sessions: Vec<SessionConfig>,
    /// The predictive control loop (`[control]`); absent: no loop, no agents endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<control::ControlConfig>,
    /// Raft membership and storage (none: a cluster of one).
    #[serde(default)]
    pub cluster: Option<cluster::ClusterConfig>,
    /// The HTTP API (`/v1/...`, `/metrics`).
    #[serde(default)]
    pub api: ApiConfig,
}

/// The HTTP API's address and credentials.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the API listens on (default `127.0.0.1:7900`).
    #[serde(default = "default_api_listen")]
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token writes and state reads need (surrounding whitespace is
    /// ignored). The environment variable `SHARDLINE_API_TOKEN` overrides it. With neither,
    /// the API is read-only.
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted, bytes (default 65536).
    #[serde(default = "default_api_body_limit")]
    pub body_limit: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            token_file: None,
            body_limit: default_api_body_limit(),
        }
    }
}

fn default_api_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 7900))
}

fn default_api_body_limit() -> usize {
    64 * 1024
}

fn default_flow_idle_secs() -> u32 {
    shardline_common::consts::DEFAULT_FLOW_IDLE_SECS
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/shardline")
}

/// Outer source addresses of encapsulated packets.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Encap {
    /// IPv4 source of IPIP packets (required if any backend has `ipv4` and a service encaps).
    pub source_v4: Option<Ipv4Addr>,
    /// IPv6 source of IP6IP6 packets.
    pub source_v6: Option<Ipv6Addr>,
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
    /// MAC of the next hop towards it, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
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

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every cross-field rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interface.is_empty() {
            return Err(invalid("interface", "must name a network interface"));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("services[{i}].name"),
                    format!("duplicate name {:?}", s.name),
                ));
            }
            if s.port == 0 {
                return Err(invalid(format!("services[{i}].port"), "must be 1-65535"));
            }
            if s.mode == SessionMode::Header && s.protocol != Protocol::Udp {
                return Err(invalid(
                    format!("services[{i}].mode"),
                    "header mode needs protocol = \"udp\"",
                ));
            }
            self.validate_quic(i, s)?;
            if !keys.insert((s.vip, s.port, s.protocol.number())) {
                return Err(invalid(
                    format!("services[{i}]"),
                    "another service has the same vip, port and protocol",
                ));
            }
            if s.forward == ForwardMode::Encap {
                let needs = match s.vip {
                    IpAddr::V4(_) if self.encap.source_v4.is_none() => Some("encap.source_v4"),
                    IpAddr::V6(_) if self.encap.source_v6.is_none() => Some("encap.source_v6"),
                    _ => None,
                };
                if let Some(field) = needs {
                    return Err(invalid(
                        field,
                        format!("required by services[{i}] (forward = \"encap\")"),
                    ));
                }
            }
        }
        let mut ids = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            if b.id >= MAX_BACKENDS {
                return Err(invalid(
                    format!("backends[{i}].id"),
                    format!("must be below {MAX_BACKENDS}"),
                ));
            }
            if !ids.insert(b.id) {
                return Err(invalid(
                    format!("backends[{i}].id"),
                    format!("duplicate id {}", b.id),
                ));
            }
            parse_mac(&b.mac).map_err(|p| invalid(format!("backends[{i}].mac"), p))?;
            if b.ipv4.is_none() && b.ipv6.is_none() {
                return Err(invalid(
                    format!("backends[{i}]"),
                    "needs ipv4, ipv6 or both",
                ));
            }
        }
        self.validate_api()?;
        let services: HashMap<&str, &ServiceConfig> =
            self.services.iter().map(|s| (s.name.as_str(), s)).collect();
        for (i, s) in self.sessions.iter().enumerate() {
            let Some(service) = services.get(s.service.as_str()) else {
                return Err(invalid(
                    format!("sessions[{i}].service"),
                    format!("no service named {:?}", s.service),
                ));
            };
            match (&s.session, service.mode) {
                (SessionId::Id(_), SessionMode::Header)
                | (SessionId::Addr(_), SessionMode::Flow | SessionMode::Quic) => {}
                (SessionId::Id(_), SessionMode::Flow | SessionMode::Quic) => {
                    return Err(invalid(
                        format!("sessions[{i}].session"),
                        "a flow- or quic-mode session is a client address",
                    ));
                }
                (SessionId::Addr(_), SessionMode::Header) => {
                    return Err(invalid(
                        format!("sessions[{i}].session"),
                        "a header-mode session is a number",
                    ));
                }
            }
            if s.backends.is_empty() || s.backends.len() > MAX_SHARDS {
                return Err(invalid(
                    format!("sessions[{i}].backends"),
                    format!("needs 1 to {MAX_SHARDS} backend ids"),
                ));
            }
            let mut seen = HashSet::new();
            for id in &s.backends {
                if !ids.contains(id) {
                    return Err(invalid(
                        format!("sessions[{i}].backends"),
                        format!("unknown backend id {id}"),
                    ));
                }
                if !seen.insert(id) {
                    return Err(invalid(
                        format!("sessions[{i}].backends"),
                        format!("backend id {id} listed twice"),
                    ));
                }
            }
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.capacity.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                return Err(invalid(
                    format!("backends[{i}].capacity"),
                    "must be a positive number of packets per second",
                ));
            }
        }
        if let Some(control) = &self.control {
            control.validate()?;
        }
        Ok(())
    }

    /// The `[cluster]` section, or the defaults of a cluster of one.
    pub fn cluster(&self) -> cluster::ClusterConfig {
        self.cluster.clone().unwrap_or_default()
    }

    /// How the backends learn their server ids (`shardline quic-ids`, the daemon's log): per
    /// quic service, the layout its servers must issue connection ids in, and each backend's
    /// server id (its backend id).
    pub fn describe_quic_ids(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let Some(layout) = s.cid_layout() else {
                continue;
            };
            let len = usize::from(layout.server_id_len);
            out += &format!(
                "service {} ({}:{}/udp): config rotation {}, server id {} octets; a connection id \
                 of N octets starts 0x{:02x} + (N - 1), then the server id, then the nonce\n",
                s.name,
                s.vip,
                s.port,
                layout.rotation,
                len,
                layout.rotation << 5,
            );
            for b in &self.backends {
                let id = &b.id.to_be_bytes()[4 - len..];
                let hex: String = id.iter().map(|x| format!("{x:02x}")).collect();
                out += &format!("  backend {}: server id 0x{hex}\n", b.id);
            }
        }
        out
    }

    /// The API's limits: a body limit that fits a session's state and is not absurd, and a
    /// token file that names a file (whether it is readable is checked when the API starts).
    fn validate_api(&self) -> Result<(), ConfigError> {
        if !(1024..=16 * 1024 * 1024).contains(&self.api.body_limit) {
            return Err(invalid(
                "api.body_limit",
                "must be 1024 to 16777216 bytes (a session's state alone needs 4096)",
            ));
        }
        if self
            .api
            .token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "api.token_file",
                "must name a file (leave it out to rely on SHARDLINE_API_TOKEN)",
            ));
        }
        Ok(())
    }

    /// The rules of `quic` services: UDP, a server id length that holds every backend id, and
    /// the QUIC fields on no other mode.
    fn validate_quic(&self, i: usize, s: &ServiceConfig) -> Result<(), ConfigError> {
        let Some(layout) = s.cid_layout() else {
            if s.server_id_len.is_some() || s.cid_generation.is_some() {
                return Err(invalid(
                    format!("services[{i}]"),
                    "server_id_len and cid_generation need mode = \"quic\"",
                ));
            }
            return Ok(());
        };
        if s.protocol != Protocol::Udp {
            return Err(invalid(
                format!("services[{i}].mode"),
                "quic mode needs protocol = \"udp\"",
            ));
        }
        let len = usize::from(layout.server_id_len);
        if !(1..=QUIC_MAX_SERVER_ID_LEN).contains(&len) {
            return Err(invalid(
                format!("services[{i}].server_id_len"),
                format!("must be 1 to {QUIC_MAX_SERVER_ID_LEN}"),
            ));
        }
        if let Some(b) = self
            .backends
            .iter()
            .find(|b| len < 4 && b.id >> (8 * len) != 0)
        {
            return Err(invalid(
                format!("services[{i}].server_id_len"),
                format!("{len} octets cannot hold backend id {}", b.id),
            ));
        }
        Ok(())
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

    const GOOD: &str = r#"
        interface = "eth0"
        [encap]
        source_v4 = "10.0.0.2"
        [[services]]
        name = "kv"
        vip = "10.100.0.1"
        port = 7000
        protocol = "udp"
        mode = "header"
        [[backends]]
        id = 1
        ipv4 = "10.0.0.11"
        mac = "02:00:00:00:00:11"
        [[sessions]]
        service = "kv"
        session = 42
        backends = [1]
    "#;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_good_config() {
        let c = Config::parse(GOOD, "test.toml").unwrap();
        assert_eq!(c.backends[0].weight, 1);
        assert_eq!(c.xdp_mode, XdpAttachMode::Auto);
        assert_eq!(c.sessions[0].session, SessionId::Id(42));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(&GOOD.replace("mode = \"header\"", "mode = \"sideways\"")).contains("mode"));
        assert!(
            err(&GOOD.replace("protocol = \"udp\"", "protocol = \"tcp\""))
                .contains("services[0].mode")
        );
        assert!(err(&GOOD.replace("02:00:00:00:00:11", "nope")).contains("backends[0].mac"));
        assert!(
            err(&GOOD.replace("backends = [1]", "backends = [7]")).contains("unknown backend id 7")
        );
        assert!(err(&GOOD.replace("session = 42", "session = \"10.0.0.1\""))
            .contains("sessions[0].session"));
        assert!(err(&GOOD.replace("source_v4 = \"10.0.0.2\"", "")).contains("encap.source_v4"));
        assert!(err(&GOOD.replace("port = 7000", "port = 70000")).contains("port"));
        assert!(err(&format!("{GOOD}\nbogus = 1")).contains("bogus"));
    }

    #[test]
    fn api_section_has_defaults_and_errors_name_its_fields() {
        let c = Config::parse(GOOD, "test.toml").unwrap();
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:7900");
        assert_eq!((c.api.token_file.as_ref(), c.api.body_limit), (None, 65536));
        let with = |api: &str| format!("{GOOD}\n[api]\n{api}\n");
        let c = Config::parse(&with("listen = \"0.0.0.0:80\"\ntoken_file = \"/t\""), "t").unwrap();
        assert_eq!(c.api.token_file.as_deref(), Some(Path::new("/t")));
        let e = err(&with("listen = \"localhost\""));
        assert!(e.contains("listen"), "{e}");
        let e = err(&with("body_limit = 10"));
        assert!(e.contains("api.body_limit") && e.contains("1024"), "{e}");
        let e = err(&with("token_file = \"\""));
        assert!(e.contains("api.token_file"), "{e}");
        let e = err(&with("tokn_file = \"/t\""));
        assert!(e.contains("tokn_file"), "{e}");
    }

    #[test]
    fn quic_services_are_udp_with_a_server_id_that_fits() {
        let quic = GOOD.replace("mode = \"header\"", "mode = \"quic\"");
        let quic = quic.replace("session = 42", "session = \"192.0.2.1\"");
        let c = Config::parse(&quic, "test.toml").unwrap();
        let layout = c.services[0].cid_layout().unwrap();
        assert_eq!((layout.rotation, layout.server_id_len), (0, 2));
        let gen = quic.replace("mode = \"quic\"", "mode = \"quic\"\ncid_generation = 9");
        let c = Config::parse(&gen, "test.toml").unwrap();
        assert_eq!(c.services[0].cid_layout().unwrap().rotation, 2);
        let ids = c.describe_quic_ids();
        assert!(
            ids.contains("config rotation 2, server id 2 octets"),
            "{ids}"
        );
        assert!(ids.contains("starts 0x40 + (N - 1)"), "{ids}");
        assert!(ids.contains("backend 1: server id 0x0001"), "{ids}");
        assert!(
            err(&quic.replace("protocol = \"udp\"", "protocol = \"tcp\""))
                .contains("quic mode needs protocol")
        );
        let one = quic.replace("mode = \"quic\"", "mode = \"quic\"\nserver_id_len = 1");
        assert!(err(&one.replace("id = 1", "id = 300")).contains("cannot hold backend id 300"));
        let five = quic.replace("mode = \"quic\"", "mode = \"quic\"\nserver_id_len = 5");
        assert!(err(&five).contains("services[0].server_id_len"));
        assert!(
            err(&GOOD.replace("mode = \"header\"", "mode = \"header\"\nserver_id_len = 2"))
                .contains("need mode = \"quic\"")
        );
        assert!(
            err(&quic.replace("session = \"192.0.2.1\"", "session = 1")).contains("client address")
        );
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../../shardline.example.toml");
        super::Config::parse(text, "shardline.example.toml").unwrap();
    }
}
