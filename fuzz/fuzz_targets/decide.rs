//! Fuzzes the packet parser and the routing decision with arbitrary frames: no panic, no read
//! outside the frame, a deterministic decision, and a forwarded packet always names a
//! configured backend of the packet's family.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use shardline_common::{
    consts::MAGLEV_SIZE,
    maglev::{build, Weighted},
    maps::{
        addr_words, backend_flags, forward_mode, options, session_mode, v4_mapped, Backend, FlowKey,
        Service, ServiceKey, SessionKey, ShardSet,
    },
    partition::shard_set,
    route::{decide, pick_shard, Tables},
};

struct Fixed {
    services: HashMap<ServiceKey, Service>,
    sessions: HashMap<SessionKey, ShardSet>,
    backends: HashMap<u32, Backend>,
    maglev: Vec<u32>,
    /// The ring of service 4, whose pool is backends 1 and 2.
    ring: Vec<u32>,
}

/// Service 4's pool.
const POOL: [u32; 2] = [1, 2];

impl Tables for Fixed {
    fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key).copied()
    }
    fn placed_backend(&self, key: &SessionKey, request_key: u64) -> Option<u32> {
        pick_shard(self.sessions.get(key)?, request_key)
    }
    fn handoff_mark(&self, _key: &SessionKey, _request_key: u64, _owner: u32, _at: usize) -> u8 {
        0
    }
    fn maglev(&self, slot: u32) -> u32 {
        self.maglev[slot as usize]
    }
    fn pool_ring(&self, service: &Service, hash: u64) -> u32 {
        self.ring[(hash % u64::from(service.ring_size)) as usize]
    }
    fn in_pool(&self, _service: &Service, backend: u32) -> bool {
        POOL.contains(&backend)
    }
    fn backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(&id).copied()
    }
    fn sticky_backend(&self, _flow: &FlowKey) -> Option<u32> {
        None
    }
    fn remember_flow(&self, _flow: &FlowKey, _backend: u32, _held: bool, _opened: bool) {}
    fn options(&self) -> u32 {
        options::ECHO_REPLY | options::TOO_BIG_REPLY
    }
    fn too_big_limit(&self, v6: bool) -> u32 {
        shardline_common::mtu::answer_limit(1500, v6, v6, true)
    }
}

fn tables() -> Fixed {
    let vip4 = v4_mapped([10, 100, 0, 1]);
    let vip6 = addr_words([0xfd, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let svc = |id, mode, forward| Service { id, mode, forward, ..Service::default() };
    let mut services = HashMap::new();
    services.insert(ServiceKey { addr: vip4, port: 7000, proto: 17, _pad: 0 }, svc(1, session_mode::HEADER, forward_mode::ENCAP));
    services.insert(ServiceKey { addr: vip4, port: 8080, proto: 6, _pad: 0 }, svc(2, session_mode::FLOW, forward_mode::ENCAP));
    services.insert(ServiceKey { addr: vip6, port: 7000, proto: 17, _pad: 0 }, svc(3, session_mode::HEADER, forward_mode::L2DSR));
    let pooled = Service { ring_size: 251, ..svc(4, session_mode::QUIC, forward_mode::ENCAP) };
    services.insert(ServiceKey { addr: vip4, port: 4433, proto: 17, _pad: 0 }, Service { server_id_len: 2, ..pooled });
    services.insert(ServiceKey::vip_marker(vip4), Service::default());
    services.insert(ServiceKey::vip_marker(vip6), Service::default());
    let mut backends = HashMap::new();
    for id in 1..=4u32 {
        let mut flags = backend_flags::PRESENT | backend_flags::HAS_V4;
        if id != 4 {
            flags |= backend_flags::HAS_V6;
        }
        backends.insert(id, Backend { addr4: [10, 0, 0, 10 + id as u8], flags, ..Backend::default() });
    }
    let mut sessions = HashMap::new();
    sessions.insert(SessionKey { service: 1, _pad: 0, session: 42 }, shard_set(&[1, 2, 3], 0, 1));
    sessions.insert(SessionKey { service: 1, _pad: 0, session: 43 }, shard_set(&[2, 4], 1, 1));
    sessions.insert(SessionKey { service: 3, _pad: 0, session: 7 }, shard_set(&[9], 0, 1));
    let weighted: Vec<Weighted> = (1..=4).map(|id| Weighted { id, weight: id }).collect();
    let pool: Vec<Weighted> = POOL.iter().map(|&id| Weighted { id, weight: 1 }).collect();
    Fixed { services, sessions, backends, maglev: build(&weighted, MAGLEV_SIZE), ring: build(&pool, 251) }
}

fuzz_target!(|frame: &[u8]| {
    thread_local! {
        static TABLES: Fixed = tables();
    }
    TABLES.with(|t| {
        let d = decide(frame, t);
        assert_eq!(d, decide(frame, t), "decisions are deterministic");
        if d.reason.forwards() {
            let b = t.backends.get(&d.backend_id).expect("forwarded to a configured backend");
            assert!(b.flags & backend_flags::PRESENT != 0);
            let family = if d.v6 { backend_flags::HAS_V6 } else { backend_flags::HAS_V4 };
            assert!(d.service.forward == forward_mode::L2DSR || b.flags & family != 0);
            if d.service.id == 4 {
                assert!(POOL.contains(&d.backend_id), "a pooled service stays in its pool");
            }
            assert!(d.l3_off as usize + d.ip_len as usize <= frame.len());
        }
    });
});
