//! CPU time a traffic run costs, by where it was spent, for the veth benchmark's CPU per
//! forwarded packet.
//!
//! On veth a packet's softirq work (bridge, the receiving interface's XDP or backlog, IP, UDP,
//! the socket queue) runs on the sending CPU, inside the task that sent it, unless it is
//! deferred to `ksoftirqd`. This kernel accounts time by tick sampling (no
//! `CONFIG_IRQ_TIME_ACCOUNTING`), so that work is in the sending task's runtime and, sampled
//! every 4 ms, in `/proc/stat`'s softirq column as well. So a run's CPU is summed by task,
//! never by adding softirq to process time (that would count it twice): the scheduler runtime
//! (`/proc/<pid>/task/<tid>/schedstat`, in ns; `/proc/<pid>/stat`'s `utime + stime` come in
//! 10 ms ticks, too coarse for a few seconds of traffic) of every thread of
//!
//! - every process whose network namespace is one of the lab's (the load balancer's daemon or
//!   nginx, the backends' echo and decap, the switch's helper), by that namespace;
//! - the `ksoftirqd/N` threads, which run what softirq deferred;
//! - this process (the sending client, the answer counter, the tokio proxy), each thread by
//!   the namespace it entered.
//!
//! The load balancer's share is then the difference with a baseline run in which the client
//! sends to a backend directly at the same rate ([`lb_cost`]). `/proc/stat`'s softirq column
//! is kept as a cross-check ([`softirq_ticks`]). Parsing and arithmetic are pure functions,
//! tested below; [`Tasks`] does the reading.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::Path,
};

/// Where CPU time was spent, by network namespace (or `ksoftirqd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client's namespace: the sending socket and the answer counter.
    Client,
    /// The load balancer's namespace: the daemon, nginx, the tokio proxy.
    Lb,
    /// The backends' namespaces: echo services and decapsulators.
    Backends,
    /// The switch's namespace (the bridge's XDP_PASS helper).
    Switch,
    /// `ksoftirqd/N`: softirq work deferred out of the task that raised it.
    Ksoftirqd,
    /// This process's other threads (the bench's main thread).
    Bench,
}

impl Role {
    /// Every role, in report order.
    pub const ALL: [Role; 6] = [
        Role::Client,
        Role::Lb,
        Role::Backends,
        Role::Switch,
        Role::Ksoftirqd,
        Role::Bench,
    ];

    /// The role's name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Lb => "lb",
            Role::Backends => "backends",
            Role::Switch => "switch",
            Role::Ksoftirqd => "ksoftirqd",
            Role::Bench => "bench",
        }
    }

    fn index(self) -> usize {
        Role::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// CPU nanoseconds spent in each [`Role`] over a run, and `/proc/stat`'s softirq delta.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    by_role: [u64; 6],
    /// System-wide softirq time from `/proc/stat` (tick-sampled; a cross-check, not summed).
    pub softirq_ns: u64,
}

impl Usage {
    /// Nanoseconds spent in `role`.
    pub fn ns(&self, role: Role) -> u64 {
        self.by_role[role.index()]
    }

    /// All of the run's tasks together.
    pub fn total_ns(&self) -> u64 {
        self.by_role.iter().sum()
    }

    fn add(&mut self, role: Role, ns: u64) {
        self.by_role[role.index()] += ns;
    }

    /// A usage with these nanoseconds per role (for tests of the arithmetic on top).
    #[cfg(test)]
    pub fn from_roles(roles: &[(Role, u64)]) -> Self {
        let mut usage = Self::default();
        for (role, ns) in roles {
            usage.add(*role, *ns);
        }
        usage
    }
}

/// The runtime in ns (first field) from the text of `/proc/<pid>/task/<tid>/schedstat`.
pub fn schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The softirq column of the aggregate `cpu` line of `/proc/stat`, in clock ticks.
pub fn softirq_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq …
    line.split_whitespace().nth(7)?.parse().ok()
}

/// Nanoseconds per packet: `ns / packets` (`None` for no packets).
pub fn per_packet(ns: u64, packets: u64) -> Option<f64> {
    (packets > 0).then(|| ns as f64 / packets as f64)
}

/// What a forwarder adds per packet over the baseline (the client sending to a backend
/// directly) measured beside it: `case - baseline`. Both are whole-run figures per packet, so
/// the sender's, the backends' and the answers' work cancels.
pub fn lb_cost(case_ns_per_pkt: f64, baseline_ns_per_pkt: f64) -> f64 {
    case_ns_per_pkt - baseline_ns_per_pkt
}

/// Clock ticks (`USER_HZ`) in nanoseconds.
fn ticks_to_ns(ticks: u64, ticks_per_second: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000) / ticks_per_second.max(1)
}

/// The tasks whose CPU a run counts, found once before the run so a snapshot only reads their
/// counters.
#[derive(Debug, Default)]
pub struct Tasks {
    /// Processes (other than this one), with their role.
    procs: Vec<(u32, Role)>,
    /// Namespace inodes of the lab, with their role (for this process's threads).
    namespaces: Vec<(u64, Role)>,
    ticks_per_second: u64,
}

/// Counters read at one instant: every thread's runtime, and `/proc/stat`'s softirq.
#[derive(Debug, Default)]
pub struct Snapshot {
    threads: HashMap<u32, (Role, u64)>,
    softirq: u64,
}

impl Tasks {
    /// The processes in the namespaces `namespaces` (name under `/var/run/netns`, role), the
    /// `ksoftirqd` threads, and this process.
    pub fn find(namespaces: &[(&str, Role)]) -> Self {
        let namespaces: Vec<(u64, Role)> = namespaces
            .iter()
            .filter_map(|(name, role)| {
                let meta = std::fs::metadata(Path::new("/var/run/netns").join(name)).ok()?;
                Some((meta.ino(), *role))
            })
            .collect();
        let me = std::process::id();
        let mut procs = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.starts_with("ksoftirqd/") {
                procs.push((pid, Role::Ksoftirqd));
                continue;
            }
            let ino = std::fs::metadata(entry.path().join("ns/net")).map(|m| m.ino());
            if let Some(role) = ino.ok().and_then(|ino| role_of(&namespaces, ino)) {
                procs.push((pid, role));
            }
        }
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            procs,
            namespaces,
            ticks_per_second: if hz > 0 { hz as u64 } else { 100 },
        }
    }

    /// Processes found (besides this one).
    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    /// The process ids whose CPU a run counts: those found and this one.
    pub fn pids(&self) -> HashSet<u32> {
        self.procs
            .iter()
            .map(|(pid, _)| *pid)
            .chain([std::process::id()])
            .collect()
    }

    /// Reads every counter now. Tasks that have gone are left out (a delta skips them).
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for (pid, role) in &self.procs {
            read_threads(&format!("/proc/{pid}/task"), &mut snap.threads, |_| *role);
        }
        read_threads("/proc/self/task", &mut snap.threads, |dir| {
            let ino = std::fs::metadata(dir.join("ns/net")).map(|m| m.ino());
            ino.ok()
                .and_then(|ino| role_of(&self.namespaces, ino))
                .unwrap_or(Role::Bench)
        });
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        snap.softirq = softirq_ticks(&stat).unwrap_or(0);
        snap
    }

    /// The CPU spent between two snapshots, by role. Only threads present in both count (the
    /// client threads start before the first and end after the second).
    pub fn usage(&self, start: &Snapshot, end: &Snapshot) -> Usage {
        let mut usage = Usage::default();
        for (tid, (role, b)) in &end.threads {
            if let Some((_, a)) = start.threads.get(tid) {
                usage.add(*role, b.saturating_sub(*a));
            }
        }
        usage.softirq_ns = ticks_to_ns(
            end.softirq.saturating_sub(start.softirq),
            self.ticks_per_second,
        );
        usage
    }
}

/// Adds the runtime of every thread under `tasks` (a `/proc/<pid>/task` directory), with the
/// role `role_of_thread` gives its directory.
fn read_threads(
    tasks: &str,
    into: &mut HashMap<u32, (Role, u64)>,
    role_of_thread: impl Fn(&Path) -> Role,
) {
    for entry in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = schedstat_ns(&text) {
            into.insert(tid, (role_of_thread(&entry.path()), ns));
        }
    }
}

fn role_of(namespaces: &[(u64, Role)], ino: u64) -> Option<Role> {
    namespaces.iter().find(|(i, _)| *i == ino).map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_reads_the_runtime() {
        assert_eq!(schedstat_ns("143533 2562574 2\n"), Some(143_533));
        assert_eq!(schedstat_ns(""), None);
    }

    #[test]
    fn softirq_is_the_seventh_value_of_the_aggregate_line() {
        let stat = "cpu  100 2 300 4000 5 6 77 8 0 0\ncpu0 50 1 150 2000 2 3 99 4 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(softirq_ticks(stat), Some(77));
        assert_eq!(softirq_ticks("cpu0 1 2 3 4 5 6 7\n"), None);
    }

    #[test]
    fn ticks_become_nanoseconds() {
        assert_eq!(ticks_to_ns(3, 100), 30_000_000);
        assert_eq!(ticks_to_ns(1, 250), 4_000_000);
        assert_eq!(ticks_to_ns(5, 0), 5_000_000_000);
    }

    #[test]
    fn per_packet_and_lb_cost() {
        assert_eq!(per_packet(2_000_000, 1000), Some(2000.0));
        assert_eq!(per_packet(5, 0), None);
        assert_eq!(lb_cost(2500.0, 2000.0), 500.0);
        assert_eq!(lb_cost(1900.0, 2000.0), -100.0);
    }

    #[test]
    fn usage_adds_threads_by_role_and_skips_threads_that_came_or_went() {
        let tasks = Tasks {
            ticks_per_second: 100,
            ..Tasks::default()
        };
        let start = Snapshot {
            threads: HashMap::from([
                (1, (Role::Client, 1_000)),
                (2, (Role::Bench, 10)),
                (10, (Role::Lb, 100)),
                (11, (Role::Lb, 50)),
                (12, (Role::Ksoftirqd, 7)),
            ]),
            softirq: 40,
        };
        let end = Snapshot {
            // 12 exited; 3 started during the run.
            threads: HashMap::from([
                (1, (Role::Client, 501_000)),
                (2, (Role::Bench, 20)),
                (3, (Role::Lb, 9_999)),
                (10, (Role::Lb, 400)),
                (11, (Role::Lb, 60)),
            ]),
            softirq: 42,
        };
        let u = tasks.usage(&start, &end);
        assert_eq!(u.ns(Role::Lb), 310);
        assert_eq!(u.ns(Role::Ksoftirqd), 0);
        assert_eq!(u.ns(Role::Client), 500_000);
        assert_eq!(u.ns(Role::Bench), 10);
        assert_eq!(u.ns(Role::Backends), 0);
        assert_eq!(u.total_ns(), 500_320);
        assert_eq!(u.softirq_ns, 20_000_000);
    }

    #[test]
    fn finds_this_process_threads_and_counts_their_cpu() {
        let tasks = Tasks::find(&[]);
        assert!(tasks.ticks_per_second > 0);
        let start = tasks.snapshot();
        // Spin for 20 ms of this thread's CPU (not wall-clock time: the cores are shared).
        let thread_cpu = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec to write into.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        };
        let until = thread_cpu() + 20_000_000;
        let mut x = 0u64;
        while thread_cpu() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let u = tasks.usage(&start, &tasks.snapshot());
        // The spinning thread is this process's, in no lab namespace (schedstat may lag the
        // thread's clock by up to a tick).
        assert!(u.ns(Role::Bench) >= 15_000_000, "{u:?}");
    }
}
