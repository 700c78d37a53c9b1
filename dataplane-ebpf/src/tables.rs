//! The maps as `shardline_common::route::Tables`, the kernel side of the shared decision.

use core::{cell::Cell, ffi::c_void};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_EXIST},
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_map_lookup_percpu_elem},
    programs::XdpContext,
};
use shardline_common::{
    consts::{DEFAULT_NEW_FLOW_RATE, MAX_FLOW_CPUS, NO_BACKEND},
    flows::adopted,
    front::{self, lookup, service_index, session_index},
    maps::{
        flows_stick, maglev_index, pool_word, session_filter_position, Backend, FlowEntry, FlowKey,
        Globals, Service, ServiceKey, SessionKey,
    },
    route::{pick_shard, Tables},
};

use crate::{
    clock,
    maps::{
        BACKENDS, BENCH_RINGS, FLOWS, FRONT_EPOCH, MAGLEV, NEW_FLOW_RATE, POOL_MEMBERS, SERVICES,
        SERVICE_FRONT, SESSIONS, SESSION_FILTER, SESSION_FRONT,
    },
};

/// Whether services and sessions are read through the per-CPU fronts
/// (`shardline_common::front`): only on x86-64, whose load ordering keeps them exact.
const FRONTS: bool = cfg!(bpf_target_arch = "x86_64");

/// The fronts' stamp now: `front::stamp` of `FRONT_EPOCH`, read before the map read a front
/// miss makes (each lookup reads its own, as each hash lookup without fronts is its own moment).
#[inline(always)]
fn front_stamp() -> u64 {
    let epoch = match FRONT_EPOCH.get_ptr(0) {
        // SAFETY: an array element; userspace bumps it with atomic stores through its mapping,
        // so a volatile load reads one whole value, once.
        Some(e) => unsafe { core::ptr::read_volatile(e) },
        None => 0,
    };
    front::stamp(epoch)
}

/// The new-flow rate limiter's window.
const WINDOW_NS: u64 = 1_000_000_000;

/// Lookups into the pinned maps, with the globals entry read once per packet. `RINGS_AOM`
/// (bench only) reads the pools' rings from `BENCH_RINGS`, the array-of-maps layout, instead
/// of the `MAGLEV` array; a constant, so `shardline` carries no branch for it. `QUIC_ONLY`:
/// the `shardline_quic` program's tables, which decide QUIC services' packets and nothing
/// else (`Tables::QUIC`, `Tables::HEADER_AND_FLOW`).
pub struct MapTables<
    'a,
    const RINGS_AOM: bool = false,
    const BENCH: bool = false,
    const QUIC_ONLY: bool = false,
> {
    /// The globals entry for this packet.
    pub globals: &'a Globals,
    /// The session's counters slot, as the shard set or flow entry looked up names it (0: none).
    pub stats_slot: Cell<u32>,
    /// The placement's handoff window flag (`ShardSet::handoff`), for `handoff_mark`.
    handoff: Cell<u32>,
    /// The packet, which `handoff_mark` marks.
    ctx: &'a XdpContext,
}

impl<'a, const RINGS_AOM: bool, const BENCH: bool, const QUIC_ONLY: bool>
    MapTables<'a, RINGS_AOM, BENCH, QUIC_ONLY>
{
    /// Tables for one packet.
    #[inline(always)]
    pub fn new(globals: &'a Globals, ctx: &'a XdpContext) -> Self {
        Self {
            globals,
            stats_slot: Cell::new(0),
            handoff: Cell::new(0),
            ctx,
        }
    }
}

impl<const RINGS_AOM: bool, const BENCH: bool, const QUIC_ONLY: bool> Tables
    for MapTables<'_, RINGS_AOM, BENCH, QUIC_ONLY>
{
    /// Only the QUIC program parses connection ids: `shardline` hands a QUIC service's packet
    /// to it (`balancer::run_with`), and the bench programs hand it over alike.
    /// The connection-id loops were half of each program's verification.
    const QUIC: bool = QUIC_ONLY;
    /// The QUIC program is handed QUIC services' packets only.
    const HEADER_AND_FLOW: bool = !QUIC_ONLY;

    /// The bench programs hash an unplaced session's requests by their key, as before header
    /// sessions had a home: the restore wrapper's frame beside the home's pushes them past
    /// the verifier's 512-byte stack (528). Their cases never route an unplaced header
    /// session's request but `default_table_v4`'s, which this makes a few instructions cheaper
    /// than the `shardline` program's.
    #[inline(always)]
    fn unplaced_key(&self, mode: u8, key: u64) -> u64 {
        if BENCH {
            key
        } else {
            shardline_common::route::unplaced_key(mode, key)
        }
    }

    #[inline(always)]
    fn service(&self, key: &ServiceKey) -> Option<Service> {
        // SAFETY: the services map is only replaced element-wise by the daemon; a Service is
        // read whole by value.
        let map = |k: &ServiceKey| unsafe { SERVICES.get(k) };
        // VIP markers (protocol 0) are asked for only on error paths: straight to the map, so
        // those call sites (constant protocol) carry no front code.
        if !FRONTS || key.proto == 0 {
            return map(key).copied();
        }
        let entry = SERVICE_FRONT.get_ptr_mut(service_index(key))?;
        // SAFETY: this CPU's entry of a per-CPU array; only this CPU writes it, and XDP runs
        // to completion.
        lookup(unsafe { &mut *entry }, front_stamp(), key, map).copied()
    }

    #[inline(always)]
    fn placed_backend(&self, key: &SessionKey, request_key: u64) -> Option<u32> {
        // A session the filter rules out is not looked up: absent, as the map would answer.
        let map = |k: &SessionKey| {
            if ruled_out(k) {
                None
            } else {
                // SAFETY: SESSIONS has BPF_F_NO_PREALLOC, so elements are never reused under
                // readers.
                unsafe { SESSIONS.get(k) }
            }
        };
        let set = if FRONTS {
            let entry = SESSION_FRONT.get_ptr_mut(session_index(key))?;
            // SAFETY: as in `service`.
            lookup(unsafe { &mut *entry }, front_stamp(), key, map)?
        } else {
            map(key)?
        };
        self.stats_slot.set(set.stats_slot);
        self.handoff.set(set.handoff);
        pick_shard(set, request_key)
    }

    /// The bench programs leave marking out, as the too-big answer: with it, their restore
    /// wrapper takes the verifier past a million instructions. Their cases never open a window.
    #[inline(always)]
    fn handoff_mark(&self, _key: &SessionKey, request_key: u64, owner: u32, at: usize) -> u8 {
        if BENCH {
            return 0;
        }
        crate::handoff::mark(self.ctx, self.handoff.get(), (request_key, owner), at)
    }

    #[inline(always)]
    fn maglev(&self, slot: u32) -> u32 {
        match maglev_index(self.globals.live_half(), slot) {
            Some(index) => MAGLEV.get(index).copied().unwrap_or(NO_BACKEND),
            None => NO_BACKEND,
        }
    }

    #[inline(always)]
    fn pool_ring(&self, service: &Service, hash: u64) -> u32 {
        if RINGS_AOM {
            if service.ring_size == 0 {
                return NO_BACKEND;
            }
            let slot = (hash % service.ring_size as u64) as u32;
            return BENCH_RINGS
                .get_value(service.id, &slot)
                .copied()
                .unwrap_or(NO_BACKEND);
        }
        match service.ring_index(hash) {
            Some(index) => MAGLEV.get(index).copied().unwrap_or(NO_BACKEND),
            None => NO_BACKEND,
        }
    }

    #[inline(always)]
    fn in_pool(&self, service: &Service, backend: u32) -> bool {
        match pool_word(service.id, backend) {
            Some(word) => POOL_MEMBERS
                .get(word)
                .is_some_and(|bits| bits >> (backend % 64) & 1 != 0),
            None => false,
        }
    }

    #[inline(always)]
    fn backend(&self, id: u32) -> Option<Backend> {
        BACKENDS.get(id).copied()
    }

    #[inline(always)]
    fn sticky_backend(&self, flow: &FlowKey) -> Option<u32> {
        let idle_secs = self.globals.flow_idle_secs;
        // Stickiness off: not even a lookup.
        if !flows_stick(idle_secs) {
            return None;
        }
        let entry = FLOWS.get_ptr_mut(flow)?;
        let now = clock::now();
        // SAFETY: this CPU's value of a per-CPU map; only this CPU writes it now.
        unsafe {
            if !(*entry).is_live(now, idle_secs) {
                // The flow may have been seen on another CPU (its packets moved): adopt the
                // freshest live value there, or route afresh if there is none.
                if !adopt_from_other_cpus(flow, entry, now, idle_secs) {
                    return None;
                }
            }
            (*entry).last_seen_ns = now;
            self.stats_slot.set((*entry).stats_slot);
            Some((*entry).backend)
        }
    }

    #[inline(always)]
    fn remember_flow(&self, flow: &FlowKey, backend: u32, held: bool, opened: bool) {
        if !flows_stick(self.globals.flow_idle_secs) {
            return;
        }
        offer_flow(
            flow,
            u64::from(backend) | u64::from(self.stats_slot.get()) << 32,
            u64::from(held) * FLOW_HELD | u64::from(opened) * FLOW_OPENED,
        );
    }

    #[inline(always)]
    fn options(&self) -> u32 {
        self.globals.options
    }

    #[inline(always)]
    fn too_big_limit(&self, v6: bool) -> u32 {
        if BENCH {
            // Nothing is too big for the bench programs, so the check folds away: with it, their
            // restore wrapper takes the verifier past a million instructions. Their frames are
            // 64 to 82 bytes; `balancer::run_with` leaves the answer out for them too.
            return u32::MAX;
        }
        self.globals.too_big_limit(v6)
    }
}

/// Records `flow` in `FLOWS`, routed to the backend in `routed`'s low half with the counters
/// slot in its high half, stamped now, as the new-flow rate allows, with at most one update.
///
/// Counted against the rate either way (a flow re-routed after its entry went idle, or off a
/// backend that no longer serves it, is new to the tables as well). Under the rate the flow is
/// inserted or rewritten (a full table evicts its least recently used flow). Over it, only a
/// `held` flow (a live entry naming a backend that no longer serves it) is rewritten, with
/// `BPF_EXIST`, so the entry does not pull the flow back when that backend returns; any other
/// flow (new, or its entry idle, which pins nothing) makes no call at all: the `BPF_EXIST`
/// update it used to get inserted nothing, yet hashed the key and walked a cold bucket under
/// its lock (the flood path). A SYN under the rate is looked up first (see the body).
///
/// A BPF-to-BPF call, not inlined: the branch around the update stays inside it, so LLVM does
/// not copy the rest of the program behind it, and the verifier's states meet again at the
/// return. It reads the clock itself (inlined here, out of line everywhere else: see
/// `clock::now`), so a flow refused by the rate costs this one call and no other; the caller
/// passed the time in from a second call before. The entry is built here (its 16 bytes and
/// the array key are this frame: the bench programs' combined stack is at the verifier's 512
/// since their restoring wrapper keeps no stack). Returns the update's result (0 without
/// one), so the function's exit leaves a scalar in R0. (Telling a held flow from a new one by
/// the lookup itself, a note in per-CPU scratch written beside it, took every program past
/// the verifier's million instructions; written from an out-of-line call it fit but cost the
/// hit path a call. `held` comes from the decision's `rerouted` flag, which the verifier's
/// states already tell apart.)
#[inline(never)]
fn offer_flow(flow: &FlowKey, routed: u64, how: u64) -> i64 {
    let now = clock::now_inline();
    let Some(flags) = flow_update_flags(how & FLOW_HELD != 0, now) else {
        return 0;
    };
    let entry = FlowEntry {
        backend: routed as u32,
        stats_slot: (routed >> 32) as u32,
        last_seen_ns: now,
    };
    // A SYN's entry may exist (a retransmission, or a reused 5-tuple): found by a lookup and
    // rewritten in place, this CPU's value, as the update would. The LRU update takes a free
    // node before it looks for the key, so on a full table it took one even to rewrite an
    // entry. A new connection's SYN pays the lookup's miss before its insert, as every new
    // flow but a SYN does; over the rate a SYN makes neither call.
    if how & FLOW_OPENED != 0 {
        if let Some(slot) = FLOWS.get_ptr_mut(flow) {
            // SAFETY: this CPU's value of a per-CPU map; only this CPU writes it now.
            unsafe { *slot = entry };
            return 0;
        }
    }
    match FLOWS.insert(flow, &entry, flags) {
        Ok(()) => 0,
        Err(e) => e.into(),
    }
}

/// [`offer_flow`]'s `how` bit: the flow is `held` (see there).
const FLOW_HELD: u64 = 1;
/// [`offer_flow`]'s `how` bit: a TCP SYN opened the flow, routed without the flow-table
/// lookup, so its entry may exist.
const FLOW_OPENED: u64 = 2;

/// What [`adopt_on`] needs, on the caller's stack: three words, no more, since the flow path's
/// deepest chain is at the verifier's 512 bytes (see [`offer_flow`]).
#[repr(C)]
struct AdoptCtx {
    flow: *const FlowKey,
    entry: *mut FlowEntry,
    idle_secs: u64,
}

/// Whether `entry` (this CPU's value of `flow`, not live) now holds a live value of another
/// CPU, adopted (`shardline_common::flows`). A `bpf_loop` over the CPUs rather than an
/// unrolled one: the verifier walks its callback once, where 64 copies of the loop body at
/// every path into the flow table took the programs past a million instructions.
#[inline(always)]
fn adopt_from_other_cpus(flow: &FlowKey, entry: *mut FlowEntry, now: u64, idle_secs: u32) -> bool {
    let mut ctx = AdoptCtx {
        flow,
        entry,
        idle_secs: u64::from(idle_secs),
    };
    let callback: extern "C" fn(u64, *mut c_void) -> i64 = adopt_on;
    // SAFETY: the callback and its context as bpf_loop expects them.
    unsafe {
        bpf_loop(
            MAX_FLOW_CPUS,
            callback as *mut c_void,
            &mut ctx as *mut AdoptCtx as *mut c_void,
            0,
        )
    };
    // Adopted values are stamped with the callback's clock, not before `now`; a value that
    // was not live is older than the idle time.
    // SAFETY: this CPU's value, as `sticky_backend` looked it up.
    unsafe { (*entry).last_seen_ns >= now }
}

/// The `bpf_loop` callback of [`adopt_from_other_cpus`]: adopts CPU `cpu`'s value of the flow
/// if it is live (1: stop), stops past the last CPU (1), else goes on (0).
extern "C" fn adopt_on(cpu: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the context `adopt_from_other_cpus` gave it.
    let ctx = unsafe { &mut *(ctx as *mut AdoptCtx) };
    // SAFETY: the map pointer as aya passes it to the lookup helper; the key is a FlowKey.
    let value = unsafe {
        bpf_map_lookup_percpu_elem(
            &FLOWS as *const _ as *mut c_void,
            ctx.flow as *const c_void,
            cpu as u32,
        )
    } as *const FlowEntry;
    // SAFETY: another CPU's value, read once by value; a torn read at worst adopts a value
    // `is_live` judged, or routes afresh as before.
    let Some(other) = (unsafe { value.as_ref() }) else {
        return 1;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match adopted(other, now, ctx.idle_secs as u32) {
        Some(entry) => {
            // SAFETY: this CPU's value of the flow, as `sticky_backend` looked it up.
            unsafe { *ctx.entry = entry };
            1
        }
        None => 0,
    }
}

/// The `FLOWS` update flags for a flow routed at `now`, or `None` for no update: under this
/// CPU's new-flow limit for the current one-second window (Katran's `MAX_CONN_RATE`)
/// `BPF_ANY`; over it `BPF_EXIST` for a `held` flow (see [`offer_flow`]), else none. Over the
/// limit the flow is routed by the tables alone, as its first packet was, and counted in
/// `untracked`, and `refused` tells the counters not to count its session in the LRU counters
/// either. One inlined array access.
#[inline(always)]
fn flow_update_flags(held: bool, now: u64) -> Option<u64> {
    let Some(rate) = NEW_FLOW_RATE.get_ptr_mut(0) else {
        return Some(u64::from(BPF_ANY));
    };
    // SAFETY: this CPU's value of a per-CPU array; only this CPU writes it now.
    unsafe {
        if now.wrapping_sub((*rate).window_start_ns) >= WINDOW_NS {
            (*rate).window_start_ns = now;
            (*rate).admitted = 0;
        }
        let limit = match (*rate).limit {
            0 => DEFAULT_NEW_FLOW_RATE,
            l => l,
        };
        if (*rate).admitted >= limit {
            (*rate).untracked += 1;
            (*rate).refused = 1;
            return if held {
                Some(u64::from(BPF_EXIST))
            } else {
                None
            };
        }
        (*rate).admitted += 1;
        (*rate).refused = 0;
    }
    Some(u64::from(BPF_ANY))
}

/// Whether the sessions filter says no placed session falls where `key` does (an inlined
/// array read). Asked only behind the sessions front, where a miss meets the map: asked before
/// the front, or in `route_flow`, or out of line, its branch took the bench programs past the
/// verifier's million instructions (README, "A sessions filter for new clients").
#[inline(always)]
fn ruled_out(key: &SessionKey) -> bool {
    let (word, bit) = session_filter_position(key);
    SESSION_FILTER
        .get(word)
        .is_some_and(|w| (w >> bit) & 1 != 0)
}
