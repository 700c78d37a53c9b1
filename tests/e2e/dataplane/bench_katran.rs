//! Fixture: Katran's balancer as `shardline-bench` measures it beside shardline's
//! (`shardline_bench::suite::katran`). Each Katran path forwards its frame IPIP to one of the
//! reals through the next hop, its wrapper hands the input back after every repeat (so every
//! repeat routes the same packet), and a run's counters show the path the case names; the
//! check refuses a run of another path, so it can tell them apart.

use aya::programs::{TestRun, TestRunOptions};
use shardline::loader::xdp_program;
use shardline_bench::suite::{
    katran::{self, Counts, Katran, Path},
    per_packet::katran_cases,
};

use crate::support::{hex, require_root};

/// Repeats per run.
const REPEAT: u32 = 100;

fn run(k: &mut Katran, program: &str, frame: &[u8], repeat: u32) -> (Counts, Counts, Vec<u8>) {
    let before = katran::counts(k).expect("Katran's counters");
    let mut out = vec![0u8; frame.len() + 64];
    let result = xdp_program(&mut k.ebpf, program)
        .unwrap_or_else(|e| panic!("{program}: {e}"))
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert_eq!(result.return_value, 3, "{program} returns XDP_TX");
    out.truncate(result.data_size_out as usize);
    (before, katran::counts(k).expect("Katran's counters"), out)
}

#[test]
fn katrans_bench_paths_forward_restore_and_count_as_their_cases_claim() {
    require_root();
    let mut k = katran::load().unwrap_or_else(|e| panic!("loading Katran for the bench: {e}"));
    let cases = katran_cases();
    assert_eq!(cases.len(), 4, "ring, LRU hit, SYN, new flow");
    for (name, path, program, frame) in &cases {
        let (before, after, out) = run(&mut k, program, frame, REPEAT);
        katran::check(*path, REPEAT, before, after).unwrap_or_else(|e| panic!("{name}: {e}"));
        if *path == Path::NewFlow {
            // The source moved on by one per repeat; the rest is the input.
            let mut want = frame.clone();
            let src = u32::from_be_bytes(frame[26..30].try_into().unwrap()) + REPEAT;
            want[26..30].copy_from_slice(&src.to_be_bytes());
            assert_eq!(out, want, "{name}: {}", hex(&out));
        } else {
            assert_eq!(
                &out,
                frame,
                "{name}: the wrapper restores the frame: {}",
                hex(&out)
            );
        }
        // Without the wrapper (after the measured run, so the new-flow run met no flow of
        // this one): IPIP to a real via the next hop, the inner packet untouched.
        let out = katran::forward_once(&mut k, frame).expect("one run of Katran");
        assert_eq!(out.len(), frame.len() + 20, "{name}: {}", hex(&out));
        assert_eq!(out[..6], katran::NEXT_HOP_MAC, "{name}: next hop");
        assert_eq!(out[14 + 9], 4, "{name}: IPIP");
        assert!(
            katran::REALS.iter().any(|r| out[30..34] == r[..]),
            "{name}: outer destination {:?}",
            &out[30..34]
        );
        assert_eq!(out[34..], frame[14..], "{name}: the inner packet");
    }
    // The check tells the paths apart: the LRU-hit frame again is all hits, not a ring run.
    let (_, _, program, frame) = cases
        .iter()
        .find(|c| c.1 == Path::LruHit)
        .expect("the LRU-hit case");
    let (before, after, _) = run(&mut k, program, frame, REPEAT);
    katran::check(Path::LruHit, REPEAT, before, after).expect("hits");
    assert!(katran::check(Path::UdpRing, REPEAT, before, after).is_err());
    assert!(katran::check(Path::NewFlow, REPEAT, before, after).is_err());
}
