//! A backend host's resources from /proc, or from its cgroup v2 accounting when the agent
//! runs in one: parsers (pure, tested on fixed text) and a reader that turns cumulative
//! counters into fractions and rates between two readings.

use std::{path::PathBuf, time::Instant};

pub use shardline_wire::agent::Resources;

/// CPU time from the `cpu` line of `/proc/stat`, in jiffies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Time not idle or waiting for I/O.
    pub busy: u64,
    /// All time.
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Memory in bytes: (total, available) from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Bytes received and sent over every interface but `lo`, from `/proc/net/dev`.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() >= 9 {
            rx += fields[0];
            tx += fields[8];
        }
    }
    (rx, tx)
}

/// `usage_usec` from a cgroup v2 `cpu.stat`.
pub fn parse_cgroup_cpu_stat(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// A cgroup v2 `memory.max` or `memory.current` value (`max` is no limit: `None`).
pub fn parse_cgroup_bytes(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The bytes per second the host's links carry: the sum of `/sys/class/net/*/speed` (Mbit/s)
/// over the interfaces that are up and report one, loopback and virtual interfaces without a
/// speed left out; 0 when none does.
pub fn link_capacity() -> f64 {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|e| e.file_name() != "lo")
        .filter_map(|e| std::fs::read_to_string(e.path().join("speed")).ok())
        .map(|t| parse_link_speed(&t))
        .sum()
}

/// Bytes per second of a `/sys/class/net/IF/speed` text (Mbit/s; `-1` or garbage: 0).
pub fn parse_link_speed(text: &str) -> f64 {
    match text.trim().parse::<i64>() {
        Ok(mbit) if mbit > 0 => mbit as f64 * 125_000.0,
        _ => 0.0,
    }
}

/// Where resources are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The whole host's /proc.
    Proc,
    /// A cgroup v2 directory (e.g. `/sys/fs/cgroup/shardline`): its CPU and memory
    /// accounting; the network still comes from /proc (the namespace's interfaces).
    Cgroup(PathBuf),
}

/// Reads [`Resources`] from a [`Source`], remembering the previous counters.
#[derive(Debug)]
pub struct Reader {
    source: Source,
    last: Option<(Instant, u64, u64, u64, u64)>,
    cpus: f64,
}

impl Reader {
    /// A reader of `source`.
    pub fn new(source: Source) -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        Self {
            source,
            last: None,
            cpus,
        }
    }

    /// Reads now. The first reading has no rates (zero CPU and network).
    pub fn read(&mut self) -> std::io::Result<Resources> {
        let now = Instant::now();
        let (rx, tx) = parse_net_dev(&std::fs::read_to_string("/proc/net/dev")?);
        let (busy, total, mem_used, mem_total) = match &self.source {
            Source::Proc => {
                let cpu = parse_proc_stat(&std::fs::read_to_string("/proc/stat")?)
                    .ok_or_else(|| bad("/proc/stat"))?;
                let (total, available) = parse_meminfo(&std::fs::read_to_string("/proc/meminfo")?)
                    .ok_or_else(|| bad("/proc/meminfo"))?;
                (cpu.busy, cpu.total, total - available.min(total), total)
            }
            Source::Cgroup(dir) => {
                let usage = parse_cgroup_cpu_stat(&std::fs::read_to_string(dir.join("cpu.stat"))?)
                    .ok_or_else(|| bad("cpu.stat"))?;
                let current =
                    parse_cgroup_bytes(&std::fs::read_to_string(dir.join("memory.current"))?)
                        .ok_or_else(|| bad("memory.current"))?;
                let host = parse_meminfo(&std::fs::read_to_string("/proc/meminfo")?)
                    .map(|m| m.0)
                    .unwrap_or(0);
                let max = std::fs::read_to_string(dir.join("memory.max"))
                    .ok()
                    .and_then(|t| parse_cgroup_bytes(&t))
                    .unwrap_or(host);
                // CPU time in µs; "total" is wall time × CPUs, filled in below.
                (usage, 0, current, max)
            }
        };
        let mut out = Resources {
            mem_used,
            mem_total,
            ..Resources::default()
        };
        if let Some((then, busy0, total0, rx0, tx0)) = self.last {
            let secs = now.duration_since(then).as_secs_f64().max(1e-6);
            let cpu = match self.source {
                Source::Proc => {
                    let dt = total.saturating_sub(total0).max(1) as f64;
                    busy.saturating_sub(busy0) as f64 / dt
                }
                Source::Cgroup(_) => busy.saturating_sub(busy0) as f64 / 1e6 / secs / self.cpus,
            };
            out.cpu = cpu.clamp(0.0, 1.0);
            out.rx_bps = rx.saturating_sub(rx0) as f64 / secs;
            out.tx_bps = tx.saturating_sub(tx0) as f64 / secs;
        }
        self.last = Some((now, busy, total, rx, tx));
        Ok(out)
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{what}: unexpected format"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_speeds_in_bytes_per_second() {
        assert_eq!(parse_link_speed("10000\n"), 1.25e9);
        assert_eq!(parse_link_speed("-1\n"), 0.0);
        assert_eq!(parse_link_speed("x"), 0.0);
        assert!(link_capacity() >= 0.0);
    }

    #[test]
    fn proc_stat_cpu_line() {
        let text = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(CpuTimes {
                busy: 160,
                total: 980
            })
        );
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  a b c d\n"), None);
    }

    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:       16384 kB\nMemFree:         1024 kB\nMemAvailable:    4096 kB\n";
        assert_eq!(parse_meminfo(text), Some((16384 * 1024, 4096 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn net_dev_skips_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 2000 20 0 0 0 0 0 0 3000 30 0 0 0 0 0 0\n  eth1: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), (2005, 3007));
    }

    #[test]
    fn cgroup_files() {
        let text = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(parse_cgroup_cpu_stat(text), Some(123456));
        assert_eq!(parse_cgroup_bytes("4096\n"), Some(4096));
        assert_eq!(parse_cgroup_bytes("max\n"), None);
    }

    #[test]
    fn reads_this_host() {
        let mut r = Reader::new(Source::Proc);
        let first = r.read().unwrap();
        assert!(first.mem_total > 0 && first.mem_used <= first.mem_total);
        let second = r.read().unwrap();
        assert!((0.0..=1.0).contains(&second.cpu));
    }
}
