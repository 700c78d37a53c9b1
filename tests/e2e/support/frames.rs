//! Test frames: a declarative [`FrameSpec`] serialised with etherparse's `PacketBuilder` (valid
//! lengths and checksums), plus the byte-level edits tests use to break frames on purpose.

use etherparse::{
    ip_number, Icmpv4Type, Icmpv6Type, IpAuthHeader, IpFragOffset, IpHeaders, Ipv4Dscp, Ipv4Ecn,
    Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header,
    Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder, VlanId,
};
use shardline_common::{
    checksum::ipv4_header_checksum,
    consts::{ETH_HLEN, VLAN_HLEN},
    packet::encode_header,
};

/// MAC of the client that sends test frames.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// MAC of the load balancer's interface (the input frames' destination).
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// IPv4 client address of most fixtures.
pub const CLIENT4: [u8; 4] = [192, 0, 2, 10];
/// IPv6 client address of most fixtures.
pub const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
/// The IPv4 VIP of `kv`, `web` and `dns` in `TEST_CONFIG`.
pub const VIP4: [u8; 4] = [10, 100, 0, 1];
/// The IPv4 VIP of the `l2` (L2 DSR) service in `TEST_CONFIG`.
pub const VIP4_L2: [u8; 4] = [10, 100, 0, 2];
/// The IPv6 VIP of `kv6` and `web6` in `TEST_CONFIG`.
pub const VIP6: [u8; 16] = [0xfd, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
/// Header-mode UDP port (`kv`, `kv6`).
pub const KV_PORT: u16 = 7000;
/// Flow-mode TCP port (`web`, `web6`).
pub const WEB_PORT: u16 = 8080;
/// Flow-mode UDP port (`dns`, IPv4 only).
pub const DNS_PORT: u16 = 5353;
/// Flow-mode UDP port of the L2 DSR service (`l2`).
pub const L2_PORT: u16 = 9000;

/// The network layer of a test frame.
#[derive(Clone, Debug)]
pub enum Net {
    /// IPv4 with optional options (a multiple of 4 bytes, at most 40) and fragment fields.
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        tos: u8,
        options: Vec<u8>,
        more_fragments: bool,
        fragment_offset: u16,
    },
    /// IPv6 with optional extension headers.
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        traffic_class: u8,
        flow_label: u32,
        ext: V6Ext,
    },
}

/// IPv6 extension headers, written in etherparse's (RFC 8200) order.
#[derive(Clone, Debug, Default)]
pub struct V6Ext {
    pub hop_by_hop: bool,
    pub destination_options: bool,
    pub routing: bool,
    /// Destination options after the routing header (only with `routing`).
    pub final_destination_options: bool,
    /// `(offset in 8-octet units, more fragments)`.
    pub fragment: Option<(u16, bool)>,
    pub auth: bool,
}

impl V6Ext {
    /// How many extension headers this writes.
    pub fn count(&self) -> usize {
        [
            self.hop_by_hop,
            self.destination_options,
            self.routing,
            self.routing && self.final_destination_options,
            self.fragment.is_some(),
            self.auth,
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// The transport layer of a test frame.
#[derive(Clone, Debug)]
pub enum Transport {
    Udp {
        sport: u16,
        dport: u16,
    },
    /// TCP; `options` raw, a multiple of 4 bytes.
    Tcp {
        sport: u16,
        dport: u16,
        syn: bool,
        options: Vec<u8>,
    },
    /// ICMP (v4 or v6 by the network layer) echo request.
    Icmp,
    /// Any ICMP (v4 or v6 by the network layer) message: type, code and header octets 5 to 8,
    /// with a valid checksum; the payload follows (an error's quoted packet).
    IcmpRaw {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
}

/// Everything that shapes a test frame.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// One 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
    pub net: Net,
    pub transport: Transport,
    pub payload: Vec<u8>,
    /// Bytes of Ethernet padding after the IP packet.
    pub padding: usize,
}

impl FrameSpec {
    /// UDP over IPv4 from [`CLIENT4`].
    pub fn udp4(dst: [u8; 4], sport: u16, dport: u16, payload: Vec<u8>) -> Self {
        Self::new(net4(CLIENT4, dst), Transport::Udp { sport, dport }, payload)
    }

    /// UDP over IPv6 from [`CLIENT6`].
    pub fn udp6(dst: [u8; 16], sport: u16, dport: u16, payload: Vec<u8>) -> Self {
        Self::new(net6(CLIENT6, dst), Transport::Udp { sport, dport }, payload)
    }

    /// A TCP SYN over IPv4 from [`CLIENT4`], no options.
    pub fn tcp4(dst: [u8; 4], sport: u16, dport: u16) -> Self {
        Self::new(net4(CLIENT4, dst), tcp_syn(sport, dport), Vec::new())
    }

    /// A TCP SYN over IPv6 from [`CLIENT6`], no options.
    pub fn tcp6(dst: [u8; 16], sport: u16, dport: u16) -> Self {
        Self::new(net6(CLIENT6, dst), tcp_syn(sport, dport), Vec::new())
    }

    /// This TCP frame as a segment of an established connection: ACK set, SYN clear (the
    /// flow table's case; a SYN is routed by the tables, see `route::decide`'s flow path).
    pub fn established(mut self) -> Self {
        if let Transport::Tcp { syn, .. } = &mut self.transport {
            *syn = false;
        }
        self
    }

    /// A header-mode request over IPv4 to `kv` (session, key).
    pub fn kv4(session: u64, key: u64) -> Self {
        Self::udp4(VIP4, 40_000, KV_PORT, header_payload(session, key, b"GET"))
    }

    /// A header-mode request over IPv6 to `kv6` (session, key).
    pub fn kv6(session: u64, key: u64) -> Self {
        Self::udp6(VIP6, 40_000, KV_PORT, header_payload(session, key, b"GET"))
    }

    /// A frame from [`CLIENT_MAC`] to [`LB_MAC`] with the given layers.
    pub fn new(net: Net, transport: Transport, payload: Vec<u8>) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: LB_MAC,
            vlan: None,
            net,
            transport,
            payload,
            padding: 0,
        }
    }

    /// The packet a backend sends back for this one (DSR, from the VIP): addresses and ports
    /// swapped, everything else kept.
    pub fn reversed(&self) -> Self {
        let mut r = self.clone();
        match &mut r.net {
            Net::V4 { src, dst, .. } => std::mem::swap(src, dst),
            Net::V6 { src, dst, .. } => std::mem::swap(src, dst),
        }
        match &mut r.transport {
            Transport::Udp { sport, dport } | Transport::Tcp { sport, dport, .. } => {
                std::mem::swap(sport, dport)
            }
            Transport::Icmp | Transport::IcmpRaw { .. } => {}
        }
        r
    }

    /// Offset of the IP header in the built frame.
    pub fn l3_off(&self) -> usize {
        ETH_HLEN + if self.vlan.is_some() { VLAN_HLEN } else { 0 }
    }

    /// Serialises the frame.
    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let ip = self.ip_headers();
        let step = match self.vlan {
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).expect("VLAN id below 4096"))
                .ip(ip),
            None => eth.ip(ip),
        };
        let mut out = Vec::new();
        match &self.transport {
            Transport::Udp { sport, dport } => {
                step.udp(*sport, *dport).write(&mut out, &self.payload)
            }
            Transport::Tcp {
                sport,
                dport,
                syn,
                options,
            } => {
                let tcp = step.tcp(*sport, *dport, 0x1000_0000, 64_240);
                let tcp = if *syn { tcp.syn() } else { tcp.ack(1) };
                tcp.options_raw(options)
                    .expect("TCP options are a multiple of 4 bytes, at most 40")
                    .write(&mut out, &self.payload)
            }
            Transport::Icmp => match self.net {
                Net::V4 { .. } => step
                    .icmpv4_echo_request(1, 1)
                    .write(&mut out, &self.payload),
                Net::V6 { .. } => step
                    .icmpv6_echo_request(1, 1)
                    .write(&mut out, &self.payload),
            },
            Transport::IcmpRaw { ty, code, rest } => match self.net {
                Net::V4 { .. } => step
                    .icmpv4(Icmpv4Type::Unknown {
                        type_u8: *ty,
                        code_u8: *code,
                        bytes5to8: *rest,
                    })
                    .write(&mut out, &self.payload),
                Net::V6 { .. } => step
                    .icmpv6(Icmpv6Type::Unknown {
                        type_u8: *ty,
                        code_u8: *code,
                        bytes5to8: *rest,
                    })
                    .write(&mut out, &self.payload),
            },
        }
        .expect("etherparse serialises the frame");
        out.resize(out.len() + self.padding, 0);
        out
    }

    fn ip_headers(&self) -> IpHeaders {
        match &self.net {
            Net::V4 {
                src,
                dst,
                tos,
                options,
                more_fragments,
                fragment_offset,
            } => IpHeaders::Ipv4(
                Ipv4Header {
                    dscp: Ipv4Dscp::try_new(tos >> 2).expect("6 bits"),
                    ecn: Ipv4Ecn::try_new(tos & 3).expect("2 bits"),
                    identification: 0x1234,
                    more_fragments: *more_fragments,
                    fragment_offset: IpFragOffset::try_new(*fragment_offset)
                        .expect("fragment offset below 8192"),
                    time_to_live: 61,
                    source: *src,
                    destination: *dst,
                    options: Ipv4Options::try_from(&options[..])
                        .expect("IPv4 options are a multiple of 4 bytes, at most 40"),
                    ..Default::default()
                },
                Default::default(),
            ),
            Net::V6 {
                src,
                dst,
                traffic_class,
                flow_label,
                ext,
            } => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: *traffic_class,
                    flow_label: Ipv6FlowLabel::try_new(*flow_label).expect("20 bits"),
                    hop_limit: 61,
                    source: *src,
                    destination: *dst,
                    ..Default::default()
                },
                v6_extensions(ext),
            ),
        }
    }
}

/// An IPv4 network layer without options or fragmentation.
pub fn net4(src: [u8; 4], dst: [u8; 4]) -> Net {
    Net::V4 {
        src,
        dst,
        tos: 0,
        options: Vec::new(),
        more_fragments: false,
        fragment_offset: 0,
    }
}

/// An IPv6 network layer without extension headers.
pub fn net6(src: [u8; 16], dst: [u8; 16]) -> Net {
    Net::V6 {
        src,
        dst,
        traffic_class: 0,
        flow_label: 0,
        ext: V6Ext::default(),
    }
}

fn tcp_syn(sport: u16, dport: u16) -> Transport {
    Transport::Tcp {
        sport,
        dport,
        syn: true,
        options: Vec::new(),
    }
}

/// TCP options of a typical Linux SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
pub const SYN_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
];

fn v6_extensions(ext: &V6Ext) -> Ipv6Extensions {
    // Next-header fields are placeholders: the builder links the chain when it writes.
    let raw = |len: usize| {
        let body: Vec<u8> = (0..len).map(|i| if i < 2 { 1 } else { 0 }).collect();
        Ipv6RawExtHeader::new_raw(ip_number::UDP, &body).expect("length 6 + 8n")
    };
    Ipv6Extensions {
        hop_by_hop_options: ext.hop_by_hop.then(|| raw(6)),
        destination_options: ext.destination_options.then(|| raw(14)),
        routing: ext.routing.then(|| Ipv6RoutingExtensions {
            routing: raw(6),
            final_destination_options: ext.final_destination_options.then(|| raw(6)),
        }),
        fragment: ext.fragment.map(|(offset, more)| {
            Ipv6FragmentHeader::new(
                ip_number::UDP,
                IpFragOffset::try_new(offset).expect("fragment offset below 8192"),
                more,
                0x5678,
            )
        }),
        auth: ext.auth.then(|| {
            IpAuthHeader::new(ip_number::UDP, 0x100, 1, &[0xaa; 4]).expect("ICV of 4 bytes")
        }),
    }
}

/// A header-mode payload: the shardline header for (session, key), then `body`.
pub fn header_payload(session: u64, key: u64, body: &[u8]) -> Vec<u8> {
    let mut p = encode_header(session, key).to_vec();
    p.extend_from_slice(body);
    p
}

/// An ARP request frame (padded to the Ethernet minimum).
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT4);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&VIP4);
    f.resize(60, 0);
    f
}

/// `frame` with an 802.1ad (QinQ) service tag inserted before its EtherType.
pub fn with_qinq(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&0x88a8u16.to_be_bytes());
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// Recomputes the checksum of the option-less IPv4 header at `l3` after an edit.
pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let mut h = [0u8; 20];
    h.copy_from_slice(&frame[l3..l3 + 20]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&ipv4_header_checksum(&h).to_be_bytes());
}

/// Writes the big-endian `value` at `off`.
pub fn put_u16(frame: &mut [u8], off: usize, value: u16) {
    frame[off..off + 2].copy_from_slice(&value.to_be_bytes());
}

/// The big-endian `u16` at `off`.
pub fn get_u16(frame: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([frame[off], frame[off + 1]])
}
