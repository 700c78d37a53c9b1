//! What an agent sends the daemon: its reports and its registration, and what the application
//! tells the agent about its own load.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shardline_config::BackendConfig;

/// What an application says about its own load (written by it, read by the agent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppLoad {
    /// Requests (packets) served per second.
    pub load: f64,
    /// Requests per second it can serve.
    pub capacity: f64,
    /// Whether it had to refuse work in the last second.
    pub saturated: bool,
    /// Requests per second it can serve of each service it names, where that differs from
    /// `capacity` (e.g. a heavier service). Optional: left out on the wire when empty, and a
    /// daemon that predates it ignores it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, f64>,
}

/// One agent report, pushed to the daemon every interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// The backend's id.
    pub backend: u32,
    /// Where the agent answers `/health` (`host:port`).
    pub agent: String,
    /// Host or cgroup resources.
    pub resources: Resources,
    /// The application's load and capacity, if it reports them.
    pub app: Option<AppLoad>,
    /// Saturated: the application refused work, or CPU or memory passed the agent's limit.
    pub saturated: bool,
}

impl AgentReport {
    /// Capacity the placement may count on (the application's; none if unreported).
    pub fn capacity(&self) -> Option<f64> {
        self.app.as_ref().map(|a| a.capacity).filter(|c| *c > 0.0)
    }

    /// Capacity the placement may count on for `service`'s shards, where the application
    /// reports one for that service (positive and finite; none otherwise).
    pub fn service_capacity(&self, service: &str) -> Option<f64> {
        let c = *self.app.as_ref()?.services.get(service)?;
        (c.is_finite() && c > 0.0).then_some(c)
    }

    /// Bytes per second the backend's network carries, if reported.
    pub fn net_capacity(&self) -> Option<f64> {
        Some(self.resources.net_capacity).filter(|c| c.is_finite() && *c > 0.0)
    }

    /// Bytes per second the backend's network carries now: the busier direction.
    pub fn net_load(&self) -> f64 {
        self.resources.rx_bps.max(self.resources.tx_bps)
    }
}

/// What the host (or cgroup) uses, between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Busy CPU, as a fraction of the CPUs available (0..1).
    pub cpu: f64,
    /// Memory in use, bytes.
    pub mem_used: u64,
    /// Memory available in total (the cgroup limit if any), bytes.
    pub mem_total: u64,
    /// Received bytes per second (all interfaces but lo).
    pub rx_bps: f64,
    /// Sent bytes per second.
    pub tx_bps: f64,
    /// Bytes per second the network carries each way (`--net-capacity`, else the sum of the
    /// interfaces' link speeds); 0 when unknown. Absent from older agents' reports.
    #[serde(default)]
    pub net_capacity: f64,
}

/// Body of `POST /v1/agents/register`: the backend, and the services whose pools it joins.
/// On the wire a registration without services is the plain [`BackendConfig`] (as agents
/// always sent it); with services it is `{"backend": {...}, "services": ["name", ...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The backend.
    pub backend: BackendConfig,
    /// Names of the services it serves (it joins their pools).
    pub services: Vec<String>,
}

/// The wire form of a [`Registration`] with services.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithServices {
    backend: BackendConfig,
    #[serde(default)]
    services: Vec<String>,
}

impl Serialize for Registration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.services.is_empty() {
            return self.backend.serialize(s);
        }
        WithServices {
            backend: self.backend.clone(),
            services: self.services.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Registration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        if value.get("backend").is_some() {
            let w: WithServices = serde_json::from_value(value).map_err(D::Error::custom)?;
            return Ok(Self {
                backend: w.backend,
                services: w.services,
            });
        }
        Ok(Self {
            backend: serde_json::from_value(value).map_err(D::Error::custom)?,
            services: Vec::new(),
        })
    }
}
