//! Snowflake throughput. The format's ceiling is 4,096 IDs per millisecond per
//! machine id (4,096,000/s); one generator should reach at least 95% of it.
//!
//! `cargo bench -p hanul-shared --bench ids`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hanul_shared::embedded::{EmbeddedStore, EmbeddedTable};
use hanul_shared::ids::{Generator, IdConfig, IdService};
use hanul_shared::ports::{ManualClock, SystemClock};

fn generator() -> Generator {
    Generator::new(
        1,
        0,
        u64::MAX,
        Duration::ZERO,
        Duration::from_millis(10),
        Arc::new(SystemClock),
    )
}

fn snowflake(c: &mut Criterion) {
    let mut group = c.benchmark_group("snowflake");
    let g = generator();
    // 40 ms worth of sequence space per iteration: the sequence is exhausted
    // 40 times, so the figure includes the wait for each next millisecond.
    const BATCH: usize = 4096 * 40;
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("one generator, ids/s", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            g.fill(BATCH, |id| acc ^= id.value()).unwrap();
            black_box(acc)
        })
    });
    // The CPU cost alone: a fresh millisecond for every 4,096 IDs, no waiting.
    let clock = ManualClock::new(1_800_000_000_000);
    let uncapped = Generator::new(
        2,
        0,
        u64::MAX,
        Duration::ZERO,
        Duration::from_millis(10),
        clock.clone(),
    );
    group.throughput(Throughput::Elements(4096));
    group.bench_function("one generator, cpu cost (clock advanced per 4096)", |b| {
        b.iter(|| {
            clock.advance(1);
            let mut acc = 0u64;
            uncapped.fill(4096, |id| acc ^= id.value()).unwrap();
            black_box(acc)
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("next_id, one call", |b| {
        let g = generator();
        b.iter(|| black_box(g.next_id().unwrap()))
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let service = IdService::new(
        Arc::new(EmbeddedTable::new(store, "id-leases")),
        Arc::new(SystemClock),
        IdConfig::default(),
    )
    .unwrap();
    runtime.block_on(service.generate(1)).unwrap();
    group.throughput(Throughput::Elements(1000));
    group.bench_function("service, 1000 ids per call (lease held)", |b| {
        b.iter(|| black_box(runtime.block_on(service.generate(1000)).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = snowflake
}
criterion_main!(benches);
