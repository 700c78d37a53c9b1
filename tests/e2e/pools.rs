//! Per-service pools in the kernel (`BPF_PROG_TEST_RUN`): several services on different pools,
//! each with a Maglev ring of its own, agree with the replay on random packets and never send
//! a packet outside their pool; a change of one service's pool (a member joining, or failing
//! the service's probe) rewrites that service's ring alone and moves no other service's
//! traffic; the kernel counts every forwarded packet for its (service, backend) exactly as the
//! replay decided it.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, SeedableRng};
use shardline::{
    config::Config,
    snapshot::{delta::TableDelta, Snapshot},
    state::{Command, ControlState},
};
use shardline_common::{consts::SERVICE_STATS_ROWS, route::decide, verdict::Action};

use crate::support::{
    agrees,
    frames::{FrameSpec, DNS_PORT, L2_PORT, VIP4, VIP4_L2},
    hex,
    outer::Expected,
    random, Loaded, TEST_CONFIG,
};

/// Random packets per test.
const PACKETS: usize = 4_000;

/// `TEST_CONFIG` with pools: `dns` on backends 1 and 2, `quic` on 2 (weight 3) and 3, `quic6`
/// on 1 and 4 (4 has no IPv6), `l2` on 3 alone with a 13-slot ring; the other services keep
/// every backend (the default table). `flow_idle_secs` is prepended when given.
fn pools_config(flow_idle_secs: Option<u32>) -> String {
    let mut config = match flow_idle_secs {
        Some(secs) => format!("flow_idle_secs = {secs}\n{TEST_CONFIG}"),
        None => TEST_CONFIG.to_owned(),
    };
    for (name, pool) in [
        ("dns", "backends = [1, 2]"),
        ("quic", "backends = [{ id = 2, weight = 3 }, 3]"),
        ("quic6", "backends = [1, 4]"),
        ("l2", "backends = [3]\nring_size = 13"),
    ] {
        let at = format!("name = \"{name}\"\n");
        assert!(config.contains(&at), "TEST_CONFIG has a service {name:?}");
        config = config.replacen(&at, &format!("{at}{pool}\n"), 1);
    }
    config
}

fn service_id(snap: &Snapshot, name: &str, config: &Config) -> u32 {
    let pos = config
        .services
        .iter()
        .position(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name:?}"));
    let id = pos as u32 + 1;
    assert!(snap.services.values().any(|s| s.id == id));
    id
}

#[test]
fn kernel_and_replay_agree_across_services_with_different_pools() {
    let text = pools_config(None);
    let config = Config::parse(&text, "pools config").expect("valid");
    let mut lb = Loaded::new(&text);
    random::add_edge_cases(&mut lb);
    let want = Expected::of_snapshot(&lb.tables);
    let pooled: Vec<u32> = ["dns", "quic", "quic6", "l2"]
        .iter()
        .map(|n| service_id(&lb.tables, n, &config))
        .collect();
    let mut rng = StdRng::seed_from_u64(0x9001_5eed);
    let mut failures = Vec::new();
    let mut forwarded: BTreeMap<u32, BTreeMap<u32, u64>> = BTreeMap::new();
    let mut bytes: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for i in 0..PACKETS {
        let frame = random::frame(&mut rng);
        let d = decide(&frame[..], &lb.tables);
        let k = lb.run(&frame);
        if let Err(e) = agrees(&want, &frame, &k, &d) {
            failures.push(format!(
                "packet {i} ({}): {e}\n  frame {}",
                d.reason.name(),
                hex(&frame)
            ));
        }
        if i % 40 == 0 {
            let live = decide(&frame[..], &lb.maps);
            if live != d {
                failures.push(format!(
                    "packet {i}: live-map replay {live:?} != snapshot replay {d:?}"
                ));
            }
        }
        if !d.reason.forwards() {
            continue;
        }
        if let Some(pool) = lb.tables.pools.get(&d.service.id) {
            if !pool.contains(&d.backend_id) {
                failures.push(format!(
                    "packet {i}: service {} sent to backend {} outside its pool {pool:?}\n  frame {}",
                    d.service.id,
                    d.backend_id,
                    hex(&frame)
                ));
            }
        }
        *forwarded
            .entry(d.service.id)
            .or_default()
            .entry(d.backend_id)
            .or_default() += 1;
        *bytes.entry((d.service.id, d.backend_id)).or_default() += frame.len() as u64;
    }
    assert!(
        failures.is_empty(),
        "{} of {PACKETS} packets wrong; the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    // Every pooled service carried traffic, and one with two routable members used both.
    for id in &pooled {
        assert!(
            forwarded.get(id).is_some_and(|b| !b.is_empty()),
            "the random run forwarded nothing for pooled service {id}: {forwarded:?}"
        );
    }
    let dns = &forwarded[&pooled[0]];
    assert_eq!(
        dns.keys().copied().collect::<Vec<_>>(),
        vec![1, 2],
        "dns spreads over exactly its pool: {dns:?}"
    );
    // The kernel counted exactly what the replay forwarded, per (service, backend).
    let counted = counted_pairs(&lb);
    let replayed: BTreeMap<(u32, u32), (u64, u64)> = bytes
        .iter()
        .map(|(&(s, b), &n)| ((s, b), (forwarded[&s][&b], n)))
        .collect();
    assert_eq!(counted, replayed, "kernel counters against the replay");
    eprintln!("pools: forwarded per service and backend: {forwarded:?}");
}

/// Every non-zero per-(service, backend) forwarded counter of the kernel, as (packets,
/// bytes), after checking that each backend's total is the sum of its services' counts.
fn counted_pairs(lb: &Loaded) -> BTreeMap<(u32, u32), (u64, u64)> {
    let mut out = BTreeMap::new();
    for &backend in lb.tables.backends.keys() {
        let c = lb
            .maps
            .backend_counters(backend)
            .expect("read BACKEND_STATS");
        assert_eq!(
            c.shared(),
            Default::default(),
            "no service shares row 0 here"
        );
        let mut sum = (0, 0);
        for service in 1..SERVICE_STATS_ROWS {
            let n = c.service(service).expect("a row of its own");
            if n.packets != 0 || n.bytes != 0 {
                out.insert((service, backend), (n.packets, n.bytes));
                sum = (sum.0 + n.packets, sum.1 + n.bytes);
            }
        }
        let total = lb.maps.backend_counter(backend).expect("total");
        assert_eq!(
            (total.packets, total.bytes),
            sum,
            "backend {backend}'s total"
        );
    }
    out
}

#[test]
fn forwarded_packets_count_per_service_and_backend_exactly() {
    let text = pools_config(Some(0));
    let config = Config::parse(&text, "pools config").expect("valid");
    let mut lb = Loaded::new(&text);
    let (dns, l2, kv) = (
        service_id(&lb.tables, "dns", &config),
        service_id(&lb.tables, "l2", &config),
        service_id(&lb.tables, "kv", &config),
    );
    let mut frames = Vec::new();
    for sport in 0..60u16 {
        frames.push(FrameSpec::udp4(VIP4, 20_000 + sport, DNS_PORT, b"query".to_vec()).build());
    }
    for sport in 0..25u16 {
        frames.push(FrameSpec::udp4(VIP4_L2, 30_000 + sport, L2_PORT, b"hello".to_vec()).build());
    }
    for session in 0..40u64 {
        frames.push(FrameSpec::kv4(1_000 + session, session * 7).build());
    }
    let mut want: BTreeMap<(u32, u32), (u64, u64)> = BTreeMap::new();
    for frame in &frames {
        let d = decide(&frame[..], &lb.tables);
        assert!(d.reason.forwards(), "test frame not forwarded: {d:?}");
        assert_eq!(lb.run(frame).action, Action::Tx);
        let n = want.entry((d.service.id, d.backend_id)).or_default();
        *n = (n.0 + 1, n.1 + frame.len() as u64);
    }
    let got = counted_pairs(&lb);
    assert_eq!(got, want, "kernel counters against the replay");
    let per = |service: u32| -> BTreeMap<u32, u64> {
        got.iter()
            .filter(|((s, _), _)| *s == service)
            .map(|((_, b), (p, _))| (*b, *p))
            .collect()
    };
    // l2's pool is backend 3 alone; dns's is 1 and 2, and 60 flows use both; kv has no pool.
    assert_eq!(per(l2), BTreeMap::from([(3, 25)]));
    let dns_counts = per(dns);
    assert_eq!(dns_counts.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(dns_counts.values().sum::<u64>(), 60);
    assert_eq!(per(kv).values().sum::<u64>(), 40);
    assert!(got.keys().all(|(s, _)| [dns, l2, kv].contains(s)));
}

#[test]
fn a_pool_change_rewrites_one_ring_and_moves_no_other_service() {
    let moved = one_service_change(
        "dns",
        Command::JoinPool {
            service: "dns".into(),
            id: 3,
            weight: None,
        },
    );
    assert!(
        moved.values().any(|to| to.contains_key(&3)),
        "some dns traffic moved to its new member 3: {moved:?}"
    );
}

#[test]
fn a_failing_service_probe_moves_that_service_off_the_backend_and_nothing_else() {
    let moved = one_service_change(
        "quic",
        Command::SetServiceHealth {
            service: "quic".into(),
            id: 2,
            healthy: false,
        },
    );
    assert!(
        moved.get(&2).is_some_and(|to| to.keys().all(|b| *b == 3)),
        "quic's traffic on backend 2 moved to 3, its only other member: {moved:?}"
    );
    assert!(
        moved.keys().all(|from| *from == 2),
        "only the traffic backend 2 had moved: {moved:?}"
    );
}

/// Applies `command`, which should change service `name`'s pool alone, to the pools config's
/// state, and checks that the delta rewrites that service's entry, ring and membership only,
/// that kernel and replay agree before and after, and that no packet of any other service
/// changes (output frame and action), packet by packet in the kernel. Returns how `name`'s
/// forwarded packets moved: from backend, to backend, count.
fn one_service_change(name: &str, command: Command) -> BTreeMap<u32, BTreeMap<u32, u64>> {
    // Stickiness off, so every packet is decided by the tables alone.
    let text = pools_config(Some(0));
    let config = Config::parse(&text, "pools config").expect("valid");
    let mut lb = Loaded::new(&text);
    let mut state = ControlState::from_config(&config);
    let before = state.tables();
    let id = service_id(&before, name, &config);
    state
        .apply(&command)
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let after = state.tables();
    let delta = TableDelta::between(&before, &after);
    let touched: Vec<u32> = delta.services.iter().map(|(_, s)| s.id).collect();
    assert!(
        touched.iter().all(|s| *s == id),
        "only {name}'s service entry is rewritten: {touched:?}"
    );
    assert_eq!(
        delta.rings.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![id],
        "only {name}'s ring is rewritten"
    );
    assert!(
        delta.pools.iter().all(|(s, _)| *s == id),
        "only {name}'s membership changes: {:?}",
        delta.pools
    );
    assert!(delta.maglev.is_none(), "the default table is untouched");
    assert!(delta.backends.is_empty() && delta.sessions.is_empty());

    let mut rng = StdRng::seed_from_u64(0x0ddba11);
    let frames: Vec<Vec<u8>> = (0..PACKETS).map(|_| random::frame(&mut rng)).collect();
    let decided_before: Vec<_> = frames.iter().map(|f| decide(&f[..], &lb.tables)).collect();
    let runs_before: Vec<_> = frames.iter().map(|f| lb.run(f)).collect();
    lb.maps.write_delta(&delta).expect("write the delta");
    lb.tables = after;
    let want = Expected::of_snapshot(&lb.tables);
    let mut moved: BTreeMap<u32, BTreeMap<u32, u64>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let d = decide(&frame[..], &lb.tables);
        let k = lb.run(frame);
        if let Err(e) = agrees(&want, frame, &k, &d) {
            failures.push(format!("packet {i}: {e}"));
        }
        if d.service.id == id {
            if let Some(pool) = lb.tables.pools.get(&id) {
                if d.reason.forwards() && !pool.contains(&d.backend_id) {
                    failures.push(format!(
                        "packet {i}: {name} sent to {} outside its pool {pool:?}",
                        d.backend_id
                    ));
                }
            }
            let was = &decided_before[i];
            if d.reason.forwards() && was.reason.forwards() && d.backend_id != was.backend_id {
                *moved
                    .entry(was.backend_id)
                    .or_default()
                    .entry(d.backend_id)
                    .or_default() += 1;
            }
            continue;
        }
        if k.output != runs_before[i].output || k.action != runs_before[i].action {
            failures.push(format!(
                "packet {i} of service {} ({}) changed with {name}'s pool\n  frame {}",
                d.service.id,
                d.reason.name(),
                hex(frame)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} packets wrong; the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    assert!(!moved.is_empty(), "no {name} traffic moved");
    let back = lb.maps.read_snapshot().expect("read back");
    assert_eq!(
        back.rings, lb.tables.rings,
        "the maps hold the rings the tables say"
    );
    assert_eq!(back.pools, lb.tables.pools, "and the memberships");
    moved
}
