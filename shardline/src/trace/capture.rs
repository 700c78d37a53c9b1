//! Captures for the tracer: the reader is the `shardline-capture` crate (pcap and pcapng,
//! unknown pcapng blocks and options skipped and counted); hex frames typed by hand are
//! parsed here.

pub use shardline_capture::{
    normalize, read_capture, Capture, CaptureError, CapturedFrame, LinkType, SYNTHETIC_DST,
    SYNTHETIC_SRC,
};

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
    fn hex_input() {
        assert_eq!(
            parse_hex("de ad:BE-ef").unwrap(),
            vec![0xde, 0xad, 0xbe, 0xef]
        );
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
