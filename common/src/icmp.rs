//! ICMP and ICMPv6 to a VIP, as Katran handles them: echo requests the balancer answers, and
//! errors about packets a VIP sent (destination unreachable, fragmentation needed / packet too
//! big, time exceeded), which go to the backend that sent the quoted packet so path-MTU
//! discovery works for connections backends answer directly.
//!
//! An error quotes the offending packet as the backend sent it, VIP → client. [`classify`] reads
//! the quoted IP header and the first 8 octets of its transport header and turns the flow
//! round, client → VIP with the ports swapped: the routing decision then treats it as that
//! flow's own packet. Bounds-checked like [`crate::packet`], and no read passes the outer IP
//! packet's end (Ethernet padding is never taken for quoted bytes).

use crate::{
    consts::{
        icmp_type, icmpv6_type, ICMP_HLEN, ICMP_QUOTED_L4, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, UDP_HLEN,
    },
    packet::{v4_mapped_word, PacketBytes, L3, L4},
};

/// What an ICMP or ICMPv6 message to a VIP asks of the balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp {
    /// An echo request to answer in place: answering is on, and the ICMP header follows the
    /// fixed IP header (no IPv4 options, no IPv6 extension headers, which a reply would carry
    /// back).
    Echo,
    /// An error quoting a UDP or TCP packet the VIP sent: that flow in the client's direction
    /// (`L3` keeps the outer packet's offset, family and end; `L4`'s payload is the quoted one).
    Error(L3, L4),
    /// Well formed, but not the balancer's business: other types, echo requests with answering
    /// off or behind options, quotes of other protocols, of a later fragment (no ports) or
    /// behind IPv6 extension headers. Left to the stack.
    Pass,
    /// Truncated or inconsistent: an ICMP header cut short, a quote shorter than its IP header
    /// and 8 transport octets, of the wrong IP version, or of a packet the VIP did not send.
    Malformed,
}

/// Whether `l3` carries ICMP of its own family (ICMP in IPv4, ICMPv6 in IPv6).
#[inline(always)]
pub fn is_icmp(l3: &L3) -> bool {
    l3.proto == if l3.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP }
}

/// Classifies the ICMP message of `l3` (which [`is_icmp`]), a packet to a VIP; echo requests
/// are answered only with `answer_echo`.
#[inline(always)]
pub fn classify<P: PacketBytes + ?Sized>(p: &P, l3: &L3, answer_echo: bool) -> Icmp {
    if l3.l4_off + ICMP_HLEN > l3.end {
        return Icmp::Malformed;
    }
    // Type and code as one word: a one-octet load at a variable offset lets LLVM fold the
    // bounds check into a form the verifier cannot use (`pkt + off >= pkt_end`).
    let Some(type_code) = p.u16_at(l3.l4_off) else {
        return Icmp::Malformed;
    };
    let ty = (type_code >> 8) as u8;
    let (echo, error, fixed) = if l3.v6 {
        (
            ty == icmpv6_type::ECHO_REQUEST,
            matches!(
                ty,
                icmpv6_type::DEST_UNREACH
                    | icmpv6_type::PACKET_TOO_BIG
                    | icmpv6_type::TIME_EXCEEDED
            ),
            IPV6_HLEN,
        )
    } else {
        (
            ty == icmp_type::ECHO,
            matches!(ty, icmp_type::DEST_UNREACH | icmp_type::TIME_EXCEEDED),
            IPV4_HLEN,
        )
    };
    if echo {
        return if answer_echo && l3.l4_off == l3.off + fixed {
            Icmp::Echo
        } else {
            Icmp::Pass
        };
    }
    if !error {
        return Icmp::Pass;
    }
    let quote = l3.l4_off + ICMP_HLEN;
    let quoted = if l3.v6 {
        quoted_v6(p, quote, l3.end)
    } else {
        quoted_v4(p, quote, l3.end)
    };
    let Some(q) = quoted else {
        return Icmp::Malformed;
    };
    // The quoted packet left from the VIP this error is addressed to; anything else is not an
    // error about a flow of ours.
    if q.src != l3.dst {
        return Icmp::Malformed;
    }
    if !q.routable {
        return Icmp::Pass;
    }
    client_flow(p, l3, &q).unwrap_or(Icmp::Malformed)
}

/// The quoted packet's header, as far as routing needs it.
struct Quoted {
    /// The VIP it left from.
    src: crate::maps::Addr,
    /// The client it was going to.
    dst: crate::maps::Addr,
    /// Its transport protocol.
    proto: u8,
    /// Offset of its transport header (whose first [`ICMP_QUOTED_L4`] octets are present).
    l4_off: usize,
    /// UDP or TCP, and not a later fragment: it has ports.
    routable: bool,
}

/// The quoted IPv4 header at `q`; `None` if it or the 8 octets after it pass `end`, or it is
/// not IPv4.
#[inline(always)]
fn quoted_v4<P: PacketBytes + ?Sized>(p: &P, q: usize, end: usize) -> Option<Quoted> {
    if q + IPV4_HLEN > end {
        return None;
    }
    // The destination ends the fixed header: checked first, it bounds the other reads.
    let dst = v4_mapped_word(p.word_at(q + 16)?);
    let src = v4_mapped_word(p.word_at(q + 12)?);
    // Version / IHL and TOS as one word, as in `classify`.
    let vihl = (p.u16_at(q)? >> 8) as u8;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let l4_off = q + ihl;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || l4_off + ICMP_QUOTED_L4 > end {
        return None;
    }
    let proto = p.u8_at(q + 9)?;
    let later_fragment = p.u16_at(q + 6)? & 0x1fff != 0;
    Some(Quoted {
        src,
        dst,
        proto,
        l4_off,
        routable: !later_fragment && (proto == IPPROTO_UDP || proto == IPPROTO_TCP),
    })
}

/// The quoted IPv6 header at `q`; `None` if it or the 8 octets after it pass `end`, or it is
/// not IPv6. Extension headers are not walked: a quote behind them is left to the stack.
#[inline(always)]
fn quoted_v6<P: PacketBytes + ?Sized>(p: &P, q: usize, end: usize) -> Option<Quoted> {
    let l4_off = q + IPV6_HLEN;
    if l4_off + ICMP_QUOTED_L4 > end {
        return None;
    }
    let dst = p.addr_at(q + 24)?;
    let src = p.addr_at(q + 8)?;
    if p.u16_at(q)? >> 12 != 6 {
        return None;
    }
    let proto = p.u8_at(q + 6)?;
    Some(Quoted {
        src,
        dst,
        proto,
        l4_off,
        routable: proto == IPPROTO_UDP || proto == IPPROTO_TCP,
    })
}

/// The quoted flow turned round: client → VIP, client port → service port. The payload is what
/// was quoted of the datagram (bounded by the UDP length and the outer packet); none for TCP,
/// whose data offset is past the 8 octets an error must carry.
#[inline(always)]
fn client_flow<P: PacketBytes + ?Sized>(p: &P, l3: &L3, q: &Quoted) -> Option<Icmp> {
    let vip_port = p.u16_at(q.l4_off)?;
    let client_port = p.u16_at(q.l4_off + 2)?;
    let payload_off = q.l4_off + UDP_HLEN;
    let mut payload_end = payload_off;
    if q.proto == IPPROTO_UDP {
        let len = p.u16_at(q.l4_off + 4)? as usize;
        if len > UDP_HLEN {
            payload_end = (q.l4_off + len).min(l3.end);
        }
    }
    let flow = L3 {
        src: q.dst,
        dst: q.src,
        proto: q.proto,
        l4_off: q.l4_off,
        ..*l3
    };
    let ports = L4 {
        sport: client_port,
        dport: vip_port,
        payload_off,
        payload_end,
    };
    Some(Icmp::Error(flow, ports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        consts::{ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6},
        maps::v4_mapped,
        packet::parse_l3,
    };

    const VIP: [u8; 4] = [10, 100, 0, 1];
    const CLIENT: [u8; 4] = [192, 0, 2, 10];
    const ROUTER: [u8; 4] = [198, 51, 100, 1];

    /// Ethernet + IPv4 (no options) from `src` to `dst` carrying `proto` and `body`.
    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HLEN];
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        let total = (IPV4_HLEN + body.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(body);
        f
    }

    /// The IP packet of `frame` (Ethernet header dropped).
    fn ip(frame: &[u8]) -> &[u8] {
        &frame[ETH_HLEN..]
    }

    /// A fragmentation-needed error from the router to the VIP quoting `quoted` (an IP packet).
    fn frag_needed(quoted: &[u8]) -> Vec<u8> {
        let mut body = vec![icmp_type::DEST_UNREACH, 4, 0, 0, 0, 0, 0x05, 0xc8];
        body.extend_from_slice(quoted);
        ipv4(ROUTER, VIP, IPPROTO_ICMP, &body)
    }

    fn classify_frame(frame: &[u8], echo: bool) -> Icmp {
        let l3 = parse_l3(frame).expect("valid IPv4");
        assert!(is_icmp(&l3));
        classify(frame, &l3, echo)
    }

    #[test]
    fn an_error_quoting_a_vip_reply_routes_as_the_clients_flow() {
        // The backend's reply: VIP:8080 -> client:40000, TCP, 8 octets of its header quoted.
        let reply = ipv4(
            VIP,
            CLIENT,
            IPPROTO_TCP,
            &[0x1f, 0x90, 0x9c, 0x40, 1, 2, 3, 4],
        );
        let error = frag_needed(ip(&reply));
        let Icmp::Error(l3, l4) = classify_frame(&error, true) else {
            panic!("a routable error");
        };
        assert_eq!(
            (l3.src, l3.dst, l3.proto),
            (v4_mapped(CLIENT), v4_mapped(VIP), IPPROTO_TCP)
        );
        assert_eq!((l4.sport, l4.dport), (40_000, 8080));
        assert_eq!((l3.off, l3.end, l3.v6), (ETH_HLEN, error.len(), false));
        assert_eq!(l4.payload_off, l4.payload_end, "no TCP payload");
    }

    #[test]
    fn a_quoted_datagram_payload_is_bounded_by_the_quote_and_the_udp_length() {
        let mut udp = vec![0x1b, 0x58, 0x9c, 0x40, 0, 40, 0, 0];
        udp.extend_from_slice(&[0xaa; 12]);
        let reply = ipv4(VIP, CLIENT, IPPROTO_UDP, &udp);
        // Quoted whole but the UDP length says 40: the quote ends first.
        let error = frag_needed(ip(&reply));
        let Icmp::Error(_, l4) = classify_frame(&error, true) else {
            panic!("a routable error");
        };
        assert_eq!(l4.payload_end - l4.payload_off, 12);
        // Padding after the outer packet is not quoted data.
        let mut padded = error.clone();
        padded.extend_from_slice(&[0xbb; 30]);
        assert_eq!(classify_frame(&padded, true), classify_frame(&error, true));
    }

    #[test]
    fn echo_requests_are_answered_only_when_on_and_option_free() {
        let echo = ipv4(
            CLIENT,
            VIP,
            IPPROTO_ICMP,
            &[icmp_type::ECHO, 0, 0, 0, 0, 1, 0, 1],
        );
        assert_eq!(classify_frame(&echo, true), Icmp::Echo);
        assert_eq!(classify_frame(&echo, false), Icmp::Pass);
        let reply = ipv4(
            CLIENT,
            VIP,
            IPPROTO_ICMP,
            &[icmp_type::ECHO_REPLY, 0, 0, 0, 0, 1, 0, 1],
        );
        assert_eq!(classify_frame(&reply, true), Icmp::Pass);
        let short = ipv4(CLIENT, VIP, IPPROTO_ICMP, &[icmp_type::ECHO, 0, 0, 0]);
        assert_eq!(classify_frame(&short, true), Icmp::Malformed);
    }

    #[test]
    fn broken_or_foreign_quotes_are_malformed_and_unroutable_ones_pass() {
        let reply = ipv4(
            VIP,
            CLIENT,
            IPPROTO_TCP,
            &[0x1f, 0x90, 0x9c, 0x40, 1, 2, 3, 4],
        );
        let quoted = ip(&reply).to_vec();
        // Seven transport octets only.
        assert_eq!(
            classify_frame(&frag_needed(&quoted[..27]), true),
            Icmp::Malformed
        );
        // Not IPv4.
        let mut v = quoted.clone();
        v[0] = 0x65;
        assert_eq!(classify_frame(&frag_needed(&v), true), Icmp::Malformed);
        // Sent by another address than the VIP the error is addressed to.
        let other = ipv4(CLIENT, VIP, IPPROTO_TCP, &quoted[20..]);
        assert_eq!(
            classify_frame(&frag_needed(ip(&other)), true),
            Icmp::Malformed
        );
        // A later fragment, and a quoted ICMP message: no ports.
        let mut frag = quoted.clone();
        frag[6..8].copy_from_slice(&[0x00, 0x10]);
        assert_eq!(classify_frame(&frag_needed(&frag), true), Icmp::Pass);
        let mut icmp = quoted;
        icmp[9] = IPPROTO_ICMP;
        assert_eq!(classify_frame(&frag_needed(&icmp), true), Icmp::Pass);
    }

    #[test]
    fn icmpv6_packet_too_big_quotes_an_ipv6_flow() {
        let vip6 = [0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let client6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let router6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let v6 = |src: [u8; 16], dst: [u8; 16], nh: u8, body: &[u8]| {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(body.len() as u16).to_be_bytes());
            h.extend_from_slice(&[nh, 64]);
            h.extend_from_slice(&src);
            h.extend_from_slice(&dst);
            h.extend_from_slice(body);
            h
        };
        let quoted = v6(
            vip6,
            client6,
            IPPROTO_UDP,
            &[0x1b, 0x58, 0x9c, 0x40, 0, 8, 0, 0],
        );
        let mut body = vec![icmpv6_type::PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0x05, 0x00];
        body.extend_from_slice(&quoted);
        let mut frame = vec![0u8; ETH_HLEN];
        frame[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        frame.extend_from_slice(&v6(router6, vip6, IPPROTO_ICMPV6, &body));
        let Icmp::Error(l3, l4) = classify_frame(&frame, true) else {
            panic!("a routable error");
        };
        assert!(l3.v6);
        assert_eq!((l3.proto, l4.sport, l4.dport), (IPPROTO_UDP, 40_000, 7000));
        assert_eq!(l3.src, crate::maps::addr_words(client6));
    }
}
