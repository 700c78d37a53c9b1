//! The maps as `shardline_common::route::Tables`, the kernel side of the shared decision.

use shardline_common::{
    consts::{MAGLEV_SIZE, NO_BACKEND},
    maps::{Backend, Globals, Service, ServiceKey, SessionKey},
    route::{pick_shard, Tables},
};

use crate::maps::{BACKENDS, MAGLEV, SERVICES, SESSIONS};

/// Lookups into the pinned maps, with the globals entry read once per packet.
pub struct MapTables<'a> {
    /// The globals entry for this packet.
    pub globals: &'a Globals,
}

impl Tables for MapTables<'_> {
    #[inline(always)]
    fn service(&self, key: &ServiceKey) -> Option<Service> {
        // SAFETY: the services map is only replaced element-wise by the daemon; a Service is
        // read whole by value.
        unsafe { SERVICES.get(key) }.copied()
    }

    #[inline(always)]
    fn placed_backend(&self, key: &SessionKey, request_key: u64) -> Option<u32> {
        // SAFETY: SESSIONS has BPF_F_NO_PREALLOC, so elements are never reused under readers.
        let set = unsafe { SESSIONS.get(key) }?;
        pick_shard(set, request_key)
    }

    #[inline(always)]
    fn maglev(&self, slot: u32) -> u32 {
        let index = (self.globals.maglev_active & 1) * MAGLEV_SIZE + slot;
        MAGLEV.get(index).copied().unwrap_or(NO_BACKEND)
    }

    #[inline(always)]
    fn backend(&self, id: u32) -> Option<Backend> {
        BACKENDS.get(id).copied()
    }
}
