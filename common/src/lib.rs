//! Everything the XDP program and the daemon must agree on, written once.
//!
//! - [`consts`]: sizes, limits and wire constants.
//! - [`maps`]: the `repr(C)` keys and values of the BPF maps, and the rules that read them the
//!   same on both sides: which Maglev half is live ([`maps::Globals::live_half`],
//!   [`maps::maglev_index`]) and whether a flow still sticks ([`maps::FlowEntry::is_live`]).
//! - [`encap`]: the outer IPv4 source of an IPIP packet, fixed or from a prefix by its hash.
//! - [`flows`]: the per-CPU flow table read across CPUs, for a flow whose packets moved CPU.
//! - [`frame`]: what an XDP program sees of a frame (linear part, whole length), for the
//!   replay of multi-buffer (jumbo) frames.
//! - [`front`]: the kernel's per-CPU caches in front of the services and sessions hash maps,
//!   and the epoch that keeps them exact.
//! - [`handoff`]: marking a moved key's packets with its previous owner for a window after a
//!   re-shard (the shardline header's flags byte).
//! - [`hash`]: the hash functions (session, request key, rendezvous score).
//! - [`packet`]: bounds-checked, allocation-free parsing of Ethernet/IPv4/IPv6/UDP/TCP and the
//!   shardline header.
//! - [`icmp`]: ICMP and ICMPv6 to a VIP: echo requests to answer, and the flow an error quotes,
//!   turned round so the decision routes it as that flow's packet.
//! - [`nexthop`]: how a forwarded packet leaves: the static next-hop MAC, or the kernel's FIB
//!   (`bpf_fib_lookup`) and the `TX_PORTS` devmap, and the counted outcomes of the latter.
//! - [`mtu`]: whether a packet fits the egress link once encapsulated, and what the
//!   "fragmentation needed" / "packet too big" answer to one that does not carries.
//! - [`partition`]: how a placed session's keys split over its shard set (hash, range), and
//!   what a shard set is ([`maps::ShardSet::from_members`]: 1 to `MAX_SHARDS` distinct
//!   backends).
//! - `plan` (feature `user`): re-shard plans, what moves where between two assignments.
//! - [`probe`]: data-path HTTP probes: the socket marks, the tc program's map value and the
//!   outer header it writes.
//! - [`quic`]: QUIC header parsing and QUIC-LB plaintext connection ids (server id routing).
//! - [`route`]: the routing decision (service → session → shard set or Maglev → backend), generic
//!   over where the tables live, so userspace replays the kernel's decision bit for bit.
//! - [`verdict`]: XDP actions and the per-reason counter indices.
//! - [`checksum`]: the internet checksum for the outer IPv4 header, and its incremental update
//!   for in-place rewrites (echo replies).
//! - `maglev` (feature `user`): the Maglev table builder the daemon fills the default table with.
#![cfg_attr(not(feature = "user"), no_std)]

pub mod checksum;
pub mod consts;
pub mod encap;
pub mod flows;
pub mod frame;
pub mod front;
pub mod handoff;
pub mod hash;
pub mod icmp;
#[cfg(feature = "user")]
pub mod maglev;
pub mod maps;
pub mod mtu;
pub mod nexthop;
pub mod packet;
pub mod partition;
#[cfg(feature = "user")]
pub mod plan;
pub mod probe;
pub mod quic;
pub mod route;
pub mod verdict;
