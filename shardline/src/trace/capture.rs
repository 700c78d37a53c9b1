//! Reading captures (pcap and pcapng, through `pcap-file`) into Ethernet frames the XDP program
//! can run: Ethernet as is; raw IP and Linux cooked captures (SLL, SLL2) behind a synthetic
//! Ethernet header; anything else counted as skipped.

use std::{fs::File, io::Read, path::Path};

use pcap_file::{
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
    DataLink,
};

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a pcap or pcapng capture, or is corrupt.
    #[error("{path} is not a readable pcap/pcapng capture: {message}")]
    Format {
        /// The file.
        path: String,
        /// What the reader said.
        message: String,
    },
}

/// Destination MAC of synthetic Ethernet headers.
pub const SYNTHETIC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Source MAC of synthetic Ethernet headers.
pub const SYNTHETIC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// One packet of a capture, ready to trace or skipped with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapturedFrame {
    /// An Ethernet frame (possibly synthesized).
    Frame(Vec<u8>),
    /// Not traceable: the link type (or content) is not one the tracer handles.
    Skipped(String),
}

/// Reads every packet of `path` (pcap or pcapng, detected by magic number).
pub fn read_capture(path: &Path) -> Result<Vec<CapturedFrame>, CaptureError> {
    let name = path.display().to_string();
    let io = |source| CaptureError::Io {
        path: name.clone(),
        source,
    };
    let mut magic = [0u8; 4];
    File::open(path)
        .map_err(io)?
        .read_exact(&mut magic)
        .map_err(io)?;
    let format = |e: pcap_file::PcapError| CaptureError::Format {
        path: name.clone(),
        message: e.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    let mut out = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut reader = PcapNgReader::new(file).map_err(format)?;
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = reader.next_block() {
            let block = match block {
                Ok(b) => b,
                Err(e) => {
                    out.push(CapturedFrame::Skipped(format!(
                        "unreadable block, capture ends: {e}"
                    )));
                    break;
                }
            };
            match block {
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let link = links.get(epb.interface_id as usize).copied();
                    out.push(normalize(link, &epb.data));
                }
                Block::SimplePacket(spb) => out.push(normalize(links.first().copied(), &spb.data)),
                Block::SectionHeader(_) => links.clear(),
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(file).map_err(format)?;
        let link = reader.header().datalink;
        // Raw records: real captures have headers that stricter parsing refuses (an original
        // length above the snap length, from fuzzers and truncating capture tools).
        while let Some(packet) = reader.next_raw_packet() {
            match packet {
                Ok(p) => out.push(normalize(Some(link), &p.data)),
                Err(e) => {
                    out.push(CapturedFrame::Skipped(format!(
                        "unreadable record, capture ends: {e}"
                    )));
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// An Ethernet frame for `data` captured on a `link` interface.
pub fn normalize(link: Option<DataLink>, data: &[u8]) -> CapturedFrame {
    match link {
        Some(DataLink::ETHERNET) => CapturedFrame::Frame(data.to_vec()),
        Some(DataLink::RAW | DataLink::IPV4 | DataLink::IPV6) => match data.first().map(|b| b >> 4)
        {
            Some(4) => CapturedFrame::Frame(with_ethernet(0x0800, data)),
            Some(6) => CapturedFrame::Frame(with_ethernet(0x86dd, data)),
            _ => CapturedFrame::Skipped("raw capture that is neither IPv4 nor IPv6".into()),
        },
        // SLL: 16-byte header, protocol (EtherType) in its last two bytes.
        Some(DataLink::LINUX_SLL) if data.len() >= 16 => CapturedFrame::Frame(with_ethernet(
            u16::from_be_bytes([data[14], data[15]]),
            &data[16..],
        )),
        // SLL2: 20-byte header, protocol (EtherType) first.
        Some(DataLink::LINUX_SLL2) if data.len() >= 20 => CapturedFrame::Frame(with_ethernet(
            u16::from_be_bytes([data[0], data[1]]),
            &data[20..],
        )),
        Some(DataLink::LINUX_SLL | DataLink::LINUX_SLL2) => {
            CapturedFrame::Skipped("cooked capture shorter than its header".into())
        }
        Some(other) => CapturedFrame::Skipped(format!("link type {other:?}")),
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

/// Parses `aa bb:cc-dd…` (any non-hex separators) into bytes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .trim()
        .trim_start_matches("0x")
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'\n' | b'\t' | b'\r'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not a hex byte"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooked_and_raw_captures_get_an_ethernet_header() {
        let ip = [0x45u8, 0, 0, 20];
        let CapturedFrame::Frame(f) = normalize(Some(DataLink::RAW), &ip) else {
            panic!()
        };
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14..], &ip);
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&0x86ddu16.to_be_bytes());
        sll.extend_from_slice(&[0x60, 0, 0, 0]);
        let CapturedFrame::Frame(f) = normalize(Some(DataLink::LINUX_SLL), &sll) else {
            panic!()
        };
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f.len(), 18);
        let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let CapturedFrame::Frame(f) = normalize(Some(DataLink::LINUX_SLL2), &sll2) else {
            panic!()
        };
        assert_eq!(&f[14..], &ip);
        assert!(matches!(
            normalize(Some(DataLink::IEEE802_11), &ip),
            CapturedFrame::Skipped(_)
        ));
    }

    #[test]
    fn hex_input() {
        assert_eq!(
            parse_hex("de ad:BE-ef").unwrap(),
            vec![0xde, 0xad, 0xbe, 0xef]
        );
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
