//! Sizes, limits and wire constants, defined once for kernel and userspace.

/// Most backends one session can be sharded across.
pub const MAX_SHARDS: usize = 16;
/// Slots in the default consistent-hash (Maglev) table; a prime, as Maglev requires.
pub const MAGLEV_SIZE: u32 = 65_537;
/// Entries of the default table's two halves of [`MAGLEV_SIZE`] slots, one live and one being
/// built (see [`crate::maps::Globals::live_half`]), at the start of the `MAGLEV` array.
pub const DEFAULT_RING_ENTRIES: u32 = 2 * MAGLEV_SIZE;
/// Entries of the `MAGLEV` array after the default table: the rings of services with a pool of
/// their own, two halves each ([`crate::maps::Service::ring_live`]). Room for 8 pools with the
/// largest ring, or about 2,000 with 251 slots.
pub const POOL_RING_ENTRIES: u32 = 1 << 20;
/// Entries of the `MAGLEV` array: the default table, then the pools' rings.
pub const MAGLEV_ENTRIES: u32 = DEFAULT_RING_ENTRIES + POOL_RING_ENTRIES;
/// Largest ring a pool may have (as the default table).
pub const MAX_RING_SIZE: u32 = MAGLEV_SIZE;
/// Entries of the backends array (backend ids are `0..MAX_BACKENDS`).
pub const MAX_BACKENDS: u32 = 4_096;
/// Entries of the services hash map.
pub const MAX_SERVICES: u32 = 1_024;
/// Rows of the per-(service, backend) forwarded counters: service ids `1..SERVICE_STATS_ROWS`
/// count in a row of their own, the services beyond share row 0 (no service has id 0), so
/// every backend's total (the sum of its column) stays exact whatever the service count.
pub const SERVICE_STATS_ROWS: u32 = 64;
/// Entries of the per-(service, backend) forwarded counters: [`MAX_BACKENDS`] per row
/// ([`crate::maps::backend_stats_index`]).
pub const BACKEND_STATS_ENTRIES: u32 = SERVICE_STATS_ROWS * MAX_BACKENDS;
/// Entries of the pool-membership bitmap array: 64 words of 64 bits (backend ids) for each
/// service id `0..=MAX_SERVICES`.
pub const POOL_MEMBER_WORDS: u32 = (MAX_SERVICES + 1) * (MAX_BACKENDS / 64);
/// Words of one service's block in the sessions filter (`SESSION_FILTER`): 64 words, 4,096
/// positions a session hashes to ([`crate::maps::session_filter_position`]).
pub const SESSION_FILTER_WORDS: u32 = 64;
/// Service blocks of the sessions filter: a power of two above [`MAX_SERVICES`], so a block is
/// found by a mask (every service id `0..=MAX_SERVICES` has its own) and the array read needs
/// no bounds branch.
pub const SESSION_FILTER_SERVICES: u32 = 2_048;
/// Entries of the sessions filter.
pub const SESSION_FILTER_ENTRIES: u32 = SESSION_FILTER_SERVICES * SESSION_FILTER_WORDS;
/// Entries of the per-session shard-set hash map (placed sessions).
pub const MAX_SESSIONS: u32 = 1_048_576;
/// Entries of the per-session per-CPU counters (LRU: the least recently seen are evicted).
pub const MAX_SESSION_STATS: u32 = 262_144;
/// Entries of the per-CPU counters of placed sessions, indexed by [`crate::maps::ShardSet::stats_slot`];
/// slot 0 is never assigned (it means "none"), so this many less one sessions count by slot and
/// the rest in the LRU counters.
pub const MAX_SESSION_SLOTS: u32 = 65_536;
/// Slots of the handoffs array (`crate::handoff`): sessions whose handoff window is open at
/// once, with those closed in the last quarantine; a move beyond them is published by the API
/// only, unmarked.
pub const MAX_HANDOFFS: u32 = 65_536;
/// Entries of the kernel's per-CPU services front (`crate::front`): a power of two.
pub const SERVICE_FRONT_ENTRIES: u32 = 256;
/// Entries of the kernel's per-CPU sessions front (`crate::front`): a power of two, about
/// 0.5 MiB per CPU.
pub const SESSION_FRONT_ENTRIES: u32 = 2_048;
/// Entries of the per-CPU flow table (LRU: the least recently seen flows are evicted).
pub const MAX_FLOWS: u32 = 262_144;
/// CPUs whose flow-table values a CPU without a live one looks at (`crate::flows`); a flow
/// seen only on CPUs past this is decided afresh there, as before.
pub const MAX_FLOW_CPUS: u32 = 64;
/// Default seconds a flow-table entry outlives its last packet.
pub const DEFAULT_FLOW_IDLE_SECS: u32 = 30;
/// New flows per second each CPU remembers in the flow table before it routes the rest of the
/// second's new flows statelessly, without inserting (Katran's `MAX_CONN_RATE`): under a flood
/// of new flows (a SYN flood) every insert would evict an established flow and cost several
/// times the rest of the packet's path. [`crate::maps::NewFlowRate::limit`] overrides it.
pub const DEFAULT_NEW_FLOW_RATE: u32 = 125_000;

/// Bench only: how many sessions (header mode) or client addresses (flow mode) the
/// `*_1m` per-packet cases cycle through, one per `BPF_PROG_TEST_RUN` repeat.
pub const BENCH_ROTATION: u32 = 1_000_000;
/// Bench only: the step between consecutive keys of that cycle, coprime with
/// [`BENCH_ROTATION`] so the cycle visits every key once before repeating.
pub const BENCH_ROTATION_STEP: u32 = 7_919;
/// Bench only: entries (service ids) of the array-of-maps ring layout the per-packet bench
/// measures against the one big `MAGLEV` array (`BENCH_RINGS`).
pub const BENCH_RING_SERVICES: u32 = 16;
/// Bench only: the first session id of the header-mode cycle.
pub const BENCH_SESSION_BASE: u32 = 10_000_000;
/// Bench only: the first IPv4 client address of the flow-mode cycle, 10.128.0.0, as a
/// host-order word.
pub const BENCH_SOURCE_BASE_V4: u32 = 0x0a80_0000;

/// The key after `word` in the bench cycle starting at `base` (any `word` outside the cycle
/// lands inside it).
#[inline(always)]
pub const fn bench_rotate(word: u32, base: u32) -> u32 {
    base.wrapping_add(word.wrapping_sub(base).wrapping_add(BENCH_ROTATION_STEP) % BENCH_ROTATION)
}

/// Backend id that means "none": a Maglev slot with no backend, an empty shard.
pub const NO_BACKEND: u32 = u32::MAX;

/// The shardline header's magic, `"SH"`, big endian on the wire.
pub const HEADER_MAGIC: u16 = 0x5348;
/// The only shardline header version this dataplane understands.
pub const HEADER_VERSION: u8 = 1;
/// Length of the shardline header: magic (2), version (1), flags (1), session (8), key (8).
pub const HEADER_LEN: usize = 20;

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
/// Ethernet header length without VLAN tags.
pub const ETH_HLEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_HLEN: usize = 4;
/// Fixed IPv4 header length (no options).
pub const IPV4_HLEN: usize = 20;
/// Fixed IPv6 header length.
pub const IPV6_HLEN: usize = 40;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// Minimal TCP header length.
pub const TCP_HLEN: usize = 20;
/// Offset of the flags byte in the TCP header.
pub const TCP_FLAGS_OFF: usize = 13;
/// The TCP flags byte's SYN bit.
pub const TCP_SYN: u8 = 0x02;
/// The TCP flags byte's ACK bit.
pub const TCP_ACK: u8 = 0x10;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IP protocol number of IPv4-in-IP encapsulation.
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6-in-IP encapsulation.
pub const IPPROTO_IPV6: u8 = 41;
/// Hop limit / TTL of the outer header shardline writes.
pub const ENCAP_TTL: u8 = 64;

/// ICMP and ICMPv6 header length: type, code, checksum, then 4 octets whose meaning depends
/// on the type (echo identifier and sequence, next-hop MTU, unused).
pub const ICMP_HLEN: usize = 8;
/// Octets of the offending packet's transport header an ICMP error carries at least, after
/// its IP header (RFC 792, RFC 4443): enough for the ports.
pub const ICMP_QUOTED_L4: usize = 8;
/// TTL / hop limit of the echo replies the balancer sends.
pub const ECHO_REPLY_TTL: u8 = 64;
/// ICMP types the dataplane reads (RFC 792).
pub mod icmp_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4: fragmentation needed, with the next-hop MTU).
    pub const DEST_UNREACH: u8 = 3;
    /// Echo request.
    pub const ECHO: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}
/// ICMPv6 types the dataplane reads (RFC 4443).
pub mod icmpv6_type {
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 1;
    /// Packet too big, with the MTU of the next link.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
}

/// Name of the directory under the bpffs mount where the daemon pins its maps.
pub const PIN_DIR: &str = "shardline";

/// QUIC version 1 (RFC 9000), the version whose long-header packet types are understood.
pub const QUIC_V1: u32 = 1;
/// Longest QUIC v1 connection id.
pub const QUIC_MAX_CID_LEN: usize = 20;
/// Bytes read from the start of a destination connection id: every packet a server can decrypt
/// holds at least this many from there (header protection samples 16 bytes starting 4 after the
/// packet number, which follows the id), so the window never passes the end of a valid packet.
pub const QUIC_CID_WINDOW: usize = 20;
/// Config rotation codepoint that QUIC-LB reserves for connection ids without a routable server
/// id; the daemon never publishes it.
pub const QUIC_ROTATION_UNROUTABLE: u8 = 0b111;
/// Config rotation codepoints in use: a generation maps to `generation % QUIC_ROTATIONS`.
pub const QUIC_ROTATIONS: u32 = 7;
/// Longest server id in a connection id (backend ids are below [`MAX_BACKENDS`]).
pub const QUIC_MAX_SERVER_ID_LEN: usize = 4;
/// Server id length of a `quic` service that does not set one.
pub const QUIC_DEFAULT_SERVER_ID_LEN: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_cycle_visits_every_key_once() {
        let mut seen = vec![false; BENCH_ROTATION as usize];
        let mut k = bench_rotate(0, BENCH_SESSION_BASE);
        for _ in 0..BENCH_ROTATION {
            let i = (k - BENCH_SESSION_BASE) as usize;
            assert!(!seen[i], "key {k} twice");
            seen[i] = true;
            k = bench_rotate(k, BENCH_SESSION_BASE);
        }
        assert!(seen.iter().all(|s| *s));
        let top = bench_rotate(u32::MAX, BENCH_SOURCE_BASE_V4);
        assert!((BENCH_SOURCE_BASE_V4..BENCH_SOURCE_BASE_V4 + BENCH_ROTATION).contains(&top));
    }
}
