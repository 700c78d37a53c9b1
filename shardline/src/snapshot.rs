//! The complete routing tables computed from a configuration, in memory: what the daemon writes
//! into the maps, and a [`Tables`] the userspace replay can run `decide` against.
//!
//! - [`delta`]: the writes that turn one snapshot into another, in a safe order.

pub mod delta;

use std::collections::HashMap;

use shardline_common::{
    consts::{MAGLEV_SIZE, NO_BACKEND},
    handoff::{mark_for, Handoff},
    maglev::{self, Weighted},
    maps::{
        backend_flags, forward_mode, ip_addr, options, scheme, session_mode, Backend, FlowKey,
        Globals, Service, ServiceKey, SessionKey, ShardSet,
    },
    quic::CidLayout,
    route::{pick_shard, Tables},
};

use crate::config::{
    parse_mac, Config, ConfigTables, ForwardMode, NextHop, SessionId, SessionMode,
};

/// Every table the dataplane reads, as plain collections.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Services and VIP markers.
    pub services: HashMap<ServiceKey, Service>,
    /// Backends by id.
    pub backends: HashMap<u32, Backend>,
    /// Shard sets of placed sessions.
    pub sessions: HashMap<SessionKey, ShardSet>,
    /// The default Maglev table (one half's worth of slots).
    pub maglev: Vec<u32>,
    /// The rings of services with a pool, by service id (one half's worth of slots each).
    pub rings: HashMap<u32, Vec<u32>>,
    /// The pools of services with one, by service id: member backend ids, ascending.
    pub pools: HashMap<u32, Vec<u32>>,
    /// Encapsulation sources and flow idle time; `maglev_active` is 0 (which half is live is
    /// the writer's business).
    pub globals: Globals,
    /// Handoffs open at the snapshot's instant, by session, for replays that mark as the
    /// kernel does (`shardline_common::handoff`). Not routing: deltas and the daemon's tables
    /// leave them out; the swap stage publishes them beside the placements.
    pub handoffs: HashMap<SessionKey, Handoff>,
}

impl Snapshot {
    /// Computes the tables of a validated configuration.
    pub fn from_config(config: &Config) -> Self {
        Self::from_tables(&ConfigTables::of(config))
    }

    /// Computes the tables of validated table inputs. Service ids are 1-based positions in
    /// `config.services`; static sessions get generation 1.
    pub fn from_tables(config: &ConfigTables) -> Self {
        let mut snap = Snapshot::default();
        for (i, s) in config.services.iter().enumerate() {
            let key = ServiceKey::new(s.vip, s.port, s.protocol.number());
            let layout = s.cid_layout().unwrap_or(CidLayout {
                rotation: 0,
                server_id_len: 0,
            });
            let service = Service {
                id: i as u32 + 1,
                mode: match s.mode {
                    SessionMode::Header => session_mode::HEADER,
                    SessionMode::Flow => session_mode::FLOW,
                    SessionMode::Quic => session_mode::QUIC,
                },
                forward: match s.forward {
                    ForwardMode::Encap => forward_mode::ENCAP,
                    ForwardMode::L2dsr => forward_mode::L2DSR,
                },
                server_id_len: layout.server_id_len,
                rotation: layout.rotation,
                ring_size: s.ring_slots(),
                ring_live: 0,
                ring_idle: 0,
            };
            if let Some(pool) = &s.backends {
                let own = |id: u32| {
                    config
                        .backends
                        .iter()
                        .find(|b| b.id == id)
                        .map_or(0, |b| b.weight)
                };
                // A backend drained or down everywhere (own weight 0) is drained here too.
                let weighted: Vec<Weighted> = pool
                    .iter()
                    .map(|m| Weighted {
                        id: m.id(),
                        weight: match own(m.id()) {
                            0 => 0,
                            w => m.weight(w),
                        },
                    })
                    .collect();
                snap.rings
                    .insert(service.id, maglev::build(&weighted, service.ring_size));
                let mut ids: Vec<u32> = pool.iter().map(|m| m.id()).collect();
                ids.sort_unstable();
                snap.pools.insert(service.id, ids);
            }
            snap.services.insert(key, service);
            snap.services
                .insert(ServiceKey::vip_marker(ip_addr(s.vip)), Service::default());
        }
        for b in &config.backends {
            let mut backend = Backend {
                mac: parse_mac(&b.mac).unwrap_or_default(),
                flags: backend_flags::PRESENT,
                ..Default::default()
            };
            if b.nexthop == NextHop::Fib {
                backend.flags |= backend_flags::FIB;
            }
            if let Some(a) = b.ipv4 {
                backend.addr4 = a.octets();
                backend.flags |= backend_flags::HAS_V4;
            }
            if let Some(a) = b.ipv6 {
                backend.addr6 = a.octets();
                backend.flags |= backend_flags::HAS_V6;
            }
            snap.backends.insert(b.id, backend);
        }
        let weighted: Vec<Weighted> = config
            .backends
            .iter()
            .map(|b| Weighted {
                id: b.id,
                weight: b.weight,
            })
            .collect();
        snap.maglev = maglev::build(&weighted, MAGLEV_SIZE);
        for s in &config.sessions {
            let Some(pos) = config.services.iter().position(|x| x.name == s.service) else {
                continue;
            };
            let session = match s.session {
                SessionId::Id(id) => id,
                SessionId::Addr(a) => shardline_common::hash::addr_hash(&ip_addr(a)),
            };
            // Validated inputs always make a shard set; one that did not would leave its
            // session on the default table rather than route by a broken set.
            let Ok(set) = ShardSet::from_members(&s.backends, scheme::HASH, 1) else {
                continue;
            };
            snap.sessions.insert(
                SessionKey {
                    service: pos as u32 + 1,
                    _pad: 0,
                    session,
                },
                set,
            );
        }
        snap.globals.flow_idle_secs = config.flow_idle_secs;
        if config.icmp.echo_reply {
            snap.globals.options |= options::ECHO_REPLY;
        }
        if config.icmp.too_big_reply {
            snap.globals.options |= options::TOO_BIG_REPLY;
        }
        if config.backends.iter().any(|b| b.ipv4.is_none()) {
            snap.globals.options |= options::FOUR_IN_SIX;
        }
        // No MTU yet (the daemon records the interface's when it attaches): nothing too big.
        snap.globals = snap.globals.with_egress_mtu(0);
        if let Some((src, hash_mask)) = config.encap.ipip_source() {
            snap.globals.src4 = src;
            snap.globals.src4_hash_mask = hash_mask;
        }
        if let Some(a) = config.encap.source_v6 {
            snap.globals.src6 = a.octets();
        }
        snap
    }
}

impl Tables for Snapshot {
    fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key).copied()
    }

    fn placed_backend(&self, key: &SessionKey, request_key: u64) -> Option<u32> {
        pick_shard(self.sessions.get(key)?, request_key)
    }

    /// Every handoff a snapshot holds is open (see [`Snapshot::handoffs`]).
    fn handoff_mark(&self, key: &SessionKey, request_key: u64, owner: u32, _at: usize) -> u8 {
        self.handoffs
            .get(key)
            .map_or(0, |h| mark_for(h, request_key, owner))
    }

    fn maglev(&self, slot: u32) -> u32 {
        self.maglev
            .get(slot as usize)
            .copied()
            .unwrap_or(NO_BACKEND)
    }

    fn pool_ring(&self, service: &Service, hash: u64) -> u32 {
        ring_slot(self.rings.get(&service.id), service, hash)
    }

    fn in_pool(&self, service: &Service, backend: u32) -> bool {
        self.pools
            .get(&service.id)
            .is_some_and(|pool| pool.binary_search(&backend).is_ok())
    }

    fn backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(&id).copied()
    }

    /// A snapshot has no flow history: every flow is routed as new.
    fn sticky_backend(&self, _flow: &FlowKey) -> Option<u32> {
        None
    }

    fn remember_flow(&self, _flow: &FlowKey, _backend: u32, _held: bool, _opened: bool) {}

    fn options(&self) -> u32 {
        self.globals.options
    }

    fn too_big_limit(&self, v6: bool) -> u32 {
        self.globals.too_big_limit(v6)
    }
}

/// Slot `hash % ring_size` of `ring` ([`NO_BACKEND`] without a ring or past its end), as the
/// kernel reads `MAGLEV[ring_live + hash % ring_size]`.
pub fn ring_slot(ring: Option<&Vec<u32>>, service: &Service, hash: u64) -> u32 {
    if service.ring_size == 0 {
        return NO_BACKEND;
    }
    let slot = (hash % u64::from(service.ring_size)) as usize;
    ring.and_then(|r| r.get(slot))
        .copied()
        .unwrap_or(NO_BACKEND)
}
