//! `shardline trace` end to end: real captures (pcap), a written pcapng with Ethernet, Linux
//! cooked (SLL2) and an unsupported link type, hex input, and bad input.

use std::{borrow::Cow, path::PathBuf, process::Command, time::Duration};

use etherparse::PacketBuilder;
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
        PcapNgWriter,
    },
    DataLink,
};
use serde_json::Value;
use shardline_common::packet::encode_header;

fn shardline(args: &[&str]) -> std::process::Output {
    Command::new(crate::support::shardline_bin())
        .args(args)
        .output()
        .expect("run shardline")
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "trace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn pcaps() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/pcaps");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the shipped captures are missing at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no capture in {}", dir.display());
    files
}

/// A header-mode request to the example configuration's `kv` service (session 42).
fn kv_request() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 1], [10, 100, 0, 1], 64)
        .udp(40_000, 7000)
        .write(&mut frame, &encode_header(42, 7))
        .expect("build frame");
    frame
}

#[test]
fn real_captures_trace_with_kernel_and_replay_in_agreement() {
    crate::support::require_root();
    for file in pcaps() {
        for retarget in [false, true] {
            let mut args = vec![
                "trace",
                "--json",
                "--pcap",
                file.to_str().expect("utf-8 path"),
            ];
            if retarget {
                args.push("--retarget");
            }
            for line in json_lines(&shardline(&args)) {
                assert_eq!(
                    line["agree"],
                    true,
                    "{} (retarget {retarget}): {line}",
                    file.display()
                );
                assert!(["tx", "redirect", "pass", "drop", "aborted"]
                    .contains(&line["verdict"].as_str().expect("verdict")));
            }
        }
    }
}

#[test]
fn hex_input_forwards_to_a_placed_shard() {
    crate::support::require_root();
    let hex: String = kv_request().iter().map(|b| format!("{b:02x}")).collect();
    let lines = json_lines(&shardline(&["trace", "--json", "--hex", &hex]));
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(
        (
            line["index"].as_u64(),
            line["verdict"].as_str(),
            line["reason"].as_str()
        ),
        (Some(0), Some("tx"), Some("forwarded"))
    );
    // The example places kv session 42 on backends 1 and 2.
    assert!(
        [1, 2].contains(&line["backend"].as_u64().expect("backend")),
        "{line}"
    );
    assert_eq!(line["agree"], true);
}

#[test]
fn a_jumbo_frame_traces_whole_with_kernel_and_replay_in_agreement() {
    crate::support::require_root();
    // A 9000-octet frame: past a page, so the program sees a linear part and fragments.
    let mut frame = Vec::new();
    let mut payload = encode_header(42, 7).to_vec();
    payload.resize(9000 - 14 - 20 - 8, 0x5a);
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 1], [10, 100, 0, 1], 64)
        .udp(40_000, 7000)
        .write(&mut frame, &payload)
        .expect("build frame");
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let lines = json_lines(&shardline(&["trace", "--json", "--hex", &hex]));
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(
        (
            line["verdict"].as_str(),
            line["reason"].as_str(),
            line["multi_buffer"].as_bool()
        ),
        (Some("tx"), Some("forwarded"), Some(true)),
        "{line}"
    );
    assert_eq!(line["agree"], true, "{line}");
    assert_eq!(line["replay"]["reason"], "forwarded", "{line}");
    assert_eq!(line["replay"]["backend"], line["backend"], "{line}");
}

#[test]
fn pcapng_with_cooked_and_unsupported_link_types() {
    crate::support::require_root();
    let path = std::env::temp_dir().join(format!("shardline-trace-{}.pcapng", std::process::id()));
    let frame = kv_request();
    let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0u8; 18]);
    sll2.extend_from_slice(&frame[14..]);
    {
        let mut w =
            PcapNgWriter::new(std::fs::File::create(&path).expect("create")).expect("writer");
        for link in [
            DataLink::ETHERNET,
            DataLink::LINUX_SLL2,
            DataLink::IEEE802_11,
        ] {
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: link,
                snaplen: 65535,
                options: vec![],
            })
            .expect("idb");
        }
        for (interface_id, data) in [(0u32, &frame), (1, &sll2), (2, &frame)] {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id,
                timestamp: Duration::ZERO,
                original_len: data.len() as u32,
                data: Cow::Borrowed(data),
                options: vec![],
            })
            .expect("epb");
        }
    }
    let out = shardline(&["trace", "--json", "--pcap", path.to_str().expect("path")]);
    let lines = json_lines(&out);
    let _ = std::fs::remove_file(&path);
    let indices: Vec<u64> = lines
        .iter()
        .map(|l| l["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indices, [0, 1], "the 802.11 packet is skipped: {lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["verdict"] == "tx" && l["agree"] == true),
        "{lines:?}"
    );
    assert_eq!(
        lines[0]["backend"], lines[1]["backend"],
        "the synthetic Ethernet header routes alike"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 skipped"));
}

#[test]
fn pcapng_options_and_blocks_the_reader_does_not_know_are_skipped_not_fatal() {
    use shardline_capture::{pcapng::write, LinkType};
    crate::support::require_root();
    let frame = kv_request();
    // As OSPF captures from real tools carry: vendor options in every block, a custom block
    // and a name-resolution block between the packets.
    let odd = write::options(&[(2988, b"vendor"), (0x8001, b"x"), (1, b"comment")], false);
    let mut file = write::section(&odd, false);
    file.extend(write::interface(LinkType::ETHERNET, &odd, false));
    file.extend(write::enhanced(0, &frame, &odd, false));
    file.extend(write::block(0x0000_0bad, b"custom", false));
    file.extend(write::block(
        4,
        &[1, 0, 8, 0, 10, 0, 0, 1, b'h', 0, 0, 0],
        false,
    ));
    file.extend(write::enhanced(0, &frame, &[], false));
    let path = std::env::temp_dir().join(format!("shardline-odd-{}.pcapng", std::process::id()));
    std::fs::write(&path, &file).expect("write");
    let out = shardline(&["trace", "--json", "--pcap", path.to_str().expect("path")]);
    let _ = std::fs::remove_file(&path);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "both packets traced: {lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["verdict"] == "tx" && l["agree"] == true),
        "{lines:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 pcapng blocks and 9 options"),
        "skips are counted: {stderr}"
    );
}

#[test]
fn unreadable_input_fails_with_a_message() {
    crate::support::require_root();
    let out = shardline(&["trace", "--pcap", "/nonexistent/capture.pcap"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capture.pcap"));
    let bogus = std::env::temp_dir().join(format!("shardline-bogus-{}.pcap", std::process::id()));
    std::fs::write(&bogus, b"this is not a capture at all").expect("write");
    let out = shardline(&["trace", "--pcap", bogus.to_str().expect("path")]);
    let _ = std::fs::remove_file(&bogus);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a pcap or pcapng capture"));
    let out = shardline(&["trace", "--hex", "abc"]);
    assert!(!out.status.success());
}
