//! The inner packets of data-path probes (this node → the VIP, IPv4 or IPv6) and the reading of
//! the VIP's TCP answer: pure functions, tested here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use shardline_common::consts::{IPPROTO_TCP, TCP_SYN as SYN};
use shardline_common::{
    checksum::internet_checksum,
    consts::{IPPROTO_UDP, TCP_ACK as ACK, TCP_FLAGS_OFF},
};

/// The TCP flags byte's RST bit (SYN and ACK: `shardline_common::consts`).
pub const RST: u8 = 0x04;
/// TTL (hop limit) of the inner packets (the backend's stack sees them after decapsulation).
const INNER_TTL: u8 = 64;

/// The inner packet's addresses: this node's source towards the backend and the VIP, of one
/// family (the balancer encapsulates an IPv4 VIP's packets in IPv4, an IPv6 VIP's in IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    /// IPv4 source and VIP.
    V4(Ipv4Addr, Ipv4Addr),
    /// IPv6 source and VIP.
    V6(Ipv6Addr, Ipv6Addr),
}

impl Inner {
    /// The pair, or why `source` and `vip` cannot make one (different families).
    pub fn new(source: IpAddr, vip: IpAddr) -> Result<Self, String> {
        match (source, vip) {
            (IpAddr::V4(s), IpAddr::V4(v)) => Ok(Self::V4(s, v)),
            (IpAddr::V6(s), IpAddr::V6(v)) => Ok(Self::V6(s, v)),
            _ => Err(format!(
                "source {source} and VIP {vip} are of different families"
            )),
        }
    }

    /// The IP header of a packet carrying `len` octets of `protocol`, with its checksum
    /// (IPv4; IPv6 has none).
    fn header(&self, protocol: u8, len: usize) -> Vec<u8> {
        match *self {
            Self::V4(source, vip) => {
                let mut h = Vec::with_capacity(20 + len);
                h.extend_from_slice(&[0x45, 0]);
                h.extend_from_slice(&((20 + len) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
                h.extend_from_slice(&[INNER_TTL, protocol, 0, 0]);
                h.extend_from_slice(&source.octets());
                h.extend_from_slice(&vip.octets());
                let sum = internet_checksum(&h);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                h
            }
            Self::V6(source, vip) => {
                let mut h = Vec::with_capacity(40 + len);
                h.extend_from_slice(&[0x60, 0, 0, 0]);
                h.extend_from_slice(&(len as u16).to_be_bytes());
                h.extend_from_slice(&[protocol, INNER_TTL]);
                h.extend_from_slice(&source.octets());
                h.extend_from_slice(&vip.octets());
                h
            }
        }
    }

    /// The transport checksum of `segment` (its checksum field zero) under this pair's
    /// pseudo-header (RFC 793 / RFC 8200 section 8.1).
    fn transport_checksum(&self, protocol: u8, segment: &[u8]) -> u16 {
        let mut pseudo = Vec::with_capacity(40 + segment.len());
        match *self {
            Self::V4(source, vip) => {
                pseudo.extend_from_slice(&source.octets());
                pseudo.extend_from_slice(&vip.octets());
                pseudo.extend_from_slice(&[0, protocol]);
                pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
            }
            Self::V6(source, vip) => {
                pseudo.extend_from_slice(&source.octets());
                pseudo.extend_from_slice(&vip.octets());
                pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, protocol]);
            }
        }
        pseudo.extend_from_slice(segment);
        internet_checksum(&pseudo)
    }
}

/// The inner packet of a UDP probe: `inner`'s source port `sport` → the VIP's `port`, carrying
/// `payload`. IPv4 leaves the UDP checksum 0, which it allows; IPv6 requires one.
pub fn udp_probe(inner: Inner, sport: u16, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    if let Inner::V6(..) = inner {
        // RFC 8200 section 8.1: a computed 0 is sent as 0xffff.
        let sum = match inner.transport_checksum(IPPROTO_UDP, &udp) {
            0 => 0xffff,
            sum => sum,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    let mut p = inner.header(IPPROTO_UDP, udp.len());
    p.extend_from_slice(&udp);
    p
}

/// The inner packet of a TCP probe segment: `inner`'s source port `sport` → the VIP's `port`
/// with `flags`, its sequence and acknowledgement numbers, and a valid checksum.
pub fn tcp_segment(inner: Inner, sport: u16, port: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    let sum = inner.transport_checksum(IPPROTO_TCP, &tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut p = inner.header(IPPROTO_TCP, tcp.len());
    p.extend_from_slice(&tcp);
    p
}

/// What came back to a TCP probe.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The VIP accepted: its sequence number and what it acknowledged.
    SynAck { seq: u32, ack: u32 },
    /// The VIP refused.
    Reset,
}

/// The TCP segment of an IPv4 packet as a raw IPv4 socket hands it over (header included),
/// if the packet is TCP addressed to `to`.
pub fn ipv4_tcp_payload(packet: &[u8], to: Ipv4Addr) -> Option<&[u8]> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet[0] >> 4 != 4 || ihl < 20 || packet.get(9) != Some(&IPPROTO_TCP) {
        return None;
    }
    if packet.get(16..20)? != to.octets() {
        return None;
    }
    packet.get(ihl..)
}

/// Reads `tcp` (a TCP segment that came from `from`) as the VIP's answer to the probe from
/// port `sport`, if it is one.
pub fn answer_to(tcp: &[u8], from: IpAddr, sport: u16, vip: SocketAddr) -> Option<Answer> {
    let tcp = tcp.get(..20)?;
    let word16 = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    let word32 = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    if from != vip.ip() || word16(0) != vip.port() || word16(2) != sport {
        return None;
    }
    let flags = tcp[TCP_FLAGS_OFF];
    if flags & RST != 0 {
        Some(Answer::Reset)
    } else if flags & (SYN | ACK) == SYN | ACK {
        Some(Answer::SynAck {
            seq: word32(4),
            ack: word32(8),
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 100, 1);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 1);
    const PORT: u16 = 7000;

    fn v4() -> Inner {
        Inner::V4(SRC, VIP)
    }

    fn v6() -> Inner {
        Inner::V6(SRC6, VIP6)
    }

    #[test]
    fn a_pair_is_of_one_family() {
        assert_eq!(Inner::new(SRC.into(), VIP.into()), Ok(v4()));
        assert_eq!(Inner::new(SRC6.into(), VIP6.into()), Ok(v6()));
        let err = Inner::new(SRC.into(), VIP6.into()).unwrap_err();
        assert!(err.contains("different families"), "{err}");
    }

    #[test]
    fn a_udp_probe_is_a_valid_ipv4_datagram_to_the_vip() {
        let p = udp_probe(v4(), 40000, PORT, b"hi");
        assert_eq!(p.len(), 20 + 8 + 2);
        assert_eq!(
            internet_checksum(&p[..20]),
            0,
            "the IPv4 header checksum holds"
        );
        assert_eq!(&p[12..16], &SRC.octets());
        assert_eq!(&p[16..20], &VIP.octets());
        assert_eq!(p[9], IPPROTO_UDP);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 30, "total length");
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 40000);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), PORT);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 10, "UDP length");
        assert_eq!(&p[28..], b"hi");
    }

    /// The pseudo-header sum over an IPv6 packet's transport segment (checksum in place).
    fn ipv6_transport_sum(p: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[8..40]);
        pseudo.extend_from_slice(&((p.len() - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, p[6]]);
        pseudo.extend_from_slice(&p[40..]);
        internet_checksum(&pseudo)
    }

    #[test]
    fn a_udp_probe_over_ipv6_carries_the_checksum_ipv6_requires() {
        let p = udp_probe(v6(), 40000, PORT, b"hi");
        assert_eq!(p.len(), 40 + 8 + 2);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 10, "payload length");
        assert_eq!((p[6], p[7]), (IPPROTO_UDP, INNER_TTL));
        assert_eq!(&p[8..24], &SRC6.octets());
        assert_eq!(&p[24..40], &VIP6.octets());
        assert_eq!(u16::from_be_bytes([p[42], p[43]]), PORT);
        assert_ne!(u16::from_be_bytes([p[46], p[47]]), 0, "a checksum is set");
        assert_eq!(ipv6_transport_sum(&p), 0, "the UDP checksum holds");
        assert_eq!(&p[48..], b"hi");
    }

    #[test]
    fn a_tcp_segment_carries_a_checksum_its_receiver_accepts() {
        let p = tcp_segment(v4(), 40000, PORT, 0x0102_0304, 7, SYN);
        assert_eq!(p.len(), 40);
        assert_eq!(internet_checksum(&p[..20]), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&SRC.octets());
        pseudo.extend_from_slice(&VIP.octets());
        pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, 20]);
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(internet_checksum(&pseudo), 0, "the TCP checksum holds");
        assert_eq!(p[20 + 13], SYN);
        assert_eq!(&p[24..28], &[1, 2, 3, 4]);

        let p = tcp_segment(v6(), 40000, PORT, 0x0102_0304, 7, SYN);
        assert_eq!(p.len(), 60);
        assert_eq!((p[6], u16::from_be_bytes([p[4], p[5]])), (IPPROTO_TCP, 20));
        assert_eq!(
            ipv6_transport_sum(&p),
            0,
            "the TCP checksum holds over IPv6"
        );
        assert_eq!(p[40 + 13], SYN);
    }

    /// The VIP's answer to the probe: a TCP segment VIP:PORT → `sport`.
    fn answer(flags: u8, sport: u16) -> Vec<u8> {
        let mut p = tcp_segment(Inner::V4(VIP, SRC), PORT, sport, 9, 43, flags);
        p[20 + 13] = flags;
        p
    }

    #[test]
    fn only_the_vip_s_answer_to_this_probe_counts() {
        let vip = SocketAddr::new(VIP.into(), PORT);
        let syn_ack = answer(SYN | ACK, 40000);
        let tcp = ipv4_tcp_payload(&syn_ack, SRC).expect("TCP to this node");
        assert_eq!(
            answer_to(tcp, VIP.into(), 40000, vip),
            Some(Answer::SynAck { seq: 9, ack: 43 })
        );
        let reset = answer(RST | ACK, 40000);
        assert_eq!(
            answer_to(&reset[20..], VIP.into(), 40000, vip),
            Some(Answer::Reset)
        );
        assert_eq!(
            answer_to(tcp, VIP.into(), 40001, vip),
            None,
            "another port's"
        );
        let other = Ipv4Addr::new(10, 77, 0, 11);
        assert_eq!(
            answer_to(tcp, other.into(), 40000, vip),
            None,
            "another host's"
        );
        assert_eq!(
            answer_to(&answer(ACK, 40000)[20..], VIP.into(), 40000, vip),
            None
        );
        assert_eq!(
            answer_to(&tcp[..10], VIP.into(), 40000, vip),
            None,
            "cut short"
        );
        assert_eq!(ipv4_tcp_payload(&syn_ack, VIP), None, "not to this node");
        assert_eq!(ipv4_tcp_payload(&[], SRC), None);
        // The same answer over IPv6 (the raw socket hands over the segment alone).
        let vip6 = SocketAddr::new(VIP6.into(), PORT);
        assert_eq!(
            answer_to(tcp, VIP6.into(), 40000, vip6),
            Some(Answer::SynAck { seq: 9, ack: 43 })
        );
        assert_eq!(answer_to(tcp, VIP.into(), 40000, vip6), None);
    }
}
