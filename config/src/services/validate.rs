//! The rules that tie services, backends and static sessions together, checked when a
//! configuration is loaded or a table is replaced; every error names the field.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use shardline_common::{
    consts::{MAX_BACKENDS, MAX_RING_SIZE, MAX_SHARDS, POOL_RING_ENTRIES, QUIC_MAX_SERVER_ID_LEN},
    maps::{scheme, ShardSet},
    partition::ShardSetError,
};

use super::{
    is_prime, is_request_path, parse_mac, BackendConfig, Encap, ForwardMode, NextHop, ProbePath,
    Protocol, ServiceConfig, ServiceProbe, SessionConfig, SessionId, SessionMode,
};
use crate::{invalid, ConfigError};

/// Checks the services, backends and static sessions together; the error names the field.
pub fn validate(
    services: &[ServiceConfig],
    backends: &[BackendConfig],
    sessions: &[SessionConfig],
    encap: &Encap,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, s) in services.iter().enumerate() {
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
        validate_quic(i, s, backends)?;
        if !keys.insert((s.vip, s.port, s.protocol.number())) {
            return Err(invalid(
                format!("services[{i}]"),
                "another service has the same vip, port and protocol",
            ));
        }
        if s.probe_path != ProbePath::Auto && s.probe.is_none() {
            return Err(invalid(
                format!("services[{i}].probe_path"),
                "set with no probe (services[].probe) to route",
            ));
        }
        if s.probe_path == ProbePath::Datapath {
            if let Some(why) = s.data_path_probe_refusal() {
                return Err(invalid(format!("services[{i}].probe_path"), why));
            }
        }
        let http = s.probe == Some(ServiceProbe::Http);
        if let Some(path) = &s.probe_http_path {
            if !http {
                return Err(invalid(
                    format!("services[{i}].probe_http_path"),
                    "set with a probe other than \"http\"",
                ));
            }
            if !is_request_path(path) {
                return Err(invalid(
                    format!("services[{i}].probe_http_path"),
                    format!("{path:?} must start with / and hold no spaces or control characters"),
                ));
            }
        }
        if let Some(status) = s.probe_http_status {
            if !http {
                return Err(invalid(
                    format!("services[{i}].probe_http_status"),
                    "set with a probe other than \"http\"",
                ));
            }
            if !(100..=599).contains(&status) {
                return Err(invalid(
                    format!("services[{i}].probe_http_status"),
                    format!("{status} is not an HTTP status (100 to 599)"),
                ));
            }
        }
        if s.forward == ForwardMode::Encap {
            let needs = match s.vip {
                IpAddr::V4(_) if encap.ipip_source().is_none() => Some("encap.source_v4"),
                IpAddr::V6(_) if encap.source_v6.is_none() => Some("encap.source_v6"),
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
    for (i, b) in backends.iter().enumerate() {
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
        if !(b.mac.is_empty() && b.nexthop == NextHop::Fib) {
            parse_mac(&b.mac).map_err(|p| {
                invalid(
                    format!("backends[{i}].mac"),
                    format!("{p} (only a backend with nexthop = \"fib\" may leave it out)"),
                )
            })?;
        }
        if b.ipv4.is_none() && b.ipv6.is_none() {
            return Err(invalid(
                format!("backends[{i}]"),
                "needs ipv4, ipv6 or both",
            ));
        }
        // IPv4 clients reach a backend with only IPv6 IPv4-in-IPv6, from `encap.source_v6`.
        let ipv4_encap = services
            .iter()
            .any(|s| s.forward == ForwardMode::Encap && s.vip.is_ipv4());
        if b.ipv4.is_none() && ipv4_encap && encap.source_v6.is_none() {
            return Err(invalid(
                "encap.source_v6",
                format!(
                    "required by backends[{i}], which has only IPv6: IPv4 services reach it \
                     IPv4-in-IPv6"
                ),
            ));
        }
    }
    validate_pools(services, &ids)?;
    let by_name: HashMap<&str, &ServiceConfig> =
        services.iter().map(|s| (s.name.as_str(), s)).collect();
    for (i, s) in sessions.iter().enumerate() {
        let Some(service) = by_name.get(s.service.as_str()) else {
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
        let field = || format!("sessions[{i}].backends");
        ShardSet::from_members(&s.backends, scheme::HASH, 1).map_err(|e| {
            invalid(
                field(),
                match e {
                    ShardSetError::Empty | ShardSetError::TooMany { .. } => {
                        format!("needs 1 to {MAX_SHARDS} backend ids")
                    }
                    ShardSetError::Duplicate { id } => format!("backend id {id} listed twice"),
                },
            )
        })?;
        if let Some(id) = s.backends.iter().find(|id| !ids.contains(id)) {
            return Err(invalid(field(), format!("unknown backend id {id}")));
        }
        if let Some(id) = s.backends.iter().find(|id| !service.served_by(**id)) {
            return Err(invalid(
                field(),
                format!(
                    "backend {id} is not in the pool of service {:?}",
                    service.name
                ),
            ));
        }
    }
    for (i, b) in backends.iter().enumerate() {
        if b.capacity.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err(invalid(
                format!("backends[{i}].capacity"),
                "must be a positive number of packets per second",
            ));
        }
    }
    Ok(())
}

/// The rules of pools: known, distinct backend ids, a prime ring size that fits, and room in
/// the ring space for every ring twice over (a ring being rebuilt elsewhere beside the old).
fn validate_pools(services: &[ServiceConfig], ids: &HashSet<u32>) -> Result<(), ConfigError> {
    let mut ring_space = 0u64;
    for (i, s) in services.iter().enumerate() {
        let Some(pool) = &s.backends else {
            if s.ring_size.is_some() {
                return Err(invalid(
                    format!("services[{i}].ring_size"),
                    format!(
                        "service {:?} has no pool (`backends`) to build a ring over",
                        s.name
                    ),
                ));
            }
            continue;
        };
        let field = format!("services[{i}].backends");
        if pool.is_empty() {
            return Err(invalid(
                field,
                format!("service {:?}: a pool needs at least one backend (leave `backends` out for every backend)", s.name),
            ));
        }
        let mut seen = HashSet::new();
        for m in pool {
            if !ids.contains(&m.id()) {
                return Err(invalid(
                    field,
                    format!("service {:?}: unknown backend id {}", s.name, m.id()),
                ));
            }
            if !seen.insert(m.id()) {
                return Err(invalid(
                    field,
                    format!("service {:?}: backend id {} listed twice", s.name, m.id()),
                ));
            }
        }
        let size = s.ring_slots();
        if !is_prime(size) || size > MAX_RING_SIZE || (size as usize) < pool.len() {
            return Err(invalid(
                format!("services[{i}].ring_size"),
                format!(
                    "service {:?}: {size} must be a prime of at least the pool's {} backends and at most {MAX_RING_SIZE}",
                    s.name,
                    pool.len()
                ),
            ));
        }
        ring_space += 2 * u64::from(size);
    }
    if 2 * ring_space > u64::from(POOL_RING_ENTRIES) {
        return Err(invalid(
            "services",
            format!(
                "the pools' rings need {ring_space} slots (two halves each); at most {} fit (smaller ring_size values)",
                POOL_RING_ENTRIES / 2
            ),
        ));
    }
    Ok(())
}

/// The rules of `quic` services: UDP, a server id length that holds every backend id, and
/// the QUIC fields on no other mode.
fn validate_quic(
    i: usize,
    s: &ServiceConfig,
    backends: &[BackendConfig],
) -> Result<(), ConfigError> {
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
    if let Some(b) = backends.iter().find(|b| len < 4 && b.id >> (8 * len) != 0) {
        return Err(invalid(
            format!("services[{i}].server_id_len"),
            format!("{len} octets cannot hold backend id {}", b.id),
        ));
    }
    Ok(())
}
