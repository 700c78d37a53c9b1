//! Hostile packets: for any byte string — and for valid frames with random corruption — the
//! kernel's verdict, reason and rewrite equal the userspace replay's. A malformed packet can
//! therefore never be sent somewhere the tables do not name.

use crate::support::{
    agrees,
    frames::{FrameSpec, VIP4, VIP6, WEB_PORT},
    outer::Expected,
    Loaded, TEST_CONFIG,
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use shardline_common::route::decide;

fn check(lb: &mut Loaded, want: &Expected, frame: &[u8]) -> Result<(), TestCaseError> {
    let (run, reason) = lb.run_counted(frame);
    let d = decide(frame, &lb.tables);
    prop_assert_eq!(
        reason,
        d.reason,
        "kernel counted {:?}, replay decided {:?}",
        reason,
        d.reason
    );
    agrees(want, frame, &run, &d).map_err(TestCaseError::fail)
}

/// Valid frames of every supported shape, to corrupt.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        FrameSpec::kv4(42, 7).build(),
        FrameSpec::kv6(7, 9).build(),
        FrameSpec::kv4(1234, 5).build(),
        FrameSpec::tcp4(VIP4, 40_000, WEB_PORT).build(),
        FrameSpec::tcp6(VIP6, 40_001, WEB_PORT).build(),
    ]
}

#[test]
fn any_bytes_get_the_replays_verdict() {
    let lb = std::cell::RefCell::new(Loaded::new(TEST_CONFIG));
    let want = Expected::test_config();
    let mut runner = TestRunner::new(Config {
        cases: 3_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 14..300), |frame| {
            check(&mut lb.borrow_mut(), &want, &frame)
        })
        .unwrap();
}

#[test]
fn corrupted_valid_frames_get_the_replays_verdict() {
    let lb = std::cell::RefCell::new(Loaded::new(TEST_CONFIG));
    let want = Expected::test_config();
    let seeds = seeds();
    let strategy = (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 5_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(seed, flips, cut, truncate)| {
            let mut frame = seeds[seed].clone();
            for (at, byte) in flips {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            if truncate {
                let len = 14 + cut.index(frame.len() - 13);
                frame.truncate(len);
            }
            check(&mut lb.borrow_mut(), &want, &frame)
        })
        .unwrap();
}
