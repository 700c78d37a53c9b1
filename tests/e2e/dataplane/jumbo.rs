//! Fixtures: multi-buffer (jumbo) frames. `BPF_PROG_TEST_RUN` hands a frame longer than a page
//! to the program (loaded with `BPF_F_XDP_HAS_FRAGS`) as a linear part of
//! [`LINEAR_MAX`] octets and page fragments, as a 9000-octet link does. The program takes
//! lengths from the whole frame and headers from the linear part; the replay, reading the frame
//! as the kernel lays it out ([`XdpView::test_run`]), agrees on every case, output bytes
//! included.

use shardline_common::{
    frame::{XdpView, LINEAR_MAX},
    route::decide,
    verdict::Reason,
};

use crate::support::{
    agrees,
    frames::{net4, net6, FrameSpec, Transport, CLIENT4, CLIENT6, DNS_PORT, VIP4, VIP6, WEB_PORT},
    hex,
    outer::Expected,
    Loaded, TEST_CONFIG,
};

/// The egress MTU of these fixtures: a jumbo link's.
const JUMBO_MTU: u32 = 9000;

/// `TEST_CONFIG` loaded with `mtu` as the egress MTU.
fn loaded(mtu: u32) -> Loaded {
    let mut lb = Loaded::new(TEST_CONFIG);
    lb.set_egress_mtu(mtu);
    lb
}

/// A UDP datagram to `dns` whose IPv4 packet is `ip_len` octets long.
fn udp4(ip_len: usize) -> FrameSpec {
    let udp = Transport::Udp {
        sport: 40_000,
        dport: DNS_PORT,
    };
    FrameSpec::new(net4(CLIENT4, VIP4), udp, vec![0xab; ip_len - 20 - 8])
}

/// A TCP segment to `web6` whose IPv6 packet is `ip_len` octets long, from the first client
/// port whose flow the replay forwards (backend 4 has no IPv6 address).
fn tcp6(lb: &Loaded, ip_len: usize) -> FrameSpec {
    (40_000..)
        .map(|sport| {
            let tcp = Transport::Tcp {
                sport,
                dport: WEB_PORT,
                syn: false,
                options: Vec::new(),
            };
            FrameSpec::new(net6(CLIENT6, VIP6), tcp, vec![0xcd; 100])
        })
        // Searched at a size every link carries: a jumbo one may be answered as too big.
        .find(|spec| decide(&spec.build()[..], &lb.tables).reason == Reason::Forwarded)
        .map(|spec| FrameSpec {
            payload: vec![0xcd; ip_len - 40 - 20],
            ..spec
        })
        .expect("a client port some backend forwards")
}

/// Runs `frame`: the kernel must count `reason`, the replay (as the kernel sees the frame)
/// decide the same, and the output be what the replay implies. Returns the output.
fn expect(lb: &mut Loaded, mtu: u32, name: &str, frame: &[u8], reason: Reason) -> Vec<u8> {
    let (run, counted) = lb.run_counted(frame);
    let d = decide(&XdpView::test_run(frame), &lb.tables);
    assert_eq!(counted, reason, "{name}: kernel counted {}", counted.name());
    assert_eq!(d.reason, reason, "{name}: replay reason");
    let want = Expected {
        egress_mtu: mtu,
        ..Expected::test_config()
    };
    if let Err(e) = agrees(&want, frame, &run, &d) {
        panic!("{name}: {e}; frame {}", hex(&frame[..frame.len().min(128)]));
    }
    run.output
}

#[test]
fn jumbo_frames_are_forwarded_whole_and_encapsulated() {
    let mut lb = loaded(JUMBO_MTU);
    // From one frame under the page's linear limit to the largest that fits once encapsulated.
    let around_a_page = [LINEAR_MAX - 1, LINEAR_MAX, LINEAR_MAX + 1].map(|frame| frame - 14);
    for ip_len in around_a_page.into_iter().chain([4096, 8000, 8980]) {
        let frame = udp4(ip_len).build();
        let view = XdpView::test_run(&frame);
        assert_eq!(view.has_frags(), frame.len() > LINEAR_MAX, "{ip_len}");
        let name = format!("IPv4, {ip_len} octets");
        let out = expect(&mut lb, JUMBO_MTU, &name, &frame, Reason::Forwarded);
        assert_eq!(out.len(), frame.len() + 20, "{name}: the whole frame, IPIP");
        assert_eq!(out[34..], frame[14..], "{name}: every octet carried");
    }
    for ip_len in [4000, 8960] {
        let frame = tcp6(&lb, ip_len).build();
        let name = format!("IPv6, {ip_len} octets");
        let out = expect(&mut lb, JUMBO_MTU, &name, &frame, Reason::Forwarded);
        assert_eq!(
            out.len(),
            frame.len() + 40,
            "{name}: the whole frame, IP6IP6"
        );
        assert_eq!(out[54..], frame[14..], "{name}: every octet carried");
    }
    // A header-mode request: the header sits in the linear part, the body runs past it.
    let mut kv = FrameSpec::kv4(42, 7);
    kv.payload.resize(8000, 0x5a);
    let frame = kv.build();
    expect(
        &mut lb,
        JUMBO_MTU,
        "kv, 8000 octets",
        &frame,
        Reason::Forwarded,
    );
}

#[test]
fn a_jumbo_frame_counts_its_whole_length() {
    let mut lb = loaded(JUMBO_MTU);
    let frame = udp4(8980).build();
    let services: Vec<u32> = lb.tables.services.values().map(|s| s.id).collect();
    let d = decide(&XdpView::test_run(&frame), &lb.tables);
    let before = lb.maps.backend_counter_of(d.backend_id, &services).unwrap();
    expect(&mut lb, JUMBO_MTU, "8980 octets", &frame, Reason::Forwarded);
    let after = lb.maps.backend_counter_of(d.backend_id, &services).unwrap();
    assert_eq!(
        (after.packets - before.packets, after.bytes - before.bytes),
        (1, frame.len() as u64),
        "the fragments' bytes are counted too"
    );
}

#[test]
fn a_jumbo_frame_too_big_for_the_egress_link_is_answered_from_the_whole_length() {
    // One octet over a jumbo link's limit, and a jumbo frame against a 1500-octet link.
    for (mtu, ip_len) in [(JUMBO_MTU, 8981), (1500, 8000)] {
        let mut lb = loaded(mtu);
        let frame = udp4(ip_len).build();
        let name = format!("IPv4, {ip_len} octets over MTU {mtu}");
        let out = expect(&mut lb, mtu, &name, &frame, Reason::IcmpTooBig);
        assert_eq!(out.len(), 14 + 20 + 8 + 28, "{name}: cut to the quote");
        let frame = tcp6(&lb, ip_len - 20).build();
        let name = format!("IPv6, {} octets over MTU {mtu}", ip_len - 20);
        let out = expect(&mut lb, mtu, &name, &frame, Reason::IcmpTooBig);
        assert_eq!(out.len(), 14 + 1280, "{name}: as much as fits in 1280");
    }
}

/// An IPv6 TCP segment to `web6` whose TCP header starts `ext` octets after the IPv6 header,
/// behind destination-options headers (Pad1 options only), in a frame of `frame_len` octets.
fn behind_options(sport: u16, ext: usize, frame_len: usize) -> Vec<u8> {
    assert!(ext.is_multiple_of(8) && ext > 2048 && ext <= 4096);
    let mut f = vec![0u8; frame_len];
    f[..6].copy_from_slice(&crate::support::frames::LB_MAC);
    f[6..12].copy_from_slice(&crate::support::frames::CLIENT_MAC);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    f[14] = 0x60;
    f[18..20].copy_from_slice(&((frame_len - 54) as u16).to_be_bytes());
    f[20] = 60; // destination options
    f[21] = 64;
    f[22..38].copy_from_slice(&CLIENT6);
    f[38..54].copy_from_slice(&VIP6);
    // Two destination-options headers: 2048 octets, then the rest.
    f[54] = 60;
    f[55] = 255;
    let second = 54 + 2048;
    f[second] = 6; // TCP
    f[second + 1] = ((ext - 2048) / 8 - 1) as u8;
    let tcp = 54 + ext;
    f[tcp..tcp + 2].copy_from_slice(&sport.to_be_bytes());
    f[tcp + 2..tcp + 4].copy_from_slice(&WEB_PORT.to_be_bytes());
    f[tcp + 12] = 5 << 4;
    f[tcp + 13] = 0x10;
    f
}

#[test]
fn headers_past_the_linear_part_are_out_of_reach_for_kernel_and_replay_alike() {
    let mut lb = loaded(JUMBO_MTU);
    // The TCP header must end inside the linear part: at `LINEAR_MAX` - 6 (within the limit)
    // it does, 8 octets later it does not. This pins `LINEAR_MAX` to the kernel's to within 8.
    let fits = LINEAR_MAX - 6 - 20 - 54;
    let sport = (40_000..)
        .find(|p| {
            let f = behind_options(*p, fits, 5000);
            decide(&f[..], &lb.tables).reason == Reason::Forwarded
        })
        .expect("a client port some backend forwards");
    let inside = behind_options(sport, fits, 5000);
    expect(
        &mut lb,
        JUMBO_MTU,
        "TCP header inside the linear part",
        &inside,
        Reason::Forwarded,
    );
    let outside = behind_options(sport, fits + 8, 5000);
    expect(
        &mut lb,
        JUMBO_MTU,
        "TCP header past the linear part",
        &outside,
        Reason::MalformedL4,
    );
    // Read whole, as the replay used to, the same frame would be forwarded: the disagreement
    // `shardline trace` reported on jumbo captures.
    assert_eq!(
        decide(&outside[..], &lb.tables).reason,
        Reason::Forwarded,
        "the whole frame holds the header"
    );
}
