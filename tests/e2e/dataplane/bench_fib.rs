//! Fixture: the per-packet bench's FIB cases as `shardline-bench` sets them up
//! (`shardline_bench::suite::fib`): `header_hit_v4_fib` (the FIB answers the receiving
//! interface, `XDP_TX`) and `header_hit_v4_redirect` (it answers `lb1`, which `TX_PORTS` lists
//! as the daemon lists `egress_interfaces`: `XDP_REDIRECT`). Checked beyond what the bench
//! reads back: the devmap's entry; that the bench's program leaves the frame exactly as it came
//! in after repeats of either action (so every repeat routes the same packet); that the
//! balancer, ending in the bench's next-hop program, carries the FIB's MACs for the backend the
//! replay picks; and that the redirect case refuses to run when `lb1` is not listed.

use aya::maps::{DevMapHash, MapData};
use shardline::loader::{xdp_program, LB_PROGRAM};
use shardline_bench::suite::{
    fib::{neighbour_mac, Arm, FibCases, CASE, REDIRECT_CASE},
    loaded_balancer, open_pinned,
    per_packet::{placed_header_frame, BALANCER},
};
use shardline_common::{
    route::decide,
    verdict::{Action, Reason},
};

use crate::support::{hex, require_root};

/// Repeats per run: enough that a frame left unrestored would be routed differently by the
/// second one.
const REPEAT: u32 = 50;

#[test]
fn the_bench_fib_cases_take_their_arm_and_restore_the_frame_for_the_next_repeat() {
    require_root();
    let mut dp = loaded_balancer().unwrap_or_else(|e| panic!("loading the bench balancer: {e}"));
    xdp_program(&mut dp.ebpf, BALANCER)
        .unwrap_or_else(|e| panic!("{BALANCER}: {e}"))
        .load()
        .unwrap_or_else(|e| panic!("loading {BALANCER}: {e}"));
    let fib = FibCases::new(&mut dp, |_| true)
        .unwrap_or_else(|e| panic!("the FIB cases' namespaces: {e}"));

    // TX_PORTS lists lb1 by its index, as `fill_tx_ports` does for the daemon.
    let redirect = fib
        .net(REDIRECT_CASE)
        .expect("the redirect case's namespace");
    let ports: DevMapHash<MapData> =
        open_pinned(&dp.pin_dir, "TX_PORTS").unwrap_or_else(|e| panic!("TX_PORTS: {e}"));
    let keys: Vec<u32> = ports.keys().map(|k| k.expect("a TX_PORTS key")).collect();
    assert_eq!(keys, [redirect.egress_ifindex()], "TX_PORTS keys");
    let entry = ports
        .get(redirect.egress_ifindex(), 0)
        .expect("lb1's TX_PORTS entry");
    assert_eq!(entry.if_index, redirect.egress_ifindex(), "lb1's entry");
    // Both namespaces create lb0 first, so the same index: the redirect's egress is another.
    let tx = fib.net(CASE).expect("the FIB case's namespace");
    assert_ne!(redirect.egress_ifindex(), tx.egress_ifindex());

    let frame = placed_header_frame();
    let d = decide(&frame[..], &dp.tables);
    assert_eq!(d.reason, Reason::Forwarded, "the replay forwards the frame");
    for arm in Arm::ALL {
        let net = fib.net(arm.case()).expect("each arm's namespace");
        assert_eq!(net.arm(), arm);
        let mut run = |program: &str, repeat: u32| {
            let program = xdp_program(&mut dp.ebpf, program).expect("a balancer program");
            let mut out = vec![0u8; frame.len() + 256];
            let result = net
                .run(
                    program,
                    &mut dp.maps,
                    &dp.tables,
                    &frame,
                    repeat,
                    Some(&mut out),
                )
                .unwrap_or_else(|e| panic!("{}: {e}", arm.case()));
            assert_eq!(Action::from_code(result.return_value), arm.action());
            out.truncate(result.data_size_out as usize);
            out
        };
        // The bench's program leaves every repeat's frame as it came in, whatever the action.
        let out = run(BALANCER, REPEAT);
        assert_eq!(
            hex(&out),
            hex(&frame),
            "{}: the frame after {REPEAT} repeats",
            arm.case()
        );
        // The balancer itself, ending in the bench's next-hop program (the encapsulation
        // stripped, the FIB's MACs kept): those MACs name the replay's backend.
        let out = run(LB_PROGRAM, 1);
        assert_eq!(out[12..], frame[12..], "{}: {}", arm.case(), hex(&out));
        assert_eq!(
            out[..6],
            neighbour_mac(d.backend_id),
            "{}: the FIB's next hop is the replay's backend {}",
            arm.case(),
            d.backend_id
        );
        assert_eq!(out[6..12], net.egress_mac(), "{}: source MAC", arm.case());
    }

    // Without lb1 in TX_PORTS the redirect case is a fallback, and the bench refuses to time it.
    let mut ports = ports;
    ports
        .remove(redirect.egress_ifindex())
        .expect("empty TX_PORTS");
    let program = xdp_program(&mut dp.ebpf, BALANCER).expect("the bench balancer");
    let err = redirect
        .run(program, &mut dp.maps, &dp.tables, &frame, REPEAT, None)
        .expect_err("the redirect case fails when the egress is not listed");
    assert!(
        err.to_string().contains("fib_redirect"),
        "the failure names the outcome it wanted: {err}"
    );
}
