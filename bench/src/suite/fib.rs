//! The per-packet cost of a FIB-routed backend (`nexthop = "fib"`): `header_hit_v4_fib` is
//! `header_hit_v4` with every backend's next hop looked up in the kernel's FIB, as a one-arm
//! deployment that leaves MACs to the kernel runs it: the balancer's path, then the tail call
//! to the next-hop program, `bpf_fib_lookup`, the FIB's MACs and `XDP_TX`.
//!
//! `bpf_fib_lookup` reads the FIB of the namespace of the receiving interface, which
//! `BPF_PROG_TEST_RUN` takes from the `xdp_md` context. So the case runs from a thread inside a
//! namespace of its own ([`FibNet`]): `lb0` on the bench backends' subnets with forwarding on
//! and a permanent neighbour entry for each backend, the receiving interface in the context.
//! Every repeat must be counted as the FIB's answer (`fib`), never a fallback to the static
//! MAC, or the case fails instead of reporting a path nobody configured it for.
//!
//! The tail call never returns to `shardline_bench`'s restoring wrapper, so the bench puts
//! `shardline_bench_nexthop` (the next-hop program, then the encapsulation stripped) in
//! `TAIL_CALLS` instead of `shardline_nexthop`: the undo runs there, at about the wrapper's
//! cost, which the figure subtracts as for every other case.

use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};
use shardline::{
    loader::set_next_hop_program,
    maps::{ifindex, DataplaneMaps},
    private::PrivateDataplane,
    snapshot::Snapshot,
};
use shardline_common::{
    maps::backend_flags,
    nexthop::{NextHopOutcome, NEXTHOP_OUTCOMES},
};
use shardline_lab::netns::Netns;

use super::{program_err, BenchError};

/// The per-packet case that routes through the FIB.
pub const CASE: &str = "header_hit_v4_fib";
/// The bench's next-hop program: `shardline_nexthop`, then the encapsulation undone.
pub const BENCH_NEXTHOP: &str = "shardline_bench_nexthop";

/// The receiving interface of the case: `lb0`, on the bench backends' subnets
/// (`BENCH_CONFIG`: 10.0.0.11-14, fd00::11-14).
const LB0_ADDRS: [(&str, &str); 2] = [("-4", "10.0.0.2/24"), ("-6", "fd00::2/64")];
/// The MAC the neighbour entries give every backend (not its static one, so a frame carrying
/// it took the FIB's answer).
const NEIGH_MAC: &str = "02:cc:00:00:00:11";

/// The namespace the FIB case runs in, and its receiving interface's index there.
pub struct FibNet {
    ns: Netns,
    lb0: u32,
}

impl FibNet {
    /// Builds the namespace with a neighbour for each of `dp`'s backends, and puts
    /// [`BENCH_NEXTHOP`] in `dp`'s `TAIL_CALLS` slot.
    pub fn new(dp: &mut PrivateDataplane) -> Result<Self, BenchError> {
        let ns = Netns::create(&format!("sl-bfib-{}", std::process::id()))?;
        ns.ip(&["link", "add", "lb0", "type", "veth", "peer", "name", "lb0p"])?;
        ns.ip(&["link", "set", "lb0", "up"])?;
        ns.ip(&["link", "set", "lb0p", "up"])?;
        for (family, addr) in LB0_ADDRS {
            ns.ip(&[family, "addr", "add", addr, "dev", "lb0", "nodad"])?;
        }
        for b in dp.tables.backends.values() {
            let v4 = std::net::Ipv4Addr::from(b.addr4).to_string();
            let v6 = std::net::Ipv6Addr::from(b.addr6).to_string();
            for addr in [v4, v6] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    &addr,
                    "lladdr",
                    NEIGH_MAC,
                    "dev",
                    "lb0",
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
        let net = Self { ns, lb0: 0 };
        let lb0 = net
            .in_ns(|| ifindex("lb0"))?
            .map_err(super::io("the index of lb0"))?;
        set_next_hop_program(&mut dp.ebpf, BENCH_NEXTHOP)?;
        Ok(Self { lb0, ..net })
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
    /// interface. Fails unless every repeat took the FIB's answer.
    pub fn run(
        &self,
        program: &Xdp,
        maps: &mut DataplaneMaps,
        tables: &Snapshot,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, BenchError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, …
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.lb0.to_ne_bytes());
        let before = outcomes(maps)?;
        route_by_fib(maps, tables, true)?;
        let result = self.in_ns(|| {
            program.test_run(TestRunOptions {
                data_in: Some(frame),
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
        match counted[..] {
            [(NextHopOutcome::Fib, n)] if n == u64::from(repeat) => Ok(result),
            _ => Err(BenchError::Check(format!(
                "{CASE}: expected {repeat} next hops from the FIB, the counters say {counted:?}; \
                 the measurement would be of a fallback, not of the FIB's path"
            ))),
        }
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
