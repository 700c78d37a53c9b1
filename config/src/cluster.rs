//! The daemon's optional `[cluster]` section: who this node is, where its peers are, where its
//! Raft log lives and how quickly it gives up on a silent leader.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// One node of the initial membership.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Node id, unique in the cluster, at least 1.
    pub id: u64,
    /// `host:port` its peer endpoint listens on.
    pub addr: String,
}

/// The `[cluster]` section. Without one the daemon is a cluster of one: node 1, no listener,
/// its log under [`default_data_dir`] of the pin directory.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id (default 1).
    #[serde(default = "default_node_id")]
    pub node_id: u64,
    /// Address the peer endpoint binds (raft RPCs, forwarded writes and reads, status).
    pub listen: Option<SocketAddr>,
    /// Address peers reach this node at, if not `listen` (e.g. `listen` is `0.0.0.0:7946`).
    pub advertise: Option<String>,
    /// Where the Raft log, vote and snapshots are kept.
    pub data_dir: Option<PathBuf>,
    /// The initial voters, this node included. Empty: a cluster of this node alone. Every
    /// listed node bootstraps with the same list; a node started with `join = true` waits to
    /// be added by the leader instead.
    #[serde(default)]
    pub members: Vec<PeerConfig>,
    /// Start empty and wait to be added (`add_member`) instead of bootstrapping.
    #[serde(default)]
    pub join: bool,
    /// Heartbeat period, milliseconds (default 250).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election,
    /// milliseconds (default 1000 to 2000).
    #[serde(default = "default_election_ms")]
    pub election_timeout_ms: [u64; 2],
    /// Log entries after which a snapshot is taken and older entries are purged (default 5000).
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_logs: u64,
    /// File holding the cluster secret every peer request carries (the same on every node;
    /// one secret a line: the first is sent, any is accepted, for rotation). Required when
    /// the node listens, unless `insecure = true`.
    pub secret_file: Option<PathBuf>,
    /// Run the peer endpoint without a secret (default false): only on a peer network no one
    /// else reaches.
    #[serde(default)]
    pub insecure: bool,
}

fn default_node_id() -> u64 {
    1
}

fn default_heartbeat_ms() -> u64 {
    250
}

fn default_election_ms() -> [u64; 2] {
    [1000, 2000]
}

fn default_snapshot_logs() -> u64 {
    5000
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            listen: None,
            advertise: None,
            data_dir: None,
            members: Vec::new(),
            join: false,
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_ms: default_election_ms(),
            snapshot_logs: default_snapshot_logs(),
            secret_file: None,
            insecure: false,
        }
    }
}

/// Where a node keeps its Raft files when `data_dir` is not set: one directory per pin
/// directory, so two daemons on one machine (the lab, the tests) never share a log.
pub fn default_data_dir(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shardline".into());
    PathBuf::from("/var/lib/shardline").join(name)
}

impl ClusterConfig {
    /// The address peers reach this node at (`advertise`, else `listen`, else none).
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .or_else(|| self.listen.map(|a| a.to_string()))
            .unwrap_or_default()
    }

    /// The data directory, defaulting by pin directory.
    pub fn data_dir(&self, pin_dir: &Path) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| default_data_dir(pin_dir))
    }

    /// Checks the section; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            field: format!("cluster.{field}"),
            problem,
        };
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be at least 1".into()));
        }
        let [min, max] = self.election_timeout_ms;
        if min < 100 || max <= min {
            return Err(invalid(
                "election_timeout_ms",
                format!("needs [min, max] with 100 <= min < max, got [{min}, {max}]"),
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 2 > min {
            return Err(invalid(
                "heartbeat_ms",
                format!("must be above 0 and at most half the election timeout ({min} ms)"),
            ));
        }
        if self.snapshot_logs == 0 {
            return Err(invalid("snapshot_logs", "must be at least 1".into()));
        }
        let needs_listen = !self.members.is_empty() || self.join;
        if needs_listen && self.listen.is_none() {
            return Err(invalid(
                "listen",
                "required with `members` or `join` (peers must reach this node)".into(),
            ));
        }
        if self.secret_file.is_some() && self.insecure {
            return Err(invalid(
                "insecure",
                "cannot be true with `secret_file` set; choose a secret or none".into(),
            ));
        }
        if self.listen.is_some() && self.secret_file.is_none() && !self.insecure {
            return Err(invalid(
                "secret_file",
                "required when `listen` is set: peers prove they belong with a shared secret \
                 (the same file on every node, e.g. 32 random bytes in hex); or set \
                 `insecure = true` on a peer network no one else reaches"
                    .into(),
            ));
        }
        let mut ids = HashSet::new();
        for (i, p) in self.members.iter().enumerate() {
            if p.id == 0 || !ids.insert(p.id) {
                return Err(invalid(
                    &format!("members[{i}].id"),
                    format!("{} is zero or listed twice", p.id),
                ));
            }
            if p.addr
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(invalid(
                    &format!("members[{i}].addr"),
                    format!("{:?} is not host:port", p.addr),
                ));
            }
        }
        if !self.members.is_empty() && !ids.contains(&self.node_id) {
            return Err(invalid(
                "members",
                format!(
                    "must list this node ({}) too; a new node uses `join = true`",
                    self.node_id
                ),
            ));
        }
        if self.join && !self.members.is_empty() {
            return Err(invalid(
                "join",
                "a joining node takes its membership from the leader; drop `members`".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn parse(cluster: &str) -> Result<Config, String> {
        Config::parse(&format!("interface = \"lo\"\n[cluster]\n{cluster}"), "test")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn no_section_is_a_cluster_of_one_with_a_data_dir_per_pin_dir() {
        let config = Config::parse("interface = \"lo\"\npin_dir = \"/sys/fs/bpf/x\"", "t").unwrap();
        let cluster = config.cluster();
        assert_eq!(cluster.node_id, 1);
        assert!(cluster.members.is_empty() && cluster.listen.is_none());
        assert_eq!(
            cluster.data_dir(&config.pin_dir),
            std::path::Path::new("/var/lib/shardline/x")
        );
    }

    #[test]
    fn errors_name_the_field() {
        let members = "listen = \"10.0.0.1:7946\"\ninsecure = true\nmembers = [{ id = 1, addr = \"10.0.0.1:7946\" }, { id = 2, addr = \"10.0.0.2:7946\" }]";
        assert!(parse(members).is_ok());
        for (text, field) in [
            ("node_id = 0", "cluster.node_id"),
            ("listen = \"10.0.0.1:7946\"", "cluster.secret_file"),
            (
                "listen = \"10.0.0.1:7946\"\nsecret_file = \"/s\"\ninsecure = true",
                "cluster.insecure",
            ),
            (
                "election_timeout_ms = [500, 400]",
                "cluster.election_timeout_ms",
            ),
            ("heartbeat_ms = 900", "cluster.heartbeat_ms"),
            ("members = [{ id = 1, addr = \"a:1\" }]", "cluster.listen"),
            (
                "insecure = true\nlisten = \"10.0.0.1:7946\"\nmembers = [{ id = 2, addr = \"b:1\" }]",
                "cluster.members",
            ),
            (
                "insecure = true\nlisten = \"10.0.0.1:7946\"\nmembers = [{ id = 1, addr = \"nope\" }]",
                "cluster.members[0].addr",
            ),
            (
                "insecure = true\nlisten = \"10.0.0.1:7946\"\njoin = true\nmembers = [{ id = 1, addr = \"a:1\" }]",
                "cluster.join",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(&format!("`{field}`")), "{text}: {err}");
        }
    }
}
