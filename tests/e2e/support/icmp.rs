//! ICMP test frames and the answer oracles: errors quoting what a backend sent from a VIP, the
//! check that an answered echo request came back as exactly its reply, and the "fragmentation
//! needed" / "packet too big" answer a packet too big to encapsulate must get.

use shardline_common::{
    consts::{ETH_P_IPV4, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN},
    packet::parse_l2,
};

use super::frames::{get_u16, net4, net6, FrameSpec, Net, Transport};

/// ICMP destination unreachable, code 4: fragmentation needed (next-hop MTU in octets 7-8).
pub const FRAG_NEEDED: (u8, u8) = (3, 4);
/// ICMP time exceeded in transit.
pub const TIME_EXCEEDED: (u8, u8) = (11, 0);
/// ICMPv6 packet too big (MTU in octets 5-8).
pub const PACKET_TOO_BIG: (u8, u8) = (2, 0);
/// ICMPv6 destination unreachable, port unreachable.
pub const PORT_UNREACHABLE6: (u8, u8) = (1, 4);

/// The router that reports errors, per family.
pub const ROUTER4: [u8; 4] = [198, 51, 100, 1];
/// The IPv6 router that reports errors.
pub const ROUTER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];

/// An ICMP / ICMPv6 error `(type, code)` from a router to the sender of `request`'s reply (the
/// VIP), quoting the first `quote` octets (all if `None`) of the IP packet a backend sent back
/// for `request` (see [`error_quoting`]).
pub fn error_for(request: &FrameSpec, kind: (u8, u8), quote: Option<usize>) -> Vec<u8> {
    error_spec_for(request, kind, quote).build()
}

/// [`error_for`] as a spec, to decorate before building.
pub fn error_spec_for(request: &FrameSpec, kind: (u8, u8), quote: Option<usize>) -> FrameSpec {
    let reply = request.reversed();
    let mut quoted = reply.build()[reply.l3_off()..].to_vec();
    if let Some(len) = quote {
        quoted.truncate(len);
    }
    error_spec(&request.net, kind, quoted)
}

/// An ICMP / ICMPv6 error `(type, code)` from a router to `request`'s destination, quoting
/// `quoted` as it is; octets 5-8 carry an MTU of 1400 (where ICMPv4's next-hop MTU and
/// ICMPv6's MTU both sit in those octets' low end).
pub fn error_quoting(request: &Net, kind: (u8, u8), quoted: Vec<u8>) -> Vec<u8> {
    error_spec(request, kind, quoted).build()
}

fn error_spec(request: &Net, (ty, code): (u8, u8), quoted: Vec<u8>) -> FrameSpec {
    let net = match request {
        Net::V4 { dst, .. } => net4(ROUTER4, *dst),
        Net::V6 { dst, .. } => net6(ROUTER6, *dst),
    };
    let rest = [0, 0, 0x05, 0x78];
    FrameSpec::new(net, Transport::IcmpRaw { ty, code, rest }, quoted)
}

/// The folded ones' complement sum of `bytes` (big-endian words, an odd last byte padded).
pub fn folded_sum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The ICMPv6 checksum sum of the IPv6 packet `ip` (no extension headers): pseudo-header and
/// message. 0xffff when the checksum is valid.
pub fn icmpv6_sum(ip: &[u8]) -> u16 {
    let len = usize::from(get_u16(ip, 4));
    let mut bytes = ip[8..40].to_vec();
    bytes.extend_from_slice(&(len as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 58]);
    bytes.extend_from_slice(&ip[40..40 + len]);
    folded_sum(&bytes)
}

/// Checks that `output` is the echo reply of the echo request `input`: MACs and addresses
/// swapped, TTL / hop limit 64, type echo reply, every other octet unchanged, and each
/// checksum updated so its sum is the request's (a valid checksum stays valid, an invalid one
/// stays as invalid). The checksums' own bytes are free: ones' complement has two zeros.
pub fn check_echo_reply(input: &[u8], output: &[u8]) -> Result<(), String> {
    let (l2, ethertype) = parse_l2(input).ok_or("input has no Ethernet header")?;
    if output.len() != input.len() {
        return Err(format!(
            "an echo reply is as long as its request: {} -> {}",
            input.len(),
            output.len()
        ));
    }
    let mut want = input.to_vec();
    want[0..6].copy_from_slice(&input[6..12]);
    want[6..12].copy_from_slice(&input[0..6]);
    let ip = &input[l2..];
    let (checksums, sums): (Vec<usize>, Vec<(&str, u16, u16)>) = match ethertype {
        ETH_P_IPV4 => {
            let end = l2 + usize::from(get_u16(ip, 2));
            let icmp = l2 + IPV4_HLEN;
            want[l2 + 8] = 64;
            want[l2 + 12..l2 + 16].copy_from_slice(&ip[16..20]);
            want[l2 + 16..l2 + 20].copy_from_slice(&ip[12..16]);
            want[icmp] = 0;
            (
                vec![l2 + 10, icmp + 2],
                vec![
                    (
                        "IPv4 header",
                        folded_sum(&output[l2..icmp]),
                        folded_sum(&input[l2..icmp]),
                    ),
                    (
                        "ICMP message",
                        folded_sum(&output[icmp..end]),
                        folded_sum(&input[icmp..end]),
                    ),
                ],
            )
        }
        ETH_P_IPV6 => {
            let icmp = l2 + IPV6_HLEN;
            want[l2 + 7] = 64;
            want[l2 + 8..l2 + 24].copy_from_slice(&ip[24..40]);
            want[l2 + 24..l2 + 40].copy_from_slice(&ip[8..24]);
            want[icmp] = 129;
            (
                vec![icmp + 2],
                vec![(
                    "ICMPv6 message and pseudo-header",
                    icmpv6_sum(&output[l2..]),
                    icmpv6_sum(&input[l2..]),
                )],
            )
        }
        other => return Err(format!("EtherType {other:#06x} is not IP")),
    };
    for at in checksums {
        want[at..at + 2].copy_from_slice(&output[at..at + 2]);
    }
    if output != want {
        let first = output
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "not the echo reply: first difference at octet {first} (got {:#04x}, want {:#04x})",
            output[first], want[first]
        ));
    }
    for (what, got, want) in sums {
        if got != want {
            return Err(format!(
                "{what} checksum sum {got:#06x}, the request's {want:#06x}"
            ));
        }
    }
    Ok(())
}

/// The answer to `input`, a client packet too big for an `egress_mtu` link once encapsulated,
/// built independently of the dataplane: back to the sender's MAC (VLAN tag and EtherType
/// kept), from the VIP to the client, TTL / hop limit 64; ICMP type 3 code 4 with next-hop MTU
/// `egress_mtu - 20` (`- 40` when `four_in_six`: the packet's backend has only IPv6) quoting
/// the IPv4 header and 8 octets, or ICMPv6 type 2 with MTU `egress_mtu - 40` quoting as much as
/// fits in 1280 octets (rounded down to 4); checksums computed afresh.
pub fn too_big_answer(input: &[u8], egress_mtu: u32, four_in_six: bool) -> Result<Vec<u8>, String> {
    let (l2, ethertype) = parse_l2(input).ok_or("input has no Ethernet header")?;
    let ip = &input[l2..];
    let mut out = input[6..12].to_vec();
    out.extend_from_slice(&input[0..6]);
    out.extend_from_slice(&input[12..l2]);
    match ethertype {
        ETH_P_IPV4 => {
            let quote = &ip[..usize::from(ip[0] & 0x0f) * 4 + 8];
            let total = (IPV4_HLEN + 8 + quote.len()) as u16;
            let mut header = vec![0x45, 0];
            header.extend_from_slice(&total.to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
            header.extend_from_slice(&ip[16..20]);
            header.extend_from_slice(&ip[12..16]);
            let check = !folded_sum(&header);
            header[10..12].copy_from_slice(&check.to_be_bytes());
            let mut icmp = vec![3, 4, 0, 0, 0, 0];
            let outer = if four_in_six { 40 } else { 20 };
            icmp.extend_from_slice(&((egress_mtu - outer) as u16).to_be_bytes());
            icmp.extend_from_slice(quote);
            let check = !folded_sum(&icmp);
            icmp[2..4].copy_from_slice(&check.to_be_bytes());
            out.extend_from_slice(&header);
            out.extend_from_slice(&icmp);
        }
        ETH_P_IPV6 => {
            let ip_len = IPV6_HLEN + usize::from(get_u16(ip, 4));
            let quote = &ip[..ip_len.min(1232) & !3];
            let mut packet = vec![0x60, 0, 0, 0];
            packet.extend_from_slice(&((8 + quote.len()) as u16).to_be_bytes());
            packet.extend_from_slice(&[58, 64]);
            packet.extend_from_slice(&ip[24..40]);
            packet.extend_from_slice(&ip[8..24]);
            packet.extend_from_slice(&[2, 0, 0, 0]);
            packet.extend_from_slice(&(egress_mtu - 40).to_be_bytes());
            packet.extend_from_slice(quote);
            let check = !icmpv6_sum(&packet);
            packet[42..44].copy_from_slice(&check.to_be_bytes());
            out.extend_from_slice(&packet);
        }
        other => return Err(format!("EtherType {other:#06x} is not IP")),
    }
    Ok(out)
}

/// Checks that `output` is exactly [`too_big_answer`]`(input, egress_mtu, four_in_six)`.
pub fn check_too_big(
    input: &[u8],
    output: &[u8],
    egress_mtu: u32,
    four_in_six: bool,
) -> Result<(), String> {
    let want = too_big_answer(input, egress_mtu, four_in_six)?;
    if output == want {
        return Ok(());
    }
    let first = output
        .iter()
        .zip(&want)
        .position(|(a, b)| a != b)
        .unwrap_or(output.len().min(want.len()));
    Err(format!(
        "not the too-big answer ({} octets, want {}): first difference at octet {first}",
        output.len(),
        want.len()
    ))
}
