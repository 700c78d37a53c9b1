//! The routing decision: packet → service → (session, request key) → shard set or default
//! Maglev table → backend. Generic over [`Tables`], so the XDP program (map lookups) and
//! userspace (a replay against a copy of the maps) run this one function.
//!
//! UDP and TCP take the hot path. Every other protocol branches off right after the IP header,
//! before any lookup: ICMP to a VIP is answered (echo requests) or, for an error quoting a flow
//! a VIP sent, routed as that flow's own packet ([`crate::icmp`]).

use crate::{
    consts::{IPPROTO_TCP, IPPROTO_UDP, MAGLEV_SIZE, NO_BACKEND, TCP_ACK, TCP_FLAGS_OFF, TCP_SYN},
    hash::{addr_hash, flow_hash, ring_hash},
    icmp::{classify, is_icmp, Icmp},
    maps::{
        backend_flags, forward_mode, options, session_mode, Addr, Backend, FlowKey, Service,
        ServiceKey, SessionKey,
    },
    packet::{parse_header, parse_l3, parse_l4, HeaderError, L3Error, PacketBytes, L3, L4},
    quic::{quic_identity, CidLayout, QuicError},
    verdict::{Action, Reason},
};

pub use crate::partition::pick_shard;

/// Where the routing tables live: BPF maps in the kernel, a snapshot or the pinned maps in
/// userspace.
pub trait Tables {
    /// Whether QUIC services' connection ids are parsed here. Without, a QUIC service's UDP
    /// packet is decided [`Reason::QuicMalformed`] with [`Decision::service`] set: the kernel's
    /// balancer hands such a packet to a program of its own ([`Decision::quic_elsewhere`]),
    /// which decides it with [`Tables::HEADER_AND_FLOW`] off (the bench programs hand it over
    /// alike). The connection-id loops were half the balancer's verification.
    const QUIC: bool = true;
    /// Whether header- and flow-mode services (and ICMP to a VIP) are decided here. Off only in
    /// the kernel's QUIC program, which is handed nothing else: there a packet that is not UDP
    /// or TCP is [`Reason::NotL4`], and a service of another mode [`Reason::NotService`].
    const HEADER_AND_FLOW: bool = true;
    /// The service for a destination (or the VIP marker, see [`ServiceKey::vip_marker`]).
    fn service(&self, key: &ServiceKey) -> Option<Service>;
    /// For a placed session, the member of its shard set that owns `request_key` (see
    /// [`pick_shard`]); `None` for a session the daemon has not placed.
    fn placed_backend(&self, key: &SessionKey, request_key: u64) -> Option<u32>;
    /// The flags byte request `request_key` of placed session `key`, now owned by `owner`,
    /// carries: [`crate::handoff::mark_for`] under the session's handoff if its window is open
    /// now ([`crate::handoff`]), else 0. Asked right after [`Tables::placed_backend`] found the
    /// placement, for header-mode requests only, whose shardline header is at `header_off`.
    /// The kernel answers 0 without a lookup unless that placement's
    /// [`crate::maps::ShardSet::handoff`] flag is set, and writes a mark into the header there
    /// and then (every outcome after a placement is a forward or a drop), so the rest of the
    /// program never branches on it.
    fn handoff_mark(&self, key: &SessionKey, request_key: u64, owner: u32, header_off: usize)
        -> u8;
    /// The backend id in slot `slot` of the live half of the default Maglev table.
    fn maglev(&self, slot: u32) -> u32;
    /// The backend id in slot `hash % ring_size` of the live half of `service`'s own ring
    /// (only asked for a service with a pool, [`Service::has_pool`]).
    fn pool_ring(&self, service: &Service, hash: u64) -> u32;
    /// Whether backend `backend` is in the pool of `service` (only asked for a service with a
    /// pool): a flow entry or connection id naming a backend outside it is re-decided.
    fn in_pool(&self, service: &Service, backend: u32) -> bool;
    /// The backend with id `id`, if configured.
    fn backend(&self, id: u32) -> Option<Backend>;
    /// The backend an established flow sticks to, if the flow table has a live entry.
    fn sticky_backend(&self, flow: &FlowKey) -> Option<u32>;
    /// Records that `flow` was routed to `backend` (the kernel's flow table; replays ignore it).
    /// `held`: the flow table has a live entry for the flow, naming a backend that no longer
    /// serves it (the packet was rerouted), which is rewritten even over the new-flow rate; a
    /// flow without one (new, or idle) is then left unremembered, with no update at all.
    /// `opened`: a TCP SYN, routed without the flow-table lookup, so its entry may exist (a
    /// retransmission): the kernel looks it up and rewrites it in place before it inserts one.
    fn remember_flow(&self, flow: &FlowKey, backend: u32, held: bool, opened: bool);
    /// The dataplane's [`options`] bits ([`crate::maps::Globals::options`]); only asked for
    /// ICMP to a VIP and for a packet too big to encapsulate.
    fn options(&self) -> u32;
    /// The longest packet of the family not answered as too big to encapsulate
    /// ([`crate::maps::Globals::too_big_limit`]).
    fn too_big_limit(&self, v6: bool) -> u32;
    /// The key an unplaced session's request is hashed by ([`unplaced_key`]). Only the
    /// kernel's bench programs override it (with the key itself, see `dataplane-ebpf`'s
    /// `MapTables`).
    #[inline(always)]
    fn unplaced_key(&self, mode: u8, key: u64) -> u64 {
        unplaced_key(mode, key)
    }
}

/// The outcome of routing one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Why; implies the action ([`Reason::action`]).
    pub reason: Reason,
    /// Chosen backend id, [`NO_BACKEND`] unless forwarded.
    pub backend_id: u32,
    /// The matched service (default if none), its ring placement left out ([`Service::unplaced`])
    /// so every replay of a packet decides alike wherever the ring lives.
    pub service: Service,
    /// The session the packet belongs to (zero if no service matched).
    pub session: SessionKey,
    /// The request key partitioned across the session's shards.
    pub key: u64,
    /// Offset of the IP header (the L2 header length), valid when forwarded or answered.
    pub l3_off: u32,
    /// IP packet length from its header, valid when forwarded or answered.
    pub ip_len: u32,
    /// Whether the packet is IPv6.
    pub v6: bool,
    /// The shardline header's flags byte as the dataplane rewrites it for a request whose key
    /// moved in an open handoff window ([`Tables::handoff_mark`]), the UDP checksum updated
    /// to match; 0: not marked, the packet's bytes are left as they are.
    pub mark: u8,
    /// Offset of the shardline header in the frame, valid when `mark` is not 0.
    pub header_off: u16,
}

impl Decision {
    #[inline(always)]
    fn not_routed(reason: Reason) -> Self {
        Self {
            reason,
            backend_id: NO_BACKEND,
            service: Service::default(),
            session: SessionKey::default(),
            key: 0,
            l3_off: 0,
            ip_len: 0,
            v6: false,
            mark: 0,
            header_off: 0,
        }
    }

    /// The XDP action for this decision.
    pub fn action(&self) -> Action {
        self.reason.action()
    }

    /// Whether this decision, made without QUIC ([`Tables::QUIC`] off), leaves a QUIC
    /// service's packet to be decided elsewhere: the kernel's QUIC program.
    #[inline(always)]
    pub fn quic_elsewhere(&self) -> bool {
        self.reason == Reason::QuicMalformed && self.service.mode == session_mode::QUIC
    }
}

/// Routes one packet. Never panics and never reads outside the packet.
#[inline(always)]
pub fn decide<P: PacketBytes + ?Sized, T: Tables>(p: &P, t: &T) -> Decision {
    let l3 = match parse_l3(p) {
        Ok(l3) => l3,
        Err(e) => return Decision::not_routed(l3_error_reason(e, t)),
    };
    // The flow to route: the packet's own (UDP, TCP), or the one an ICMP error quotes. Each
    // has its own copy of the rest (`ICMP_ERROR` is a constant), so the UDP/TCP path carries
    // no test of where its flow came from.
    if l3.proto == IPPROTO_UDP || l3.proto == IPPROTO_TCP {
        let Some(l4) = parse_l4(p, &l3) else {
            let vip = is_vip(t, &l3.dst);
            return Decision::not_routed(if vip {
                Reason::MalformedL4
            } else {
                Reason::NotService
            });
        };
        return route_flow::<false, P, T>(p, t, &l3, &l4);
    }
    if !T::HEADER_AND_FLOW {
        return Decision::not_routed(Reason::NotL4);
    }
    match other_protocol(p, &l3, t) {
        Next::Route(flow, ports) => route_flow::<true, P, T>(p, t, &flow, &ports),
        Next::Decided(reason) => {
            let mut d = Decision::not_routed(reason);
            if reason == Reason::IcmpEchoReply {
                d.l3_off = l3.off as u32;
                d.ip_len = (l3.end - l3.off) as u32;
                d.v6 = l3.v6;
            }
            d
        }
    }
}

/// Routes the flow `l3` / `l4`: a packet's own, or (`ICMP_ERROR`) the one an ICMP error
/// quotes, turned round.
#[inline(always)]
fn route_flow<const ICMP_ERROR: bool, P: PacketBytes + ?Sized, T: Tables>(
    p: &P,
    t: &T,
    l3: &L3,
    l4: &L4,
) -> Decision {
    let icmp_error = ICMP_ERROR;
    let skey = ServiceKey {
        addr: l3.dst,
        port: l4.dport,
        proto: l3.proto,
        _pad: 0,
    };
    let Some(service) = t.service(&skey) else {
        // An error quoting a port no service has: the stack's, as any ICMP we do not handle.
        return Decision::not_routed(if icmp_error {
            Reason::NotL4
        } else {
            Reason::NotService
        });
    };
    // A client packet that will not fit the egress link once encapsulated is answered, before
    // any lookup and without starting a flow (Katran checks at the same point). On the hot
    // path this is one compare of the length against the MTU. The length is computed here and
    // again below rather than kept across the lookups: a value live across them changes the
    // kernel's register allocation enough to blow the bench programs' verification past the
    // verifier's million instructions (their limit is `u32::MAX`, so this folds away there).
    if !icmp_error
        && (l3.end - l3.off) as u32 > t.too_big_limit(l3.v6)
        && service.forward == forward_mode::ENCAP
    {
        let mut d = Decision::not_routed(Reason::IcmpTooBig);
        d.service = service.unplaced();
        d.l3_off = l3.off as u32;
        d.ip_len = (l3.end - l3.off) as u32;
        d.v6 = l3.v6;
        return d;
    }
    let mut by_client = false;
    let identity = if icmp_error {
        let (id, guessed) = quoted_identity(p, l3, l4, &service);
        by_client = guessed;
        Ok(id)
    } else {
        request_identity::<P, T>(p, l3, l4, &service)
    };
    let (session, key, server_id) = match identity {
        Ok(id) => id,
        Err(reason) => {
            let mut d = Decision::not_routed(reason);
            if !T::QUIC {
                // For `Decision::quic_elsewhere`.
                d.service = service.unplaced();
            }
            return d;
        }
    };
    let session = SessionKey {
        service: service.id,
        _pad: 0,
        session,
    };
    let mut d = Decision::not_routed(Reason::NoBackend);
    d.service = service.unplaced();
    d.session = session;
    d.key = key;
    d.l3_off = l3.off as u32;
    d.ip_len = (l3.end - l3.off) as u32;
    d.v6 = l3.v6;

    // An established flow keeps its backend across table changes while that backend exists.
    let flow = (T::HEADER_AND_FLOW && service.mode == session_mode::FLOW).then_some(FlowKey {
        src: l3.src,
        dst: l3.dst,
        sport: l4.sport,
        dport: l4.dport,
        proto: l3.proto,
        _pad: [0; 3],
    });
    // A flow entry or connection id naming a backend that is down or gone, or outside the
    // service's pool, is re-decided by the tables (which leave such backends out) and counted
    // as rerouted. The check is one flag test on the backend entry the hit path loads anyway,
    // and for a service with a pool one bit of an array the verifier inlines.
    //
    // A TCP SYN without ACK opens a connection, so it has none to keep: it is routed by the
    // tables without the flow-table lookup, and its entry is written afresh (under the
    // new-flow rate; over it, none, and its session is not counted outside a slot), as Katran
    // routes a SYN by its ring. A retransmitted SYN follows the tables too, and a reused
    // 5-tuple does not inherit its last connection's backend.
    let mut rerouted = false;
    let opened = !icmp_error && flow.is_some() && opens_connection(p, l3);
    let sticky = match &flow {
        Some(_) if opened => None,
        Some(f) => match t.sticky_backend(f) {
            Some(id) => {
                let found = serves(t, &service, id).map(|b| (id, b));
                rerouted = found.is_none();
                found
            }
            None => None,
        },
        None => None,
    };
    // QUIC-LB: a connection id naming a live backend pins the packet to it, whatever the
    // client's address and the tables say, so connections survive rebinding and re-sharding.
    let pinned = match server_id {
        Some(id) => {
            let found = serves(t, &service, id).map(|b| (id, b));
            rerouted |= found.is_none();
            found
        }
        None => None,
    };
    let (backend_id, backend) = match pinned.or(sticky) {
        Some(found) => found,
        None => {
            let id = match t.placed_backend(&session, key) {
                Some(id) => {
                    // Header mode, the packet's own request: mark a key that moved.
                    if T::HEADER_AND_FLOW && !icmp_error && service.mode == session_mode::HEADER {
                        d.mark = t.handoff_mark(&session, key, id, l4.payload_off);
                        d.header_off = l4.payload_off as u16;
                    }
                    id
                }
                None => unplaced_backend(t, &service, session.session, key),
            };
            let Some(backend) = present(t, id) else {
                return d;
            };
            (id, backend)
        }
    };
    d.backend_id = backend_id;
    // An IPv6 packet needs the backend's IPv6 address; an IPv4 one goes IPIP to its IPv4
    // address or, to a backend with only IPv6, IPv4-in-IPv6 (`crate::encap::outer_v6`).
    let usable = if l3.v6 {
        backend_flags::HAS_V6
    } else {
        backend_flags::HAS_V4 | backend_flags::HAS_V6
    };
    d.reason = if service.forward == forward_mode::ENCAP && backend.flags & usable == 0 {
        Reason::NoBackendAddress
    } else if icmp_error {
        if by_client {
            Reason::IcmpForwardedByClient
        } else {
            Reason::IcmpForwarded
        }
    } else if rerouted {
        Reason::Rerouted
    } else {
        Reason::Forwarded
    };
    // An ICMP error never starts a flow: it may be forged, and it is not the client's packet.
    if let (Some(f), None, true) = (&flow, sticky, !icmp_error && d.reason.forwards()) {
        // In flow mode `rerouted` says the flow table named a backend that no longer serves it.
        t.remember_flow(f, backend_id, rerouted, opened);
    }
    d
}

/// Whether `l3`'s packet is a TCP SYN without ACK: a client opening a connection. The
/// transport header was checked whole by [`parse_l4`].
#[inline(always)]
fn opens_connection<P: PacketBytes + ?Sized>(p: &P, l3: &L3) -> bool {
    l3.proto == IPPROTO_TCP
        && p.u8_at(l3.l4_off + TCP_FLAGS_OFF)
            .is_some_and(|flags| flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
}

/// The request key an unplaced session's request is hashed by into the default table or its
/// service's ring. In header mode none: every key of the session goes to one backend, its
/// *home*, so it keeps its data together until the control loop gives it a shard set (which
/// then keeps the home and widens it). Flows and QUIC connections, whose "session" is a client
/// address, spread by their own key.
#[inline(always)]
pub const fn unplaced_key(mode: u8, key: u64) -> u64 {
    if mode == session_mode::HEADER {
        0
    } else {
        key
    }
}

/// The backend the default table, or `service`'s own ring for a service with a pool, gives
/// request `key` of unplaced session `session` ([`NO_BACKEND`] if the slot is empty).
#[inline(always)]
pub fn unplaced_backend<T: Tables>(t: &T, service: &Service, session: u64, key: u64) -> u32 {
    let hash = ring_hash(session, t.unplaced_key(service.mode, key));
    if service.has_pool() {
        t.pool_ring(service, hash)
    } else {
        t.maglev((hash % MAGLEV_SIZE as u64) as u32)
    }
}

/// What a packet that is neither UDP nor TCP leads to.
enum Next {
    /// Route this flow (an ICMP error's quoted flow, in the client's direction).
    Route(L3, L4),
    /// Not routed, for this reason (an answered echo request included).
    Decided(Reason),
}

/// The branch for every protocol but UDP and TCP: only ICMP to a VIP is the balancer's.
#[inline(always)]
fn other_protocol<P: PacketBytes + ?Sized, T: Tables>(p: &P, l3: &L3, t: &T) -> Next {
    if !is_vip(t, &l3.dst) {
        return Next::Decided(Reason::NotService);
    }
    if !is_icmp(l3) {
        return Next::Decided(Reason::NotL4);
    }
    Next::Decided(
        match classify(p, l3, t.options() & options::ECHO_REPLY != 0) {
            Icmp::Error(flow, ports) => return Next::Route(flow, ports),
            Icmp::Echo => Reason::IcmpEchoReply,
            Icmp::Pass => Reason::NotL4,
            Icmp::Malformed => Reason::IcmpMalformed,
        },
    )
}

/// The (session, request key, no server id) of the flow an ICMP error quotes, and whether it
/// was guessed from the client's address and ports. A flow-mode service's are exact. A
/// header-mode service's are exact when the quoted datagram starts with a shardline header
/// (a backend that echoes the request's header in its replies); a QUIC packet from a backend
/// carries the client's connection id, not the server's. Those, and header-mode replies
/// without the header, are routed by the client's address and ports as a flow-mode service
/// would route them: the same backend for every error of one flow, not always the owner.
#[inline(always)]
fn quoted_identity<P: PacketBytes + ?Sized>(
    p: &P,
    l3: &L3,
    l4: &L4,
    service: &Service,
) -> ((u64, u64, Option<u32>), bool) {
    if service.mode == session_mode::HEADER && l3.proto == IPPROTO_UDP {
        if let Ok(h) = parse_header(p, l4.payload_off, l4.payload_end) {
            return ((h.session, h.key, None), false);
        }
    }
    let flow = (
        addr_hash(&l3.src),
        flow_hash(&l3.src, &l3.dst, l4.sport, l4.dport, l3.proto),
        None,
    );
    (flow, service.mode != session_mode::FLOW)
}

/// The (session, request key, server id the packet is pinned to) of a packet for `service`.
#[inline(always)]
fn request_identity<P: PacketBytes + ?Sized, T: Tables>(
    p: &P,
    l3: &L3,
    l4: &L4,
    service: &Service,
) -> Result<(u64, u64, Option<u32>), Reason> {
    if T::HEADER_AND_FLOW && service.mode == session_mode::HEADER {
        if l3.proto != IPPROTO_UDP {
            return Err(Reason::MalformedL4);
        }
        return match parse_header(p, l4.payload_off, l4.payload_end) {
            Ok(h) => Ok((h.session, h.key, None)),
            Err(HeaderError::Short) => Err(Reason::ShortPayload),
            Err(HeaderError::BadMagic) => Err(Reason::BadMagic),
            Err(HeaderError::BadVersion) => Err(Reason::BadVersion),
        };
    }
    if service.mode == session_mode::QUIC {
        if l3.proto != IPPROTO_UDP {
            return Err(Reason::MalformedL4);
        }
        if !T::QUIC {
            return Err(Reason::QuicMalformed);
        }
        let layout = CidLayout {
            rotation: service.rotation,
            server_id_len: service.server_id_len,
        };
        return match quic_identity(p, l4.payload_off, l4.payload_end, layout) {
            Ok(q) => Ok((addr_hash(&l3.src), q.key, q.server_id)),
            Err(QuicError::ServerOnly) => Err(Reason::QuicServerOnly),
            Err(_) => Err(Reason::QuicMalformed),
        };
    }
    if !T::HEADER_AND_FLOW {
        return Err(Reason::NotService);
    }
    Ok((
        addr_hash(&l3.src),
        flow_hash(&l3.src, &l3.dst, l4.sport, l4.dport, l3.proto),
        None,
    ))
}

/// The backend with id `id` if it is configured (present).
#[inline(always)]
fn present<T: Tables>(t: &T, id: u32) -> Option<Backend> {
    let backend = t.backend(id)?;
    (backend.flags & backend_flags::PRESENT != 0).then_some(backend)
}

/// The backend with id `id` if it is configured and not down: what a flow entry or connection
/// id may pin a packet to.
#[inline(always)]
fn live<T: Tables>(t: &T, id: u32) -> Option<Backend> {
    let backend = t.backend(id)?;
    let wanted = backend_flags::PRESENT | backend_flags::DOWN;
    (backend.flags & wanted == backend_flags::PRESENT).then_some(backend)
}

/// The backend with id `id` if it is live and, for a service with a pool, in that pool: what
/// a flow entry or connection id of `service` may pin a packet to.
#[inline(always)]
fn serves<T: Tables>(t: &T, service: &Service, id: u32) -> Option<Backend> {
    let backend = live(t, id)?;
    (!service.has_pool() || t.in_pool(service, id)).then_some(backend)
}

#[inline(always)]
fn is_vip<T: Tables>(t: &T, addr: &Addr) -> bool {
    t.service(&ServiceKey::vip_marker(*addr)).is_some()
}

#[inline(always)]
fn l3_error_reason<T: Tables>(e: L3Error, t: &T) -> Reason {
    match e {
        L3Error::NotIp => Reason::NotIp,
        L3Error::Malformed(Some(dst)) if is_vip(t, &dst) => Reason::MalformedIp,
        L3Error::Malformed(_) => Reason::MalformedNotVip,
        L3Error::Fragment(dst) if is_vip(t, &dst) => Reason::Fragment,
        L3Error::TooManyExtHeaders(dst) if is_vip(t, &dst) => Reason::TooManyExtHeaders,
        L3Error::Fragment(_) | L3Error::TooManyExtHeaders(_) => Reason::NotService,
    }
}
