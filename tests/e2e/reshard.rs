//! Re-sharding under load, in the netns lab: continuous header-mode and flow-mode traffic while
//! the test re-shards more than 100 times (grow, shrink, replace, change scheme, change
//! weights, drain). Every answer names its backend; each must be what the userspace replay of
//! a table generation in force while the request was in flight says, and established flows
//! must keep their backend.

mod load;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use load::{Record, Tally};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use shardline::{
    maps::DataplaneMaps,
    reshard::{Resharder, Swap, SwapKind},
    snapshot::Snapshot,
};
use shardline_common::{
    hash::addr_hash,
    maps::{ip_addr, scheme, SessionKey},
    route::decide,
    verdict::{Action, Reason},
};
use shardline_lab::{
    replay::frame_for,
    topology::{client_alias4, CLIENT4, CLIENT6, VIP4, VIP6},
    traffic::{Session, SessionKind},
    Lab, LabOptions,
};

const BACKENDS: u32 = 5;
const RESHARDS: usize = 120;
const HEADER_SESSIONS: [u64; 6] = [1, 2, 3, 4, 5, 6];
/// Service ids in the lab's configuration: kv (v4), kv6, dns (flow UDP).
const KV: u32 = 1;
const KV6: u32 = 2;
const DNS: u32 = 3;

fn header_key(id: u64) -> SessionKey {
    SessionKey {
        service: if id % 2 == 1 { KV } else { KV6 },
        _pad: 0,
        session: id,
    }
}

/// One re-shard, chosen at random among the kinds the issue names, through the daemon's swap
/// path ([`Resharder::apply`], which the convenience calls below end in).
fn reshard_once(
    r: &mut Resharder,
    maps: &mut DataplaneMaps,
    rng: &mut StdRng,
    current: &mut BTreeMap<u64, Vec<u32>>,
) -> Swap {
    let all: Vec<u32> = (1..=BACKENDS).collect();
    match rng.gen_range(0..10) {
        // Change weights, sometimes draining one backend (weight 0).
        0..=2 => {
            let mut weights: Vec<(u32, u32)> =
                all.iter().map(|id| (*id, rng.gen_range(1..=3))).collect();
            if rng.gen_bool(0.5) {
                let at = rng.gen_range(0..weights.len());
                weights[at].1 = 0;
            }
            r.set_default_weights(maps, &weights, Instant::now())
                .expect("set weights")
        }
        // Place a flow-mode client on a shard set (its established flows must not move).
        3 => {
            let n = rng.gen_range(1..=3);
            let set: Vec<u32> = all.choose_multiple(rng, n).copied().collect();
            let session = addr_hash(&ip_addr(IpAddr::V4(client_alias4(1))));
            r.place(
                maps,
                SessionKey {
                    service: DNS,
                    _pad: 0,
                    session,
                },
                &set,
                scheme::HASH,
                Instant::now(),
            )
            .expect("place flow")
        }
        // Grow, shrink or replace a header session's shard set, or switch its scheme.
        _ => {
            let id = *HEADER_SESSIONS.choose(rng).expect("sessions");
            let mut set = current.get(&id).cloned().unwrap_or_else(|| vec![1]);
            match rng.gen_range(0..3) {
                0 if set.len() < BACKENDS as usize => {
                    let extra = *all
                        .iter()
                        .filter(|b| !set.contains(b))
                        .collect::<Vec<_>>()
                        .choose(rng)
                        .expect("free");
                    set.push(*extra);
                }
                1 if set.len() > 1 => {
                    set.remove(rng.gen_range(0..set.len()));
                }
                _ => {
                    let free: Vec<u32> = all.iter().copied().filter(|b| !set.contains(b)).collect();
                    if let Some(new) = free.choose(rng) {
                        let at = rng.gen_range(0..set.len());
                        set[at] = *new;
                    }
                }
            }
            current.insert(id, set.clone());
            let scheme = if rng.gen_bool(0.5) {
                scheme::HASH
            } else {
                scheme::RANGE
            };
            r.place(maps, header_key(id), &set, scheme, Instant::now())
                .expect("place header session")
        }
    }
}

/// The backends the tables of generations `lo..=hi` route a request to.
fn replayed(
    history: &[Snapshot],
    session: &Session,
    rec: &Record,
    lo: usize,
    hi: usize,
) -> Vec<u32> {
    let frame = frame_for(session, rec.source, rec.destination, rec.key).expect("frame");
    (lo..=hi.min(history.len() - 1))
        .filter_map(|g| {
            let d = decide(&frame[..], &history[g]);
            (d.action() == Action::Tx).then_some(d.backend_id)
        })
        .collect()
}

fn window(rec: &Record) -> (usize, usize) {
    (
        (rec.epoch_sent / 2) as usize,
        rec.epoch_answered.div_ceil(2) as usize,
    )
}

fn drops(maps: &DataplaneMaps) -> BTreeMap<&'static str, u64> {
    maps.reason_counts()
        .expect("counters")
        .into_iter()
        .filter(|(r, _)| r.action() == Action::Drop || *r == Reason::EncapFailed)
        .map(|(r, n)| (r.name(), n))
        .collect()
}

/// Moves the calling thread into the client namespace, pinned to one CPU: flow tables are per
/// CPU, so a flow must be processed on one CPU, as RSS would keep it.
fn enter(client: &shardline_lab::netns::Netns, cpu: usize, cpus: usize) {
    client
        .enter_current_thread()
        .expect("enter the client namespace");
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu % cpus).expect("cpu");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to a CPU");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[test]
fn reshards_under_load_send_every_packet_to_the_replayed_backend() {
    crate::support::require_root();
    let mut lab = Lab::start(&LabOptions {
        tag: format!("rs{}", std::process::id() % 100_000),
        backends: BACKENDS,
        sessions: 6,
        bins: crate::support::bins(),
    })
    .unwrap_or_else(|e| panic!("starting the lab: {e}"));
    let mut maps = DataplaneMaps::open(&lab.pin_dir).expect("open the lab's maps");
    // Starts from what the lab's daemon wrote, as the daemon's own applier does.
    let mut resharder =
        Resharder::adopt(&maps, Duration::from_secs(2)).expect("read the tables in force");
    let before = drops(&maps);
    let history = Mutex::new(vec![resharder.tables()]);
    let epoch = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut applied = Vec::new();
    let client = &lab.topology.client;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let started = Instant::now();
    let tallies: Vec<(&str, Tally)> = std::thread::scope(|scope| {
        let (epoch, stop) = (&epoch, &stop);
        let v4: Vec<u64> = HEADER_SESSIONS
            .iter()
            .copied()
            .filter(|s| s % 2 == 1)
            .collect();
        let v6: Vec<u64> = HEADER_SESSIONS
            .iter()
            .copied()
            .filter(|s| s % 2 == 0)
            .collect();
        let handles = vec![
            scope.spawn(move || {
                enter(client, 0, cpus);
                (
                    "header v4",
                    load::header_sender(CLIENT4.into(), VIP4.into(), &v4, 1, epoch, stop),
                )
            }),
            scope.spawn(move || {
                enter(client, 1, cpus);
                (
                    "header v6",
                    load::header_sender(CLIENT6.into(), VIP6.into(), &v6, 2, epoch, stop),
                )
            }),
            scope.spawn(move || {
                enter(client, 0, cpus);
                (
                    "flow udp",
                    load::flow_sender(client_alias4(1).into(), VIP4.into(), 8, epoch, stop),
                )
            }),
            scope.spawn(move || {
                enter(client, 1, cpus);
                (
                    "flow tcp",
                    load::tcp_sender(client_alias4(2).into(), VIP4.into(), 4, epoch, stop),
                )
            }),
        ];
        std::thread::sleep(Duration::from_millis(300));
        let mut rng = StdRng::seed_from_u64(7);
        let mut current = BTreeMap::new();
        for _ in 0..RESHARDS {
            std::thread::sleep(Duration::from_millis(80));
            let g = history.lock().expect("history").len() as u64 - 1;
            epoch.store(2 * g + 1, Ordering::SeqCst);
            applied.push(reshard_once(
                &mut resharder,
                &mut maps,
                &mut rng,
                &mut current,
            ));
            history.lock().expect("history").push(resharder.tables());
            epoch.store(2 * g + 2, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().expect("sender panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    let history = history.into_inner().expect("history");
    let after = drops(&maps);
    // Taken as traffic stops: checking a few hundred thousand answers below can outlast the
    // handoff window on a loaded machine.
    let live: Vec<_> = resharder.handoffs(Instant::now()).collect();

    // Check every answer against the replay of the generations in force while it was in flight.
    let header_session = |id: u64, v6: bool| Session {
        label: String::new(),
        kind: SessionKind::Header { id },
        source: if v6 { CLIENT6.into() } else { CLIENT4.into() },
        vip: if v6 { VIP6.into() } else { VIP4.into() },
    };
    let mut wrong = Vec::new();
    // Answers the first generation would have sent elsewhere: proof the re-shards moved traffic.
    let mut moved = 0u64;
    let (mut sent, mut answered, mut lost, mut broken) = (0, 0, 0, 0);
    for (name, tally) in &tallies {
        sent += tally.sent;
        answered += tally.records.len() as u64;
        lost += tally.lost;
        broken += tally.broken;
        let mut stuck: HashMap<u64, u32> = HashMap::new();
        for rec in &tally.records {
            let (lo, hi) = window(rec);
            let ok = match *name {
                "header v4" | "header v6" => {
                    let session = header_session(rec.session, rec.destination.is_ipv6());
                    if replayed(&history, &session, rec, 0, 0) != [rec.backend] {
                        moved += 1;
                    }
                    replayed(&history, &session, rec, lo, hi).contains(&rec.backend)
                }
                _ => match stuck.get(&rec.key) {
                    // An established flow keeps its backend whatever the tables say now.
                    Some(first) => *first == rec.backend,
                    None => {
                        let kind = if *name == "flow tcp" {
                            SessionKind::FlowTcp
                        } else {
                            SessionKind::FlowUdp
                        };
                        let session = Session {
                            label: String::new(),
                            kind,
                            source: rec.source.ip(),
                            vip: VIP4.into(),
                        };
                        stuck.insert(rec.key, rec.backend);
                        replayed(&history, &session, rec, lo, hi).contains(&rec.backend)
                    }
                },
            };
            if !ok {
                wrong.push((*name, *rec));
            }
        }
    }
    let session_flips: Vec<Duration> = applied
        .iter()
        .filter(|a| a.kind == SwapKind::Session)
        .map(|a| a.flip)
        .collect();
    let maglev: Vec<&Swap> = applied
        .iter()
        .filter(|a| a.kind == SwapKind::Maglev)
        .collect();
    println!(
        "re-shards: {} ({} session updates, median {:?}; {} Maglev swaps, build median {:?}, flip median {:?}, max {:?})",
        applied.len(),
        session_flips.len(),
        median(session_flips.clone()),
        maglev.len(),
        median(maglev.iter().map(|a| a.build).collect()),
        median(maglev.iter().map(|a| a.flip).collect()),
        maglev.iter().map(|a| a.flip).max().unwrap_or_default(),
    );
    println!(
        "traffic: {sent} requests in {elapsed:.1?} ({:.0} packets/s to the VIP), {answered} answered, {lost} unanswered (outside shardline: see drops), {broken} TCP connections broken",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!("{moved} header-mode answers came from a backend generation 0 would not have chosen");
    println!("shardline drop counters before {before:?} after {after:?}");

    assert!(applied.len() >= 100, "only {} re-shards", applied.len());
    assert!(
        maglev.len() >= 10 && session_flips.len() >= 50,
        "re-shard mix too narrow"
    );
    assert!(
        wrong.is_empty(),
        "{} of {answered} answers from a backend no generation in flight names, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(before, after, "shardline dropped packets while re-sharding");
    assert_eq!(broken, 0, "a TCP connection broke across re-shards");
    assert!(
        moved > answered / 10,
        "the re-shards hardly moved traffic ({moved} answers)"
    );
    assert!(
        answered > 10_000,
        "too little traffic to prove anything: {answered} answers"
    );
    assert!(lost * 100 <= sent, "{lost} of {sent} requests unanswered");
    // Header-mode moves publish their previous owners for the handoff window.
    assert!(!live.is_empty(), "no handoff published for the last moves");
    assert!(live
        .iter()
        .all(|h| h.previous.generation < h.current.generation));
    lab.kill_daemon();
}

/// The benchmark's swap-under-traffic run (`shardline_bench::suite::misroute`): Maglev flips and
/// session re-placements racing packets on another core misroute none of them.
#[test]
fn swaps_racing_packets_misroute_none() {
    crate::support::require_root();
    let r = shardline_bench::suite::misroute::run(true).expect("swap under traffic");
    assert!(r["swaps"].as_u64().unwrap_or(0) > 0, "{r}");
    assert_eq!(r["misrouted"], 0, "{r}");
    assert_eq!(r["not_forwarded"], 0, "{r}");
}
