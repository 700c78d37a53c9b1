//! The profiled run of a veth CPU measurement: the same paced run as the measured ones, with
//! `perf record -a -g` sampling every CPU (a fixed `cpu-clock` period, so a sample is a known
//! number of nanoseconds) and the kernel's BPF run-time statistics on, so the CPU per packet
//! can be split by stage of the path ([`super::stages`]) and the lab's XDP programs timed
//! exactly. Kept out of the measured rounds: sampling with call chains and the statistics cost
//! CPU of their own.

use std::{
    collections::{BTreeMap, HashSet},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use shardline_lab::{
    netns::Netns,
    topology::{wire::xdp_prog_id, Topology},
};

use super::stages::{count, ns_per_packet, Stage};
use crate::suite::{io, BenchError};

/// `cpu-clock` nanoseconds between samples (4 kHz per CPU).
pub const PERIOD_NS: u64 = 250_000;
/// Time `perf record` gets to set up before the run starts.
const PERF_SETTLE: Duration = Duration::from_millis(500);
/// The kernel's switch for BPF run-time statistics.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// A lab XDP program whose run time is read, by the role it plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Program {
    /// The load balancer's program on its interface.
    Lb,
    /// The `XDP_PASS` on the switch's port facing the load balancer.
    SwitchPass,
    /// The switch's forwarder when the lab is wired by XDP (one program on every port).
    SwitchWire,
    /// The backends' decapsulators, summed.
    BackendDecap,
}

impl Program {
    /// The program's name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Program::Lb => "lb_xdp_program",
            Program::SwitchPass => "switch_pass_program",
            Program::SwitchWire => "switch_wire_program",
            Program::BackendDecap => "backend_decap_program",
        }
    }
}

/// What one profiled run measured, per forwarded packet.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// ns per forwarded packet by stage, from the samples.
    pub stages: BTreeMap<Stage, f64>,
    /// ns per forwarded packet each lab program ran (`run_time_ns`), from the kernel.
    pub programs: BTreeMap<Program, f64>,
    /// Runs per forwarded packet of each lab program (`run_cnt`).
    pub runs_per_packet: BTreeMap<Program, f64>,
}

/// A `perf record` running until [`Recording::finish`] (killed if dropped).
pub struct Recording {
    child: Option<Child>,
    data: PathBuf,
}

impl Recording {
    /// Starts sampling every CPU with call chains into `data`.
    pub fn start(data: &Path) -> Result<Self, BenchError> {
        let child = Command::new("perf")
            .args(["record", "-q", "-a", "-g", "-e", "cpu-clock", "-c"])
            .arg(PERIOD_NS.to_string())
            .arg("-o")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting `perf record` (is perf installed?)"))?;
        std::thread::sleep(PERF_SETTLE);
        Ok(Self {
            child: Some(child),
            data: data.to_owned(),
        })
    }

    /// Stops the recording and returns `perf script`'s text of it (comm, pid, call chain).
    pub fn finish(mut self) -> Result<String, BenchError> {
        let mut child = self.child.take().expect("a recording has its child");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let status = child.wait().map_err(io("waiting for `perf record`"))?;
        // perf writes its file on SIGINT and then ends by that signal.
        if !status.success() && status.signal() != Some(libc::SIGINT) {
            return Err(BenchError::Check(format!("`perf record` failed: {status}")));
        }
        let out = Command::new("perf")
            .args(["script", "-F", "comm,pid,tid,ip,sym", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .map_err(io("running `perf script`"))?;
        let _ = std::fs::remove_file(&self.data);
        if !out.status.success() {
            return Err(BenchError::Check(format!(
                "`perf script` failed: {}",
                out.status
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.data);
        }
    }
}

/// The kernel's BPF statistics switched on until dropped (then set back as they were). They
/// are global: on only for the profiled runs, which last a few seconds.
pub struct BpfStats {
    before: String,
}

impl BpfStats {
    /// Switches the statistics on.
    pub fn enable() -> Result<Self, BenchError> {
        let before =
            std::fs::read_to_string(BPF_STATS).map_err(io(format!("reading {BPF_STATS}")))?;
        std::fs::write(BPF_STATS, "1").map_err(io(format!("writing {BPF_STATS}")))?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.before.trim());
    }
}

/// The ids of the XDP programs attached in `topo`, by role: the load balancer's interface, the
/// switch's port facing it (the forwarder on every port when wired by XDP), the backends'
/// interfaces (the proxies' topology has none).
pub fn lab_programs(topo: &Topology) -> Vec<(Program, u32)> {
    let mut found = Vec::new();
    let mut add = |role, ns: &Netns, dev| {
        if let Some(id) = xdp_prog_id(ns, dev) {
            found.push((role, id));
        }
    };
    add(Program::Lb, &topo.lb, "eth0");
    let switch = if topo.wired_by_xdp() {
        Program::SwitchWire
    } else {
        Program::SwitchPass
    };
    add(switch, &topo.switch, "p-lb");
    for b in &topo.backends {
        add(Program::BackendDecap, b, "eth0");
    }
    found
}

/// `(run_time_ns, run_cnt)` of each program, summed by role, from `bpftool prog show`.
pub fn program_stats(programs: &[(Program, u32)]) -> BTreeMap<Program, (u64, u64)> {
    let mut stats = BTreeMap::new();
    for (role, id) in programs {
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show", "id", &id.to_string()])
            .stderr(Stdio::null())
            .output();
        let Some(v) = out
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        else {
            continue;
        };
        let field = |k: &str| v[k].as_u64().unwrap_or(0);
        let e = stats.entry(*role).or_insert((0, 0));
        e.0 += field("run_time_ns");
        e.1 += field("run_cnt");
    }
    stats
}

/// Stages from a recording's `script` text and program statistics between `before` and
/// `after`, per packet of `packets`, counting the samples of `pids`.
pub fn profile(
    script: &str,
    pids: &HashSet<u32>,
    before: &BTreeMap<Program, (u64, u64)>,
    after: &BTreeMap<Program, (u64, u64)>,
    packets: u64,
) -> Profile {
    let mut p = Profile {
        stages: ns_per_packet(&count(script, pids), PERIOD_NS, packets),
        ..Profile::default()
    };
    if packets == 0 {
        return p;
    }
    for (role, (t1, n1)) in after {
        let (t0, n0) = before.get(role).copied().unwrap_or((0, 0));
        p.programs
            .insert(*role, t1.saturating_sub(t0) as f64 / packets as f64);
        p.runs_per_packet
            .insert(*role, n1.saturating_sub(n0) as f64 / packets as f64);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_time_is_the_delta_per_packet() {
        let before = BTreeMap::from([(Program::Lb, (1_000, 10)), (Program::BackendDecap, (0, 0))]);
        let after = BTreeMap::from([
            (Program::Lb, (201_000, 1_010)),
            (Program::BackendDecap, (50_000, 1_000)),
        ]);
        let p = profile("", &HashSet::new(), &before, &after, 1_000);
        assert_eq!(p.programs[&Program::Lb], 200.0);
        assert_eq!(p.programs[&Program::BackendDecap], 50.0);
        assert_eq!(p.runs_per_packet[&Program::Lb], 1.0);
        assert_eq!(p.stages[&Stage::Bridge], 0.0);
        assert!(profile("", &HashSet::new(), &before, &after, 0)
            .programs
            .is_empty());
    }
}
