//! How a forwarded packet leaves: towards the backend's static next-hop MAC
//! ([`crate::maps::Backend::mac`]), or, for a backend marked [`crate::maps::backend_flags::FIB`],
//! towards the next hop the kernel's FIB names (`bpf_fib_lookup` on the outer destination, as
//! Katran and Cilium do), out of the receiving interface (`XDP_TX`) or another one listed in
//! the `TX_PORTS` devmap (`XDP_REDIRECT`).
//!
//! The FIB only changes how a packet leaves, never which backend it goes to: the routing
//! decision ([`crate::route::decide`]) and so the userspace replay do not look at it. What the
//! FIB did is counted per CPU, one counter per [`NextHopOutcome`], beside the per-reason
//! counters; a packet the FIB had no answer for leaves through the static MAC, or is dropped
//! ([`crate::verdict::Reason::NoNextHop`]) when its backend has none.
//!
//! The FIB stage is an XDP program of its own (`shardline_nexthop`), reached by a tail call
//! through the one-slot `TAIL_CALLS` program array ([`NEXTHOP_SLOT`]), as Katran and Cilium
//! chain theirs: the verifier walks it once, on its own, instead of once per state of the
//! balancer that reaches it, and the balancer pays only for the call. The balancer hands the
//! chosen backend over in a per-CPU scratch slot ([`NextHopArgs`]): the tail call keeps the
//! CPU, and the slot's lookup is inlined by the kernel (no helper call).

/// Slot of the next-hop program in the `TAIL_CALLS` program array (its only slot). A
/// constant index, so the JIT patches the tail call into a direct jump.
pub const NEXTHOP_SLOT: u32 = 0;

/// Entries of the `TAIL_CALLS` program array.
pub const TAIL_CALL_SLOTS: u32 = 1;

/// What the balancer hands the next-hop program (`NEXTHOP_ARGS`, one per CPU, written just
/// before the tail call, read first thing by the next-hop program on the same CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHopArgs {
    /// The backend the packet was rewritten for (`Backend` id).
    pub backend_id: u32,
    /// 1 for an IPv6 packet (its outer header is IPv6 too), 0 for IPv4.
    pub v6: u32,
    /// The forwarding [`crate::verdict::Reason`] the next-hop program counts, unless it drops
    /// the packet as `no_next_hop`.
    pub reason: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// Entries of the `TX_PORTS` devmap: the egress interfaces a FIB answer may redirect to.
pub const MAX_TX_PORTS: u32 = 64;

/// `family` of a FIB lookup for IPv4 (`AF_INET`).
pub const AF_INET: u8 = 2;
/// `family` of a FIB lookup for IPv6 (`AF_INET6`).
pub const AF_INET6: u8 = 10;

/// What the next-hop stage did with one packet of a FIB-routed backend; the index of its
/// per-CPU counter in `NEXTHOPS`. Static-MAC backends count nothing here.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHopOutcome {
    /// The FIB answered with the receiving interface: the FIB's MACs, `XDP_TX`.
    Fib = 0,
    /// The FIB answered with another interface in `TX_PORTS`: the FIB's MACs, `XDP_REDIRECT`.
    FibRedirect = 1,
    /// No route (unreachable, blackhole, prohibit, not forwarded, or a lookup error): the static
    /// MAC.
    NoRoute = 2,
    /// A route, but no resolved neighbour for its next hop yet: the static MAC.
    NoNeighbour = 3,
    /// Forwarding is disabled on the receiving interface (`net.ipv4.conf.IFACE.forwarding`,
    /// `net.ipv6.conf.IFACE.forwarding`), so the FIB does not answer: the static MAC.
    ForwardingDisabled = 4,
    /// The FIB answered with an interface that is neither the receiving one nor in
    /// `TX_PORTS` (not in `egress_interfaces`): the static MAC, out of the receiving interface.
    EgressNotInTxPorts = 5,
    /// Any other answer (fragmentation needed, unsupported lightweight tunnel, no source
    /// address): the static MAC.
    Other = 6,
    /// The next-hop program was not in `TAIL_CALLS` (not loaded), so the tail call fell
    /// through: the static MAC, out of the receiving interface, as if the FIB had no answer.
    ProgramMissing = 7,
}

/// Number of [`NextHopOutcome`]s: the length of the `NEXTHOPS` counter array.
pub const NEXTHOP_OUTCOMES: u32 = 8;

// `bpf_fib_lookup`'s answers (`BPF_FIB_LKUP_RET_*`, include/uapi/linux/bpf.h).
const FIB_BLACKHOLE: i64 = 1;
const FIB_UNREACHABLE: i64 = 2;
const FIB_PROHIBIT: i64 = 3;
const FIB_NOT_FWDED: i64 = 4;
const FIB_FWD_DISABLED: i64 = 5;
const FIB_NO_NEIGH: i64 = 7;

impl NextHopOutcome {
    /// Every outcome, in counter order.
    pub const ALL: [NextHopOutcome; NEXTHOP_OUTCOMES as usize] = [
        Self::Fib,
        Self::FibRedirect,
        Self::NoRoute,
        Self::NoNeighbour,
        Self::ForwardingDisabled,
        Self::EgressNotInTxPorts,
        Self::Other,
        Self::ProgramMissing,
    ];

    /// The fallback counted for a `bpf_fib_lookup` return code other than success (a negative
    /// code is an error the helper refused the lookup with: no route to count it under).
    #[inline(always)]
    pub const fn of_fib_failure(rc: i64) -> Self {
        match rc {
            FIB_NO_NEIGH => Self::NoNeighbour,
            FIB_FWD_DISABLED => Self::ForwardingDisabled,
            FIB_BLACKHOLE | FIB_UNREACHABLE | FIB_PROHIBIT | FIB_NOT_FWDED => Self::NoRoute,
            rc if rc < 0 => Self::NoRoute,
            _ => Self::Other,
        }
    }

    /// Whether the packet left with the static MAC (or was dropped for want of one) because
    /// the FIB gave no usable answer.
    pub const fn is_fallback(self) -> bool {
        !matches!(self, Self::Fib | Self::FibRedirect)
    }

    /// snake_case name used in metrics (`outcome` label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fib => "fib",
            Self::FibRedirect => "fib_redirect",
            Self::NoRoute => "fallback_no_route",
            Self::NoNeighbour => "fallback_no_neighbour",
            Self::ForwardingDisabled => "fallback_forwarding_disabled",
            Self::EgressNotInTxPorts => "fallback_egress_not_in_tx_ports",
            Self::Other => "fallback_other",
            Self::ProgramMissing => "fallback_program_missing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_counter_order_and_failures_map_to_fallbacks() {
        for (i, o) in NextHopOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        assert_eq!(
            NextHopOutcome::of_fib_failure(7),
            NextHopOutcome::NoNeighbour
        );
        assert_eq!(
            NextHopOutcome::of_fib_failure(5),
            NextHopOutcome::ForwardingDisabled
        );
        for rc in [1, 2, 3, 4, -22, -19] {
            assert_eq!(NextHopOutcome::of_fib_failure(rc), NextHopOutcome::NoRoute);
        }
        for rc in [6, 8, 9, 42] {
            assert_eq!(NextHopOutcome::of_fib_failure(rc), NextHopOutcome::Other);
        }
        assert!(NextHopOutcome::ALL[2..].iter().all(|o| o.is_fallback()));
        assert!(!NextHopOutcome::Fib.is_fallback() && !NextHopOutcome::FibRedirect.is_fallback());
    }
}
