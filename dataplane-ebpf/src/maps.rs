//! The load balancer's maps. All are pinned by name under the daemon's pin directory, so a
//! restarted daemon adopts them and the dataplane keeps routing while it is away.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    btf_maps,
    macros::{btf_map, map},
    maps::{Array, DevMapHash, HashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray},
};
use shardline_common::{
    consts::{
        BACKEND_STATS_ENTRIES, BENCH_RING_SERVICES, MAGLEV_ENTRIES, MAX_BACKENDS, MAX_FLOWS,
        MAX_RING_SIZE, MAX_SERVICES, MAX_SESSIONS, MAX_SESSION_SLOTS, MAX_SESSION_STATS,
        POOL_MEMBER_WORDS, SERVICE_FRONT_ENTRIES, SESSION_FILTER_ENTRIES, SESSION_FRONT_ENTRIES,
    },
    front::{ServiceEntry, SessionEntry},
    maps::{
        Backend, Counter, FlowEntry, FlowKey, Globals, NewFlowRate, Service, ServiceKey,
        SessionKey, ShardSet, SlotCounter,
    },
    nexthop::{NextHopArgs, MAX_TX_PORTS, NEXTHOP_OUTCOMES, TAIL_CALL_SLOTS},
    verdict::REASON_COUNT,
};

use crate::clock::Reading;

/// Virtual services by (VIP, port, protocol), plus one VIP marker per address. No
/// preallocation: an update (a pool's ring flip rewrites its service) swaps in a new element
/// freed after an RCU grace period, so a reader never sees a half-written service.
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> =
    HashMap::pinned(MAX_SERVICES, BPF_F_NO_PREALLOC);

/// The fronts' epoch (one word, `shardline_common::front`): every userspace writer of
/// `SERVICES` or `SESSIONS` bumps it after each write, which retires every front entry filled
/// before. Mmapable, so a bump is one atomic add, not a syscall.
#[map]
pub static FRONT_EPOCH: Array<u64> = Array::pinned(1, BPF_F_MMAPABLE);

/// The services front: a per-CPU, direct-mapped cache of `SERVICES` (inlined lookups where the
/// hash map costs a helper call). Not pinned: a new program starts it empty.
#[map]
pub static SERVICE_FRONT: PerCpuArray<ServiceEntry> =
    PerCpuArray::with_max_entries(SERVICE_FRONT_ENTRIES, 0);

/// The sessions front: a per-CPU, direct-mapped cache of `SESSIONS`, unplaced sessions
/// included (cached as absent). Not pinned.
#[map]
pub static SESSION_FRONT: PerCpuArray<SessionEntry> =
    PerCpuArray::with_max_entries(SESSION_FRONT_ENTRIES, 0);

/// Backends by id.
#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

/// Shard sets of placed sessions. No preallocation: an update swaps in a new element and the
/// old one is freed after an RCU grace period, so a reader never sees a half-written value.
#[map]
pub static SESSIONS: HashMap<SessionKey, ShardSet> =
    HashMap::pinned(MAX_SESSIONS, BPF_F_NO_PREALLOC);

/// The sessions filter: a block of words per service id in which a session's bit
/// (`maps::session_filter_position`) is set when no placed session of the service falls there,
/// so a sessions-front miss answers "not placed" without the `SESSIONS` lookup (for a new
/// client, a helper call and a cold bucket). The daemon sets the bits from a walk of `SESSIONS`
/// at start and clears a session's bit before it places the session; all clear (a fresh pin,
/// or one from before this map) looks up as before.
#[map]
pub static SESSION_FILTER: Array<u64> = Array::pinned(SESSION_FILTER_ENTRIES, 0);

/// The default Maglev table, double-buffered: `maps::maglev_index` places a half's slots and
/// `GLOBALS` names the live half (`Globals::live_half`), so a swap is one word write. After it,
/// the rings of services with a pool of their own, two halves each, the live one named by the
/// service value (`Service::ring_index`): one array, so a pool's ring costs the same inlined
/// lookup as the default table. Mmapable: the daemon fills a half with plain stores instead of
/// one syscall per slot.
#[map]
pub static MAGLEV: Array<u32> = Array::pinned(MAGLEV_ENTRIES, BPF_F_MMAPABLE);

/// Pool membership: bit `backend % 64` of word `maps::pool_word(service, backend)` is set when
/// the backend is in the service's pool (services with a pool only).
#[map]
pub static POOL_MEMBERS: Array<u64> = Array::pinned(POOL_MEMBER_WORDS, 0);

/// One entry: the live Maglev half and the encapsulation source addresses.
#[map]
pub static GLOBALS: Array<Globals> = Array::pinned(1, 0);

/// Packets per [`shardline_common::verdict::Reason`], per CPU.
#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::pinned(REASON_COUNT, 0);

/// Forwarded packets and bytes per (service, backend), per CPU, at
/// `maps::backend_stats_index`: a row of backend ids per service, so one inlined array update
/// counts both ways and userspace sums a backend's column for its total.
#[map]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(BACKEND_STATS_ENTRIES, 0);

/// Forwarded packets and bytes of placed sessions, per CPU, by [`ShardSet::stats_slot`]: an
/// array slot costs a few instructions where a hash lookup costs tens of nanoseconds.
#[map]
pub static SESSION_SLOT_STATS: PerCpuArray<SlotCounter> = PerCpuArray::pinned(MAX_SESSION_SLOTS, 0);

/// Forwarded packets and bytes of sessions without a counters slot (unplaced, or beyond
/// [`MAX_SESSION_SLOTS`]), per CPU; the least recently seen are evicted.
#[map]
pub static SESSION_STATS: LruPerCpuHashMap<SessionKey, Counter> =
    LruPerCpuHashMap::pinned(MAX_SESSION_STATS, 0);

/// Flow-mode stickiness: the backend each established flow was routed to, per CPU (no
/// contention; RSS keeps a flow on one CPU). Least recently used flows are evicted when full.
#[map]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowEntry> = LruPerCpuHashMap::pinned(MAX_FLOWS, 0);

/// Each CPU's last reading of the flow table's clock (`clock::now`, one entry). Not pinned: a
/// new program starts it empty and reads the time on its first packet.
#[map]
pub static CLOCK: PerCpuArray<Reading> = PerCpuArray::with_max_entries(1, 0);

/// The new-flow rate limiter, per CPU (one entry): above its limit a CPU routes the second's
/// remaining new flows without inserting them into `FLOWS`. Pinned so the daemon exports
/// `untracked` (`shardline_dataplane_new_flows_untracked`), which then counts since the pin.
#[map]
pub static NEW_FLOW_RATE: PerCpuArray<NewFlowRate> = PerCpuArray::pinned(1, 0);

/// The egress interfaces a FIB answer may redirect to (`egress_interfaces`), keyed by ifindex:
/// a FIB-routed backend's packet whose next hop is out of one of these leaves by
/// `bpf_redirect_map`. Filled by the daemon at attach; pinned, so a restart keeps it.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_TX_PORTS, 0);

/// Packets of FIB-routed backends per [`shardline_common::nexthop::NextHopOutcome`], per CPU.
#[map]
pub static NEXTHOPS: PerCpuArray<u64> = PerCpuArray::pinned(NEXTHOP_OUTCOMES, 0);

/// The programs the balancer tail-calls: the next-hop program in slot
/// [`shardline_common::nexthop::NEXTHOP_SLOT`], put there by the loader. Pinned, so the
/// attached balancer keeps reaching it while no daemon runs (an unpinned program array is
/// emptied when its last user-space reference closes).
#[map]
pub static TAIL_CALLS: ProgramArray = ProgramArray::pinned(TAIL_CALL_SLOTS, 0);

/// The QUIC program (`shardline_quic`), which `shardline` tail-calls for a QUIC service's
/// packet, in slot 0, put there by the loader. Pinned, as `TAIL_CALLS`; a map of its own, so
/// `TAIL_CALLS` pinned by an earlier version keeps its size.
#[map]
pub static QUIC_PROGRAM: ProgramArray = ProgramArray::pinned(1, 0);

/// The balancer's hand-over to the next-hop program, one per CPU (a tail call keeps the CPU).
/// Pinned, so during a daemon restart the attached balancer and the new next-hop program it
/// may already reach share it.
#[map]
pub static NEXTHOP_ARGS: PerCpuArray<NextHopArgs> = PerCpuArray::pinned(1, 0);

/// Bench only (`shardline-bench`'s `pool_table_aom_v4` case; `shardline` never reads it, and
/// nothing is pinned): the pools' rings laid out as an array of maps, one inner array of
/// `MAX_RING_SIZE` slots per service id, the layout `docs/pools.md` weighs against the one big
/// `MAGLEV` array. Fixed-size inner arrays, so the verifier can inline the inner lookup too.
#[btf_map]
pub static BENCH_RINGS: btf_maps::ArrayOfMaps<
    btf_maps::Array<u32, { MAX_RING_SIZE as usize }>,
    { BENCH_RING_SERVICES as usize },
> = btf_maps::ArrayOfMaps::new();
