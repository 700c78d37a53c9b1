//! Control-plane benchmarks: Maglev build, hashes and the userspace routing decision.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use etherparse::PacketBuilder;
use shardline::{config::Config, snapshot::Snapshot};
use shardline_bench::suite::BENCH_CONFIG;
use shardline_common::{
    consts::MAGLEV_SIZE,
    hash::{flow_hash, mix64},
    maglev::{build, Weighted},
    packet::encode_header,
    route::decide,
};

fn criterion() -> Criterion {
    let (warm_up, measurement, samples) = shardline_bench::settings();
    Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples)
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    // A build takes milliseconds: criterion's minimum of 10 samples is plenty.
    group.sample_size(10);
    for n in [10u32, 100, 1_000] {
        let backends: Vec<Weighted> = (0..n).map(|id| Weighted { id, weight: 1 }).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &backends, |b, backends| {
            b.iter(|| build(black_box(backends), MAGLEV_SIZE))
        });
    }
    group.finish();
}

fn hashes(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    group.bench_function("mix64", |b| {
        b.iter(|| mix64(black_box(0x1234_5678_9abc_def0)))
    });
    let (src, dst) = ([1u32; 4], [2u32; 4]);
    group.bench_function("flow_hash", |b| {
        b.iter(|| {
            flow_hash(
                black_box(&src),
                black_box(&dst),
                black_box(40_000),
                black_box(5353),
                black_box(17),
            )
        })
    });
    group.finish();
}

fn header_frame(session: u64) -> Vec<u8> {
    let mut payload = vec![0u8; 22];
    payload[..20].copy_from_slice(&encode_header(session, 0x1234_5678));
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 10], [10, 100, 0, 1], 64)
        .udp(40_000, 7000)
        .write(&mut out, &payload)
        .expect("etherparse writes the frame");
    out
}

fn route_decide(c: &mut Criterion) {
    let config = Config::parse(BENCH_CONFIG, "bench config").expect("bench config is valid");
    let snapshot = Snapshot::from_config(&config);
    let mut group = c.benchmark_group("route_decide");
    for (name, session) in [
        ("header_placed_v4", 42),
        ("header_default_table_v4", 999_999),
    ] {
        let frame = header_frame(session);
        group.bench_function(name, |b| {
            b.iter(|| decide(black_box(&frame[..]), black_box(&snapshot)))
        });
    }
    group.finish();
}

criterion_group! {
    name = control;
    config = criterion();
    targets = maglev_build, hashes, route_decide
}
criterion_main!(control);
