//! The JSON bodies that cross shardline's control channels, and the strict decoder every
//! endpoint reads them with.
//!
//! - [`bodies`]: the HTTP API's write bodies (placements, weights, members, session metadata).
//! - [`agent`]: an agent's reports and registration, and the application's load file.
//! - [`strict`]: one JSON value of a type, any field the type does not take refused by name.
//!
//! A leaf crate (serde and the configuration's types only), so the fuzz targets decode exactly
//! what the daemon decodes without building the daemon.

pub mod agent;
pub mod bodies;
pub mod strict;

pub use agent::{AgentReport, AppLoad, Registration, Resources};
pub use bodies::{NewMember, Placement, PoolWeight, SessionMeta, StateValue, Weight};
