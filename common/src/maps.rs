//! Keys and values of the BPF maps. `repr(C)`, `Copy`, fixed-width fields with explicit
//! padding, no `bool` or `Option`, so the kernel and userspace agree on every byte.

use crate::consts::{MAGLEV_SIZE, MAX_SHARDS, NO_BACKEND};

/// How a service finds the session and the request key of a packet.
pub mod session_mode {
    /// UDP payload starts with the shardline header carrying `session_id` and `key`.
    pub const HEADER: u8 = 0;
    /// Session = client source address; key = hash of the 5-tuple.
    pub const FLOW: u8 = 1;
    /// UDP payload is QUIC: a connection id carrying a server id (QUIC-LB) pins the packet to
    /// that backend; otherwise session = client source address, key = hash of the connection id.
    pub const QUIC: u8 = 2;
}

/// How a service's packets reach the chosen backend.
pub mod forward_mode {
    /// IPIP / IP6IP6 encapsulation to the backend's address, then `XDP_TX`; an IPv4 packet to
    /// a backend with only an IPv6 address goes IPv4-in-IPv6.
    pub const ENCAP: u8 = 0;
    /// Destination MAC rewrite only, for backends on the same L2 segment holding the VIP.
    pub const L2DSR: u8 = 1;
}

/// Bits of [`Backend::flags`].
pub mod backend_flags {
    /// The slot holds a configured backend.
    pub const PRESENT: u32 = 1;
    /// [`super::Backend::addr4`] is set.
    pub const HAS_V4: u32 = 2;
    /// [`super::Backend::addr6`] is set.
    pub const HAS_V6: u32 = 4;
    /// Down (failing its health checks): configured, but nothing is sent to it. Flow entries
    /// and QUIC connection ids naming it are re-decided by the tables, which leave it out.
    pub const DOWN: u32 = 8;
    /// Next hop from the kernel's FIB (`nexthop = "fib"`): the dataplane looks the outer
    /// destination up with `bpf_fib_lookup` and uses [`super::Backend::mac`] only when the FIB
    /// has no answer (`crate::nexthop`). Clear, the static MAC as always.
    pub const FIB: u32 = 16;
}

/// An IPv6 address (IPv4 addresses IPv4-mapped, `::ffff:a.b.c.d`) as four native-endian
/// words holding the 16 address bytes in wire order. Words, not bytes, because the eBPF
/// backend handles a byte array byte by byte: 32 live bytes spill past the 512-byte stack.
pub type Addr = [u32; 4];

/// The [`Addr`] of 16 address bytes.
#[inline(always)]
pub const fn addr_words(b: [u8; 16]) -> Addr {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// The 16 address bytes of an [`Addr`].
#[inline(always)]
pub const fn addr_bytes(a: &Addr) -> [u8; 16] {
    let (w0, w1, w2, w3) = (
        a[0].to_ne_bytes(),
        a[1].to_ne_bytes(),
        a[2].to_ne_bytes(),
        a[3].to_ne_bytes(),
    );
    [
        w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3], w2[0], w2[1], w2[2], w2[3], w3[0],
        w3[1], w3[2], w3[3],
    ]
}

/// Key of the services map: destination address, port and protocol of a virtual service.
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`). A key with port 0 and protocol 0
/// marks "this address is a VIP", so malformed packets to it are dropped rather than passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Virtual IP, IPv4-mapped for IPv4.
    pub addr: Addr,
    /// Destination port, host byte order.
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}

impl ServiceKey {
    /// The "address is a VIP" marker key for `addr`.
    pub const fn vip_marker(addr: Addr) -> Self {
        Self {
            addr,
            port: 0,
            proto: 0,
            _pad: 0,
        }
    }
}

/// Value of the services map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Service id, part of every [`SessionKey`].
    pub id: u32,
    /// One of [`session_mode`].
    pub mode: u8,
    /// One of [`forward_mode`].
    pub forward: u8,
    /// `quic` mode: octets of the server id in connection ids (0 otherwise).
    pub server_id_len: u8,
    /// `quic` mode: config rotation codepoint of connection ids carrying a server id (0 otherwise).
    pub rotation: u8,
    /// Slots of the service's own Maglev ring over its pool (a prime), or 0: the service has
    /// no pool and unplaced sessions use the default table (every backend).
    pub ring_size: u32,
    /// Index in the `MAGLEV` array of the live half of the service's ring: where packets read.
    /// The writer's business (snapshots carry 0); see [`Service::ring_index`].
    pub ring_live: u32,
    /// Index of the ring's other half, where the next ring is built before one services-map
    /// update swaps `ring_live` and `ring_idle` (build-then-flip, per service).
    pub ring_idle: u32,
}

impl Service {
    /// Whether the service has a pool of its own (and so a ring).
    #[inline(always)]
    pub const fn has_pool(&self) -> bool {
        self.ring_size != 0
    }

    /// Index in the `MAGLEV` array of slot `hash % ring_size` of the live ring; `None` for a
    /// service without a pool.
    #[inline(always)]
    pub const fn ring_index(&self, hash: u64) -> Option<u32> {
        if self.ring_size == 0 {
            return None;
        }
        Some(
            self.ring_live
                .wrapping_add((hash % self.ring_size as u64) as u32),
        )
    }

    /// This service as snapshots compare it: ring placement in the array left out.
    pub const fn unplaced(self) -> Self {
        Self {
            ring_live: 0,
            ring_idle: 0,
            ..self
        }
    }
}

/// Value of the backends array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// IPv4 address (outer destination of IPIP).
    pub addr4: [u8; 4],
    /// [`backend_flags`] bits.
    pub flags: u32,
    /// IPv6 address (outer destination of IP6IP6, and of IPv4-in-IPv6 when `addr4` is unset).
    pub addr6: [u8; 16],
    /// MAC of the next hop towards the backend (the backend itself on a shared segment); with
    /// [`backend_flags::FIB`], the fallback when the FIB has no answer (all zero: none).
    pub mac: [u8; 6],
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
}

/// Key of the per-session shard-set map and of the per-session counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// [`Service::id`].
    pub service: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// Session id: the header's `session_id`, or the hash of the client address in flow mode.
    pub session: u64,
}

impl SessionKey {
    /// The key of session `session` of service `service`, padding zeroed.
    pub const fn new(service: u32, session: u64) -> Self {
        Self {
            service,
            _pad: 0,
            session,
        }
    }
}

/// How a session's keys are partitioned across its shard set.
pub mod scheme {
    /// Rendezvous hashing of the request key over the shard set.
    pub const HASH: u32 = 0;
    /// Sorted split points: member `i` owns keys in `[splits[i - 1], splits[i])`.
    pub const RANGE: u32 = 1;
}

/// Value of the per-session shard-set map: the backends a placed session is sharded across.
/// Replaced with one map update carrying a new generation, never edited in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSet {
    /// Monotonic generation of this placement.
    pub generation: u64,
    /// Number of valid entries in `backends` (0 means: use the default table).
    pub count: u32,
    /// One of [`scheme`].
    pub scheme: u32,
    /// Backend ids; entries at `count` and beyond are [`NO_BACKEND`].
    pub backends: [u32; MAX_SHARDS],
    /// [`scheme::RANGE`] only: ascending split points; member `i < count - 1` owns keys below
    /// `splits[i]` (and at or above `splits[i - 1]`), the last member owns the rest.
    pub splits: [u64; MAX_SHARDS - 1],
    /// The session's slot in the per-CPU session counters array (0: none, count in the LRU).
    /// Dataplane bookkeeping the daemon assigns when it writes the map; not part of a placement,
    /// so snapshots and replicated state carry 0.
    pub stats_slot: u32,
    /// While the session's handoff window is open, [`crate::handoff::flag_of_slot`] of the
    /// `HANDOFF_SLOTS` slot holding its previous placement; else 0. Dataplane bookkeeping like
    /// `stats_slot`: written by the daemon with the placement, carried as 0 by snapshots.
    pub handoff: u32,
}

impl Default for ShardSet {
    fn default() -> Self {
        Self {
            generation: 0,
            count: 0,
            scheme: scheme::HASH,
            backends: [NO_BACKEND; MAX_SHARDS],
            splits: [u64::MAX; MAX_SHARDS - 1],
            stats_slot: 0,
            handoff: 0,
        }
    }
}

/// Key of the flow table: a connection's 5-tuple (addresses IPv4-mapped for IPv4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address.
    pub src: Addr,
    /// VIP.
    pub dst: Addr,
    /// Client port.
    pub sport: u16,
    /// Service port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
}

/// Value of the flow table: the backend an established flow sticks to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// Backend id the flow was first routed to.
    pub backend: u32,
    /// The session's counters slot when the flow was first routed ([`ShardSet::stats_slot`]),
    /// so a flow-table hit counts without looking the session up.
    pub stats_slot: u32,
    /// `CLOCK_MONOTONIC` ns of the flow's last packet.
    pub last_seen_ns: u64,
}

impl FlowEntry {
    /// Whether this entry still pins its flow at `now` (`CLOCK_MONOTONIC` ns) when flows stick
    /// for `idle_secs` after their last packet ([`Globals::flow_idle_secs`]). Never with
    /// `idle_secs == 0` (stickiness off, see [`flows_stick`]), never for an entry that was
    /// never written (`last_seen_ns == 0`: how a per-CPU flow table reads on the CPUs that did
    /// not see the flow), and up to and including exactly `idle_secs` of idleness. The kernel
    /// and the replay both call this, so they agree on every boundary.
    #[inline(always)]
    pub const fn is_live(&self, now: u64, idle_secs: u32) -> bool {
        flows_stick(idle_secs)
            && self.last_seen_ns != 0
            && now.saturating_sub(self.last_seen_ns) <= idle_secs as u64 * 1_000_000_000
    }

    /// The backend a flow is pinned to, given its entry on every CPU: the freshest entry live
    /// at `now`, none if no CPU holds a live one. Userspace reads it this way (the replay, and
    /// counting what a drain waits for); the kernel consults only the CPU it runs on.
    pub fn freshest_live<'a>(
        per_cpu: impl IntoIterator<Item = &'a FlowEntry>,
        now: u64,
        idle_secs: u32,
    ) -> Option<u32> {
        per_cpu
            .into_iter()
            .filter(|e| e.is_live(now, idle_secs))
            .max_by_key(|e| e.last_seen_ns)
            .map(|e| e.backend)
    }
}

/// Value of the per-CPU new-flow rate limiter (one entry): how many new flows this CPU
/// remembered in the current one-second window, and how many it routed without remembering.
/// A flow routed so is decided as the replay decides it (the flow table only ever pins a flow
/// to the backend the tables chose for its first packet), so kernel and replay still agree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewFlowRate {
    /// `CLOCK_MONOTONIC` ns the current window started.
    pub window_start_ns: u64,
    /// New flows remembered in the current window.
    pub admitted: u32,
    /// New flows per second to remember; 0 means
    /// [`crate::consts::DEFAULT_NEW_FLOW_RATE`], `u32::MAX` remembers every flow.
    pub limit: u32,
    /// New flows routed without being remembered (over the limit) since the map was created.
    pub untracked: u64,
    /// 1 from refusing a new flow until the next new flow or the next packet counted outside a
    /// counters slot: that packet is not counted in the LRU session counters (per-CPU scratch,
    /// so no flag travels through the rest of the program and the verifier's states).
    pub refused: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// Whether flow-mode stickiness is on: `flow_idle_secs = 0` turns it off (no flow is
/// remembered and none sticks), so the dataplane skips the flow table altogether.
#[inline(always)]
pub const fn flows_stick(idle_secs: u32) -> bool {
    idle_secs != 0
}

/// Value of the per-CPU session counters array: the packets and bytes of the placed session
/// that owns the slot. The dataplane counts here only when `owner` is the packet's session, so
/// a stale slot (in a flow entry, or reused by another session) falls back to the LRU counters
/// instead of counting for the wrong session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounter {
    /// The session counting in this slot ([`SlotCounter::FREE`] when none).
    pub owner: SessionKey,
    /// Packets and bytes forwarded.
    pub counter: Counter,
}

impl SlotCounter {
    /// The owner of a free slot: a service id no service has.
    pub const FREE: SessionKey = SessionKey {
        service: u32::MAX,
        _pad: u32::MAX,
        session: u64::MAX,
    };
}

/// Bits of [`Globals::options`]: dataplane behaviour the configuration switches.
pub mod options {
    /// Answer ICMP / ICMPv6 echo requests to a VIP (`icmp.echo_reply`).
    pub const ECHO_REPLY: u32 = 1;
    /// Answer a packet that would exceed the egress MTU once encapsulated with ICMP
    /// "fragmentation needed" / ICMPv6 "packet too big" (`icmp.too_big_reply`); off, it is
    /// forwarded as it is.
    pub const TOO_BIG_REPLY: u32 = 2;
    /// Some backend has only an IPv6 address, so IPv4 packets may leave IPv4-in-IPv6 with a
    /// 40-octet outer header: the IPv4 too-big limit and answer allow for it, whatever the
    /// backend (the check runs before the lookups, where one compare against one value keeps
    /// the program verifiable; a check after them cost the verifier about 190,000
    /// instructions). Set by the table builder from the backends.
    pub const FOUR_IN_SIX: u32 = 4;
}

/// The single entry of the globals array: which Maglev half is live, the encap source, the
/// dataplane options and the egress MTU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Globals {
    /// Which half (0 or 1) of the double-buffered Maglev table packets read.
    pub maglev_active: u32,
    /// Seconds a flow-table entry outlives its flow's last packet (0 disables stickiness).
    pub flow_idle_secs: u32,
    /// Source address of IPIP outer headers.
    pub src4: [u8; 4],
    /// [`options`] bits.
    pub options: u32,
    /// Source address of IPv6 outer headers (IP6IP6 and IPv4-in-IPv6).
    pub src6: [u8; 16],
    /// MTU of the interface the dataplane is attached to (0: unknown), for
    /// [`crate::mtu::too_big`]. Set by the daemon when it attaches, not by the tables: table
    /// writes keep the value in force ([`Globals::with_egress_mtu`]).
    pub egress_mtu: u32,
    /// The longest IPv4 packet not answered as too big ([`crate::mtu::answer_limit`] of the
    /// MTU and the options: a 40-octet outer header with [`options::FOUR_IN_SIX`]), kept in
    /// step by [`Globals::with_egress_mtu`].
    pub too_big_limit4: u32,
    /// The same for IPv6.
    pub too_big_limit6: u32,
    /// The host bits of the IPIP outer source that come from the packet's hash, as address
    /// bytes (`encap.source_v4_prefix`: `0.0.255.255` for a /16); all zero, every packet
    /// leaves from `src4` (see [`crate::encap::outer_src4`]).
    pub src4_hash_mask: [u8; 4],
}

/// The default Maglev table is double-buffered: the `MAGLEV` array holds two halves of
/// [`MAGLEV_SIZE`] slots, [`Globals::maglev_active`] names the one packets read, and a swap
/// fills the other one completely before one globals write makes it live (build-then-flip).
impl Globals {
    /// The half (0 or 1) packets read now.
    #[inline(always)]
    pub const fn live_half(&self) -> u32 {
        self.maglev_active & 1
    }

    /// The half packets do not read: where the next table is built.
    #[inline(always)]
    pub const fn idle_half(&self) -> u32 {
        self.live_half() ^ 1
    }

    /// These globals with the egress MTU `mtu` and the too-big limits that follow from it and
    /// the options: what a table write keeps from the globals in force, since the MTU belongs
    /// to the interface, not to the configuration. Every writer of the globals goes through it.
    #[inline(always)]
    pub const fn with_egress_mtu(self, mtu: u32) -> Self {
        let answering = self.options & options::TOO_BIG_REPLY != 0;
        Self {
            egress_mtu: mtu,
            too_big_limit4: crate::mtu::answer_limit(
                mtu,
                false,
                self.too_big_outer_v6(false),
                answering,
            ),
            too_big_limit6: crate::mtu::answer_limit(mtu, true, true, answering),
            ..self
        }
    }

    /// The longest packet of the family not answered as too big.
    #[inline(always)]
    pub const fn too_big_limit(&self, v6: bool) -> u32 {
        if v6 {
            self.too_big_limit6
        } else {
            self.too_big_limit4
        }
    }

    /// The outer header the too-big limit and answer allow for, for a packet of the family
    /// `v6`: IPv6 for IPv6, and for IPv4 too when some backend has only IPv6
    /// ([`options::FOUR_IN_SIX`]).
    #[inline(always)]
    pub const fn too_big_outer_v6(&self, v6: bool) -> bool {
        v6 | (self.options & options::FOUR_IN_SIX != 0)
    }

    /// These globals with `half` live: written as one update, the flip.
    #[inline(always)]
    pub const fn with_live_half(self, half: u32) -> Self {
        Self {
            maglev_active: half & 1,
            ..self
        }
    }
}

/// Where `key` falls in the sessions filter (`SESSION_FILTER`): the word's index in the array
/// (in the block of the key's service) and the bit's index in the word. A bit set in the map
/// means no placed session of that service falls there, so the dataplane need not look the
/// session up. Fibonacci hashing of the session id, so flow mode's hashed client addresses and
/// header mode's sequential ids alike spread over a block's 4,096 positions; masks only, so
/// the index is in range without a branch.
#[inline(always)]
pub const fn session_filter_position(key: &SessionKey) -> (u32, u32) {
    use crate::consts::{SESSION_FILTER_SERVICES, SESSION_FILTER_WORDS};
    let h = (key.session.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as u32;
    (
        (key.service & (SESSION_FILTER_SERVICES - 1)) * SESSION_FILTER_WORDS + (h >> 6),
        h & 63,
    )
}

/// Index in the `MAGLEV` array of slot `slot` of half `half`; `None` for a slot past a half's
/// end (a lookup there finds no backend, whichever side runs it).
#[inline(always)]
pub const fn maglev_index(half: u32, slot: u32) -> Option<u32> {
    if slot < MAGLEV_SIZE {
        Some((half & 1) * MAGLEV_SIZE + slot)
    } else {
        None
    }
}

/// Words of the pool-membership bitmap per service: one bit per backend id.
pub const POOL_WORDS: u32 = crate::consts::MAX_BACKENDS / 64;

/// Index in the `POOL_MEMBERS` array of the word holding backend `backend`'s bit for service
/// `service` (bit `backend % 64`); `None` past the array (no such service or backend).
#[inline(always)]
pub const fn pool_word(service: u32, backend: u32) -> Option<u32> {
    if service > crate::consts::MAX_SERVICES || backend >= crate::consts::MAX_BACKENDS {
        return None;
    }
    Some(service * POOL_WORDS + backend / 64)
}

/// The row of the per-(service, backend) forwarded counters that service id `service` counts
/// in: its own below [`crate::consts::SERVICE_STATS_ROWS`], else row 0, which the services
/// beyond share.
#[inline(always)]
pub const fn stats_row(service: u32) -> u32 {
    if service < crate::consts::SERVICE_STATS_ROWS {
        service
    } else {
        0
    }
}

/// Index in the `BACKEND_STATS` array of the counter of packets of service `service`
/// forwarded to backend `backend`: row [`stats_row`], column `backend`. `None` past the
/// backends array (no such backend).
#[inline(always)]
pub const fn backend_stats_index(service: u32, backend: u32) -> Option<u32> {
    if backend >= crate::consts::MAX_BACKENDS {
        return None;
    }
    Some(stats_row(service) * crate::consts::MAX_BACKENDS + backend)
}

/// A packets/bytes pair, one per CPU in the per-CPU counter maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (frame length as received).
    pub bytes: u64,
}

/// IPv4-mapped IPv6 form of an IPv4 address, as stored in [`ServiceKey::addr`].
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> Addr {
    [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(a),
    ]
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all are repr(C), Copy, with every padding byte an explicit field.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for SessionKey {}
    unsafe impl aya::Pod for ShardSet {}
    unsafe impl aya::Pod for Globals {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for SlotCounter {}
    unsafe impl aya::Pod for NewFlowRate {}

    impl ServiceKey {
        /// Key for a service on `addr:port` with protocol `proto`.
        pub fn new(addr: std::net::IpAddr, port: u16, proto: u8) -> Self {
            Self {
                addr: ip_addr(addr),
                port,
                proto,
                _pad: 0,
            }
        }
    }

    /// An address in the 16-byte form the maps use (IPv4-mapped for IPv4).
    pub fn ip_to_16(addr: std::net::IpAddr) -> [u8; 16] {
        match addr {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        }
    }

    /// An address in the [`Addr`] form the map keys use.
    pub fn ip_addr(addr: std::net::IpAddr) -> Addr {
        addr_words(ip_to_16(addr))
    }
}

#[cfg(feature = "user")]
pub use user::{ip_addr, ip_to_16};

#[cfg(test)]
mod tests;
