//! Unit tests of `doctor`.

use super::*;

fn host(files: &[(&str, &str)]) -> (tempdir::Dir, Host) {
    let dir = tempdir::Dir::new();
    for (path, text) in files {
        let p = dir.0.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    let h = Host::at(&dir.0);
    (dir, h)
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "shardline-doctor-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn versions_and_cpu_ranges_parse() {
    assert_eq!(kernel_version("6.18.0-rc1+"), Some((6, 18)));
    assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
    assert_eq!(kernel_version("garbage"), None);
    assert_eq!(possible_cpus("0-3,8-11\n"), Some(8));
    assert_eq!(possible_cpus("0"), Some(1));
    assert_eq!(possible_cpus("x"), None);
}

#[test]
fn a_bare_host_fails_what_the_daemon_needs_and_says_what_to_do() {
    let (_d, h) = host(&[("/proc/sys/kernel/osrelease", "5.4.0\n")]);
    let checks = run(&h, Some("eth9"), None);
    let get = |name: &str| checks.iter().find(|c| c.check == name).unwrap().clone();
    assert_eq!(get("kernel").status, Status::Fail);
    assert!(get("kernel").fix.contains("5.19"));
    assert_eq!(get("bpffs").status, Status::Fail);
    assert!(get("bpffs").fix.contains("mount -t bpf"));
    assert_eq!(get("interface").status, Status::Fail);
    assert!(checks
        .iter()
        .all(|c| (c.status == Status::Pass) == c.fix.is_empty()));
}

#[test]
fn a_good_host_passes_and_an_encap_mtu_warns() {
    let (_d, h) = host(&[
        ("/proc/sys/kernel/osrelease", "6.18.0\n"),
        ("/sys/kernel/btf/vmlinux", ""),
        ("/proc/mounts", "bpf /sys/fs/bpf bpf rw 0 0\n"),
        ("/proc/sys/net/core/bpf_jit_enable", "1\n"),
        (
            "/proc/self/status",
            "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n",
        ),
        ("/sys/class/net/eth0/mtu", "1500\n"),
        ("/sys/class/net/eth0/ifindex", "2\n"),
        ("/sys/class/net/eth0/uevent", "DEVTYPE=veth\n"),
        ("/sys/class/net/eth0/queues/rx-0/x", ""),
        ("/sys/class/net/eth0/queues/rx-1/x", ""),
        ("/sys/devices/system/cpu/possible", "0-1\n"),
        ("/proc/meminfo", "MemAvailable:   24000000 kB\n"),
    ]);
    let checks = run(&h, Some("eth0"), None);
    for name in [
        "kernel",
        "btf",
        "bpffs",
        "bpf_jit",
        "privileges",
        "xdp_driver",
        "rx_queues",
        "memory",
    ] {
        let c = checks.iter().find(|c| c.check == name).unwrap();
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }
    let mtu = checks.iter().find(|c| c.check == "mtu").unwrap();
    assert_eq!(mtu.status, Status::Warn, "{mtu:?}");
    assert!(mtu.detail.contains("1460"), "{mtu:?}");
    let json = serde_json::to_value(&checks).unwrap();
    assert_eq!(json[0]["status"], "pass");
    assert!(json[0].get("fix").is_some() && json[0].get("detail").is_some());
}

#[test]
fn full_maps_fit_the_measured_budget() {
    // bench/results: 318.9 MiB of maps with 1M sessions on 2 CPUs; the estimate bounds it.
    let mib = map_bytes(2) / (1024 * 1024);
    assert!((250..600).contains(&mib), "{mib} MiB");
}
