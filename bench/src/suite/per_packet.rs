//! Dataplane cost per packet: `BPF_PROG_TEST_RUN` with `repeat` = 1,000,000 on 64-byte frames,
//! for the trivial baselines and for shardline's cases, interleaved round by round so load
//! from other processes lands on every case alike. The kernel reports the mean time per repeat
//! in whole nanoseconds; each case's figure is the median over rounds.
//!
//! The balancer encapsulates (grows the frame with `bpf_xdp_adjust_head`), and `repeat` reuses
//! one buffer, so it runs as `shardline_bench`: the same program body followed by a wrapper
//! that undoes the rewrite (see `dataplane-ebpf/src/restore.rs`). The wrapper's own cost is
//! measured on the `XDP_TX` baseline wrapped the same way, and subtracted. Live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`) is not used for the figures: the kernel does not rewrite a
//! recycled page's contents, only its pointers, so a program that rewrites the frame may see
//! its own output again; and `XDP_PASS` / `XDP_TX` there include the stack or the transmit.
//!
//! Every shardline repeat is checked: the per-reason counters must have grown by exactly
//! `repeat` under the expected reason, or the benchmark fails instead of reporting.

use aya::programs::{TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use serde_json::{json, Value};
use shardline_common::{
    consts::{BENCH_ROTATION, BENCH_SESSION_BASE, BENCH_SOURCE_BASE_V4, QUIC_MAX_CID_LEN},
    packet::encode_header,
    quic::{encode_cid, CidLayout},
    verdict::{Action, Reason, REASON_COUNT},
};

use super::{
    fib, flow_rate,
    katran::{self, Katran},
    loaded_balancer, median,
    million::{self, ROTATE_SESSION, ROTATE_SOURCE},
    program_err, rings_aom, round, BenchError,
};
use shardline::{
    loader::{load_aux, xdp_program},
    private::PrivateDataplane,
};

/// Repeats per `BPF_PROG_TEST_RUN` call (the kernel averages over them).
pub const REPEAT: u32 = 1_000_000;
/// Frame length of the IPv4 cases (without FCS).
pub const FRAME_LEN: usize = 64;
/// 10 GbE line rate for 64-byte frames: 10^10 / ((64 + 20) * 8) packets per second.
pub const LINE_RATE_MPPS: f64 = 14.880_952;
/// Time budget per packet at that line rate, in nanoseconds.
pub const LINE_RATE_NS: f64 = 67.2;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const VIP4: [u8; 4] = [10, 100, 0, 1];
const VIP6: [u8; 16] = [0xfd, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
const CLIENT4_PLACED: [u8; 4] = [192, 0, 2, 10];
const CLIENT4_OTHER: [u8; 4] = [192, 0, 2, 77];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Which object a program lives in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Object {
    Aux,
    Balancer,
    /// The balancer with a million sessions and room for a million flows ([`million`]).
    Million,
    /// Katran's balancer, for the comparison in the same run ([`katran`]).
    Katran,
}

struct Case {
    name: &'static str,
    object: Object,
    program: &'static str,
    frame: Vec<u8>,
    action: Action,
    reason: Option<Reason>,
    what: &'static str,
}

/// The JSON fields of a case's ratio to a related case of the same run: a million-entry case
/// to its hot-entry case, a FIB case to the static MAC's (`header_hit_v4`), the redirect to the
/// FIB's `XDP_TX` (`header_hit_v4_fib`), a hit or new-flow path to Katran's counterpart
/// ([`KATRAN_PAIRS`]).
const BESIDE_FIELDS: [&str; 5] = [
    "vs_hot_entry",
    "vs_static_mac",
    "vs_fib_tx",
    "vs_katran",
    "vs_katran_new_flow",
];

/// Shardline's cases and the Katran path each is compared with, as issue 19 pairs them: a
/// session hit with Katran's ring lookup (its LRU bypassed), a flow-table hit with its LRU hit,
/// a new flow with its TCP SYN (Katran's SYN repeats one 5-tuple, so its LRU write never
/// evicts, while `flow_miss_v4` is a new flow every repeat) and, as `vs_katran_new_flow`, with
/// its UDP new flow, which does the same work as `flow_miss_v4`; and the like-for-like of that
/// SYN, shardline's TCP SYN of one repeated 5-tuple.
pub const KATRAN_PAIRS: [(&str, &str, &str); 5] = [
    ("header_hit_v4", "katran_udp_ring_v4", "vs_katran"),
    ("flow_hit_v4", "katran_lru_hit_v4", "vs_katran"),
    ("flow_miss_v4", "katran_tcp_syn_v4", "vs_katran"),
    ("flow_syn_v4", "katran_tcp_syn_v4", "vs_katran"),
    (
        "flow_miss_v4",
        "katran_udp_new_flow_v4",
        "vs_katran_new_flow",
    ),
];

const PASS: &str = "shardline_pass";
const TX: &str = "shardline_tx_baseline";
const TX_RESTORING: &str = "shardline_tx_baseline_restoring";
/// The balancer's bench program: `shardline` inside the restoring wrapper.
pub const BALANCER: &str = "shardline_bench";
const NEW_FLOW: &str = "shardline_bench_new_flow";
const RINGS_AOM: &str = "shardline_bench_rings_aom";
/// The QUIC program's bench twin: `shardline_quic` inside the restoring wrapper, the QUIC
/// program alone (`shardline_bench` runs the attached path: its tail call reaches
/// `shardline_quic` itself).
pub const QUIC_BENCH: &str = "shardline_bench_quic";

/// A UDP/IPv4 frame padded (in the UDP payload) to [`FRAME_LEN`] bytes.
fn udp4(src: [u8; 4], dport: u16, header: Option<(u64, u64)>) -> Vec<u8> {
    let mut payload = vec![0u8; FRAME_LEN - 14 - 20 - 8];
    if let Some((session, key)) = header {
        payload[..20].copy_from_slice(&encode_header(session, key));
    }
    udp4_carrying(src, dport, &payload)
}

/// A UDP/IPv4 frame from `src` to the VIP's `dport` carrying `payload`.
fn udp4_carrying(src: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_LEN);
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, VIP4, 64)
        .udp(40_000, dport)
        .write(&mut out, payload)
        .expect("etherparse writes the frame");
    out
}

/// UDP port of the bench's `quic` service.
const QUIC_PORT: u16 = 4433;
/// Its connection-id layout (the config's defaults: rotation 0, server ids of 2 octets).
const QUIC_LAYOUT: CidLayout = CidLayout {
    rotation: 0,
    server_id_len: 2,
};
/// A layout the `quic` service does not use (another config rotation): its ids name no server.
const QUIC_OTHER_ROTATION: CidLayout = CidLayout {
    rotation: 4,
    ..QUIC_LAYOUT
};

/// A 64-byte QUIC short-header datagram from the placed client to the `quic` service whose
/// destination connection id is `server_id`'s in the service's layout (an 8-octet nonce), or,
/// for `None`, an id of the same length in [`QUIC_OTHER_ROTATION`], which names no server.
pub fn quic_short_frame(server_id: Option<u32>) -> Vec<u8> {
    let mut cid = [0u8; QUIC_MAX_CID_LEN];
    let (layout, id) = match server_id {
        Some(id) => (QUIC_LAYOUT, id),
        None => (QUIC_OTHER_ROTATION, 0x931f),
    };
    let len = encode_cid(layout, id, &[0x5e; 8], &mut cid).expect("the id fits");
    let mut payload = vec![0x40];
    payload.extend_from_slice(&cid[..len]);
    payload.push(0x17); // the packet number
    payload.resize(FRAME_LEN - 14 - 20 - 8, 0x3c);
    udp4_carrying(CLIENT4_PLACED, QUIC_PORT, &payload)
}

/// A 64-byte TCP SYN from `src` to the VIP's `dport`.
fn tcp4_syn(src: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_LEN);
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, VIP4, 64)
        .tcp(40_000, dport, 1, 65_535)
        .syn()
        .write(&mut out, &[0u8; FRAME_LEN - 14 - 20 - 20])
        .expect("etherparse writes the frame");
    out
}

/// The smallest UDP/IPv6 frame carrying a shardline header: 82 bytes.
fn udp6_header(session: u64, key: u64) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT6, VIP6, 64)
        .udp(40_000, 7000)
        .write(&mut out, &encode_header(session, key))
        .expect("etherparse writes the frame");
    out
}

/// A 64-byte frame with an ARP EtherType (the balancer passes it after the L2 parse).
fn arp_like() -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[..6].copy_from_slice(&LB_MAC);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f
}

/// A 64-byte header-mode request to `kv` (IPv4) for `session` with request key `key`.
pub fn header_frame_v4(session: u64, key: u64) -> Vec<u8> {
    udp4(CLIENT4_PLACED, 7000, Some((session, key)))
}

/// The `header_hit_v4` frame: header mode, placed session 42, 64 bytes.
pub fn placed_header_frame() -> Vec<u8> {
    udp4(CLIENT4_PLACED, 7000, Some((42, 0x1234_5678)))
}

fn cases() -> Vec<Case> {
    let header_placed = placed_header_frame();
    vec![
        Case {
            name: "xdp_pass_baseline",
            object: Object::Aux,
            program: PASS,
            frame: header_placed.clone(),
            action: Action::Pass,
            reason: None,
            what: "trivial program returning XDP_PASS",
        },
        Case {
            name: "xdp_tx_baseline",
            object: Object::Aux,
            program: TX,
            frame: header_placed.clone(),
            action: Action::Tx,
            reason: None,
            what: "trivial forwarder: swap the MACs, XDP_TX",
        },
        Case {
            name: "header_hit_v4",
            object: Object::Balancer,
            program: BALANCER,
            frame: header_placed.clone(),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "header mode, IPv4, placed session (SESSIONS hit, rendezvous over 3 shards), IPIP encap",
        },
        Case {
            name: fib::CASE,
            object: Object::Balancer,
            program: BALANCER,
            frame: header_placed.clone(),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "header_hit_v4 with the backends' next hop from the FIB (nexthop = \"fib\"): \
                   the tail call to the next-hop program, bpf_fib_lookup from a receiving \
                   interface in a namespace of its own, the FIB's MACs, XDP_TX; every repeat \
                   counted as the FIB's answer, none a fallback (see bench/src/suite/fib.rs)",
        },
        Case {
            name: fib::REDIRECT_CASE,
            object: Object::Balancer,
            program: BALANCER,
            frame: header_placed,
            action: Action::Redirect,
            reason: Some(Reason::Forwarded),
            what: "header_hit_v4_fib with the backends behind a second interface listed in the \
                   TX_PORTS devmap (two arms): the FIB's MACs, bpf_redirect_map, XDP_REDIRECT \
                   returned (under BPF_PROG_TEST_RUN the redirect itself is not performed); \
                   every repeat counted as fib_redirect",
        },
        Case {
            name: "flow_hit_v4",
            object: Object::Balancer,
            program: BALANCER,
            frame: udp4(CLIENT4_PLACED, 5353, None),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "flow mode, IPv4 UDP, placed client: a flow-table (FLOWS) hit from the second \
                   repeat on, which settles the backend without the SESSIONS lookup",
        },
        Case {
            name: "flow_miss_v4",
            object: Object::Balancer,
            program: NEW_FLOW,
            frame: udp4(CLIENT4_OTHER, 5353, None),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "flow mode, IPv4 UDP, a new flow every repeat (the bench program moves the source \
                   address on by one), a flood of new flows: FLOWS miss, SESSIONS miss, Maglev, \
                   and under the default new-flow rate (DEFAULT_NEW_FLOW_RATE per second per \
                   CPU) a FLOWS insert, above it none (routed statelessly, counted untracked)",
        },
        Case {
            name: "flow_miss_v4_tracked",
            object: Object::Balancer,
            program: NEW_FLOW,
            frame: udp4(CLIENT4_OTHER, 5353, None),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "flow_miss_v4 with the new-flow rate limit off: every new flow is inserted into \
                   FLOWS (evicting once the table is full) and its client into the LRU counters",
        },
        Case {
            name: "header_hit_v4_1m",
            object: Object::Million,
            program: ROTATE_SESSION,
            frame: header_frame_v4(u64::from(BENCH_SESSION_BASE), 0x1234_5678),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "header_hit_v4 with 1,000,000 placed sessions, each repeat the next of them \
                   (the bench program steps the header's session id through all of them): \
                   SESSIONS hits across the whole table, no counters slots (LRU counters)",
        },
        Case {
            name: "flow_hit_v4_1m",
            object: Object::Million,
            program: ROTATE_SOURCE,
            frame: udp4(BENCH_SOURCE_BASE_V4.to_be_bytes(), 5353, None),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "flow_hit_v4 with 1,000,000 flows in the flow table (one warm-up pass), each \
                   repeat the next of them (the bench program steps the source address through \
                   all of them): FLOWS hits across the whole table, a session per client",
        },
        Case {
            name: "header_hit_v6",
            object: Object::Balancer,
            program: BALANCER,
            frame: udp6_header(7, 0x1234_5678),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "header mode, IPv6 (82-byte frame, the smallest carrying the header), placed \
                   session, IP6IP6 encap",
        },
        Case {
            name: "quic_sid_v4",
            object: Object::Balancer,
            program: QUIC_BENCH,
            frame: quic_short_frame(Some(2)),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "quic mode, IPv4, a short header whose connection id carries backend 2's \
                   server id (QUIC-LB, plaintext), measured in the QUIC program alone \
                   (shardline_bench_quic; attached, shardline's parse and tail call come \
                   first: quic_sid_v4_attached): routed to that backend without a table \
                   lookup, IPIP encap",
        },
        Case {
            name: "quic_no_sid_v4",
            object: Object::Balancer,
            program: QUIC_BENCH,
            frame: quic_short_frame(None),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "quic mode, IPv4, a short header whose connection id names no server (another \
                   config rotation), in the QUIC program alone as quic_sid_v4: the client's \
                   session, unplaced for this service, routed by the connection id's hash \
                   through the default Maglev table, IPIP encap",
        },
        Case {
            name: "quic_sid_v4_attached",
            object: Object::Balancer,
            program: BALANCER,
            frame: quic_short_frame(Some(2)),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "quic_sid_v4's packet on the attached path whole: shardline's parse and \
                   service lookup, its tail call to shardline_quic (QUIC_PROGRAM), then that \
                   program's parse, decision and IPIP encap",
        },
        Case {
            name: "quic_no_sid_v4_attached",
            object: Object::Balancer,
            program: BALANCER,
            frame: quic_short_frame(None),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "quic_no_sid_v4's packet on the attached path whole, as quic_sid_v4_attached",
        },
        Case {
            name: "default_table_v4",
            object: Object::Balancer,
            program: BALANCER,
            frame: udp4(CLIENT4_PLACED, 7000, Some((999_999, 0x1234_5678))),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "header mode, IPv4, unknown session: SESSIONS miss, default Maglev table",
        },
        Case {
            name: "pool_table_v4",
            object: Object::Balancer,
            program: BALANCER,
            frame: udp4(CLIENT4_PLACED, 7001, Some((999_999, 0x1234_5678))),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "header mode, IPv4, unknown session of a service with its own pool: SESSIONS \
                   miss, the pool's 509-slot Maglev ring (compare default_table_v4)",
        },
        Case {
            name: "pool_table_aom_v4",
            object: Object::Balancer,
            program: RINGS_AOM,
            frame: udp4(CLIENT4_PLACED, 7001, Some((999_999, 0x1234_5678))),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "pool_table_v4 with the pool's ring in an array of maps (BENCH_RINGS: outer \
                   lookup by service id, then the inner array) instead of the one big MAGLEV \
                   array",
        },
        Case {
            name: "diag_not_ip",
            object: Object::Balancer,
            program: BALANCER,
            frame: arp_like(),
            action: Action::Pass,
            reason: Some(Reason::NotIp),
            what: "diagnostic: a non-IP frame: Ethernet parse, count, pass (no map lookup but the counter)",
        },
        Case {
            name: "diag_not_service_v4",
            object: Object::Balancer,
            program: BALANCER,
            frame: udp4(CLIENT4_PLACED, 9, None),
            action: Action::Pass,
            reason: Some(Reason::NotService),
            what: "diagnostic: UDP to a VIP port with no service: parse, one SERVICES miss, count, pass",
        },
        Case {
            name: "diag_bad_magic_v4",
            object: Object::Balancer,
            program: BALANCER,
            frame: udp4(CLIENT4_PLACED, 7000, None),
            action: Action::Drop,
            reason: Some(Reason::BadMagic),
            what: "diagnostic: header-mode service, payload without the magic: parse, SERVICES hit, \
                   header check, count, drop (no session lookup, no encap)",
        },
        Case {
            name: "flow_syn_v4",
            object: Object::Balancer,
            program: BALANCER,
            frame: tcp4_syn(CLIENT4_PLACED, 8080),
            action: Action::Tx,
            reason: Some(Reason::Forwarded),
            what: "flow mode, IPv4 TCP: one client's SYN repeated (one 5-tuple, as in \
                   katran_tcp_syn_v4), the client's session unplaced for this service: no \
                   flow-table lookup for routing (a SYN is routed by the tables), SESSIONS \
                   filtered, Maglev, and under the default new-flow rate the FLOWS entry looked \
                   up and rewritten in place (over it, as Katran's SYN over its flood limit, no \
                   FLOWS call, nor the LRU counters)",
        },
        Case {
            name: "katran_udp_ring_v4",
            object: Object::Katran,
            program: katran::BENCH,
            frame: udp4(CLIENT4_PLACED, katran::PORT_RING, None),
            action: Action::Tx,
            reason: None,
            what: "Katran's balancer (unmodified, same run): IPv4 UDP to a VIP with F_LRU_BYPASS, \
                   a Maglev ring lookup every packet, IPIP encap (compare header_hit_v4)",
        },
        Case {
            name: "katran_lru_hit_v4",
            object: Object::Katran,
            program: katran::BENCH,
            frame: udp4(CLIENT4_PLACED, katran::PORT_LRU, None),
            action: Action::Tx,
            reason: None,
            what: "Katran's balancer: IPv4 UDP, the flow found in the per-CPU LRU connection \
                   table (its UDP timeout refreshed), IPIP encap (compare flow_hit_v4)",
        },
        Case {
            name: "katran_tcp_syn_v4",
            object: Object::Katran,
            program: katran::BENCH,
            frame: tcp4_syn(CLIENT4_PLACED, katran::PORT_TCP),
            action: Action::Tx,
            reason: None,
            what: "Katran's balancer: IPv4 TCP SYN, no LRU lookup, ring lookup and LRU write \
                   (one 5-tuple repeated, so no eviction), IPIP encap (compare flow_miss_v4, \
                   a new flow every repeat)",
        },
        Case {
            name: "katran_udp_new_flow_v4",
            object: Object::Katran,
            program: katran::NEW_FLOW,
            frame: udp4(CLIENT4_PLACED, katran::PORT_LRU, None),
            action: Action::Tx,
            reason: None,
            what: "Katran's balancer: IPv4 UDP, a new flow every repeat (the source address moves \
                   on by one, as in flow_miss_v4): LRU miss, ring lookup, LRU insert under its \
                   new-connection rate limit (MAX_CONN_RATE, 125,000/s per CPU), evicting once \
                   the table is full (compare flow_miss_v4)",
        },
        Case {
            name: "katran_tx_baseline_restoring",
            object: Object::Katran,
            program: katran::TX_RESTORING,
            frame: placed_header_frame(),
            action: Action::Tx,
            reason: None,
            what: "the XDP_TX baseline inside Katran's bench wrapper: that wrapper's cost = this - \
                   xdp_tx_baseline",
        },
        Case {
            name: "xdp_tx_baseline_restoring",
            object: Object::Aux,
            program: TX_RESTORING,
            frame: placed_header_frame(),
            action: Action::Tx,
            reason: None,
            what: "the XDP_TX baseline inside the bench wrapper: wrapper cost = this - xdp_tx_baseline",
        },
    ]
}

/// The measured cases and how they were measured, as JSON.
pub struct DataplaneResults {
    /// Method, repeat, rounds, anchors.
    pub method: Value,
    /// The wrapper's measured cost.
    pub wrapper: Value,
    /// One object per case.
    pub cases: Vec<Value>,
    /// Cheaper paths through the balancer, to locate where a forwarded packet's time goes.
    pub diagnostics: Vec<Value>,
    /// The daemon's start-up walk of a million sessions, timed (null without a `_1m` case).
    pub start_walk: Value,
}

/// The cases and diagnostics as a plain-text table: ns/packet (measured and net of the
/// wrapper), the ratio to the `XDP_TX` baseline and those to a related case measured beside it.
pub fn table(results: &DataplaneResults) -> String {
    let mut out = format!(
        "{:<24} {:>10} {:>10} {:>8}  beside\n",
        "case", "ns/pkt", "measured", "x XDP_TX"
    );
    for v in results.cases.iter().chain(&results.diagnostics) {
        let beside: Vec<String> = BESIDE_FIELDS
            .iter()
            .filter_map(|f| Some(format!("{f} {}", v[*f].as_f64()?)))
            .collect();
        out += &format!(
            "{:<24} {:>10.1} {:>10.1} {:>8.2}  {}\n",
            v["case"].as_str().unwrap_or("?"),
            v["ns_per_pkt"].as_f64().unwrap_or(f64::NAN),
            v["ns_per_pkt_measured"].as_f64().unwrap_or(f64::NAN),
            v["vs_xdp_tx"].as_f64().unwrap_or(f64::NAN),
            beside.join(", "),
        );
    }
    if let Some(ms) = results.start_walk["ms"].as_f64() {
        out += &format!(
            "start walk (mark_session_filter) over {} sessions: {ms} ms\n",
            results.start_walk["sessions_walked"]
        );
    }
    out + &format!(
        "wrapper cost {} ns/pkt (subtracted from the shardline cases), Katran's wrapper {} ns/pkt \
         (from the katran_ cases)\n",
        results.wrapper["ns_per_pkt"], results.wrapper["katran_ns_per_pkt"]
    )
}

/// Measures every case (or, if `only` names any, those and the baselines) and returns the
/// results.
pub fn run(quick: bool, only: &[String]) -> Result<DataplaneResults, BenchError> {
    let rounds = if quick { 3 } else { 9 };
    million::stay_on_this_cpu()?;
    let mut lb = loaded_balancer()?;
    for name in [BALANCER, NEW_FLOW, RINGS_AOM, QUIC_BENCH] {
        xdp_program(&mut lb.ebpf, name)?
            .load()
            .map_err(program_err(name))?;
    }
    rings_aom::fill(&mut lb)?;
    let mut aux = load_aux()?;
    for name in [PASS, TX, TX_RESTORING] {
        xdp_program(&mut aux, name)?
            .load()
            .map_err(program_err(name))?;
    }
    let mut cases = cases();
    if !only.is_empty() {
        let all = std::mem::take(&mut cases);
        if let Some(unknown) = only.iter().find(|n| !all.iter().any(|c| c.name == **n)) {
            return Err(BenchError::Check(format!(
                "no per-packet case named {unknown:?}; cases: {}",
                all.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
            )));
        }
        // Katran's cases need its wrapper's cost, as shardline's need theirs.
        let katran = all
            .iter()
            .any(|c| c.object == Object::Katran && only.iter().any(|n| n == c.name));
        cases = all
            .into_iter()
            .filter(|c| {
                c.object == Object::Aux
                    || only.iter().any(|n| n == c.name)
                    || (katran && c.program == katran::TX_RESTORING)
            })
            .collect();
    }
    let fib = fib::FibCases::new(&mut lb, |name| cases.iter().any(|c| c.name == name))?;
    // As the daemon does at start: new clients of a service no placement falls near skip the
    // SESSIONS lookup (the million-session cases' balancer is left unmarked).
    lb.maps.mark_session_filter()?;
    let mut big = match cases.iter().any(|c| c.object == Object::Million) {
        true => Some(million::warmed(
            cases
                .iter()
                .filter(|c| c.object == Object::Million)
                .map(|c| (c.program, &c.frame[..])),
        )?),
        false => None,
    };
    let mut kat = match cases.iter().any(|c| c.object == Object::Katran) {
        true => Some(katran::load()?),
        false => None,
    };
    if let Some(k) = kat.as_mut() {
        for case in cases.iter().filter(|c| katran_path(c.name).is_some()) {
            check_katran_output(k, case)?;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut untracked = vec![0u64; cases.len()];
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let dp = match (case.object, big.as_mut()) {
                (Object::Million, Some(big)) => big,
                _ => &mut lb,
            };
            if case.object == Object::Balancer {
                flow_rate::set_limit(dp, new_flow_limit(case.name))?;
            }
            if case.program == NEW_FLOW {
                untracked[i] = untracked[i].wrapping_sub(flow_rate::untracked(dp)?);
            }
            let before = reasons(dp)?;
            let katran_before = match (case.object, kat.as_ref()) {
                (Object::Katran, Some(k)) => Some(katran::counts(k)?),
                _ => None,
            };
            let program = match (case.object, kat.as_mut()) {
                (Object::Aux, _) => xdp_program(&mut aux, case.program)?,
                (Object::Katran, Some(k)) => xdp_program(&mut k.ebpf, case.program)?,
                (Object::Katran, None) => unreachable!("loaded above for every Katran case"),
                (Object::Balancer | Object::Million, _) => xdp_program(&mut dp.ebpf, case.program)?,
            };
            let frame = round_frame(case, round);
            let result = match fib.net(case.name) {
                Some(net) => net.run(program, &mut dp.maps, &dp.tables, &frame, REPEAT, None)?,
                None => program
                    .test_run(TestRunOptions {
                        data_in: Some(&frame),
                        repeat: REPEAT,
                        ..TestRunOptions::new()
                    })
                    .map_err(program_err(case.program))?,
            };
            if Action::from_code(result.return_value) != case.action {
                return Err(BenchError::Check(format!(
                    "{}: {} returned {:?}, expected {:?}",
                    case.name,
                    case.program,
                    Action::from_code(result.return_value),
                    case.action
                )));
            }
            match (
                case.object,
                katran_path(case.name),
                kat.as_ref(),
                katran_before,
            ) {
                (Object::Katran, Some(path), Some(k), Some(before)) => {
                    katran::check(path, REPEAT, before, katran::counts(k)?)?;
                }
                (Object::Balancer | Object::Million, ..) => {
                    check_counted(case, &before, &reasons(dp)?)?;
                }
                _ => {}
            }
            if case.program == NEW_FLOW {
                untracked[i] = untracked[i].wrapping_add(flow_rate::untracked(dp)?);
            }
            samples[i].push(result.duration.as_nanos() as f64);
        }
        println!("bench:   round {}/{rounds} done", round + 1);
    }
    if let Some(big) = &big {
        if cases.iter().any(|c| c.program == ROTATE_SOURCE) {
            million::check_flows_held(big)?;
        }
    }
    // The daemon's start-up walk of SESSIONS (`mark_session_filter`: the sessions filter and
    // the counters-slot allocator), timed on the million-session balancer once its cases ran.
    let start_walk = match big.as_mut() {
        Some(big) => {
            let started = std::time::Instant::now();
            let walked = big.maps.mark_session_filter()?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            if walked < BENCH_ROTATION as usize {
                return Err(BenchError::Check(format!(
                    "the start walk found {walked} sessions, fewer than the {BENCH_ROTATION} \
                     the million-session balancer holds: it would time a smaller walk"
                )));
            }
            json!({
                "sessions_walked": walked,
                "ms": round(ms, 1),
                "what": "DataplaneMaps::mark_session_filter on the million-session balancer (after \
                         its cases ran): the walk of SESSIONS the daemon does once at start, \
                         before its first write, to set the sessions filter and rebuild the \
                         counters-slot allocator",
            })
        }
        None => Value::Null,
    };
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let by_name = |name: &str| {
        cases
            .iter()
            .position(|c| c.name == name)
            .map(|i| medians[i])
            .unwrap_or(0.0)
    };
    let tx = by_name("xdp_tx_baseline");
    let wrapper = (by_name("xdp_tx_baseline_restoring") - tx).max(0.0);
    let katran_wrapper = (by_name("katran_tx_baseline_restoring") - tx).max(0.0);
    let net_of = |name: &str, raw: f64| match name.starts_with("katran_") {
        true => (raw - katran_wrapper).max(0.0),
        false => (raw - wrapper).max(0.0),
    };
    let mut out = Vec::new();
    let mut diagnostics = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if case.program == TX_RESTORING || case.program == katran::TX_RESTORING {
            continue;
        }
        let raw = medians[i];
        let net = if case.object != Object::Aux {
            net_of(case.name, raw)
        } else {
            raw
        };
        let mut v = json!({
            "case": case.name,
            "ns_per_pkt": round(net, 1),
            "vs_xdp_tx": if tx > 0.0 { round(net / tx, 2) } else { 0.0 },
            "mpps_per_core": if net > 0.0 { round(1000.0 / net, 2) } else { 0.0 },
            "vs_10gbe_64b_line_rate": if net > 0.0 { round(LINE_RATE_NS / net, 2) } else { 0.0 },
            "ns_per_pkt_measured": raw,
            "ns_per_pkt_min": samples[i].iter().copied().fold(f64::INFINITY, f64::min),
            "frame_bytes": case.frame.len(),
            "program": case.program,
            "what": case.what,
        });
        if let (NEW_FLOW, Some(obj)) = (case.program, v.as_object_mut()) {
            // The share of this case's repeats routed without a FLOWS insert (over the rate).
            let share = untracked[i] as f64 / (f64::from(REPEAT) * rounds as f64);
            obj.insert("new_flows_untracked_share".into(), json!(round(share, 3)));
        }
        // Issue 19's targets.
        let target = match case.name {
            "header_hit_v4" | "default_table_v4" => Some(2.5),
            "flow_hit_v4" => Some(3.0),
            "flow_miss_v4" => Some(10.0),
            _ => None,
        };
        if let (Some(t), Some(obj)) = (target, v.as_object_mut()) {
            obj.insert("target_vs_xdp_tx".into(), json!(t));
            obj.insert("meets_target".into(), json!(tx > 0.0 && net / tx <= t));
        }
        // A million-entry case beside its hot-entry case, the FIB's beside the static MAC's and
        // the redirect beside the FIB's XDP_TX.
        let beside: &[(&str, &str)] = match case.name {
            name if name.ends_with("_1m") => &[(&name[..name.len() - 3], "vs_hot_entry")],
            fib::CASE => &[("header_hit_v4", "vs_static_mac")],
            fib::REDIRECT_CASE => &[("header_hit_v4", "vs_static_mac"), (fib::CASE, "vs_fib_tx")],
            _ => &[],
        };
        let katran_pair = KATRAN_PAIRS
            .iter()
            .filter(|(ours, kat, _)| *ours == case.name && cases.iter().any(|c| c.name == *kat))
            .map(|(_, kat, field)| (*kat, *field));
        for (base, field) in beside.iter().copied().chain(katran_pair) {
            let base_net = net_of(base, by_name(base));
            if let (true, Some(obj)) = (base_net > 0.0, v.as_object_mut()) {
                obj.insert(field.into(), json!(round(net / base_net, 2)));
            }
        }
        if case.name.starts_with("diag_") {
            diagnostics.push(v);
        } else {
            out.push(v);
        }
    }
    Ok(DataplaneResults {
        method: json!({
            "mode": "BPF_PROG_TEST_RUN, repeat mode (not live frames), bench-only restoring wrapper",
            "repeat": REPEAT,
            "rounds": rounds,
            "statistic": "median over rounds of the kernel's mean ns per repeat (whole ns)",
            "ns_per_pkt": "baselines: as measured; shardline cases: measured inside the restoring \
                           wrapper minus the wrapper's cost measured on xdp_tx_baseline (the \
                           wrapper's bpf_xdp_adjust_head undo is not in that subtraction, so the \
                           shardline figures are upper bounds)",
            "verified": "every shardline repeat counted exactly once as `forwarded` in the per-CPU \
                         reason counters",
            "line_rate": format!("10 GbE, 64-byte frames: {LINE_RATE_MPPS:.2} Mpps, {LINE_RATE_NS} ns/pkt"),
            "katran": "Katran's balancer.bpf.c (facebookincubator/katran 19f08fec, unmodified, \
                       GPL-2.0, bench/katran/) built as its Makefile-bpf builds it (clang -O2 \
                       -emit-llvm | llc -march=bpf) and run in the same rounds inside a restoring \
                       wrapper of the same shape (bench/katran/katran_bench.c), whose cost is \
                       measured on the XDP_TX forwarder inside it and subtracted; its maps filled \
                       as its userspace fills them (3 VIPs, 3 IPv4 reals, Maglev rings of 65,537 \
                       slots, one 262,144-flow LRU per CPU in lru_mapping); every run checked \
                       through Katran's own counters. vs_katran on a shardline case: its ns per \
                       packet over its Katran counterpart's (below 1: shardline is faster)",
            "anchors_quoted_in_issue_7": {
                "katran": "about 5.1x and 6.7x the XDP_TX baseline, about 100 ns/pkt",
                "xdp_paper": "24 Mpps per core XDP_DROP, 16-17 Mpps XDP_TX",
            },
        }),
        wrapper: json!({
            "ns_per_pkt": round(wrapper, 1),
            "measured_as": "median(xdp_tx_baseline_restoring) - median(xdp_tx_baseline)",
            "xdp_tx_baseline_restoring_ns": by_name("xdp_tx_baseline_restoring"),
            "katran_ns_per_pkt": round(katran_wrapper, 1),
            "katran_measured_as": "median(katran_tx_baseline_restoring) - median(xdp_tx_baseline)",
        }),
        cases: out,
        diagnostics,
        start_walk,
    })
}

/// The new-flow limit a balancer case runs under, set with a fresh window before each of its
/// rounds: every new flow remembered for `flow_miss_v4_tracked`, the default (0) for every
/// other case. Set for every case, not only the new-flow program's: a case that inserts flows
/// after `flow_miss_v4_tracked` (`flow_syn_v4`) otherwise ran with every flow admitted, not
/// under the default rate its description and Katran's SYN case have.
fn new_flow_limit(case: &str) -> u32 {
    match case {
        "flow_miss_v4_tracked" => flow_rate::UNLIMITED,
        _ => 0,
    }
}

fn reasons(lb: &PrivateDataplane) -> Result<[u64; REASON_COUNT as usize], BenchError> {
    let mut out = [0; REASON_COUNT as usize];
    for (reason, n) in lb.maps.reason_counts()? {
        out[reason as usize] = n;
    }
    Ok(out)
}

/// Fails unless exactly [`REPEAT`] packets were counted, all under the case's reason.
fn check_counted(case: &Case, before: &[u64], after: &[u64]) -> Result<(), BenchError> {
    let counted: Vec<(Reason, u64)> = Reason::ALL
        .iter()
        .map(|r| (*r, after[*r as usize] - before[*r as usize]))
        .filter(|(_, n)| *n != 0)
        .collect();
    match (case.reason, &counted[..]) {
        (Some(want), [(got, n)]) if *got == want && *n == u64::from(REPEAT) => Ok(()),
        _ => Err(BenchError::Check(format!(
            "{}: expected {} repeats counted as {:?}, the counters say {counted:?}; the measurement \
             would not be of the path it names",
            case.name,
            REPEAT,
            case.reason
        ))),
    }
}

/// The frame a case's round starts from. The new-flow programs move the source address on by
/// one per repeat, so a round walks [`REPEAT`] sources from its frame's: each round starts
/// [`REPEAT`] further on (the first one beyond the case's own frame, whose client other cases
/// use), so no round meets a flow an earlier one left in the flow table (entries stay for
/// 30 s of idleness, in shardline and in Katran alike) and every repeat is a new flow.
fn round_frame(case: &Case, round: usize) -> Vec<u8> {
    let mut frame = case.frame.clone();
    if case.program == NEW_FLOW || case.program == katran::NEW_FLOW {
        let at = 14 + 12;
        let src = u32::from_be_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
        let start = src.wrapping_add((round as u32 + 1).wrapping_mul(REPEAT));
        frame[at..at + 4].copy_from_slice(&start.to_be_bytes());
    }
    frame
}

/// Katran's measured cases as the benchmark runs them: name, path, program and the frame of
/// its first round.
pub fn katran_cases() -> Vec<(&'static str, katran::Path, &'static str, Vec<u8>)> {
    cases()
        .into_iter()
        .filter_map(|c| Some((c.name, katran_path(c.name)?, c.program, round_frame(&c, 0))))
        .collect()
}

/// The Katran path a case measures (none for shardline's cases and the wrapper baseline).
fn katran_path(name: &str) -> Option<katran::Path> {
    match name {
        "katran_udp_ring_v4" => Some(katran::Path::UdpRing),
        "katran_lru_hit_v4" => Some(katran::Path::LruHit),
        "katran_tcp_syn_v4" => Some(katran::Path::TcpSyn),
        "katran_udp_new_flow_v4" => Some(katran::Path::NewFlow),
        _ => None,
    }
}

/// Fails unless Katran, run once on the case's frame without the wrapper, sends it IPIP to
/// one of its reals through the configured next hop: the path measured forwards for real.
fn check_katran_output(k: &mut Katran, case: &Case) -> Result<(), BenchError> {
    let out = katran::forward_once(k, &case.frame)?;
    let ok = out.len() == case.frame.len() + 20
        && out[..6] == katran::NEXT_HOP_MAC
        && out[12..14] == [0x08, 0x00]
        && out[14 + 9] == 4
        && katran::REALS.iter().any(|r| out[14 + 16..14 + 20] == r[..])
        && out[34..] == case.frame[14..];
    if ok {
        Ok(())
    } else {
        Err(BenchError::Check(format!(
            "{}: Katran's output is not the frame IPIP-encapsulated to a real via the next hop: \
             {out:02x?}",
            case.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_sizes_the_report_states() {
        for case in cases() {
            let want = if case.name == "header_hit_v6" {
                82
            } else {
                FRAME_LEN
            };
            assert_eq!(case.frame.len(), want, "{}", case.name);
        }
    }

    #[test]
    fn only_the_tracked_case_runs_without_the_default_new_flow_limit() {
        for case in cases().iter().filter(|c| c.object == Object::Balancer) {
            let want = match case.name {
                "flow_miss_v4_tracked" => flow_rate::UNLIMITED,
                _ => 0,
            };
            assert_eq!(new_flow_limit(case.name), want, "{}", case.name);
        }
    }

    #[test]
    fn every_issue_case_is_measured_once() {
        let names: Vec<&str> = cases().iter().map(|c| c.name).collect();
        for want in [
            "xdp_pass_baseline",
            "xdp_tx_baseline",
            "header_hit_v4",
            "flow_hit_v4",
            "flow_miss_v4",
            "header_hit_v6",
            "default_table_v4",
        ] {
            assert_eq!(names.iter().filter(|n| **n == want).count(), 1, "{want}");
        }
    }
}
