//! Every program in both embedded eBPF objects passes the verifier, the bench-only ones
//! included: they share the balancer's body, so a change that fits the `shardline` program can
//! still push them past the verifier's stack or instruction limits, and nothing else in the
//! e2e tests loads them (`cargo xtask bench` does, too late).

use std::path::PathBuf;

use aya::{
    programs::{Program, ProgramError},
    EbpfLoader, VerifierLogLevel,
};
use shardline::{
    agent::health::datapath::steer::PROBE_ENCAP_PROGRAM,
    loader::{teardown, LB_PROGRAM, NEXTHOP_PROGRAM, QUIC_PROGRAM},
    objects::{AUX_OBJECT, LB_OBJECT},
};
use shardline_bench::suite::{
    fib::BENCH_NEXTHOP,
    million::{ROTATE_SESSION, ROTATE_SOURCE},
    per_packet::QUIC_BENCH,
};

use crate::support::require_root;

/// Verifier log lines kept in a failure message: with statistics only, the verdict and the
/// stack and instruction figures are the last few.
const LOG_TAIL_LINES: usize = 12;

/// Instructions the verifier may process per program before this test fails: the kernel
/// refuses a program at 1,000,000, and a change must leave room below that for the next one.
const VERIFIED_BUDGET: u32 = 960_000;

/// Removes the pin directory the load-balancer object's maps were created in, even on panic.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = teardown(&self.0, None);
    }
}

/// Loads every program of `object` (maps pinned under `pin_dir` when given) and returns the
/// names loaded and, for each that failed, the program's name with the verifier's verdict.
fn load_all(object: &[u8], pin_dir: Option<&PinDir>) -> (Vec<String>, Vec<String>) {
    let mut loader = EbpfLoader::new();
    loader.verifier_log_level(VerifierLogLevel::STATS);
    if let Some(dir) = pin_dir {
        std::fs::create_dir_all(&dir.0).expect("create the pin directory");
        loader.default_map_pin_directory(&dir.0);
    }
    let mut ebpf = loader
        .load(object)
        .unwrap_or_else(|e| panic!("loading the object (maps, relocations): {e}"));
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let result = match program {
            Program::Xdp(xdp) => xdp.load().and_then(|()| xdp.info()),
            Program::SchedClassifier(tc) => tc.load().and_then(|()| tc.info()),
            other => panic!(
                "{name}: a program of an unexpected type: {:?}",
                other.prog_type()
            ),
        };
        match result {
            Ok(info) => {
                // The verifier's instruction count, against its 1,000,000 limit (see
                // `cargo test ... dataplane::programs -- --nocapture`).
                let insns = info.verified_instruction_count().unwrap_or(0);
                eprintln!("{name}: {insns} instructions verified");
                if insns < VERIFIED_BUDGET {
                    loaded.push(name.to_owned());
                } else {
                    failed.push(format!(
                        "{name}: {insns} instructions verified, over the budget of {VERIFIED_BUDGET}"
                    ));
                }
            }
            Err(e) => failed.push(format!("{name}: {}", verdict(&e))),
        }
    }
    (loaded, failed)
}

/// What the kernel said about a program it refused: the syscall error and the verifier log's
/// last lines.
fn verdict(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n    ");
            format!("{io_error}; verifier:\n    {tail}")
        }
        other => other.to_string(),
    }
}

#[test]
fn every_program_of_both_objects_loads() {
    require_root();
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/shardline-test-programs-{}",
        std::process::id()
    )));
    let _ = teardown(&pins.0, None);
    let (mut loaded, mut failed) = load_all(LB_OBJECT, Some(&pins));
    let (aux_loaded, aux_failed) = load_all(AUX_OBJECT, None);
    loaded.extend(aux_loaded);
    failed.extend(aux_failed);
    assert!(
        failed.is_empty(),
        "{} program(s) rejected (loaded: {loaded:?}):\n{}",
        failed.len(),
        failed.join("\n")
    );
    // The objects really hold the programs the daemon, the lab and the bench look up by name.
    for name in [
        LB_PROGRAM,
        NEXTHOP_PROGRAM,
        QUIC_PROGRAM,
        "shardline_bench",
        "shardline_bench_new_flow",
        "shardline_bench_rings_aom",
        QUIC_BENCH,
        BENCH_NEXTHOP,
        ROTATE_SOURCE,
        ROTATE_SESSION,
        "shardline_decap",
        "shardline_pass",
        "shardline_wire",
        "shardline_tx_baseline",
        "shardline_tx_baseline_restoring",
        PROBE_ENCAP_PROGRAM,
    ] {
        assert!(
            loaded.iter().any(|l| l == name),
            "program {name} is not in the objects (loaded: {loaded:?})"
        );
    }
}
