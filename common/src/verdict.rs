//! What the dataplane does with a packet and why. Every reason has a per-CPU counter.

/// The XDP action taken, with the kernel's numeric values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `XDP_ABORTED`: a program error (never returned on purpose).
    Aborted = 0,
    /// `XDP_DROP`.
    Drop = 1,
    /// `XDP_PASS`: hand the packet to the kernel stack untouched.
    Pass = 2,
    /// `XDP_TX`: send the rewritten packet back out of the receiving interface.
    Tx = 3,
    /// `XDP_REDIRECT`.
    Redirect = 4,
}

impl Action {
    /// The action for a raw XDP return code, `Aborted` for unknown codes.
    pub const fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            _ => Self::Aborted,
        }
    }

    /// Lower-case name as the tracer prints it (`tx`, `pass`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::Drop => "drop",
            Self::Pass => "pass",
            Self::Tx => "tx",
            Self::Redirect => "redirect",
        }
    }
}

/// Why a packet got its action; the index of its per-CPU counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Sent to a backend.
    Forwarded = 0,
    /// Not IPv4 or IPv6 (ARP, QinQ, runt frames): passed.
    NotIp = 1,
    /// IP, but no service matches destination, port and protocol: passed.
    NotService = 2,
    /// To a VIP, but neither UDP, TCP nor ICMP the balancer handles (other protocols, ICMP
    /// types it leaves alone, echo requests with answering off): passed to the stack.
    NotL4 = 3,
    /// Malformed IP header to an address that is not a VIP (or unreadable): passed, the
    /// kernel stack drops it.
    MalformedNotVip = 4,
    /// Malformed IPv4/IPv6 header (bad IHL or version, lengths that lie) to a VIP: dropped.
    MalformedIp = 5,
    /// Truncated or inconsistent UDP/TCP header to a VIP: dropped.
    MalformedL4 = 6,
    /// IP fragment to a VIP: dropped (fragments carry no ports to route by).
    Fragment = 7,
    /// Header-mode packet whose payload does not start with the shardline magic: dropped.
    BadMagic = 8,
    /// Header-mode packet with an unsupported shardline header version: dropped.
    BadVersion = 9,
    /// Header-mode packet whose payload is shorter than the shardline header: dropped.
    ShortPayload = 10,
    /// No backend for the request (empty table slot, unknown backend id): dropped.
    NoBackend = 11,
    /// The chosen backend has no address to encapsulate the packet to (an IPv6 packet to a
    /// backend with only IPv4; an IPv4 one to a backend with only IPv6 goes IPv4-in-IPv6):
    /// dropped.
    NoBackendAddress = 12,
    /// Growing the packet for encapsulation failed: dropped.
    EncapFailed = 13,
    /// IPv6 extension header chain to a VIP longer than the dataplane walks: dropped.
    TooManyExtHeaders = 14,
    /// QUIC-mode datagram that is not a routable QUIC packet (truncated, fixed bit clear,
    /// connection id longer than 20 bytes): dropped.
    QuicMalformed = 15,
    /// QUIC Version Negotiation or Retry packet to a VIP (only servers send them): dropped.
    QuicServerOnly = 16,
    /// Sent to a backend the tables chose because the one its flow entry or QUIC connection
    /// id named is down or not configured (the flow entry is rewritten).
    Rerouted = 17,
    /// ICMP or ICMPv6 echo request to a VIP, answered by the balancer: turned into the echo
    /// reply in place and sent back.
    IcmpEchoReply = 18,
    /// ICMP or ICMPv6 error to a VIP (destination unreachable, fragmentation needed / packet
    /// too big, time exceeded) sent to the backend that owns the flow it quotes.
    IcmpForwarded = 19,
    /// ICMP or ICMPv6 error quoting a flow of a header- or QUIC-mode service whose quote does
    /// not carry the session's key: sent to the backend the client's address and ports choose.
    IcmpForwardedByClient = 20,
    /// ICMP to a VIP that is truncated or inconsistent (header cut short, quoted packet not
    /// one the VIP sent, quote shorter than its IP header and 8 transport octets): dropped.
    IcmpMalformed = 21,
    /// Client packet to an encapsulating service that would exceed the egress MTU once the
    /// outer header is added: answered with ICMP "fragmentation needed" / ICMPv6 "packet too
    /// big" carrying the usable MTU (`icmp.too_big_reply`), sent back. Once some backend has
    /// only IPv6, every IPv4 packet is checked against IPv4-in-IPv6's 40-octet outer header
    /// (`crate::maps::options::FOUR_IN_SIX`).
    IcmpTooBig = 22,
    /// Routed to a backend whose next hop comes from the FIB (`nexthop = "fib"`), but the FIB
    /// had no usable answer and the backend has no static MAC to fall back to: dropped (the
    /// `NEXTHOPS` counters say why, `crate::nexthop`). The replay, which does not read the
    /// FIB, calls such a packet forwarded.
    NoNextHop = 23,
}

/// Number of [`Reason`]s: the length of the per-reason counter array.
pub const REASON_COUNT: u32 = 24;

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Self::Forwarded,
        Self::NotIp,
        Self::NotService,
        Self::NotL4,
        Self::MalformedNotVip,
        Self::MalformedIp,
        Self::MalformedL4,
        Self::Fragment,
        Self::BadMagic,
        Self::BadVersion,
        Self::ShortPayload,
        Self::NoBackend,
        Self::NoBackendAddress,
        Self::EncapFailed,
        Self::TooManyExtHeaders,
        Self::QuicMalformed,
        Self::QuicServerOnly,
        Self::Rerouted,
        Self::IcmpEchoReply,
        Self::IcmpForwarded,
        Self::IcmpForwardedByClient,
        Self::IcmpMalformed,
        Self::IcmpTooBig,
        Self::NoNextHop,
    ];

    /// Whether the packet was sent to a backend ([`Self::Forwarded`], [`Self::Rerouted`], or
    /// an ICMP error forwarded to the owner of the flow it quotes).
    pub const fn forwards(self) -> bool {
        matches!(
            self,
            Self::Forwarded | Self::Rerouted | Self::IcmpForwarded | Self::IcmpForwardedByClient
        )
    }

    /// The action this reason implies.
    pub const fn action(self) -> Action {
        match self {
            Self::Forwarded
            | Self::Rerouted
            | Self::IcmpEchoReply
            | Self::IcmpForwarded
            | Self::IcmpForwardedByClient
            | Self::IcmpTooBig => Action::Tx,
            Self::NotIp | Self::NotService | Self::NotL4 | Self::MalformedNotVip => Action::Pass,
            _ => Action::Drop,
        }
    }

    /// snake_case name used in metrics and the tracer.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::NotIp => "not_ip",
            Self::NotService => "not_service",
            Self::NotL4 => "not_l4",
            Self::MalformedNotVip => "malformed_not_vip",
            Self::MalformedIp => "malformed_ip",
            Self::MalformedL4 => "malformed_l4",
            Self::Fragment => "fragment",
            Self::BadMagic => "bad_magic",
            Self::BadVersion => "bad_version",
            Self::ShortPayload => "short_payload",
            Self::NoBackend => "no_backend",
            Self::NoBackendAddress => "no_backend_address",
            Self::EncapFailed => "encap_failed",
            Self::TooManyExtHeaders => "too_many_ext_headers",
            Self::QuicMalformed => "quic_malformed",
            Self::QuicServerOnly => "quic_server_only",
            Self::Rerouted => "rerouted",
            Self::IcmpEchoReply => "icmp_echo_reply",
            Self::IcmpForwarded => "icmp_forwarded",
            Self::IcmpForwardedByClient => "icmp_forwarded_by_client",
            Self::IcmpMalformed => "icmp_malformed",
            Self::IcmpTooBig => "icmp_too_big",
            Self::NoNextHop => "no_next_hop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_counter_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
