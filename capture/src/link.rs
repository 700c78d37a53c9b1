//! Link types and the Ethernet header synthesized for captures that have none.

use crate::CapturedFrame;

/// A capture's link-layer header type (tcpdump's LINKTYPE_ numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkType(pub u16);

impl LinkType {
    /// Ethernet (LINKTYPE_ETHERNET).
    pub const ETHERNET: Self = Self(1);
    /// Raw IP, version in the first nibble (LINKTYPE_RAW).
    pub const RAW: Self = Self(101);
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL).
    pub const LINUX_SLL: Self = Self(113);
    /// Raw IPv4 (LINKTYPE_IPV4).
    pub const IPV4: Self = Self(228);
    /// Raw IPv6 (LINKTYPE_IPV6).
    pub const IPV6: Self = Self(229);
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2).
    pub const LINUX_SLL2: Self = Self(276);
}

/// Destination MAC of synthetic Ethernet headers.
pub const SYNTHETIC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Source MAC of synthetic Ethernet headers.
pub const SYNTHETIC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An Ethernet frame for `data` captured on a `link` interface (`None`: no interface
/// description named it).
pub fn normalize(link: Option<LinkType>, data: &[u8]) -> CapturedFrame {
    match link {
        Some(LinkType::ETHERNET) => CapturedFrame::Frame(data.to_vec()),
        Some(LinkType::RAW | LinkType::IPV4 | LinkType::IPV6) => {
            match data.first().map(|b| b >> 4) {
                Some(4) => CapturedFrame::Frame(with_ethernet(0x0800, data)),
                Some(6) => CapturedFrame::Frame(with_ethernet(0x86dd, data)),
                _ => CapturedFrame::Skipped("raw capture that is neither IPv4 nor IPv6".into()),
            }
        }
        // SLL: 16-byte header, protocol (EtherType) in its last two bytes.
        Some(LinkType::LINUX_SLL) if data.len() >= 16 => CapturedFrame::Frame(with_ethernet(
            u16::from_be_bytes([data[14], data[15]]),
            &data[16..],
        )),
        // SLL2: 20-byte header, protocol (EtherType) first.
        Some(LinkType::LINUX_SLL2) if data.len() >= 20 => CapturedFrame::Frame(with_ethernet(
            u16::from_be_bytes([data[0], data[1]]),
            &data[20..],
        )),
        Some(LinkType::LINUX_SLL | LinkType::LINUX_SLL2) => {
            CapturedFrame::Skipped("cooked capture shorter than its header".into())
        }
        Some(LinkType(other)) => CapturedFrame::Skipped(format!("link type {other}")),
        None => CapturedFrame::Skipped("packet of an undescribed interface".into()),
    }
}

fn with_ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&SYNTHETIC_DST);
    frame.extend_from_slice(&SYNTHETIC_SRC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooked_and_raw_captures_get_an_ethernet_header() {
        let ip = [0x45u8, 0, 0, 20];
        let CapturedFrame::Frame(f) = normalize(Some(LinkType::RAW), &ip) else {
            panic!()
        };
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14..], &ip);
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&0x86ddu16.to_be_bytes());
        sll.extend_from_slice(&[0x60, 0, 0, 0]);
        let CapturedFrame::Frame(f) = normalize(Some(LinkType::LINUX_SLL), &sll) else {
            panic!()
        };
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f.len(), 18);
        let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let CapturedFrame::Frame(f) = normalize(Some(LinkType::LINUX_SLL2), &sll2) else {
            panic!()
        };
        assert_eq!(&f[14..], &ip);
        assert!(matches!(
            normalize(Some(LinkType(105)), &ip),
            CapturedFrame::Skipped(_)
        ));
        assert!(matches!(normalize(None, &ip), CapturedFrame::Skipped(_)));
    }
}
