//! Bodies of the HTTP API's writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `PUT .../placement`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// 1 to 16 distinct backend ids.
    pub backends: Vec<u32>,
}

/// A critical-state value: UTF-8 text in `value`, or any bytes as `hex`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateValue {
    /// The key (in answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value as text (answers: absent if it is not UTF-8).
    #[serde(default)]
    pub value: Option<String>,
    /// The value as lowercase hex.
    #[serde(default)]
    pub hex: Option<String>,
}

/// Body of `PUT /v1/backends/{id}/weight`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    /// New weight (0 takes it out of the default table).
    pub weight: u32,
}

/// Body of `PUT /v1/services/{service}/backends/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolWeight {
    /// Weight in the service's ring (absent: the backend's own weight; 0 drains it from this
    /// service only).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// Body of `POST /v1/cluster/members`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// Node id.
    pub id: u64,
    /// Address peers reach it at (`host:port`).
    pub addr: String,
    /// Promote it to voter once caught up (default); `false` keeps it a learner.
    #[serde(default = "voter")]
    pub voter: bool,
}

fn voter() -> bool {
    true
}

/// What the application and the profiler said about a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// Class giving a new session its prior, e.g. `interactive`, `bulk`, `stream`.
    pub class: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
