//! Shared test harness: a load balancer loaded (not attached) into its own pin directory, with
//! a test configuration applied; cleaned up on drop, even on panic.
//!
//! - [`cli`]: the `shardline` CLI run in a lab, as an operator runs it.
//! - [`client`]: code run in a lab's client namespace, and an echo backend's answer.
//! - [`cluster`]: waiting on in-process Raft clusters.
//! - [`frames`]: building test frames (etherparse) and breaking them on purpose.
//! - [`icmp`]: ICMP errors quoting a backend's packet, and the echo-reply oracle.
//! - [`outer`]: reading a forwarded frame back: backend, rewrite, every outer field.
//! - [`quic`]: QUIC payloads and server connection ids.
//! - [`random`]: random frames and the extra tables the kernel/replay agreement run uses.
//! - here: [`Loaded`] (run a frame, read the per-reason counters), [`agrees`] (the kernel's
//!   run against a replay decision) and [`expect`] (both, for one fixture).
#![allow(dead_code)]

pub mod cli;
pub mod client;
pub mod cluster;
pub mod frames;
pub mod icmp;
pub mod outer;
pub mod quic;
pub mod random;

use shardline::{
    config::Config, private::PrivateDataplane, snapshot::Snapshot, testrun::KernelRun,
};
use shardline_common::{
    handoff::{udp_checksum_after, FLAGS_OFFSET},
    maps::forward_mode,
    route::{decide, Decision},
    verdict::{Action, Reason, REASON_COUNT},
};

use self::outer::{check_forwarded, Expected, Rewrite};

/// The `shardline` and `shardline-lab` binaries the lab and the CLI tests start. `cargo xtask
/// test` builds them before the tests; panics with what to build when they are missing.
pub fn bins() -> shardline_lab::Binaries {
    shardline_lab::Binaries::locate().unwrap_or_else(|e| panic!("{e}"))
}

/// The `shardline` binary's path, as a string for `Command::new` and `Netns::command`.
pub fn shardline_bin() -> String {
    bins().shardline.to_string_lossy().into_owned()
}

/// A lab tag no other lab of this test process (nor, by the pid, of another run) uses:
/// `prefix`, the pid modulo 100,000 and a process-wide counter. One counter serves every test
/// file, so two files with the same prefix never start labs with the same tag.
pub fn unique_tag(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

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

/// The configuration most tests route with: one header, one flow and one quic service per
/// family, four backends (4 without IPv6), two placed sessions.
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

[[services]]
name = "quic"
vip = "10.100.0.1"
port = 4433
protocol = "udp"
mode = "quic"
cid_generation = 10

[[services]]
name = "quic6"
vip = "fd00:100::1"
port = 4433
protocol = "udp"
mode = "quic"
cid_generation = 10

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

/// A loaded, unattached load balancer in private pinned maps (see
/// `shardline::private::PrivateDataplane`), with the tests' panicking conveniences.
pub struct Loaded(PrivateDataplane);

impl std::ops::Deref for Loaded {
    type Target = PrivateDataplane;

    fn deref(&self) -> &PrivateDataplane {
        &self.0
    }
}

impl std::ops::DerefMut for Loaded {
    fn deref_mut(&mut self) -> &mut PrivateDataplane {
        &mut self.0
    }
}

impl From<PrivateDataplane> for Loaded {
    fn from(dataplane: PrivateDataplane) -> Self {
        Self(dataplane)
    }
}

impl Loaded {
    /// Loads the program and applies `config`.
    pub fn new(config: &str) -> Self {
        require_root();
        let config = Config::parse(config, "test config").expect("test config is valid");
        let dataplane = PrivateDataplane::new("test", Snapshot::from_config(&config))
            .unwrap_or_else(|e| panic!("loading the program: {e:?}"));
        Self(dataplane)
    }

    /// Records `mtu` as the egress MTU: in the maps, as the daemon does when it attaches, and in
    /// the snapshot the replay reads.
    pub fn set_egress_mtu(&mut self, mtu: u32) {
        self.maps.set_egress_mtu(mtu).expect("write GLOBALS");
        self.tables.globals = self.tables.globals.with_egress_mtu(mtu);
    }

    /// Runs one frame through the kernel program.
    pub fn run(&mut self, frame: &[u8]) -> KernelRun {
        self.0.run(frame).expect("BPF_PROG_TEST_RUN")
    }

    /// The per-reason packet counters, summed over CPUs, indexed by `Reason as usize`.
    pub fn reasons(&self) -> [u64; REASON_COUNT as usize] {
        let mut out = [0; REASON_COUNT as usize];
        for (reason, count) in self.maps.reason_counts().expect("read REASONS") {
            out[reason as usize] = count;
        }
        out
    }

    /// Rebuilds the default table with `weights` (backend id, weight) and flips to it, in the
    /// maps and the snapshot.
    pub fn reweight(&mut self, weights: &[(u32, u32)]) {
        use shardline_common::{
            consts::MAGLEV_SIZE,
            maglev::{build, Weighted},
        };
        let w: Vec<Weighted> = weights
            .iter()
            .map(|&(id, weight)| Weighted { id, weight })
            .collect();
        let table = build(&w, MAGLEV_SIZE);
        let idle = self.maps.fill_idle_maglev(&table).expect("fill");
        let globals = self.maps.globals().expect("globals").with_live_half(idle);
        self.maps.publish_globals(&globals).expect("flip");
        self.tables.maglev = table;
    }

    /// Runs one frame and returns the kernel's answer with the one reason it counted.
    pub fn run_counted(&mut self, frame: &[u8]) -> (KernelRun, Reason) {
        let before = self.reasons();
        let run = self.run(frame);
        let after = self.reasons();
        let counted: Vec<(Reason, u64)> = Reason::ALL
            .iter()
            .map(|r| (*r, after[*r as usize] - before[*r as usize]))
            .filter(|(_, n)| *n != 0)
            .collect();
        match counted[..] {
            [(reason, 1)] => (run, reason),
            _ => panic!("one packet must count exactly one reason once, counted {counted:?}"),
        }
    }
}

/// `bytes` as one hex string, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the kernel's run of `frame` is what the replay decision `d` says: the same action; a
/// frame not forwarded left untouched; an answered echo request turned into its reply (see
/// [`icmp::check_echo_reply`]); a packet too big to encapsulate answered (see
/// [`icmp::check_too_big`]); a forwarded one correctly rewritten (see [`check_forwarded`])
/// for the backend `d` chose, its inner packet carrying the handoff mark `d` names
/// ([`with_mark`]).
pub fn agrees(want: &Expected, frame: &[u8], k: &KernelRun, d: &Decision) -> Result<(), String> {
    if k.action != d.action() {
        return Err(format!(
            "kernel action {:?}, replay {:?} ({})",
            k.action,
            d.action(),
            d.reason.name()
        ));
    }
    if d.reason == Reason::IcmpEchoReply {
        return icmp::check_echo_reply(frame, &k.output)
            .map_err(|e| format!("bad echo reply: {e}; output {}", hex(&k.output)));
    }
    // A mark is written as soon as the owner is known: a dropped packet may carry it too, and
    // so may the quote of a packet too big for IPv4-in-IPv6 (checked once its owner is known).
    let marked = with_mark(frame, d);
    if d.reason == Reason::IcmpTooBig {
        return icmp::check_too_big(&marked, &k.output, want.egress_mtu, want.four_in_six)
            .map_err(|e| format!("bad too-big answer: {e}; output {}", hex(&k.output)));
    }
    if k.action != Action::Tx {
        return if k.output == marked {
            Ok(())
        } else {
            Err(format!(
                "{:?} modified the frame: {}",
                k.action,
                hex(&k.output)
            ))
        };
    }
    let fwd = check_forwarded(want, &marked, &k.output)
        .map_err(|e| format!("bad rewrite: {e}; output {}", hex(&k.output)))?;
    if fwd.backend_id != d.backend_id {
        return Err(format!(
            "kernel sent to backend {}, replay chose {}",
            fwd.backend_id, d.backend_id
        ));
    }
    // The outer flow label carries the request key's low 20 bits, for ECMP entropy.
    let flow_label = (d.key as u32) & 0x000f_ffff;
    let v6_only = want.backend(d.backend_id).addr4.is_none();
    let rewrite = match (d.service.forward, d.v6, v6_only) {
        (forward_mode::L2DSR, _, _) => Rewrite::L2Dsr,
        (_, false, false) => Rewrite::Ipip {
            source: want.ipip_source(d),
        },
        (_, false, true) => Rewrite::Ip4in6 { flow_label },
        (_, true, _) => Rewrite::Ip6ip6 { flow_label },
    };
    if fwd.rewrite != rewrite {
        return Err(format!("rewrite {:?}, want {rewrite:?}", fwd.rewrite));
    }
    Ok(())
}

/// `frame` as the replay decision `d` says the kernel leaves it before the rewrite: with the
/// handoff mark in the shardline header's flags byte and the UDP checksum updated, if `d` has
/// a mark (`shardline_common::handoff`).
pub fn with_mark(frame: &[u8], d: &Decision) -> Vec<u8> {
    let mut out = frame.to_vec();
    if d.mark == 0 {
        return out;
    }
    let at = d.header_off as usize;
    let checksum = u16::from_be_bytes([out[at - 2], out[at - 1]]);
    let updated = udp_checksum_after(checksum, out[at + 2], out[at + FLAGS_OFFSET], d.mark);
    out[at - 2..at].copy_from_slice(&updated.to_be_bytes());
    out[at + FLAGS_OFFSET] = d.mark;
    out
}

/// Runs `frame`; asserts the kernel counted `reason` (and took its action), that the replay
/// agrees, and that the output is what the replay implies: untouched unless forwarded, else
/// rewritten for the replay's backend with every outer field checked against `TEST_CONFIG`.
pub fn expect(lb: &mut Loaded, name: &str, frame: &[u8], reason: Reason) -> (KernelRun, Decision) {
    let (run, counted) = lb.run_counted(frame);
    let d = decide(frame, &lb.tables);
    assert_eq!(
        counted,
        reason,
        "{name}: kernel counted {}, want {}; frame {}",
        counted.name(),
        reason.name(),
        hex(frame)
    );
    assert_eq!(d.reason, reason, "{name}: replay reason");
    if let Err(e) = agrees(&Expected::test_config(), frame, &run, &d) {
        panic!("{name}: {e}; frame {}", hex(frame));
    }
    (run, d)
}
