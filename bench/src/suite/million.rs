//! The `*_1m` per-packet cases: the hit paths with a million entries loaded instead of one hot
//! entry, each repeat's key drawn from all of them (`BENCH_ROTATION` keys, stepped through by
//! the bench-only rotating programs), so the cache and TLB misses of a large table show.
//!
//! A balancer of its own: its flow table is sized to hold a million flows with room to spare
//! (`CPUs` x 1.25 million entries, so no LRU list runs short on the CPU the bench is pinned to),
//! so the hot-entry cases keep the production sizes they always had.

use aya::{
    maps::{HashMap, MapData},
    programs::{TestRun, TestRunOptions},
};
use shardline::{
    config::Config, loader::xdp_program, private::PrivateDataplane, snapshot::Snapshot,
};
use shardline_common::{
    consts::{BENCH_ROTATION, BENCH_SESSION_BASE},
    maps::{SessionKey, ShardSet},
};

use super::{flow_rate, open_pinned, program_err, BenchError, BENCH_CONFIG};

/// Programs that step the frame's key on after every repeat.
pub const ROTATE_SOURCE: &str = "shardline_bench_rotate_source";
/// See [`ROTATE_SOURCE`].
pub const ROTATE_SESSION: &str = "shardline_bench_rotate_session";

/// The `kv` service's id in [`BENCH_CONFIG`] (the first service).
const KV_SERVICE: u32 = 1;

/// Pins this process to the CPU it runs on: `BPF_PROG_TEST_RUN` runs the program on the
/// caller's CPU, and the flow table is per CPU, so a warmed table stays the one read.
pub fn stay_on_this_cpu() -> Result<(), BenchError> {
    let cpu =
        nix::sched::sched_getcpu().map_err(|e| BenchError::Check(format!("sched_getcpu: {e}")))?;
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .map_err(|e| BenchError::Check(format!("cpu set: {e}")))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| BenchError::Check(format!("pinning to CPU {cpu}: {e}")))
}

/// A balancer with [`BENCH_CONFIG`], room for [`BENCH_ROTATION`] flows per CPU, and
/// [`BENCH_ROTATION`] `kv` sessions placed over 3 backends (written straight into SESSIONS,
/// without counters slots: a million sessions outnumber the slots, so most count in the LRU
/// counters in production too).
pub fn balancer() -> Result<PrivateDataplane, BenchError> {
    let config = Config::parse(BENCH_CONFIG, "bench config")
        .map_err(|e| BenchError::Check(format!("bench config: {e}")))?;
    let cpus =
        aya::util::nr_cpus().map_err(|(call, e)| BenchError::Check(format!("{call}: {e}")))? as u32;
    let flows = (BENCH_ROTATION + BENCH_ROTATION / 4) * cpus;
    let lb = PrivateDataplane::sized(
        "bench1m",
        Snapshot::from_config(&config),
        &[("FLOWS", flows)],
    )
    .map_err(|e| BenchError::Check(format!("loading the 1m balancer: {e:?}")))?;
    let mut sessions: HashMap<MapData, SessionKey, ShardSet> =
        open_pinned(&lb.pin_dir, "SESSIONS")?;
    let set = super::swap::placement(&[1, 2, 3], 1);
    for i in 0..BENCH_ROTATION {
        let key = SessionKey {
            service: KV_SERVICE,
            _pad: 0,
            session: u64::from(BENCH_SESSION_BASE + i),
        };
        sessions
            .insert(key, set, 0)
            .map_err(|source| BenchError::Map {
                what: "placing the 1m sessions".into(),
                source,
            })?;
    }
    // As the daemon does after its writes: retire what the dataplane's fronts hold.
    lb.maps.front_epoch().bump();
    Ok(lb)
}

/// The million-entry [`balancer`] with `programs` loaded and one pass of each over its frame
/// run unmeasured: the flow case's pass fills the flow table (each repeat a miss and an
/// insert), so the measured passes are hits.
pub fn warmed<'a>(
    programs: impl IntoIterator<Item = (&'static str, &'a [u8])>,
) -> Result<PrivateDataplane, BenchError> {
    let mut big = balancer()?;
    flow_rate::set_limit(&mut big, flow_rate::UNLIMITED)?;
    for (name, frame) in programs {
        let program = xdp_program(&mut big.ebpf, name)?;
        program.load().map_err(program_err(name))?;
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: BENCH_ROTATION,
                ..TestRunOptions::new()
            })
            .map_err(program_err(name))?;
    }
    Ok(big)
}

/// Fails unless the flow table holds at least the cycle's flows: the flow case would otherwise
/// time misses and call them hits.
pub fn check_flows_held(lb: &PrivateDataplane) -> Result<(), BenchError> {
    let held = lb.maps.flow_count()?;
    if held < BENCH_ROTATION as usize {
        return Err(BenchError::Check(format!(
            "flow_hit_v4_1m: the flow table holds {held} flows, fewer than the {BENCH_ROTATION} \
             the case cycles through"
        )));
    }
    Ok(())
}
