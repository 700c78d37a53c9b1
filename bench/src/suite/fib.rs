//! The per-packet cost of a FIB-routed backend (`nexthop = "fib"`), one case per arm the FIB
//! can answer with ([`Arm`]):
//!
//! - `header_hit_v4_fib` is `header_hit_v4` with every backend's next hop looked up in the
//!   kernel's FIB, as a one-arm deployment that leaves MACs to the kernel runs it: the
//!   balancer's path, then the tail call to the next-hop program, `bpf_fib_lookup`, the FIB's
//!   MACs and `XDP_TX`.
//! - `header_hit_v4_redirect` is the same with the backends behind a second interface, as a
//!   two-arm deployment runs it: the FIB answers `lb1`, which is listed in the `TX_PORTS`
//!   devmap the way the daemon lists `egress_interfaces` (`maps::fill_tx_ports`), so the
//!   packet takes the FIB's MACs and `bpf_redirect_map` returns `XDP_REDIRECT`.
//!   `BPF_PROG_TEST_RUN` without live frames does not perform the redirect: the helper runs
//!   (the devmap lookup and the per-CPU redirect target it records) and its action is
//!   returned, but no frame is queued to `lb1` or transmitted, so the figure is the program's
//!   cost, not the devmap's flush or the egress driver's.
//!
//! `bpf_fib_lookup` reads the FIB of the namespace of the receiving interface, which
//! `BPF_PROG_TEST_RUN` takes from the `xdp_md` context. So each case runs from a thread inside
//! a namespace of its own ([`FibNet`]): the backends' subnets, forwarding on and a permanent
//! neighbour entry for each backend on the arm's interface (`lb0` or `lb1`), the receiving
//! interface `lb0` in the context. Every repeat must be counted as the arm's outcome (`fib` or
//! `fib_redirect`, never a fallback to the static MAC) and return the arm's action, or the case
//! fails instead of reporting a path nobody configured it for.
//!
//! The bench puts `shardline_bench_nexthop` (the next-hop program, then the encapsulation
//! stripped, whatever the action) in `TAIL_CALLS` instead of `shardline_nexthop`. In the bench
//! programs the balancer's body is a BPF-to-BPF subprogram (the wrapper takes it as a function),
//! and a tail call from a subprogram replaces that subprogram's frame only: the next-hop
//! program's action comes back to `shardline_bench`'s restoring wrapper, which finds the frame
//! its original length and writes the Ethernet header back. So every repeat, `XDP_TX` or
//! `XDP_REDIRECT`, routes the input frame again (`tests/e2e/dataplane/bench_fib.rs` checks it);
//! the strip's `bpf_xdp_adjust_head` stands in for the wrapper's, which the other cases pay and
//! the figure does not subtract either. (In the attached `shardline` the body is inlined and
//! the tail call ends the program.)

use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};
use shardline::{
    loader::set_next_hop_program,
    maps::{fill_tx_ports, ifindex, DataplaneMaps},
    private::PrivateDataplane,
    snapshot::Snapshot,
};
use shardline_common::{
    maps::backend_flags,
    nexthop::{NextHopOutcome, NEXTHOP_OUTCOMES},
    verdict::Action,
};
use shardline_lab::netns::Netns;

use super::{program_err, BenchError};

/// The per-packet case whose FIB answer is the receiving interface (`XDP_TX`).
pub const CASE: &str = "header_hit_v4_fib";
/// The per-packet case whose FIB answer is a second interface in `TX_PORTS` (`XDP_REDIRECT`).
pub const REDIRECT_CASE: &str = "header_hit_v4_redirect";
/// The bench's next-hop program: `shardline_nexthop`, then the encapsulation undone.
pub const BENCH_NEXTHOP: &str = "shardline_bench_nexthop";

/// The bench backends' subnets (`BENCH_CONFIG`: 10.0.0.11-14, fd00::11-14), on the arm's
/// interface.
const BACKEND_SUBNETS: [(&str, &str); 2] = [("-4", "10.0.0.2/24"), ("-6", "fd00::2/64")];
/// The bench clients' subnets (192.0.2.10, 2001:db8::10), on `lb0` when the backends are not.
const CLIENT_SUBNETS: [(&str, &str); 2] = [("-4", "192.0.2.1/24"), ("-6", "2001:db8::1/64")];
/// `lb0`'s and `lb1`'s MACs: the source MAC the FIB answers with for each arm.
const DEVICES: [(&str, [u8; 6]); 2] = [
    ("lb0", [0x02, 0xdd, 0, 0, 0, 0]),
    ("lb1", [0x02, 0xdd, 0, 0, 0, 1]),
];

/// Which interface the FIB sends the bench backends' packets out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// `lb0`, the receiving interface: the FIB's MACs and `XDP_TX` ([`CASE`]).
    Receiving,
    /// `lb1`, a second interface listed in `TX_PORTS`: the FIB's MACs and `XDP_REDIRECT`
    /// ([`REDIRECT_CASE`]).
    Second,
}

impl Arm {
    /// Both arms, in case order.
    pub const ALL: [Arm; 2] = [Arm::Receiving, Arm::Second];

    /// The per-packet case that measures this arm.
    pub const fn case(self) -> &'static str {
        match self {
            Arm::Receiving => CASE,
            Arm::Second => REDIRECT_CASE,
        }
    }

    /// The next-hop outcome every repeat must be counted as.
    pub const fn outcome(self) -> NextHopOutcome {
        match self {
            Arm::Receiving => NextHopOutcome::Fib,
            Arm::Second => NextHopOutcome::FibRedirect,
        }
    }

    /// The action the program must return.
    pub const fn action(self) -> Action {
        match self {
            Arm::Receiving => Action::Tx,
            Arm::Second => Action::Redirect,
        }
    }

    /// The interface (name, MAC) the backends are reached by.
    const fn device(self) -> (&'static str, [u8; 6]) {
        match self {
            Arm::Receiving => DEVICES[0],
            Arm::Second => DEVICES[1],
        }
    }
}

/// The MAC the neighbour entries give backend `id` (not its static one, so a frame carrying it
/// took the FIB's answer, and it names the backend the balancer chose).
pub fn neighbour_mac(id: u32) -> [u8; 6] {
    let id = id.to_be_bytes();
    [0x02, 0xcc, id[0], id[1], id[2], id[3]]
}

/// `mac` as `ip` writes it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The namespace one FIB case runs in, the receiving interface's index there, and the
/// interface the FIB answers with.
pub struct FibNet {
    ns: Netns,
    arm: Arm,
    lb0: u32,
    egress: u32,
}

impl FibNet {
    /// Builds the namespace for `arm` with a neighbour for each of `dp`'s backends; for
    /// [`Arm::Second`], lists `lb1` in `dp`'s `TX_PORTS` as the daemon lists its
    /// `egress_interfaces`. The bench's next-hop program must be in `TAIL_CALLS` before a run
    /// ([`FibCases::new`] puts it there).
    pub fn new(dp: &PrivateDataplane, arm: Arm) -> Result<Self, BenchError> {
        let tag = match arm {
            Arm::Receiving => "fib",
            Arm::Second => "redir",
        };
        let ns = Netns::create(&format!("sl-b{tag}-{}", std::process::id()))?;
        let devices = match arm {
            Arm::Receiving => &DEVICES[..1],
            Arm::Second => &DEVICES[..],
        };
        for (dev, mac) in devices {
            let peer = format!("{dev}p");
            ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer])?;
            ns.ip(&["link", "set", dev, "address", &mac_text(*mac), "up"])?;
            ns.ip(&["link", "set", &peer, "up"])?;
        }
        let (arm_dev, _) = arm.device();
        let mut addrs: Vec<_> = BACKEND_SUBNETS.iter().map(|a| (*a, arm_dev)).collect();
        if arm == Arm::Second {
            addrs.extend(CLIENT_SUBNETS.iter().map(|a| (*a, "lb0")));
        }
        for ((family, addr), dev) in addrs {
            ns.ip(&[family, "addr", "add", addr, "dev", dev, "nodad"])?;
        }
        for (id, b) in &dp.tables.backends {
            let v4 = std::net::Ipv4Addr::from(b.addr4).to_string();
            let v6 = std::net::Ipv6Addr::from(b.addr6).to_string();
            let mac = mac_text(neighbour_mac(*id));
            for addr in [v4, v6] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    &addr,
                    "lladdr",
                    &mac,
                    "dev",
                    arm_dev,
                    "nud",
                    "permanent",
                ])?;
            }
        }
        // The FIB answers for a forwarding receiving interface only.
        ns.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.conf.all.forwarding=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;
        let net = Self {
            ns,
            arm,
            lb0: 0,
            egress: 0,
        };
        let (lb0, egress) = net
            .in_ns(|| Ok::<_, std::io::Error>((ifindex("lb0")?, ifindex(arm_dev)?)))?
            .map_err(super::io(format!("the indexes of lb0 and {arm_dev}")))?;
        if arm == Arm::Second {
            let pin_dir = &dp.pin_dir;
            let ports = net.in_ns(|| fill_tx_ports(pin_dir, &[arm_dev.to_owned()]))??;
            if ports.iter().map(|(_, i)| *i).ne([egress]) {
                return Err(BenchError::Check(format!(
                    "{REDIRECT_CASE}: TX_PORTS was filled with {ports:?}, not {arm_dev} \
                     (ifindex {egress})"
                )));
            }
        }
        Ok(Self { lb0, egress, ..net })
    }

    /// The arm this namespace routes the backends by.
    pub fn arm(&self) -> Arm {
        self.arm
    }

    /// The index of the interface the FIB answers with, in the namespace (`lb0` or `lb1`).
    pub fn egress_ifindex(&self) -> u32 {
        self.egress
    }

    /// The MAC of the interface the FIB answers with: the source MAC of a forwarded frame.
    pub fn egress_mac(&self) -> [u8; 6] {
        self.arm.device().1
    }

    /// Runs `f` on a thread inside the namespace (it inherits the caller's CPU pinning).
    fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, BenchError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.ns.enter_current_thread()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("the FIB case's thread panicked".into())))
        })
    }

    /// `repeat` runs of `frame` through `program` (of `maps`' balancer, whose `tables` are
    /// written there) with every backend FIB-routed for the run and `lb0` as the receiving
    /// interface; the frame as the last repeat left it goes to `data_out` when given. Fails
    /// unless every repeat was counted as the arm's outcome and the program returned the arm's
    /// action.
    pub fn run(
        &self,
        program: &Xdp,
        maps: &mut DataplaneMaps,
        tables: &Snapshot,
        frame: &[u8],
        repeat: u32,
        data_out: Option<&mut [u8]>,
    ) -> Result<TestRunResult, BenchError> {
        let case = self.arm.case();
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, …
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.lb0.to_ne_bytes());
        let before = outcomes(maps)?;
        route_by_fib(maps, tables, true)?;
        let result = self.in_ns(|| {
            program.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out,
                ctx_in: Some(&ctx),
                repeat,
                ..TestRunOptions::new()
            })
        });
        // The backends go back to their static MACs whatever the run did.
        route_by_fib(maps, tables, false)?;
        let result = result?.map_err(program_err(BENCH_NEXTHOP))?;
        let after = outcomes(maps)?;
        let counted: Vec<(NextHopOutcome, u64)> = NextHopOutcome::ALL
            .iter()
            .map(|o| (*o, after[*o as usize] - before[*o as usize]))
            .filter(|(_, n)| *n != 0)
            .collect();
        let want = self.arm.outcome();
        match counted[..] {
            [(got, n)] if got == want && n == u64::from(repeat) => {}
            _ => {
                return Err(BenchError::Check(format!(
                    "{case}: expected {repeat} next hops counted as {}, the counters say \
                     {counted:?}; the measurement would be of another path than the case names",
                    want.name()
                )))
            }
        }
        match Action::from_code(result.return_value) {
            got if got == self.arm.action() => Ok(result),
            got => Err(BenchError::Check(format!(
                "{case}: the program returned {got:?}, expected {:?}",
                self.arm.action()
            ))),
        }
    }
}

/// The namespaces of the FIB cases a run selected, one per arm.
pub struct FibCases(Vec<FibNet>);

impl FibCases {
    /// Builds the namespace of each FIB case `selected` accepts and, when there is any, puts
    /// [`BENCH_NEXTHOP`] in `dp`'s `TAIL_CALLS` slot (once: a program loads once).
    pub fn new(
        dp: &mut PrivateDataplane,
        selected: impl Fn(&str) -> bool,
    ) -> Result<Self, BenchError> {
        let arms: Vec<Arm> = Arm::ALL
            .into_iter()
            .filter(|a| selected(a.case()))
            .collect();
        if !arms.is_empty() {
            set_next_hop_program(&mut dp.ebpf, BENCH_NEXTHOP)?;
        }
        arms.into_iter()
            .map(|arm| FibNet::new(dp, arm))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The namespace of per-packet case `case`, if it is a FIB case this run selected.
    pub fn net(&self, case: &str) -> Option<&FibNet> {
        self.0.iter().find(|n| n.arm.case() == case)
    }
}

/// Sets (or clears) `backend_flags::FIB` on every backend of `tables` in `maps`.
fn route_by_fib(maps: &mut DataplaneMaps, tables: &Snapshot, on: bool) -> Result<(), BenchError> {
    for (id, b) in &tables.backends {
        let mut b = *b;
        if on {
            b.flags |= backend_flags::FIB;
        }
        maps.set_backend(*id, &b)?;
    }
    Ok(())
}

/// The next-hop outcome counters, summed over CPUs, indexed by outcome.
fn outcomes(maps: &DataplaneMaps) -> Result<[u64; NEXTHOP_OUTCOMES as usize], BenchError> {
    let mut out = [0; NEXTHOP_OUTCOMES as usize];
    let counts = maps
        .nexthop_counts()?
        .ok_or_else(|| BenchError::Check("the NEXTHOPS counters are not pinned".into()))?;
    for (o, n) in counts {
        out[o as usize] = n;
    }
    Ok(out)
}
