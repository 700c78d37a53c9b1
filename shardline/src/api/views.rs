//! Every JSON shape the API answers with or takes, in one place. The handlers serialise these
//! very types and the operator CLI deserialises them, so the two cannot drift; each is
//! defined beside the handler (or the state) it belongs to.

pub use super::{
    backends::{
        BackendView, DrainProgress, DrainView, PoolMemberView, PoolWeight, ServiceView, Weight,
    },
    cluster::{DataplaneTotals, NewMember, StatusView},
    error::{ErrorBody, ErrorDetail, LeaderHint},
    owners::{Owner, OwnerTable, Owners, PreviousOwner},
    sessions::{Placement, SessionDetail, SessionView, StateValue},
};
pub use crate::{
    agent::health::ProbeState,
    config::BackendConfig,
    control::insight::{ReshardEvent, Sample, SessionInsight},
    state::{ClusterStatus, Member, Response, SessionMeta},
};
