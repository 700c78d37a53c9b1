//! The XDP program under `BPF_PROG_TEST_RUN`: fixtures with expected verdicts and output bytes,
//! and kernel/userspace agreement on random packets.

mod support;

use support::{Loaded, TEST_CONFIG};

#[test]
fn program_loads_and_passes_non_ip() {
    let mut lb = Loaded::new(TEST_CONFIG);
    let arp = [0xffu8; 14]
        .iter()
        .copied()
        .chain([0u8; 46])
        .collect::<Vec<_>>();
    let mut frame = arp;
    frame[12] = 0x08;
    frame[13] = 0x06;
    let out = lb.run(&frame);
    assert_eq!(out.action, shardline_common::verdict::Action::Pass);
}
