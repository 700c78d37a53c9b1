//! pcapng: a sequence of blocks, each `type, total length, body, total length`.
//!
//! Read: the section header (byte order), interface descriptions (link types) and the three
//! packet blocks (enhanced, simple, and the obsolete packet block). Every other block is
//! skipped by its length, and options are never interpreted, only counted: none changes how a
//! packet routes, and an option this reader does not know must not lose the capture.

use crate::{link::normalize, u16_at, u32_at, Capture, LinkType};

/// Section header block type; the same in either byte order.
pub const SHB_TYPE: u32 = 0x0a0d_0d0a;
const IDB_TYPE: u32 = 1;
const OPB_TYPE: u32 = 2;
const SPB_TYPE: u32 = 3;
const EPB_TYPE: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
/// Type, length, trailing length.
const BLOCK_OVERHEAD: usize = 12;

/// Parses a pcapng capture; a corrupt or cut block ends it, keeping the packets before it.
pub fn parse(bytes: &[u8]) -> Result<Capture, String> {
    let mut capture = Capture::default();
    let mut big = section_order(bytes, 0)?;
    let mut links: Vec<LinkType> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let kind = u32_at(bytes, at, big);
        if kind == Some(SHB_TYPE) {
            match section_order(bytes, at) {
                Ok(order) => big = order,
                Err(e) => {
                    capture.truncated = Some(e);
                    break;
                }
            }
            links.clear();
        }
        let Some((kind, body)) = kind.and_then(|kind| Some((kind, block_body(bytes, at, big)?)))
        else {
            capture.truncated = Some(format!("block at byte {at} is cut short or corrupt"));
            break;
        };
        let options = match kind {
            SHB_TYPE => body.get(16..),
            IDB_TYPE => {
                links.push(LinkType(u16_at(body, 0, big).unwrap_or(0)));
                body.get(8..)
            }
            EPB_TYPE => packet(&mut capture, &links, body, big, false),
            OPB_TYPE => packet(&mut capture, &links, body, big, true),
            SPB_TYPE => {
                // No captured length: the packet is the rest of the body, capped by the
                // original length.
                let original = u32_at(body, 0, big).unwrap_or(0) as usize;
                let data = body.get(4..).unwrap_or_default();
                let data = &data[..data.len().min(original)];
                capture.frames.push(normalize(links.first().copied(), data));
                None
            }
            _ => {
                capture.skipped_blocks += 1;
                None
            }
        };
        capture.skipped_options += count_options(options.unwrap_or_default(), big);
        at += BLOCK_OVERHEAD + body.len();
    }
    Ok(capture)
}

/// Reads one enhanced (or, `obsolete`, obsolete) packet block: the interface id first (a u32,
/// or a u16 and a drop count), the captured length at byte 12, the data at byte 20; returns
/// the options that follow the padded data.
fn packet<'a>(
    capture: &mut Capture,
    links: &[LinkType],
    body: &'a [u8],
    big: bool,
    obsolete: bool,
) -> Option<&'a [u8]> {
    const LEN_AT: usize = 12;
    const DATA_AT: usize = 20;
    let interface = if obsolete {
        u32::from(u16_at(body, 0, big)?)
    } else {
        u32_at(body, 0, big)?
    };
    let len = u32_at(body, LEN_AT, big)? as usize;
    let Some(data) = body.get(DATA_AT..DATA_AT.checked_add(len)?) else {
        capture.frames.push(crate::CapturedFrame::Skipped(format!(
            "packet block claims {len} bytes, its block holds {}",
            body.len().saturating_sub(DATA_AT)
        )));
        return None;
    };
    capture
        .frames
        .push(normalize(links.get(interface as usize).copied(), data));
    body.get(DATA_AT + len.next_multiple_of(4)..)
}

/// The byte order of the section whose header starts at `at` (`true`: big-endian).
fn section_order(bytes: &[u8], at: usize) -> Result<bool, String> {
    match u32_at(bytes, at + 8, false) {
        Some(BYTE_ORDER_MAGIC) => Ok(false),
        Some(m) if m.swap_bytes() == BYTE_ORDER_MAGIC => Ok(true),
        Some(m) => Err(format!(
            "section header at byte {at} has byte-order magic {m:#010x}, not 0x1a2b3c4d"
        )),
        None => Err(format!("section header at byte {at} is cut short")),
    }
}

/// The body of the block at `at`, if its length is sane and the block is all there.
fn block_body(bytes: &[u8], at: usize, big: bool) -> Option<&[u8]> {
    let total = u32_at(bytes, at + 4, big)? as usize;
    if total < BLOCK_OVERHEAD {
        return None;
    }
    bytes.get(at + 8..at.checked_add(total)?.checked_sub(4)?)
}

/// How many options a block's option list holds (up to `opt_endofopt` or a cut one).
fn count_options(mut options: &[u8], big: bool) -> u64 {
    let mut count = 0;
    while let (Some(code), Some(len)) = (u16_at(options, 0, big), u16_at(options, 2, big)) {
        if code == 0 {
            break;
        }
        count += 1;
        let skip = 4 + usize::from(len).next_multiple_of(4);
        options = options.get(skip..).unwrap_or_default();
    }
    count
}

/// Builds pcapng blocks for tests and fixtures.
pub mod write {
    use super::*;

    /// One block of `kind` around `body` (padded to 4 bytes), in the given byte order.
    pub fn block(kind: u32, body: &[u8], big: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let padded = body.len().next_multiple_of(4);
        let total = (BLOCK_OVERHEAD + padded) as u32;
        let mut out = w32(kind).to_vec();
        out.extend_from_slice(&w32(total));
        out.extend_from_slice(body);
        out.resize(8 + padded, 0);
        out.extend_from_slice(&w32(total));
        out
    }

    /// An option list: each `(code, value)`, then `opt_endofopt`.
    pub fn options(list: &[(u16, &[u8])], big: bool) -> Vec<u8> {
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        for (code, value) in list {
            out.extend_from_slice(&w16(*code));
            out.extend_from_slice(&w16(value.len() as u16));
            out.extend_from_slice(value);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out.extend_from_slice(&[0; 4]);
        out
    }

    /// A section header with the given options.
    pub fn section(options: &[u8], big: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut body = w32(BYTE_ORDER_MAGIC).to_vec();
        body.extend_from_slice(&w16(1));
        body.extend_from_slice(&w16(0));
        body.extend_from_slice(&[0xff; 8]);
        body.extend_from_slice(options);
        block(SHB_TYPE, &body, big)
    }

    /// An interface description of `link` with the given options.
    pub fn interface(link: LinkType, options: &[u8], big: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut body = w16(link.0).to_vec();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&w32(65_535));
        body.extend_from_slice(options);
        block(IDB_TYPE, &body, big)
    }

    /// An enhanced packet block of `data` on `interface`, with the given options.
    pub fn enhanced(interface: u32, data: &[u8], options: &[u8], big: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut body = w32(interface).to_vec();
        for v in [0, 0, data.len() as u32, data.len() as u32] {
            body.extend_from_slice(&w32(v));
        }
        body.extend_from_slice(data);
        body.resize(body.len().next_multiple_of(4), 0);
        body.extend_from_slice(options);
        block(EPB_TYPE, &body, big)
    }

    /// A simple packet block of `data`.
    pub fn simple(data: &[u8], big: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut body = w32(data.len() as u32).to_vec();
        body.extend_from_slice(data);
        block(SPB_TYPE, &body, big)
    }
}

#[cfg(test)]
mod tests {
    use super::{write::*, *};
    use crate::{pcap::is_frame, CapturedFrame};

    const ETH: [u8; 18] = [0x5a; 18];

    /// An OSPF-style capture as real tools write it: options the reader has no name for in
    /// every block, a custom block, and a name-resolution block between packets.
    fn awkward(big: bool) -> Vec<u8> {
        let odd = options(&[(2988, b"vendor"), (0x8001, b"x"), (1, b"comment")], big);
        let mut file = section(&odd, big);
        file.extend(interface(LinkType::ETHERNET, &odd, big));
        file.extend(enhanced(0, &ETH, &odd, big));
        file.extend(block(0x0000_0bad, b"custom block, copyable", big));
        file.extend(block(4, &[1, 0, 8, 0, 10, 0, 0, 1, b'h', b'o', 0, 0], big));
        file.extend(enhanced(0, &ETH[..15], &[], big));
        file.extend(simple(&ETH, big));
        file
    }

    #[test]
    fn unknown_options_and_blocks_are_skipped_and_counted_never_fatal() {
        for big in [false, true] {
            let capture = parse(&awkward(big)).unwrap();
            assert_eq!(capture.frames.len(), 3, "big-endian {big}: {capture:?}");
            assert!(is_frame(&capture.frames[0], &ETH));
            assert!(is_frame(&capture.frames[1], &ETH[..15]));
            assert!(is_frame(&capture.frames[2], &ETH));
            assert_eq!(capture.skipped_blocks, 2);
            assert_eq!(capture.skipped_options, 9);
            assert_eq!(capture.truncated, None);
        }
    }

    #[test]
    fn a_new_section_resets_byte_order_and_interfaces() {
        let mut file = awkward(false);
        file.extend(section(&[], true));
        file.extend(interface(LinkType::RAW, &[], true));
        file.extend(enhanced(0, &[0x45, 0, 0, 20], &[], true));
        let capture = parse(&file).unwrap();
        assert_eq!(capture.frames.len(), 4);
        let CapturedFrame::Frame(last) = &capture.frames[3] else {
            panic!("{:?}", capture.frames[3]);
        };
        assert_eq!(&last[12..], &[0x08, 0x00, 0x45, 0, 0, 20]);
    }

    #[test]
    fn packets_of_undescribed_interfaces_and_oversized_lengths_are_skipped() {
        let mut file = section(&[], false);
        file.extend(enhanced(3, &ETH, &[], false));
        let mut lying = enhanced(0, &ETH, &[], false);
        lying[8 + 12..8 + 16].copy_from_slice(&9_999u32.to_le_bytes());
        file.extend(interface(LinkType::ETHERNET, &[], false));
        file.extend(lying);
        let capture = parse(&file).unwrap();
        assert_eq!(capture.frames.len(), 2);
        assert!(capture
            .frames
            .iter()
            .all(|f| matches!(f, CapturedFrame::Skipped(_))));
    }

    #[test]
    fn a_cut_block_ends_the_capture_keeping_the_packets_before_it() {
        let mut file = awkward(false);
        let full = file.len();
        file.extend(enhanced(0, &ETH, &[], false));
        file.truncate(full + 10);
        let capture = parse(&file).unwrap();
        assert_eq!(capture.frames.len(), 3);
        assert!(capture.truncated.unwrap().contains(&format!("byte {full}")));
        let mut tiny = section(&[], false);
        tiny.extend_from_slice(&[6, 0, 0, 0, 4, 0, 0, 0]);
        assert!(parse(&tiny).unwrap().truncated.is_some());
    }

    #[test]
    fn a_bad_byte_order_magic_is_refused() {
        let mut file = section(&[], false);
        file[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert!(parse(&file).unwrap_err().contains("byte-order magic"));
    }
}
