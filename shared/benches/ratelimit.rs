//! Rate-limit decision costs: each algorithm alone (pure), an admitted
//! decision on the embedded store (one durable conditional write), a refusal
//! decided from this instance's copy of the state (the in-process pre-check:
//! no store call), and the governor fallback used while the store is down.
//!
//! `cargo bench -p hanul-shared --bench ratelimit`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use governor::{DefaultKeyedRateLimiter, Quota};
use hanul_shared::embedded::{EmbeddedStore, EmbeddedTable};
use hanul_shared::ports::{SystemClock, Table};
use hanul_shared::ratelimit::algorithm::{Algorithm, Limit, decide};
use hanul_shared::ratelimit::{LimiterConfig, RateLimiter, RuleSet};

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::TokenBucket,
    Algorithm::LeakyBucket,
    Algorithm::FixedWindow,
    Algorithm::SlidingLog,
    Algorithm::SlidingWindow,
];

fn pure(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/pure");
    let limit = Limit {
        limit: 1000,
        window_ms: 60_000,
        burst: 1000,
    };
    for alg in ALGORITHMS {
        group.bench_function(alg.name(), |b| {
            let mut state = None;
            let mut now = 1_800_000_000_000u64;
            b.iter(|| {
                now += 1;
                let (d, next) = decide(alg, state.as_ref(), now, &limit);
                if let Some(n) = next {
                    state = Some(n);
                }
                black_box(d)
            })
        });
    }
    group.finish();
}

fn rules(limit: u64, unit: &str) -> RuleSet {
    let text: String = ALGORITHMS
        .iter()
        .map(|a| {
            let burst = match a {
                Algorithm::TokenBucket | Algorithm::LeakyBucket => format!(", burst: {limit}"),
                _ => String::new(),
            };
            format!(
                "  - {{name: {n}, key: ip, algorithm: {n}, limit: {l}, unit: {unit}{burst}}}\n",
                n = a.name(),
                l = if *a == Algorithm::SlidingLog {
                    limit.min(1000)
                } else {
                    limit
                },
            )
        })
        .collect();
    RuleSet::parse(&format!("rules:\n{text}")).unwrap()
}

fn limiter(dir: &tempfile::TempDir, rules: RuleSet) -> RateLimiter {
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let table: Arc<dyn Table> = Arc::new(EmbeddedTable::new(store, "rate-limits"));
    RateLimiter::new(
        rules,
        table,
        Arc::new(SystemClock),
        LimiterConfig::default(),
    )
}

fn stored(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("ratelimit/embedded store, admitted");
    const N: u64 = 50;
    group.throughput(Throughput::Elements(N));
    let dir = tempfile::tempdir().unwrap();
    // Limits high enough, and keys enough, that every decision admits and
    // writes (a sliding log's state grows to its limit: 1,000 timestamps).
    let l = limiter(&dir, rules(1_000_000_000, "second"));
    for alg in ALGORITHMS {
        let rule = l.rules().get(alg.name()).unwrap();
        let mut i = 0u64;
        group.bench_function(alg.name(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    for _ in 0..N {
                        i += 1;
                        let key = format!("198.51.100.{}", i % 200);
                        let o = l.check(&rule, &key).await.unwrap();
                        assert!(o.decision.allowed);
                    }
                })
            })
        });
    }
    group.finish();
}

fn precheck(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("ratelimit/pre-check, refused in process");
    const N: u64 = 1000;
    group.throughput(Throughput::Elements(N));
    let dir = tempfile::tempdir().unwrap();
    // One request a day: after the first, every decision is a refusal read
    // from the instance's copy of the state.
    let l = limiter(&dir, rules(1, "day"));
    for alg in ALGORITHMS {
        let rule = l.rules().get(alg.name()).unwrap();
        rt.block_on(async { l.check(&rule, "203.0.113.2").await.unwrap() });
        group.bench_function(alg.name(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    for _ in 0..N {
                        let o = l.check(&rule, "203.0.113.2").await.unwrap();
                        assert!(!o.decision.allowed);
                    }
                })
            })
        });
    }
    group.finish();
}

fn fallback(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/governor fallback");
    let limiter: DefaultKeyedRateLimiter<String> =
        DefaultKeyedRateLimiter::keyed(Quota::per_second(NonZeroU32::new(1_000_000).unwrap()));
    let key = "rl#rule#203.0.113.3".to_owned();
    group.bench_function("check_key", |b| {
        b.iter(|| black_box(limiter.check_key(&key).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, pure, stored, precheck, fallback);
criterion_main!(benches);
