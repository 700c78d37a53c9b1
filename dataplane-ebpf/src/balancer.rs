//! The `shardline` program's body: parse → decide → rewrite (or answer: echo reply, too big)
//! → next hop (static MAC; a tail call to `shardline_nexthop` for FIB-routed backends) →
//! forward → count.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use aya_log_ebpf::error;
use shardline_common::{
    maps::session_mode,
    packet::PacketBytes,
    route::{decide, Decision},
    verdict::{Action, Reason},
};

use crate::{
    counters::{count_forwarded, count_reason},
    echo,
    maps::{GLOBALS, QUIC_PROGRAM},
    nexthop,
    packet::{LinearPacket, XdpPacket},
    rewrite::rewrite,
    tables::MapTables,
    too_big,
};

/// Routes one frame and returns its XDP action.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    run_with::<false, false, false>(ctx)
}

/// [`run`] as the bench programs run it (see `MapTables`'s `BENCH`).
#[inline(always)]
pub fn run_bench(ctx: &XdpContext) -> u32 {
    run_with::<false, true, false>(ctx)
}

/// The `shardline_quic` program's body: [`run`] for the QUIC services' packets `shardline`
/// hands over (see [`run_with`]).
#[inline(always)]
pub fn run_quic(ctx: &XdpContext) -> u32 {
    run_with::<false, false, true>(ctx)
}

/// [`run`] with the ring layout chosen (`RINGS_AOM` is the bench-only array-of-maps one),
/// `BENCH` set for the bench programs, which also leave the too-big answer out (see
/// `MapTables::too_big_limit`), and `QUIC_ONLY` for the QUIC program.
///
/// Without `QUIC_ONLY`, a QUIC service's packet is not decided here: `shardline` tail-calls the
/// QUIC program (`QUIC_PROGRAM`), which decides it from the start (parse, service, connection
/// id) and counts it, so the verifier walks the connection-id loops once, in that program,
/// instead of in every state of the balancer's other paths (they were half its processed
/// instructions). The replay decides in one pass (`Tables::QUIC` on): the same decision. If the
/// slot is empty (no QUIC program loaded) the packet is counted `quic_malformed` and dropped,
/// never routed undecided. The bench programs hand it over too: their body is a BPF-to-BPF
/// subprogram (see `crate::restore`), so the QUIC program's action returns to their wrapper,
/// which undoes its rewrite, and `quic_sid_v4_attached` measures the attached path whole.
#[inline(always)]
pub fn run_with<const RINGS_AOM: bool, const BENCH: bool, const QUIC_ONLY: bool>(
    ctx: &XdpContext,
) -> u32 {
    let Some(globals) = GLOBALS.get(0) else {
        // Unreachable for an array of one entry; pass rather than disturb traffic.
        log_no_globals(ctx);
        return xdp_action::XDP_PASS;
    };
    let frame_len = XdpPacket(ctx).len() as u64;
    let tables = MapTables::<RINGS_AOM, BENCH, QUIC_ONLY>::new(globals, ctx);
    let d = route(ctx, &tables);
    if !QUIC_ONLY && d.quic_elsewhere() {
        // SAFETY: the context is this program's own; a tail call ends this program on success.
        unsafe { QUIC_PROGRAM.tail_call(ctx, 0) };
    }
    let mut reason = d.reason;
    if reason.forwards() {
        if rewrite(ctx, &d, globals).is_err() {
            log_encap_failed(ctx, d.backend_id);
            reason = Reason::EncapFailed;
        } else {
            let flow_mode = d.service.mode == session_mode::FLOW;
            // A multi-buffer frame's bytes run past its linear part: its IP length says how far.
            let ip_end = u64::from(d.l3_off + d.ip_len);
            let bytes = if ip_end > frame_len {
                ip_end
            } else {
                frame_len
            };
            count_forwarded(
                d.backend_id,
                &d.session,
                tables.stats_slot.get(),
                bytes,
                flow_mode,
            );
            // A FIB-routed backend's packet leaves through the next-hop program (a tail call
            // that counts the reason and returns the action), or its counted fallback.
            if nexthop::is_fib(d.backend_id) {
                return nexthop::hand_off(ctx, d.backend_id, d.v6, reason);
            }
        }
    } else if reason == Reason::IcmpEchoReply && echo::reply(ctx, &d).is_err() {
        reason = Reason::IcmpMalformed;
    } else if !BENCH && reason == Reason::IcmpTooBig && too_big::reply(ctx, &d, globals).is_err() {
        reason = Reason::EncapFailed;
    }
    count_reason(reason);
    reason.action() as u32
}

/// The routing decision, on the whole frame (multi-buffer aware) or, in the bench programs, on
/// its linear part only (`LinearPacket`: their frames fit a page). Inlined, like the rewrite
/// and the counters: on this kind of machine a BPF-to-BPF call and its return cost more than
/// the frame they save (`shardline bench-dataplane`), and the inlined program's frame is 416
/// bytes, under the verifier's 512 (checked with the stack probe in the README's benchmark
/// section).
#[inline(always)]
fn route<const RINGS_AOM: bool, const BENCH: bool, const QUIC_ONLY: bool>(
    ctx: &XdpContext,
    tables: &MapTables<RINGS_AOM, BENCH, QUIC_ONLY>,
) -> Decision {
    if BENCH {
        decide(&LinearPacket(XdpPacket(ctx)), tables)
    } else {
        decide(&XdpPacket(ctx), tables)
    }
}

/// Logged (aya-log, read by the daemon) when a routed packet could not be rewritten: no
/// headroom for the outer header, or a length that does not fit it. Only on that error path, and
/// a subprogram of its own, so the forwarding path neither runs nor carries the logging code
/// (its frame sits beside the balancer's, not inside it).
#[inline(never)]
fn log_encap_failed(ctx: &XdpContext, backend: u32) {
    error!(ctx, "encapsulation towards backend {} failed", backend);
}

/// Logged if the globals entry is missing, which an array of one entry never is.
#[inline(never)]
fn log_no_globals(ctx: &XdpContext) {
    error!(ctx, "GLOBALS entry 0 missing; passing traffic");
}

/// Keeps `Action` and the kernel's numbering in step at compile time.
const _: () = {
    assert!(Action::Tx as u32 == xdp_action::XDP_TX);
    assert!(Action::Pass as u32 == xdp_action::XDP_PASS);
    assert!(Action::Drop as u32 == xdp_action::XDP_DROP);
    assert!(Action::Redirect as u32 == xdp_action::XDP_REDIRECT);
};
