//! `shardline doctor`: can this host run the dataplane, and how well? Each check reads the
//! kernel's own files (`/proc`, `/sys`), says pass / warn / fail, what it saw, and what to do.
//! `shardline daemon` runs [`preflight`] at start and refuses with the failing checks' words
//! instead of an errno from deep inside a BPF syscall.

use std::{fs, path::PathBuf};

use serde::Serialize;
use shardline_common::{
    consts::{
        MAGLEV_SIZE, MAX_BACKENDS, MAX_FLOWS, MAX_SERVICES, MAX_SESSIONS, MAX_SESSION_SLOTS,
        MAX_SESSION_STATS, SERVICE_FRONT_ENTRIES, SESSION_FILTER_ENTRIES, SESSION_FRONT_ENTRIES,
    },
    front::{ServiceEntry, SessionEntry},
    maps::{
        Backend, Counter, FlowEntry, FlowKey, Globals, Service, ServiceKey, SessionKey, ShardSet,
        SlotCounter,
    },
};

use crate::config::Config;

mod mtu;

use self::mtu::mtu_check;

/// Oldest kernel the dataplane is known to load on: 5.19 for `bpf_map_lookup_percpu_elem` (a
/// flow seen on another CPU adopts that CPU's entry); developed on 6.18.
pub const MIN_KERNEL: (u32, u32) = (5, 19);

/// Largest MTU a frame fits one buffer under in native mode: a 4 KiB page less the XDP
/// headroom and the skb_shared_info tail. Above it a frame arrives in several buffers, which the
/// programs (`xdp.frags`) take, on a driver with multi-buffer XDP.
pub const MAX_SINGLE_BUFFER_MTU: u32 = 3498;

/// Drivers with native (driver-mode) XDP in mainline kernels. Anything else runs in generic
/// (SKB) mode: the packet is already an skb when the program sees it.
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "mlx5_core",
    "mlx4_en",
    "i40e",
    "ice",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "bnxt_en",
    "ena",
    "nfp",
    "qede",
    "virtio_net",
    "veth",
    "tun",
    "tap",
    "thunder_nicvf",
    "mvneta",
    "mvpp2",
    "stmmac",
    "sfc",
    "netdevsim",
    "hv_netvsc",
    "gve",
    "idpf",
    "xsk",
];

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Pass,
    /// Works, but slower or riskier than it could be.
    Warn,
    /// The dataplane will not run (or will drop traffic) until this is fixed.
    Fail,
}

impl Status {
    /// `pass`, `warn` or `fail`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's result, as `doctor --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// Short name, e.g. `kernel`, `bpffs`, `xdp_driver`.
    pub check: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// What to do about it (empty on a pass).
    pub fix: String,
}

fn check(check: &'static str, status: Status, detail: String, fix: &str) -> Check {
    Check {
        check,
        status,
        detail,
        fix: if status == Status::Pass {
            String::new()
        } else {
            fix.to_owned()
        },
    }
}

/// Where the checks read the host from: `/` on a real host, a scratch tree in tests.
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
    /// This machine: interfaces are looked up in this process's network namespace (which
    /// `/sys` may not show: `nsenter --net` keeps the mount namespace's sysfs).
    live: bool,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            live: true,
        }
    }
}

impl Host {
    /// A host whose `/proc` and `/sys` live under `root` (tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            live: false,
        }
    }

    /// The interface's index in this network namespace, or `None` when there is none.
    fn ifindex(&self, iface: &str) -> Option<u32> {
        if self.live {
            nix::net::if_::if_nametoindex(iface).ok()
        } else {
            self.sys_ifindex(iface)
        }
    }

    /// The interface's index as `/sys/class/net` shows it.
    fn sys_ifindex(&self, iface: &str) -> Option<u32> {
        self.read(&format!("/sys/class/net/{iface}/ifindex"))
            .and_then(|i| i.trim().parse().ok())
    }

    fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.path(path)).ok()
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// Runs every check. `iface` (or the configuration's interface) enables the interface checks;
/// `config` the memory and MTU checks that depend on it.
pub fn run(host: &Host, iface: Option<&str>, config: Option<&Config>) -> Vec<Check> {
    let mut out = vec![
        kernel(host),
        btf(host),
        bpffs(host),
        jit(host),
        privileges(host),
    ];
    let iface = iface.or(config.map(|c| c.interface.as_str()));
    if let Some(iface) = iface {
        out.extend(interface(host, iface, config));
    }
    out.push(decap(host));
    out.push(memory(host));
    out
}

/// The checks whose failure means the daemon cannot start, for `config`.
pub fn preflight(host: &Host, config: &Config) -> Result<(), String> {
    let failed: Vec<String> = run(host, None, Some(config))
        .into_iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("{}: {} — {}", c.check, c.detail, c.fix))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this host cannot run the dataplane (`shardline doctor` for every check):\n  {}",
            failed.join("\n  ")
        ))
    }
}

/// Parses the `major.minor` at the start of a kernel release string.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn kernel(host: &Host) -> Check {
    let release = host.read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let fix = "upgrade to Linux 5.19 or newer (developed on 6.18)";
    match kernel_version(&release) {
        Some(v) if v >= MIN_KERNEL => check("kernel", Status::Pass, release.trim().into(), fix),
        Some(_) => check(
            "kernel",
            Status::Fail,
            format!("{} is older than 5.19", release.trim()),
            fix,
        ),
        None => check(
            "kernel",
            Status::Fail,
            "cannot read /proc/sys/kernel/osrelease".into(),
            fix,
        ),
    }
}

fn btf(host: &Host) -> Check {
    let present = host.path("/sys/kernel/btf/vmlinux").exists();
    check(
        "btf",
        if present { Status::Pass } else { Status::Warn },
        if present {
            "/sys/kernel/btf/vmlinux present".into()
        } else {
            "no /sys/kernel/btf/vmlinux".into()
        },
        "build the kernel with CONFIG_DEBUG_INFO_BTF=y; without BTF the verifier's messages and \
         `bpftool` introspection are poorer",
    )
}

fn bpffs(host: &Host) -> Check {
    let mounts = host.read("/proc/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|line| {
        let mut f = line.split_whitespace().skip(1);
        f.next() == Some("/sys/fs/bpf") && f.next() == Some("bpf")
    });
    check(
        "bpffs",
        if mounted { Status::Pass } else { Status::Fail },
        if mounted {
            "bpf filesystem mounted at /sys/fs/bpf".into()
        } else {
            "/sys/fs/bpf is not a mounted bpf filesystem: maps cannot be pinned".into()
        },
        "mount -t bpf bpf /sys/fs/bpf (and add it to /etc/fstab: `bpf /sys/fs/bpf bpf defaults 0 0`)",
    )
}

fn jit(host: &Host) -> Check {
    let fix = "sysctl -w net.core.bpf_jit_enable=1 (the interpreter is many times slower)";
    match host.read("/proc/sys/net/core/bpf_jit_enable") {
        // Kernels built with CONFIG_BPF_JIT_ALWAYS_ON have no switch at all.
        None => check(
            "bpf_jit",
            Status::Pass,
            "always on (no bpf_jit_enable switch)".into(),
            fix,
        ),
        Some(v) if v.trim() == "0" => check(
            "bpf_jit",
            Status::Warn,
            "net.core.bpf_jit_enable = 0: programs run in the interpreter".into(),
            fix,
        ),
        Some(v) => check(
            "bpf_jit",
            Status::Pass,
            format!("net.core.bpf_jit_enable = {}", v.trim()),
            fix,
        ),
    }
}

fn privileges(host: &Host) -> Check {
    let status = host.read("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    // CAP_BPF (39), CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21) in the effective set.
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let capable = euid == "0" || (caps & (1 << 39) != 0 && caps & (1 << 12) != 0);
    check(
        "privileges",
        if capable { Status::Pass } else { Status::Fail },
        format!("euid {euid}, effective capabilities {caps:#x}"),
        "run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (the systemd unit in \
         deploy/systemd grants them)",
    )
}

/// The interface checks: presence, XDP driver mode, queues and MTU.
fn interface(host: &Host, iface: &str, config: Option<&Config>) -> Vec<Check> {
    let dir = format!("/sys/class/net/{iface}");
    let Some(index) = host.ifindex(iface) else {
        return vec![check(
            "interface",
            Status::Fail,
            format!("no interface {iface:?} in this network namespace"),
            "set `interface` in the configuration to an existing device (`ip link`)",
        )];
    };
    if host.sys_ifindex(iface) != Some(index) {
        return vec![check(
            "xdp_driver",
            Status::Warn,
            format!(
                "{iface}: /sys shows another network namespace, so its driver, queues and MTU                  cannot be read here"
            ),
            "run `shardline doctor` where /sys belongs to this namespace (`ip netns exec NS              shardline doctor`)",
        )];
    }
    let driver = fs::read_link(host.path(&format!("{dir}/device/driver")))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| virtual_kind(host, &dir));
    let native = driver
        .as_deref()
        .is_some_and(|d| NATIVE_XDP_DRIVERS.contains(&d));
    let mut out = vec![check(
        "xdp_driver",
        if native { Status::Pass } else { Status::Warn },
        match &driver {
            Some(d) if native => format!("{iface}: driver {d} has native XDP"),
            Some(d) => format!(
                "{iface}: driver {d} has no native XDP; generic (SKB) mode costs an skb \
                 allocation per packet, typically several times the native cost"
            ),
            None => format!("{iface}: driver unknown; native XDP may be unavailable"),
        },
        "use a NIC with native XDP (mlx5, ice, i40e, ixgbe, bnxt, ena, virtio_net, …) or accept \
         generic mode (xdp_mode = \"generic\")",
    )];
    let queues = fs::read_dir(host.path(&format!("{dir}/queues")))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(0);
    out.push(check(
        "rx_queues",
        if queues > 1 {
            Status::Pass
        } else {
            Status::Warn
        },
        format!("{iface}: {queues} receive queue(s)"),
        "enable RSS with one queue per core (`ethtool -L DEV combined N`): XDP runs on the core \
         that services each queue",
    ));
    if let Some(mtu) = host
        .read(&format!("{dir}/mtu"))
        .and_then(|m| m.trim().parse::<u32>().ok())
    {
        out.push(mtu_check(iface, mtu, driver.as_deref(), config));
    }
    out
}

/// A virtual device has no `device/driver` link; its kind is in `uevent` (`DEVTYPE=…`).
fn virtual_kind(host: &Host, dir: &str) -> Option<String> {
    let uevent = host.read(&format!("{dir}/uevent"))?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .map(str::to_owned)
        .or_else(|| {
            host.path(&format!("{dir}/veth"))
                .exists()
                .then(|| "veth".into())
        })
}

fn decap(host: &Host) -> Check {
    // /proc/config.gz is compressed: its presence alone says the kernel lists its options.
    let config_listed = host.path("/proc/config.gz").exists();
    let ipip =
        host.path("/sys/module/ipip").exists() || host.path("/sys/module/ip_tunnel").exists();
    check(
        "decap",
        if ipip { Status::Pass } else { Status::Warn },
        if ipip {
            "ipip module loaded: backends like this host can use `ip link add tunl0 type ipip \
             external`"
                .into()
        } else if config_listed {
            "no ipip module loaded here; backends without ipip / ip6tnl need `shardline decap`"
                .into()
        } else {
            "cannot tell whether this kernel has ipip / ip6tnl".into()
        },
        "on each backend: `modprobe ipip ip6_tunnel` and a tunl0 / ip6tnl0 device with the VIP \
         on lo, or run `shardline decap --iface DEV --vip VIP` where the kernel lacks them",
    )
}

/// Bytes the pinned maps can take when full, per CPU where they are per-CPU.
pub fn map_bytes(cpus: u64) -> u64 {
    use core::mem::size_of;
    // A hash map entry costs its key and value plus the kernel's element header and bucket
    // (about 48 bytes on 64-bit); an LRU per-CPU map keeps one value per possible CPU.
    const HASH_OVERHEAD: u64 = 48;
    let sz = |n: usize| n as u64;
    let hash = |entries: u32, key: usize, value: usize| {
        u64::from(entries) * (sz(key) + sz(value) + HASH_OVERHEAD)
    };
    let percpu_hash = |entries: u32, key: usize, value: usize| {
        u64::from(entries) * (sz(key) + HASH_OVERHEAD + sz(value) * cpus)
    };
    hash(MAX_SERVICES, size_of::<ServiceKey>(), size_of::<Service>())
        + u64::from(MAX_BACKENDS) * sz(size_of::<Backend>())
        + hash(MAX_SESSIONS, size_of::<SessionKey>(), size_of::<ShardSet>())
        + 2 * u64::from(MAGLEV_SIZE) * 4
        + sz(size_of::<Globals>())
        + u64::from(MAX_BACKENDS) * sz(size_of::<Counter>()) * cpus
        + u64::from(MAX_SESSION_SLOTS) * sz(size_of::<SlotCounter>()) * cpus
        + percpu_hash(
            MAX_SESSION_STATS,
            size_of::<SessionKey>(),
            size_of::<Counter>(),
        )
        + percpu_hash(MAX_FLOWS, size_of::<FlowKey>(), size_of::<FlowEntry>())
        // The per-CPU fronts before SERVICES and SESSIONS.
        + u64::from(SERVICE_FRONT_ENTRIES) * sz(size_of::<ServiceEntry>()) * cpus
        + u64::from(SESSION_FRONT_ENTRIES) * sz(size_of::<SessionEntry>()) * cpus
        // The sessions filter: one word per position block.
        + u64::from(SESSION_FILTER_ENTRIES) * 8
}

fn memory(host: &Host) -> Check {
    let cpus = host
        .read("/sys/devices/system/cpu/possible")
        .and_then(|r| possible_cpus(&r))
        .unwrap_or(1);
    let need = map_bytes(cpus);
    let available = host
        .read("/proc/meminfo")
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let mib = |b: u64| b / (1024 * 1024);
    let fix = "free memory, or run on a host with more: the maps are allocated in full when \
               they fill (per-CPU maps grow with the CPU count)";
    match available {
        Some(a) if a >= 2 * need => check(
            "memory",
            Status::Pass,
            format!(
                "maps take up to {} MiB with {cpus} CPUs; {} MiB available",
                mib(need),
                mib(a)
            ),
            fix,
        ),
        Some(a) if a >= need => check(
            "memory",
            Status::Warn,
            format!(
                "maps take up to {} MiB with {cpus} CPUs; only {} MiB available",
                mib(need),
                mib(a)
            ),
            fix,
        ),
        Some(a) => check(
            "memory",
            Status::Fail,
            format!(
                "maps take up to {} MiB with {cpus} CPUs; {} MiB available",
                mib(need),
                mib(a)
            ),
            fix,
        ),
        None => check(
            "memory",
            Status::Warn,
            "cannot read MemAvailable from /proc/meminfo".into(),
            fix,
        ),
    }
}

/// Counts the CPUs of a `possible` range list such as `0-3,8-11`.
pub fn possible_cpus(ranges: &str) -> Option<u64> {
    let mut n = 0;
    for part in ranges.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().ok()? - a.parse::<u64>().ok()? + 1,
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// Renders checks as the aligned table `shardline doctor` prints.
pub fn table(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out += &format!("{:<5} {:<11} {}\n", c.status.name(), c.check, c.detail);
        if !c.fix.is_empty() {
            out += &format!("{:<17} fix: {}\n", "", c.fix);
        }
    }
    out
}

#[cfg(test)]
mod tests;
