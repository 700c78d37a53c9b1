//! Shared test harness: a load balancer loaded (not attached) into its own pin directory, with
//! a test configuration applied; cleaned up on drop, even on panic.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::Ebpf;
use shardline::{
    config::Config,
    loader::{load_balancer, teardown, xdp_program, LB_PROGRAM},
    maps::DataplaneMaps,
    snapshot::Snapshot,
    testrun::{run_once, KernelRun},
};

/// Panics with the reason unless this process can use BPF: these tests must never be skipped.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (BPF maps, BPF_PROG_TEST_RUN, network namespaces); run `cargo xtask test` as root");
    }
    if !std::path::Path::new("/sys/fs/bpf").join(".").exists()
        || !std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .contains(" /sys/fs/bpf bpf ")
    {
        panic!("bpffs is not mounted at /sys/fs/bpf; run `cargo xtask setup` (mount -t bpf bpf /sys/fs/bpf)");
    }
}

/// The configuration most tests route with: one header and one flow service per family,
/// four dual-stack backends, two placed sessions.
pub const TEST_CONFIG: &str = r#"
interface = "lo"
[encap]
source_v4 = "10.0.0.2"
source_v6 = "fd00::2"

[[services]]
name = "kv"
vip = "10.100.0.1"
port = 7000
protocol = "udp"
mode = "header"

[[services]]
name = "web"
vip = "10.100.0.1"
port = 8080
protocol = "tcp"
mode = "flow"

[[services]]
name = "kv6"
vip = "fd00:100::1"
port = 7000
protocol = "udp"
mode = "header"

[[services]]
name = "dns"
vip = "10.100.0.1"
port = 5353
protocol = "udp"
mode = "flow"

[[services]]
name = "web6"
vip = "fd00:100::1"
port = 8080
protocol = "tcp"
mode = "flow"

[[services]]
name = "l2"
vip = "10.100.0.2"
port = 9000
protocol = "udp"
mode = "flow"
forward = "l2dsr"

[[backends]]
id = 1
ipv4 = "10.0.0.11"
ipv6 = "fd00::11"
mac = "02:00:00:00:00:11"

[[backends]]
id = 2
ipv4 = "10.0.0.12"
ipv6 = "fd00::12"
mac = "02:00:00:00:00:12"

[[backends]]
id = 3
ipv4 = "10.0.0.13"
ipv6 = "fd00::13"
mac = "02:00:00:00:00:13"

[[backends]]
id = 4
ipv4 = "10.0.0.14"
mac = "02:00:00:00:00:14"

[[sessions]]
service = "kv"
session = 42
backends = [1, 2, 3]

[[sessions]]
service = "kv6"
session = 7
backends = [2, 3]
"#;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loaded, unattached load balancer with its maps pinned in a private directory.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub maps: DataplaneMaps,
    pub snapshot: Snapshot,
    pub pin_dir: PathBuf,
}

impl Loaded {
    /// Loads the program and applies `config`.
    pub fn new(config: &str) -> Self {
        require_root();
        let config = Config::parse(config, "test config").expect("test config is valid");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/shardline-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = teardown(&pin_dir, None);
        let ebpf = load_balancer(&pin_dir).unwrap_or_else(|e| panic!("loading the program: {e:?}"));
        let mut maps = DataplaneMaps::open(&pin_dir).expect("open pinned maps");
        let snapshot = Snapshot::from_config(&config);
        maps.apply(&snapshot).expect("apply snapshot");
        Self {
            ebpf,
            maps,
            snapshot,
            pin_dir,
        }
    }

    /// Runs one frame through the kernel program.
    pub fn run(&mut self, frame: &[u8]) -> KernelRun {
        let program = xdp_program(&mut self.ebpf, LB_PROGRAM).expect("program");
        run_once(program, frame).expect("BPF_PROG_TEST_RUN")
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = teardown(&self.pin_dir, None);
    }
}
