//! Reading a forwarded frame back: which backend the kernel sent it to, with every byte of the
//! rewrite checked against the input: the L2 header, the outer IPv4/IPv6 header field by field
//! (checksum included), and the inner packet byte-identical.

use std::collections::HashMap;

use shardline::snapshot::Snapshot;
use shardline_common::{
    checksum::ones_complement_sum,
    consts::{ETH_P_IPV4, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN},
    maps::{backend_flags, options, Globals},
    packet::parse_l2,
    route::Decision,
};

use super::frames::get_u16;

/// One backend as the output frames must address it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr4: Option<[u8; 4]>,
    pub addr6: Option<[u8; 16]>,
    pub mac: [u8; 6],
}

/// What forwarded frames must carry: the encapsulation sources and the backends by id.
#[derive(Clone, Debug)]
pub struct Expected {
    pub src4: [u8; 4],
    /// The IPIP source's bits the packet's hash fills (`encap.source_v4_prefix`); zero: fixed.
    pub src4_hash_mask: [u8; 4],
    pub src6: [u8; 16],
    pub backends: HashMap<u32, Peer>,
    /// The egress MTU the dataplane was given (0: none), which a too-big answer reports less
    /// the outer header.
    pub egress_mtu: u32,
    /// Whether some backend has only IPv6, so the IPv4 too-big answer allows for a 40-octet
    /// outer header (`options::FOUR_IN_SIX`).
    pub four_in_six: bool,
}

impl Expected {
    /// `TEST_CONFIG`'s encapsulation sources and backends, written out by hand so the fixtures
    /// do not trust the snapshot they test against.
    pub fn test_config() -> Self {
        let v6 = |last: u8| [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last];
        let peer = |id: u32, addr4: [u8; 4], addr6: Option<[u8; 16]>, mac_last: u8| {
            let mac = [0x02, 0, 0, 0, 0, mac_last];
            let addr4 = Some(addr4);
            (id, Peer { addr4, addr6, mac })
        };
        Self {
            src4: [10, 0, 0, 2],
            src4_hash_mask: [0; 4],
            src6: v6(0x02),
            backends: HashMap::from([
                peer(1, [10, 0, 0, 11], Some(v6(0x11)), 0x11),
                peer(2, [10, 0, 0, 12], Some(v6(0x12)), 0x12),
                peer(3, [10, 0, 0, 13], Some(v6(0x13)), 0x13),
                peer(4, [10, 0, 0, 14], None, 0x14),
            ]),
            egress_mtu: 0,
            four_in_six: false,
        }
    }

    /// The sources and backends of `snap`.
    pub fn of_snapshot(snap: &Snapshot) -> Self {
        let has = |flags: u32, bit: u32| flags & bit != 0;
        Self {
            src4: snap.globals.src4,
            src4_hash_mask: snap.globals.src4_hash_mask,
            src6: snap.globals.src6,
            backends: snap
                .backends
                .iter()
                .map(|(id, b)| {
                    let peer = Peer {
                        addr4: has(b.flags, backend_flags::HAS_V4).then_some(b.addr4),
                        addr6: has(b.flags, backend_flags::HAS_V6).then_some(b.addr6),
                        mac: b.mac,
                    };
                    (*id, peer)
                })
                .collect(),
            egress_mtu: snap.globals.egress_mtu,
            four_in_six: snap.globals.options & options::FOUR_IN_SIX != 0,
        }
    }

    /// The IPIP source of the packet the replay decided `d`: computed by the common code the
    /// kernel runs ([`shardline_common::encap::outer_src4`]) from these sources.
    pub fn ipip_source(&self, d: &Decision) -> [u8; 4] {
        let g = Globals {
            src4: self.src4,
            src4_hash_mask: self.src4_hash_mask,
            ..Globals::default()
        };
        shardline_common::encap::outer_src4(&g, d.session.session, d.key).to_ne_bytes()
    }

    /// The backend `id`; panics if there is none.
    pub fn backend(&self, id: u32) -> Peer {
        *self
            .backends
            .get(&id)
            .unwrap_or_else(|| panic!("no backend {id}"))
    }

    /// The only backend matching `pred`.
    fn find(&self, pred: impl Fn(&Peer) -> bool, what: &str) -> Result<(u32, Peer), String> {
        let found: Vec<(u32, Peer)> = self
            .backends
            .iter()
            .filter(|(_, p)| pred(p))
            .map(|(id, p)| (*id, *p))
            .collect();
        match found[..] {
            [one] => Ok(one),
            [] => Err(format!("no backend has that {what}")),
            _ => Err(format!("several backends have that {what}")),
        }
    }
}

/// How a forwarded frame was rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// IPv4-in-IPv4, from `source`.
    Ipip { source: [u8; 4] },
    /// IPv6-in-IPv6, with the outer flow label.
    Ip6ip6 { flow_label: u32 },
    /// IPv4-in-IPv6 (a backend with only IPv6), with the outer flow label.
    Ip4in6 { flow_label: u32 },
    /// Destination MAC rewrite only.
    L2Dsr,
}

/// What the output frame says about the kernel's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The backend the frame is addressed to (by outer address, or by MAC for L2 DSR).
    pub backend_id: u32,
    pub rewrite: Rewrite,
}

/// Checks that `output` is `input` correctly rewritten for one of `want`'s backends and returns
/// which. The rewrite follows from the growth: 0 bytes L2 DSR, 20 IPIP, 40 IP6IP6 (or
/// IPv4-in-IPv6 for an IPv4 input, whose EtherType becomes IPv6's).
pub fn check_forwarded(want: &Expected, input: &[u8], output: &[u8]) -> Result<Forwarded, String> {
    let (l2, ethertype) = parse_l2(input).ok_or("input has no Ethernet header")?;
    if output.len() < l2 {
        return Err(format!("output of {} bytes has no L2 header", output.len()));
    }
    if output[6..12] != input[0..6] {
        return Err(format!(
            "source MAC {:02x?} is not the input's destination MAC {:02x?}",
            &output[6..12],
            &input[0..6]
        ));
    }
    if output[12..l2 - 2] != input[12..l2 - 2] {
        return Err(format!(
            "VLAN tag changed: {:02x?} -> {:02x?}",
            &input[12..l2 - 2],
            &output[12..l2 - 2]
        ));
    }
    let inner = &input[l2..];
    let grown = output.len() as isize - input.len() as isize;
    // The outer header's EtherType: the input's, but for IPv4-in-IPv6.
    let outer_ethertype = if grown == 40 { ETH_P_IPV6 } else { ethertype };
    if get_u16(output, l2 - 2) != outer_ethertype {
        return Err(format!(
            "EtherType {:#06x}, want {outer_ethertype:#06x}",
            get_u16(output, l2 - 2)
        ));
    }
    let (backend_id, peer, rewrite) = match (grown, ethertype) {
        (0, _) => {
            let (id, _) = want.find(|p| p.mac == output[0..6], "MAC")?;
            if output[l2..] != *inner {
                return Err("L2 DSR changed bytes after the L2 header".into());
            }
            return Ok(Forwarded {
                backend_id: id,
                rewrite: Rewrite::L2Dsr,
            });
        }
        (20, ETH_P_IPV4) => {
            let outer = &output[l2..l2 + IPV4_HLEN];
            check_ipv4_outer(want, inner, outer)?;
            let dst = &outer[16..20];
            let (id, peer) = want.find(|p| p.addr4.is_some_and(|a| a == dst), "IPv4")?;
            let source = [outer[12], outer[13], outer[14], outer[15]];
            (id, peer, Rewrite::Ipip { source })
        }
        (40, ETH_P_IPV6) => {
            let outer = &output[l2..l2 + IPV6_HLEN];
            check_ipv6_outer(want, inner, outer)?;
            let dst = &outer[24..40];
            let (id, peer) = want.find(|p| p.addr6.is_some_and(|a| a == dst), "IPv6")?;
            let flow_label = u32::from_be_bytes([0, outer[1] & 0x0f, outer[2], outer[3]]);
            (id, peer, Rewrite::Ip6ip6 { flow_label })
        }
        (40, ETH_P_IPV4) => {
            let outer = &output[l2..l2 + IPV6_HLEN];
            check_4in6_outer(want, inner, outer)?;
            let dst = &outer[24..40];
            let (id, peer) = want.find(|p| p.addr6.is_some_and(|a| a == dst), "IPv6")?;
            if peer.addr4.is_some() {
                return Err(format!(
                    "IPv4-in-IPv6 to backend {id}, which has an IPv4 address (IPIP)"
                ));
            }
            let flow_label = u32::from_be_bytes([0, outer[1] & 0x0f, outer[2], outer[3]]);
            (id, peer, Rewrite::Ip4in6 { flow_label })
        }
        _ => {
            return Err(format!(
                "output grew by {grown} bytes for EtherType {ethertype:#06x}: no rewrite does that"
            ))
        }
    };
    if output[0..6] != peer.mac {
        return Err(format!(
            "destination MAC {:02x?} is not backend {backend_id}'s {:02x?}",
            &output[0..6],
            peer.mac
        ));
    }
    if output[output.len() - inner.len()..] != *inner {
        return Err("the inner packet is not byte-identical to the input's".into());
    }
    Ok(Forwarded {
        backend_id,
        rewrite,
    })
}

/// Field-by-field expectations: (name, got, want).
fn compare(header: &str, fields: &[(&str, u32, u32)]) -> Result<(), String> {
    for (field, got, want) in fields {
        if got != want {
            return Err(format!(
                "outer {header} {field} is {got:#x}, want {want:#x}"
            ));
        }
    }
    Ok(())
}

fn check_ipv4_outer(want: &Expected, inner: &[u8], o: &[u8]) -> Result<(), String> {
    compare(
        "IPv4",
        &[
            ("version", (o[0] >> 4).into(), 4),
            ("IHL", (o[0] & 0x0f).into(), 5),
            ("TOS (the inner's)", o[1].into(), inner[1].into()),
            (
                "total length",
                get_u16(o, 2).into(),
                u32::from(get_u16(inner, 2)) + 20,
            ),
            ("identification", get_u16(o, 4).into(), 0),
            ("flags and fragment offset", get_u16(o, 6).into(), 0),
            ("TTL", o[8].into(), 64),
            ("protocol (IPIP)", o[9].into(), 4),
            ("checksum sum", u32::from(ones_complement_sum(o)), 0xffff),
        ],
    )?;
    // The source lies in the configured prefix (or is the fixed source); which address of it
    // is the replay's to say (`Rewrite::Ipip`).
    let network = |a: &[u8]| {
        u32::from_be_bytes([a[0], a[1], a[2], a[3]]) & !u32::from_be_bytes(want.src4_hash_mask)
    };
    if network(&o[12..16]) != network(&want.src4) {
        return Err(format!(
            "outer IPv4 source {:?} is not the encap source {:?} (host mask {:?})",
            &o[12..16],
            want.src4,
            want.src4_hash_mask
        ));
    }
    Ok(())
}

/// The IPv6 outer header of an IPv4 packet: its TOS as traffic class, its total length as
/// payload length, next header 4 (IPv4).
fn check_4in6_outer(want: &Expected, inner: &[u8], o: &[u8]) -> Result<(), String> {
    let traffic_class = u32::from((o[0] << 4) | (o[1] >> 4));
    compare(
        "IPv6 (IPv4-in-IPv6)",
        &[
            ("version", (o[0] >> 4).into(), 6),
            (
                "traffic class (the inner TOS)",
                traffic_class,
                inner[1].into(),
            ),
            (
                "payload length (the inner packet)",
                get_u16(o, 4).into(),
                get_u16(inner, 2).into(),
            ),
            ("next header (IPv4)", o[6].into(), 4),
            ("hop limit", o[7].into(), 64),
        ],
    )?;
    check_ipv6_source(want, o)
}

fn check_ipv6_outer(want: &Expected, inner: &[u8], o: &[u8]) -> Result<(), String> {
    let traffic_class = |h: &[u8]| u32::from((h[0] << 4) | (h[1] >> 4));
    compare(
        "IPv6",
        &[
            ("version", (o[0] >> 4).into(), 6),
            (
                "traffic class (the inner's)",
                traffic_class(o),
                traffic_class(inner),
            ),
            (
                "payload length (the inner packet)",
                get_u16(o, 4).into(),
                u32::from(get_u16(inner, 4)) + IPV6_HLEN as u32,
            ),
            ("next header (IPv6)", o[6].into(), 41),
            ("hop limit", o[7].into(), 64),
        ],
    )?;
    check_ipv6_source(want, o)
}

fn check_ipv6_source(want: &Expected, o: &[u8]) -> Result<(), String> {
    if o[8..24] != want.src6 {
        return Err(format!(
            "outer IPv6 source {:02x?} is not the encap source",
            &o[8..24]
        ));
    }
    Ok(())
}
