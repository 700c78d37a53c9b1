//! Reading packet captures into Ethernet frames the XDP program can run.
//!
//! Layout:
//! - `lib.rs`: [`read_capture`] / [`parse_capture`], the format switch, [`Capture`] and errors.
//! - [`pcap`]: classic pcap records, either byte order, micro- or nanosecond magic.
//! - [`pcapng`]: pcapng blocks. Only the blocks that carry packets (and the interface
//!   descriptions that name their link types) are read; every other block, and every option,
//!   is skipped by its length and counted, so a capture with an option or block this reader
//!   does not know still yields all its packets (tcpdump and Wireshark behave the same way).
//! - [`link`]: link types, and Ethernet headers synthesized for raw IP and Linux cooked
//!   captures.
//!
//! The reader depends on nothing but the bytes, so it is fuzzed directly (`fuzz/`).

pub mod link;
pub mod pcap;
pub mod pcapng;

use std::path::Path;

pub use link::{normalize, LinkType, SYNTHETIC_DST, SYNTHETIC_SRC};

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
    /// The bytes are not a pcap or pcapng capture.
    #[error("{path} is not a pcap or pcapng capture: {reason}")]
    Format {
        /// The file (or `<bytes>`).
        path: String,
        /// What was wrong, e.g. the magic number found.
        reason: String,
    },
}

/// One packet of a capture, ready to trace or skipped with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapturedFrame {
    /// An Ethernet frame (possibly synthesized).
    Frame(Vec<u8>),
    /// Not traceable: the link type (or content) is not one the tracer handles.
    Skipped(String),
}

/// A capture's packets, with what the reader passed over on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// Every packet record, in capture order.
    pub frames: Vec<CapturedFrame>,
    /// Blocks skipped because they carry no packets or are of an unknown type (pcapng).
    pub skipped_blocks: u64,
    /// Options skipped in the blocks that were read (pcapng; none are needed).
    pub skipped_options: u64,
    /// Why the capture ended before its last byte, if it did (a truncated or corrupt tail);
    /// every packet before that point is in `frames`.
    pub truncated: Option<String>,
}

/// Reads every packet of `path` (pcap or pcapng, detected by magic number).
pub fn read_capture(path: &Path) -> Result<Capture, CaptureError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CaptureError::Io {
        path: name.clone(),
        source,
    })?;
    parse_capture(&bytes).map_err(|reason| CaptureError::Format { path: name, reason })
}

/// Parses a whole capture held in memory; the error says why it is not a capture at all.
pub fn parse_capture(bytes: &[u8]) -> Result<Capture, String> {
    let Some(magic) = bytes.get(..4) else {
        return Err(format!(
            "{} bytes, shorter than any magic number",
            bytes.len()
        ));
    };
    if magic == pcapng::SHB_TYPE.to_le_bytes() {
        pcapng::parse(bytes)
    } else {
        pcap::parse(bytes)
    }
}

/// Reads a little- or big-endian u16 at `at`, if the bytes are there.
pub(crate) fn u16_at(bytes: &[u8], at: usize, big: bool) -> Option<u16> {
    let b: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

/// Reads a little- or big-endian u32 at `at`, if the bytes are there.
pub(crate) fn u32_at(bytes: &[u8], at: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_format_is_refused_with_what_was_found() {
        assert!(parse_capture(b"ab").unwrap_err().contains("shorter"));
        let err = parse_capture(b"GIF89a........................").unwrap_err();
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = read_capture(Path::new("/nonexistent/x.pcap")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.pcap"));
    }
}
