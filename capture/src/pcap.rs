//! Classic pcap: a 24-byte file header, then records of a 16-byte header and the packet.

#[cfg(test)]
use crate::CapturedFrame;
use crate::{link::normalize, u32_at, Capture, LinkType};

/// Magic numbers as read little-endian: microsecond and nanosecond timestamps.
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

/// Parses a classic pcap capture. Record headers are read leniently, as tcpdump reads them:
/// a captured length above the snap length (truncating tools, fuzzers) is taken as written;
/// a record that runs past the end of the file ends the capture, keeping what came before.
pub fn parse(bytes: &[u8]) -> Result<Capture, String> {
    let magic = u32_at(bytes, 0, false).ok_or("no magic number")?;
    let big = match magic {
        MAGIC_US | MAGIC_NS => false,
        m if m.swap_bytes() == MAGIC_US || m.swap_bytes() == MAGIC_NS => true,
        m => return Err(format!("unknown magic number {m:#010x}")),
    };
    // The link type is the low 16 bits; the upper bits may carry FCS information.
    let link = u32_at(bytes, 20, big)
        .map(|l| LinkType(l as u16))
        .ok_or("file header shorter than 24 bytes")?;
    let mut capture = Capture::default();
    let mut at = FILE_HEADER;
    while at < bytes.len() {
        let Some(len) = u32_at(bytes, at + 8, big) else {
            capture.truncated = Some(format!("record header cut short at byte {at}"));
            break;
        };
        let start = at + RECORD_HEADER;
        let Some(data) = start
            .checked_add(len as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            capture.truncated = Some(format!(
                "record at byte {at} claims {len} bytes, {} remain",
                bytes.len().saturating_sub(start)
            ));
            break;
        };
        capture.frames.push(normalize(Some(link), data));
        at = start + data.len();
    }
    Ok(capture)
}

/// A classic pcap file of `link` frames, little- or big-endian, for tests and fixtures.
pub fn write(link: LinkType, big: bool, frames: &[&[u8]]) -> Vec<u8> {
    let w32 = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    let mut out = Vec::new();
    w32(&mut out, MAGIC_US);
    w32(&mut out, 2 | (4 << 16));
    w32(&mut out, 0);
    w32(&mut out, 0);
    w32(&mut out, 65_535);
    w32(&mut out, u32::from(link.0));
    if big {
        // Version is two u16s: major then minor, each in the file's byte order.
        out[4..8].copy_from_slice(&[0, 2, 0, 4]);
    } else {
        out[4..8].copy_from_slice(&[2, 0, 4, 0]);
    }
    for frame in frames {
        for v in [0, 0, frame.len() as u32, frame.len() as u32] {
            w32(&mut out, v);
        }
        out.extend_from_slice(frame);
    }
    out
}

/// Whether `frame` is a [`CapturedFrame::Frame`] equal to `bytes` (tests).
#[cfg(test)]
pub(crate) fn is_frame(frame: &CapturedFrame, bytes: &[u8]) -> bool {
    matches!(frame, CapturedFrame::Frame(f) if f == bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETH: [u8; 20] = [0xaa; 20];

    #[test]
    fn both_byte_orders_read_every_record() {
        for big in [false, true] {
            let file = write(LinkType::ETHERNET, big, &[&ETH, &ETH[..14]]);
            let capture = parse(&file).unwrap();
            assert_eq!(capture.frames.len(), 2, "big-endian {big}");
            assert!(is_frame(&capture.frames[0], &ETH));
            assert!(is_frame(&capture.frames[1], &ETH[..14]));
            assert_eq!(capture.truncated, None);
        }
    }

    #[test]
    fn a_cut_record_ends_the_capture_keeping_what_came_before() {
        let mut file = write(LinkType::ETHERNET, false, &[&ETH, &ETH]);
        file.truncate(file.len() - 3);
        let capture = parse(&file).unwrap();
        assert_eq!(capture.frames.len(), 1);
        assert!(capture.truncated.unwrap().contains("claims 20 bytes"));
        file.truncate(24 + 16 + 20 + 5);
        assert!(parse(&file)
            .unwrap()
            .truncated
            .unwrap()
            .contains("cut short"));
    }

    #[test]
    fn a_huge_record_length_is_a_truncation_not_an_allocation() {
        let mut file = write(LinkType::ETHERNET, false, &[&ETH]);
        file[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let capture = parse(&file).unwrap();
        assert!(capture.frames.is_empty());
        assert!(capture.truncated.is_some());
    }
}
