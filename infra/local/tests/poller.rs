//! The local event source mapping, on both backends: batches, partial batch
//! failures, retries with backoff, dead-lettering, whole-batch failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use hanul_local::poller::{self, PollerConfig, SqsHandler};
use hanul_shared::embedded::EmbeddedStore;
use hanul_shared::platform::Platform;
use hanul_shared::ports::{OutgoingMessage, QueueSpec};
use lambda_runtime::LambdaEvent;
use tokio::sync::watch;

type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// Fails "poison" always, "flaky" on its first two deliveries, and the whole
/// batch when it holds "crash" on a first delivery.
fn handler(seen: Seen) -> SqsHandler {
    Arc::new(move |event: LambdaEvent<SqsEvent>| {
        let seen = seen.clone();
        Box::pin(async move {
            let count = |r: &aws_lambda_events::event::sqs::SqsMessage| -> u32 {
                r.attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0)
            };
            // Crash before doing any work, so nothing in the batch counts.
            if event
                .payload
                .records
                .iter()
                .any(|r| r.body.as_deref() == Some("crash") && count(r) == 1)
            {
                return Err("the worker crashed".into());
            }
            if event
                .payload
                .records
                .iter()
                .any(|r| r.body.as_deref() == Some("panic") && count(r) == 1)
            {
                panic!("the worker panicked");
            }
            let mut failures = Vec::new();
            for record in &event.payload.records {
                let body = record.body.clone().unwrap_or_default();
                let count = count(record);
                assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
                *seen.lock().unwrap().entry(body.clone()).or_default() += 1;
                if body == "poison" || (body == "flaky" && count <= 2) {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = record.message_id.clone().unwrap_or_default();
                    failures.push(failure);
                }
            }
            let mut response = SqsBatchResponse::default();
            response.batch_item_failures = failures;
            Ok(response)
        })
    })
}

async fn retries_then_dead_letters(platform: Platform) {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let spec = QueueSpec::new(format!("work-{suffix}"))
        .with_visibility(Duration::from_secs(5))
        .with_dead_letter(format!("work-dlq-{suffix}"), 3);
    let queue = platform.queue(&spec).await.unwrap();
    let dlq = platform.dead_letter_queue(&spec).await.unwrap().unwrap();
    let seen: Seen = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let config = PollerConfig {
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_millis(400),
        ..PollerConfig::default()
    };
    let task = tokio::spawn(poller::run(
        queue.clone(),
        handler(seen.clone()),
        config,
        stopped,
    ));

    // Phase 1: a batch whose handler crashes (an error or a panic) is retried whole.
    for body in ["crash", "panic", "ok-0"] {
        queue.send(OutgoingMessage::new(body)).await.unwrap();
    }
    for _ in 0..100 {
        let seen = seen.lock().unwrap().clone();
        if seen.get("crash") == Some(&1)
            && seen.get("panic") == Some(&1)
            && seen.get("ok-0") == Some(&1)
        {
            break;
        }
        drop(seen);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Phase 2: partial batch failures, retries, the dead-letter queue.
    for body in ["ok-1", "ok-2", "flaky", "poison"] {
        queue.send(OutgoingMessage::new(body)).await.unwrap();
    }

    let mut dead = Vec::new();
    for _ in 0..60 {
        dead.extend(
            dlq.receive(10, Duration::from_millis(500), None)
                .await
                .unwrap(),
        );
        let done = {
            let seen = seen.lock().unwrap();
            seen.get("flaky") == Some(&3) && seen.get("crash") == Some(&1)
        };
        if done && !dead.is_empty() {
            break;
        }
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.get("ok-0"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("ok-1"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("ok-2"), Some(&1), "{seen:?}");
    assert_eq!(
        seen.get("flaky"),
        Some(&3),
        "failed twice, then sent: {seen:?}"
    );
    assert_eq!(
        seen.get("crash"),
        Some(&1),
        "the crashed batch was retried: {seen:?}"
    );
    assert_eq!(
        seen.get("poison"),
        Some(&3),
        "three receives, then the DLQ: {seen:?}"
    );
    let dead: Vec<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(dead, ["poison"]);
    assert_eq!(queue.depth().await.unwrap(), 0);
}

#[test]
fn backoff_grows_and_is_capped() {
    let config = PollerConfig {
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(10),
        ..PollerConfig::default()
    };
    for (count, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (30, 10)] {
        let d = config.backoff(count);
        let full = Duration::from_secs(full);
        assert!(
            d >= full / 2 && d <= full,
            "receive {count}: {d:?} not in [{:?}, {full:?}]",
            full / 2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_retries_then_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    retries_then_dead_letters(Platform::embedded(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_retries_then_dead_letters() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL: the aws poller test needs a moto server (run `make test`)");
    let config = hanul_shared::aws::endpoint_config(&endpoint).await;
    let prefix = format!("p{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    retries_then_dead_letters(Platform::aws(&config, Some(prefix))).await;
}

/// A FIFO batch that takes long holds back its own group only: another
/// group's messages are handled meanwhile, and each group stays in order.
async fn a_slow_group_does_not_hold_back_others(platform: Platform) {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let spec =
        QueueSpec::new(format!("groups-{suffix}.fifo")).with_visibility(Duration::from_secs(30));
    let queue = platform.queue(&spec).await.unwrap();
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = order.clone();
    let handler: SqsHandler = Arc::new(move |event: LambdaEvent<SqsEvent>| {
        let seen = seen.clone();
        Box::pin(async move {
            for record in &event.payload.records {
                let body = record.body.clone().unwrap_or_default();
                if body == "slow-1" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                seen.lock().unwrap().push(body);
            }
            Ok(SqsBatchResponse::default())
        })
    });
    let (stop, stopped) = watch::channel(false);
    let config = PollerConfig {
        batch_size: 1,
        ..PollerConfig::default()
    };
    let task = tokio::spawn(poller::run(queue.clone(), handler, config, stopped));
    for (i, body) in ["slow-1", "slow-2", "fast-1", "fast-2"].iter().enumerate() {
        let group = body.split('-').next().unwrap_or_default();
        queue
            .send(OutgoingMessage::new(*body).group(group, format!("d{i}")))
            .await
            .unwrap();
    }
    for _ in 0..100 {
        if order.lock().unwrap().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        ["fast-1", "fast-2", "slow-1", "slow-2"],
        "the fast group ran while the slow batch was in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_slow_group_does_not_hold_back_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    a_slow_group_does_not_hold_back_others(Platform::embedded(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_slow_group_does_not_hold_back_others() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL: the aws poller test needs a moto server (run `make test`)");
    let config = hanul_shared::aws::endpoint_config(&endpoint).await;
    let prefix = format!("p{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    a_slow_group_does_not_hold_back_others(Platform::aws(&config, Some(prefix))).await;
}
