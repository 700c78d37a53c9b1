//! Fuzzes the pcap/pcapng reader: any bytes either are refused with a reason or yield frames,
//! never a panic, a hang or an allocation beyond the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_capture::{parse_capture, CapturedFrame};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(capture) = parse_capture(bytes) {
        let total: usize = capture
            .frames
            .iter()
            .map(|f| match f {
                CapturedFrame::Frame(data) => data.len().saturating_sub(14),
                CapturedFrame::Skipped(_) => 0,
            })
            .sum();
        assert!(total <= bytes.len(), "frames hold bytes the input does not");
    }
});
