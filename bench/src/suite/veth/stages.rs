//! Where a veth run's CPU went, stage by stage, from `perf script` text: each sample of the
//! lab's tasks is given the stage of the innermost frame of its call chain that names one
//! (so a sample in the bridge's forwarding under the client's `sendmmsg` is the bridge's, not
//! the client's). On veth every hop of a packet runs in softirq inside the sending task, so
//! attributing by task or namespace says nothing about who caused the work; the call chain
//! does. Pure parsing and arithmetic, tested below; [`super::profile`] records the samples.

use std::collections::{BTreeMap, HashSet};

/// A stage of a packet's path, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The load balancer's XDP program (`bpf_prog_…_shardline`).
    LbProgram,
    /// The backend's decapsulating XDP program (`…_shardline_decap`).
    DecapProgram,
    /// The `XDP_PASS` program on the switch port that native `XDP_TX` on veth needs.
    PassProgram,
    /// Native XDP on veth copying an skb into a page-pool buffer with 256 octets of headroom
    /// (every skb the stack built, as a NIC's DMA buffer would not need).
    VethSkbCopy,
    /// `XDP_TX` / redirect: the bulk queue and its flush into the peer's ring.
    XdpTx,
    /// Building an skb around an `xdp_frame` the peer received.
    FrameToSkb,
    /// veth's NAPI poll, its XDP receive loop and GRO around them.
    VethNapi,
    /// The bridge: one switch hop (the topology's cost, paid per hop).
    Bridge,
    /// The switch wired by XDP (`topology::wire`): its forwarder program and the devmap
    /// redirect and flush into the next port: the wire's work, per hop.
    Switch,
    /// IP and UDP receive up to the socket's queue (and the reader's wakeup).
    IpUdpReceive,
    /// The sending side of UDP: `sendmsg` / `sendmmsg`, IP output, the device's transmit.
    UdpSend,
    /// The receiving system calls (`recvfrom` / `recvmsg` / `recvmmsg`, epoll waits).
    UdpReceiveCalls,
    /// Context switches and sleeps.
    Scheduler,
    /// softirq's own loop and the backlog queue, outside every stage above.
    SoftirqOther,
    /// Everything else of the lab's tasks: processes' own user-space work (nginx, the tokio
    /// proxy, the echo), page faults, timers.
    Other,
}

impl Stage {
    /// Every stage, in report order.
    pub const ALL: [Stage; 15] = [
        Stage::LbProgram,
        Stage::DecapProgram,
        Stage::PassProgram,
        Stage::VethSkbCopy,
        Stage::XdpTx,
        Stage::FrameToSkb,
        Stage::VethNapi,
        Stage::Bridge,
        Stage::Switch,
        Stage::IpUdpReceive,
        Stage::UdpSend,
        Stage::UdpReceiveCalls,
        Stage::Scheduler,
        Stage::SoftirqOther,
        Stage::Other,
    ];

    /// The stage's name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stage::LbProgram => "lb_xdp_program",
            Stage::DecapProgram => "backend_decap_program",
            Stage::PassProgram => "switch_pass_program",
            Stage::VethSkbCopy => "veth_skb_to_xdp_copy",
            Stage::XdpTx => "xdp_tx",
            Stage::FrameToSkb => "xdp_frame_to_skb",
            Stage::VethNapi => "veth_napi_gro",
            Stage::Bridge => "bridge_hop",
            Stage::Switch => "switch",
            Stage::IpUdpReceive => "ip_udp_receive",
            Stage::UdpSend => "udp_send",
            Stage::UdpReceiveCalls => "udp_receive_calls",
            Stage::Scheduler => "scheduler",
            Stage::SoftirqOther => "softirq_other",
            Stage::Other => "other",
        }
    }

    /// The stage a kernel or program symbol marks, if any.
    pub fn of_symbol(sym: &str) -> Option<Stage> {
        if let Some(rest) = sym.strip_prefix("bpf_prog_") {
            // bpf_prog_<tag>_<name>: the name after the tag.
            let name = rest.split_once('_').map_or("", |(_, n)| n);
            return match name {
                "shardline" => Some(Stage::LbProgram),
                "shardline_decap" => Some(Stage::DecapProgram),
                "shardline_pass" => Some(Stage::PassProgram),
                "shardline_wire" => Some(Stage::Switch),
                _ => None,
            };
        }
        let stage = match sym {
            "skb_pp_cow_data" | "veth_convert_skb_to_xdp_buff" => Stage::VethSkbCopy,
            "veth_xdp_flush" | "veth_xdp_flush_bq" | "veth_xdp_xmit" | "veth_ndo_xdp_xmit"
            | "veth_xdp_tx" => Stage::XdpTx,
            "veth_xdp_rcv_one"
            | "veth_xdp_rcv_bulk_skb"
            | "veth_xdp_rcv_bulk_skb.isra.0"
            | "__xdp_build_skb_from_frame"
            | "xdp_build_skb_from_frame" => Stage::FrameToSkb,
            "veth_poll"
            | "veth_xdp_rcv"
            | "veth_xdp_rcv_skb"
            | "napi_complete_done"
            | "netif_receive_skb_list_internal"
            | "gro_normal_list"
            | "napi_gro_receive"
            | "dev_gro_receive"
            | "gro_receive_skb"
            | "napi_gro_flush" => Stage::VethNapi,
            "ip_list_rcv"
            | "ip_sublist_rcv"
            | "ip_rcv"
            | "ip_local_deliver"
            | "__netif_receive_skb_one_core"
            | "udp_rcv"
            | "__udp4_lib_rcv" => Stage::IpUdpReceive,
            "udp_sendmsg" | "__sys_sendmmsg" | "__sys_sendto" | "__sys_sendmsg" => Stage::UdpSend,
            "udp_recvmsg" | "__sys_recvfrom" | "__sys_recvmsg" | "do_recvmmsg"
            | "do_epoll_wait" => Stage::UdpReceiveCalls,
            "schedule"
            | "__schedule"
            | "schedule_idle"
            | "finish_task_switch.isra.0"
            | "finish_task_switch"
            | "do_nanosleep"
            | "__cond_resched" => Stage::Scheduler,
            "net_rx_action" | "process_backlog" => Stage::SoftirqOther,
            _ if sym.starts_with("br_") || sym.starts_with("__br_") => Stage::Bridge,
            _ => return None,
        };
        Some(stage)
    }

    /// Whether `sym` is the devmap redirect or its flush. In the lab only the switch wired by
    /// XDP redirects through a devmap (the one-arm balancer sends by `XDP_TX`), so a chain
    /// holding one of these is the wire's wherever its innermost frame is (the flush ends in
    /// the same `veth_xdp_xmit` as the balancer's `XDP_TX`).
    fn is_devmap_redirect(sym: &str) -> bool {
        matches!(
            sym,
            "xdp_do_redirect"
                | "dev_map_enqueue"
                | "dev_map_enqueue_multi"
                | "dev_map_redirect"
                | "bq_enqueue"
                | "xdp_do_flush"
                | "__dev_flush"
                | "bq_xmit_all"
        )
    }

    /// The stage of a call chain, innermost frame first: the wire's if any frame is a devmap
    /// redirect, else the first frame that names one.
    pub fn of_chain<'a>(chain: impl IntoIterator<Item = &'a str> + Clone) -> Stage {
        if chain.clone().into_iter().any(Stage::is_devmap_redirect) {
            return Stage::Switch;
        }
        chain
            .into_iter()
            .find_map(Stage::of_symbol)
            .unwrap_or(Stage::Other)
    }
}

/// Samples by stage.
pub type Counts = BTreeMap<Stage, u64>;

/// Counts the samples of `perf script -F comm,pid,tid,ip,sym` output (with call chains) whose
/// process is in `pids` by stage. Samples of the idle task count only when softirq ran in them
/// (`net_rx_action` in the chain): a packet's work then, nothing else of the idle CPU.
pub fn count(script: &str, pids: &HashSet<u32>) -> Counts {
    let mut counts = Counts::new();
    let mut flush = |pid: Option<u32>, chain: &[&str]| {
        let Some(pid) = pid else { return };
        let idle_softirq = pid == 0 && chain.contains(&"net_rx_action");
        if pids.contains(&pid) || idle_softirq {
            *counts
                .entry(Stage::of_chain(chain.iter().copied()))
                .or_default() += 1;
        }
    };
    let mut pid = None;
    let mut chain: Vec<&str> = Vec::new();
    for line in script.lines() {
        if line.starts_with(char::is_whitespace) {
            // "\t ffffffff81e00840 veth_poll": the address, then the symbol.
            if let Some(sym) = line.split_whitespace().nth(1) {
                chain.push(sym);
            }
        } else if !line.is_empty() {
            flush(pid, &chain);
            chain.clear();
            pid = sample_pid(line);
        }
    }
    flush(pid, &chain);
    counts
}

/// The process id of a sample's header line (`comm  pid/tid …`; comm may hold spaces).
fn sample_pid(header: &str) -> Option<u32> {
    header
        .split_whitespace()
        .find_map(|w| {
            w.split_once('/')
                .and_then(|(p, t)| Some((p.parse().ok()?, t)))
        })
        .and_then(|(p, t): (u32, &str)| t.parse::<u32>().ok().map(|_| p))
}

/// Nanoseconds per packet by stage: `samples × period_ns / packets` (empty for no packets).
pub fn ns_per_packet(counts: &Counts, period_ns: u64, packets: u64) -> BTreeMap<Stage, f64> {
    if packets == 0 {
        return BTreeMap::new();
    }
    Stage::ALL
        .iter()
        .map(|s| {
            let n = counts.get(s).copied().unwrap_or(0);
            (*s, (n * period_ns) as f64 / packets as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
shardline-bench 100/101 \n\
\tffffffffc0032146 bpf_prog_ecdb96f66653bd80_shardline\n\
\tffffffff81dff6f2 veth_xdp_rcv_skb\n\
\tffffffff81e00840 veth_poll\n\
\tffffffff81eb094e net_rx_action\n\
\tffffffff8209cb00 udp_sendmsg\n\
\n\
shardline-bench 100/101 \n\
\tffffffff81f13abf skb_defer_rx_timestamp\n\
\tffffffff81ebaaaa br_handle_frame\n\
\tffffffff81eafdc9 netif_receive_skb_list_internal\n\
\tffffffff81e00840 veth_poll\n\
\n\
lto cgu.01 200/201 \n\
\t88c89b6 _ZN4llvm16SelectionDAGISel17CodeGenAndEmitDAGEv\n\
\n\
swapper 0/0 \n\
\tffffffff81eb094e pv_native_safe_halt\n\
\n\
swapper 0/0 \n\
\tffffffff81aaaaaa bpf_prog_ae909434c7f4fa68_shardline_decap\n\
\tffffffff81eb094e net_rx_action\n\
\n\
nginx 300/300 \n\
\t55aa ngx_stream_proxy_handler\n";

    #[test]
    fn a_sample_belongs_to_its_innermost_stage() {
        let chain = [
            "skb_pp_cow_data",
            "veth_xdp_rcv_skb",
            "veth_poll",
            "udp_sendmsg",
        ];
        assert_eq!(Stage::of_chain(chain), Stage::VethSkbCopy);
        assert_eq!(
            Stage::of_chain(["__br_forward", "udp_sendmsg"]),
            Stage::Bridge
        );
        assert_eq!(Stage::of_chain(["memcpy", "ngx_x"]), Stage::Other);
        assert_eq!(
            Stage::of_symbol("bpf_prog_614b434cd8324ecc_shardline_pass"),
            Some(Stage::PassProgram)
        );
        assert_eq!(Stage::of_symbol("bpf_prog_614b434cd8324ecc_other"), None);
        // The switch's redirect flush ends in the same transmit as the balancer's XDP_TX.
        assert_eq!(
            Stage::of_chain(["veth_xdp_xmit", "bq_xmit_all", "xdp_do_flush", "veth_poll"]),
            Stage::Switch
        );
        assert_eq!(
            Stage::of_chain(["veth_xdp_xmit", "veth_xdp_flush_bq", "veth_poll"]),
            Stage::XdpTx
        );
        assert_eq!(
            Stage::of_symbol("bpf_prog_614b434cd8324ecc_shardline_wire"),
            Some(Stage::Switch)
        );
    }

    #[test]
    fn counts_only_the_lab_and_idle_softirq() {
        let pids = HashSet::from([100, 300]);
        let c = count(SCRIPT, &pids);
        assert_eq!(c.get(&Stage::LbProgram), Some(&1));
        assert_eq!(c.get(&Stage::Bridge), Some(&1));
        // The idle CPU's softirq counts; its halt and the compiler (pid 200) do not.
        assert_eq!(c.get(&Stage::DecapProgram), Some(&1));
        assert_eq!(c.get(&Stage::Other), Some(&1));
        assert_eq!(c.values().sum::<u64>(), 4);
    }

    #[test]
    fn per_packet_uses_the_sampling_period() {
        let c = Counts::from([(Stage::Bridge, 8), (Stage::LbProgram, 2)]);
        let ns = ns_per_packet(&c, 250_000, 1000);
        assert_eq!(ns[&Stage::Bridge], 2000.0);
        assert_eq!(ns[&Stage::LbProgram], 500.0);
        assert_eq!(ns[&Stage::Other], 0.0);
        assert!(ns_per_packet(&c, 250_000, 0).is_empty());
    }

    #[test]
    fn the_pid_comes_from_the_header() {
        assert_eq!(sample_pid("lto cgu.01 18748/22056 [000] 1.5:"), Some(18748));
        assert_eq!(sample_pid("swapper 0/0"), Some(0));
        assert_eq!(sample_pid("no pid here"), None);
    }
}
