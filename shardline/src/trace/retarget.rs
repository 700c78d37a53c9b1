//! `--retarget`: points any IPv4/IPv6 packet at a configured service, so a capture of ordinary
//! traffic exercises the service path. Checksums are left as they were (the dataplane does not
//! verify them).

use std::net::IpAddr;

use shardline_common::{
    consts::{IPPROTO_TCP, IPPROTO_UDP},
    packet::{parse_l2, parse_l3},
};

use crate::config::ServiceConfig;

/// Rewrites `frame`'s destination address (and UDP/TCP destination port) to the first of
/// `services` of the packet's family. Packets that are not IP, or of a family no service
/// has, are left unchanged; returns whether anything was rewritten.
pub fn retarget(frame: &mut [u8], services: &[ServiceConfig]) -> bool {
    let Some((l3, ethertype)) = parse_l2(frame) else {
        return false;
    };
    let v6 = match ethertype {
        0x0800 => false,
        0x86dd => true,
        _ => return false,
    };
    let Some(service) = services.iter().find(|s| s.vip.is_ipv6() == v6) else {
        return false;
    };
    let (at, bytes) = match service.vip {
        IpAddr::V4(a) => (l3 + 16, a.octets().to_vec()),
        IpAddr::V6(a) => (l3 + 24, a.octets().to_vec()),
    };
    if frame.len() < at + bytes.len() {
        return false;
    }
    frame[at..at + bytes.len()].copy_from_slice(&bytes);
    // The port only where the transport header is there to hold it.
    if let Ok(parsed) = parse_l3(frame) {
        if matches!(parsed.proto, IPPROTO_UDP | IPPROTO_TCP) && frame.len() >= parsed.l4_off + 4 {
            frame[parsed.l4_off + 2..parsed.l4_off + 4]
                .copy_from_slice(&service.port.to_be_bytes());
        }
    }
    true
}
