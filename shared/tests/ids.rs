//! Snowflake IDs: ordering, uniqueness across instances, and the machine-id
//! lease (exclusivity, expiry, renewal, release, recycling after a crash).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hanul_shared::aws::{DynamoTable, bootstrap};
use hanul_shared::embedded::{EmbeddedStore, EmbeddedTable};
use hanul_shared::ids::{Generator, IdConfig, IdError, IdService, SnowflakeId};
use hanul_shared::ports::{Clock, ManualClock, SystemClock, Table};
use proptest::prelude::*;

const T0: u64 = 1_800_000_000_000;

fn config(machines: std::ops::RangeInclusive<u16>) -> IdConfig {
    IdConfig {
        machines,
        ..IdConfig::default().with_lease(Duration::from_secs(60))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the clock does (forward, stalls, small and large steps
    /// back), a generator's IDs strictly increase; it errs rather than repeat.
    #[test]
    fn ids_strictly_increase_whatever_the_clock_does(
        steps in prop::collection::vec((-20i64..50, 1usize..600), 1..60)
    ) {
        let clock = ManualClock::new(T0);
        let g = Generator::new(3, 0, u64::MAX, Duration::ZERO, Duration::from_millis(1), clock.clone());
        let mut last: Option<SnowflakeId> = None;
        let mut now = T0 as i64;
        for (delta, count) in steps {
            now += delta;
            clock.set(now as u64);
            // At most 4096 per ms on a frozen clock: ask for what fits.
            let used = match last {
                Some(prev) if prev.unix_ms() == now as u64 => usize::from(prev.sequence()) + 1,
                _ => 0,
            };
            let count = count.min(4096 - used);
            let mut batch = Vec::new();
            match g.fill(count, |id| batch.push(id)) {
                Ok(()) | Err(IdError::ClockMovedBackwards { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            for id in batch {
                if let Some(prev) = last {
                    prop_assert!(id > prev, "{id} after {prev}");
                }
                prop_assert_eq!(id.machine(), 3);
                last = Some(id);
            }
        }
    }

    #[test]
    fn decoding_inverts_encoding(ms in 0u64..(1u64 << 41), machine in 0u16..1024, seq in 0u64..4096) {
        let id = SnowflakeId::from_parts(1_735_689_600_000 + ms, machine, seq).unwrap();
        prop_assert!(id.value() <= i64::MAX as u64);
        let parts = IdService::decode(&id.to_string()).unwrap();
        prop_assert_eq!(parts.timestamp_ms, 1_735_689_600_000 + ms);
        prop_assert_eq!(parts.machine_id, machine);
        prop_assert_eq!(u64::from(parts.sequence), seq);
    }
}

/// 64 instances on one embedded store, each issuing 100,000 IDs at once:
/// each leases its own machine id, so no ID repeats.
#[test]
fn no_duplicates_across_64_concurrent_generators() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let services: Vec<Arc<IdService>> = (0..64)
        .map(|_| {
            let table: Arc<dyn Table> = Arc::new(EmbeddedTable::new(store.clone(), "id-leases"));
            Arc::new(IdService::new(table, Arc::new(SystemClock), IdConfig::default()).unwrap())
        })
        .collect();
    let handles: Vec<_> = services
        .iter()
        .map(|service| {
            let service = service.clone();
            let handle = runtime.handle().clone();
            std::thread::spawn(move || {
                let mut ids = Vec::with_capacity(100_000);
                while ids.len() < 100_000 {
                    let batch = handle.block_on(service.generate(1000)).unwrap();
                    ids.extend(batch.into_iter().map(SnowflakeId::value));
                }
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-generator order");
                ids
            })
        })
        .collect();
    let mut all = HashSet::with_capacity(6_400_000);
    let mut machines = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            machines.insert((id >> 12) & 1023);
            assert!(all.insert(id), "duplicate id {id}");
        }
    }
    assert_eq!(all.len(), 6_400_000);
    assert_eq!(machines.len(), 64, "each instance holds its own machine id");
}

async fn lease_table(
    backend: &str,
    clock: Arc<ManualClock>,
) -> (Arc<dyn Table>, Option<tempfile::TempDir>) {
    match backend {
        "embedded" => {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open_with_clock(dir.path(), clock).unwrap();
            (Arc::new(EmbeddedTable::new(store, "id-leases")), Some(dir))
        }
        _ => {
            let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
                "AWS_ENDPOINT_URL: the aws lease tests need a moto server (run `make test`)",
            );
            let config = hanul_shared::aws::endpoint_config(&endpoint).await;
            let client = aws_sdk_dynamodb::Client::new(&config);
            let name = format!("leases-{}", uuid::Uuid::new_v4().simple());
            bootstrap::ensure_table(&client, &name).await.unwrap();
            (Arc::new(DynamoTable::new(client, name, clock)), None)
        }
    }
}

fn service(table: &Arc<dyn Table>, clock: &Arc<ManualClock>) -> IdService {
    let clock: Arc<dyn Clock> = clock.clone();
    IdService::new(table.clone(), clock, config(7..=7)).unwrap()
}

async fn lease_is_exclusive_and_recycled_after_expiry(backend: &str) {
    let clock = ManualClock::new(T0);
    let (table, _dir) = lease_table(backend, clock.clone()).await;
    let a = service(&table, &clock);
    let b = service(&table, &clock);
    let a_ids = a.generate(100).await.unwrap();
    assert!(a_ids.iter().all(|id| id.machine() == 7));
    assert!(matches!(b.generate(1).await, Err(IdError::NoMachineId)));

    // A is "killed": it stops renewing. Until the lease ends B gets nothing.
    clock.advance(59_000);
    assert!(matches!(b.generate(1).await, Err(IdError::NoMachineId)));
    clock.advance(1_001);
    let b_ids = b.generate(100).await.unwrap();
    let a_max = a_ids.iter().max().copied().unwrap();
    assert!(
        b_ids.iter().all(|id| *id > a_max),
        "a recycled machine id starts after the old lease"
    );
    assert!(b_ids.iter().all(|id| id.unix_ms() > T0 + 60_000));
    // A wakes up: its renewal fails (B owns the lease) and it cannot issue.
    assert!(matches!(a.generate(1).await, Err(IdError::NoMachineId)));
}

#[test]
fn bad_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let table: Arc<dyn Table> = Arc::new(EmbeddedTable::new(store, "id-leases"));
    #[allow(clippy::reversed_empty_ranges)]
    for machines in [5..=4, 0..=1024] {
        let bad = IdConfig {
            machines,
            ..IdConfig::default()
        };
        assert!(matches!(
            IdService::new(table.clone(), Arc::new(SystemClock), bad),
            Err(IdError::InvalidConfig(_))
        ));
    }
}

async fn renewal_keeps_the_lease_and_release_hands_it_over(backend: &str) {
    let clock = ManualClock::new(T0);
    let (table, _dir) = lease_table(backend, clock.clone()).await;
    let a = service(&table, &clock);
    let b = service(&table, &clock);
    a.generate(10).await.unwrap();
    // Past the renewal point, inside the lease: the next call renews.
    clock.advance(45_000);
    a.generate(10).await.unwrap();
    clock.advance(45_000); // 90 s after the first lease began: renewed, still A's.
    let a_ids = a.generate(10).await.unwrap();
    assert!(matches!(b.generate(1).await, Err(IdError::NoMachineId)));
    a.release().await.unwrap();
    assert!(a.machine().await.is_none());
    assert!(
        matches!(a.generate(1).await, Err(IdError::ShuttingDown)),
        "no new lease after a release"
    );
    clock.advance(1);
    let b_ids = b.generate(10).await.unwrap();
    let a_max = a_ids.iter().max().copied().unwrap();
    assert!(b_ids.iter().all(|id| *id > a_max));
}

async fn a_lapsed_lease_stops_issuing_before_it_ends(backend: &str) {
    let clock = ManualClock::new(T0);
    let (table, _dir) = lease_table(backend, clock.clone()).await;
    let a = service(&table, &clock);
    let g = a.generator().await.unwrap();
    let until = g.lease_until_ms();
    clock.set(until - 1);
    // The generator itself refuses inside the safety margin...
    assert!(matches!(g.next_id(), Err(IdError::LeaseExpired)));
    // ...while the service renews first and goes on.
    let ids = a.generate(5).await.unwrap();
    assert_eq!(ids.len(), 5);
    assert!(g.lease_until_ms() > until);
}

mod embedded {
    #[tokio::test]
    async fn lease_is_exclusive_and_recycled_after_expiry() {
        super::lease_is_exclusive_and_recycled_after_expiry("embedded").await;
    }
    #[tokio::test]
    async fn renewal_keeps_the_lease_and_release_hands_it_over() {
        super::renewal_keeps_the_lease_and_release_hands_it_over("embedded").await;
    }
    #[tokio::test]
    async fn a_lapsed_lease_stops_issuing_before_it_ends() {
        super::a_lapsed_lease_stops_issuing_before_it_ends("embedded").await;
    }
}

mod aws {
    #[tokio::test]
    async fn lease_is_exclusive_and_recycled_after_expiry() {
        super::lease_is_exclusive_and_recycled_after_expiry("aws").await;
    }
    #[tokio::test]
    async fn renewal_keeps_the_lease_and_release_hands_it_over() {
        super::renewal_keeps_the_lease_and_release_hands_it_over("aws").await;
    }
    #[tokio::test]
    async fn a_lapsed_lease_stops_issuing_before_it_ends() {
        super::a_lapsed_lease_stops_issuing_before_it_ends("aws").await;
    }
}
