//! shardline-config: the daemon's TOML configuration: interface, services, backends and static session
//! placements, validated so that an error names the field and says what is wrong.

use std::path::{Path, PathBuf};

pub mod api;
pub mod cluster;
pub mod control;
pub mod name;
pub mod prefix;
pub mod reference;
pub mod services;

pub use self::{
    api::ApiConfig,
    name::ServiceName,
    prefix::Ipv4Prefix,
    services::{
        default_ring_size, parse_mac, session_number, BackendConfig, ConfigTables, Encap,
        ForwardMode, IcmpConfig, NextHop, PoolMember, ProbePath, Protocol, ServiceConfig,
        ServiceProbe, SessionConfig, SessionId, SessionMode, SessionRef,
    },
};

use serde::{Deserialize, Serialize};

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

/// Reads the file at `path` and hands its text, and its name for errors, to `parse`.
pub(crate) fn load_with<T>(
    path: &Path,
    parse: impl FnOnce(&str, &str) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
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

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interface the XDP program is attached to.
    pub interface: String,
    /// Attach mode (default `auto`).
    #[serde(default)]
    pub xdp_mode: XdpAttachMode,
    /// Interfaces besides `interface` that packets to FIB-routed backends may leave by
    /// (`XDP_REDIRECT` through the `TX_PORTS` devmap) when the FIB's next hop is out of them.
    #[serde(default)]
    pub egress_interfaces: Vec<String>,
    /// Directory on bpffs for pinned maps and the program link.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Seconds a flow-mode connection keeps its backend after its last packet, across table
    /// changes (0 disables stickiness). Default 30.
    #[serde(default = "default_flow_idle_secs")]
    pub flow_idle_secs: u32,
    /// Seconds the previous owners of a re-placed session stay published after the move, so
    /// the new owner can pull the moved keys' data from them (docs/handoff.md). Default 10; 0
    /// publishes no handoff.
    #[serde(default = "default_handoff_window_secs")]
    pub handoff_window_secs: u32,
    /// Outer source addresses for encapsulation.
    #[serde(default)]
    pub encap: Encap,
    /// ICMP to the VIPs (`[icmp]`).
    #[serde(default)]
    pub icmp: IcmpConfig,
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

fn default_flow_idle_secs() -> u32 {
    shardline_common::consts::DEFAULT_FLOW_IDLE_SECS
}

/// The handoff window unless configured (`handoff_window_secs`), seconds.
pub const DEFAULT_HANDOFF_WINDOW_SECS: u32 = 10;

/// The longest handoff window accepted, seconds: an hour. A previous owner is asked to keep a
/// moved key's data for the window, so a longer one is a misconfiguration, not a wish.
pub const MAX_HANDOFF_WINDOW_SECS: u32 = 3600;

fn default_handoff_window_secs() -> u32 {
    DEFAULT_HANDOFF_WINDOW_SECS
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/shardline")
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_with(path, Self::parse)
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
        for (i, name) in self.egress_interfaces.iter().enumerate() {
            if name.is_empty() || name.len() >= 16 {
                return Err(invalid(
                    format!("egress_interfaces[{i}]"),
                    format!("{name:?} is not an interface name (1 to 15 characters)"),
                ));
            }
        }
        if self.egress_interfaces.len() > shardline_common::nexthop::MAX_TX_PORTS as usize {
            return Err(invalid(
                "egress_interfaces",
                format!(
                    "at most {} interfaces",
                    shardline_common::nexthop::MAX_TX_PORTS
                ),
            ));
        }
        if self.handoff_window_secs > MAX_HANDOFF_WINDOW_SECS {
            return Err(invalid(
                "handoff_window_secs",
                format!(
                    "must be 0 to {MAX_HANDOFF_WINDOW_SECS} seconds (0: publish no handoff), got {}",
                    self.handoff_window_secs
                ),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        services::validate(&self.services, &self.backends, &self.sessions, &self.encap)?;
        self.api.validate()?;
        if let Some(control) = &self.control {
            control.validate()?;
        }
        Ok(())
    }

    /// How long the previous owners of a moved session stay published.
    pub fn handoff_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.handoff_window_secs))
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
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example {
    use super::Config;

    const EXAMPLE: &str = include_str!("../../shardline.example.toml");

    #[test]
    fn the_shipped_example_config_is_valid() {
        Config::parse(EXAMPLE, "shardline.example.toml").unwrap();
    }

    /// Programs (the lab, tests) build a `Config` and write it with `toml::to_string`: what
    /// they write must be what the daemon reads back, optional sections and all.
    #[test]
    fn a_serialised_config_parses_back_to_the_same_value() {
        let mut config = Config::parse(EXAMPLE, "shardline.example.toml").unwrap();
        config.cluster = Some(super::cluster::ClusterConfig {
            listen: Some("127.0.0.1:7946".parse().unwrap()),
            members: vec![super::cluster::PeerConfig {
                id: 1,
                addr: "127.0.0.1:7946".into(),
            }],
            secret_file: Some("/etc/shardline/cluster-secret".into()),
            ..Default::default()
        });
        config.services[0].forward = super::ForwardMode::L2dsr;
        config.sessions.push(super::SessionConfig {
            service: "web".into(),
            session: super::SessionId::Addr("192.0.2.7".parse().unwrap()),
            backends: vec![2],
        });
        config.api.token_file = Some("/etc/shardline/token".into());
        let minimal = Config::parse("interface = \"eth0\"", "minimal").unwrap();
        for config in [config, minimal] {
            let text = toml::to_string(&config).unwrap();
            let back = Config::parse(&text, "serialised").unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, config, "{text}");
        }
    }
}
