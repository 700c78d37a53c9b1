//! Fixture: the per-packet bench's QUIC cases as `shardline-bench` runs them
//! (`shardline_bench::suite::per_packet`): `quic_sid_v4` (a short header whose connection id
//! carries backend 2's server id) and `quic_no_sid_v4` (one that names no server), and their
//! `_attached` twins. The bench's programs, `shardline_bench_quic` (the QUIC program alone) and
//! `shardline_bench` (the attached path: its tail call to the QUIC program returns to its
//! wrapper), must leave the frame as it came in after repeats (so every repeat routes the same
//! packet), and `shardline_quic`, and `shardline` through its tail call, must forward each
//! frame IPIP to the backend the replay picks: backend 2 for the server id.

use aya::programs::{TestRun, TestRunOptions};
use shardline::{
    loader::{xdp_program, LB_PROGRAM, QUIC_PROGRAM},
    private::PrivateDataplane,
};
use shardline_bench::suite::{
    loaded_balancer,
    per_packet::{quic_short_frame, BALANCER, QUIC_BENCH},
};
use shardline_common::{
    route::decide,
    verdict::{Action, Reason},
};

use crate::support::{hex, require_root};

/// Repeats of the bench's program: enough that a frame left unrestored would be routed
/// differently by the second one.
const REPEAT: u32 = 50;

#[test]
fn the_bench_quic_cases_forward_to_the_replays_backend_and_restore_the_frame() {
    require_root();
    let mut dp = loaded_balancer().unwrap_or_else(|e| panic!("loading the bench balancer: {e}"));
    // The loader has loaded `shardline` and `shardline_quic` already (for the tail call).
    for name in [QUIC_BENCH, BALANCER] {
        xdp_program(&mut dp.ebpf, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .load()
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    }
    for (case, server_id) in [("quic_sid_v4", Some(2)), ("quic_no_sid_v4", None)] {
        let frame = quic_short_frame(server_id);
        let d = decide(&frame[..], &dp.tables);
        assert_eq!(
            d.reason,
            Reason::Forwarded,
            "{case}: the replay forwards it"
        );
        if let Some(id) = server_id {
            assert_eq!(d.backend_id, id, "{case}: the server id names the backend");
        }
        let run = |dp: &mut PrivateDataplane, program: &str, repeat: u32| {
            let mut out = vec![0u8; frame.len() + 64];
            let result = xdp_program(&mut dp.ebpf, program)
                .unwrap_or_else(|e| panic!("{program}: {e}"))
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    repeat,
                    ..TestRunOptions::new()
                })
                .unwrap_or_else(|e| panic!("{case}: running {program}: {e}"));
            assert_eq!(
                Action::from_code(result.return_value),
                Action::Tx,
                "{case}: {program} transmits"
            );
            out.truncate(result.data_size_out as usize);
            out
        };
        let before = forwarded(&dp);
        for bench in [QUIC_BENCH, BALANCER] {
            let out = run(&mut dp, bench, REPEAT);
            assert_eq!(
                out,
                frame,
                "{case}: {bench}'s wrapper restores the frame: {}",
                hex(&out)
            );
        }
        // Each repeat of both counted once as forwarded (the attached path by the QUIC
        // program, after the tail call), as the bench checks every case.
        assert_eq!(
            forwarded(&dp) - before,
            2 * u64::from(REPEAT),
            "{case}: every repeat counted forwarded"
        );
        // The programs measured, once: IPIP to the replay's backend, the packet inside intact.
        for program in [QUIC_PROGRAM, LB_PROGRAM] {
            let out = run(&mut dp, program, 1);
            let backend = [10, 0, 0, 10 + d.backend_id as u8];
            assert_eq!(
                out.len(),
                frame.len() + 20,
                "{case}, {program}: {}",
                hex(&out)
            );
            assert_eq!(out[14 + 9], 4, "{case}, {program}: IPIP: {}", hex(&out));
            assert_eq!(
                out[30..34],
                backend,
                "{case}, {program}: to the replay's backend: {}",
                hex(&out)
            );
            assert_eq!(
                out[34..],
                frame[14..],
                "{case}, {program}: the packet inside: {}",
                hex(&out)
            );
        }
    }
}

/// Packets the balancer has counted `forwarded`, over every CPU.
fn forwarded(dp: &PrivateDataplane) -> u64 {
    dp.maps
        .reason_counts()
        .unwrap_or_else(|e| panic!("reading the reason counters: {e}"))
        .into_iter()
        .find(|(reason, _)| *reason == Reason::Forwarded)
        .map_or(0, |(_, n)| n)
}
