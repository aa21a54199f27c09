//! The delivery worker's cost per message on the embedded store (claim,
//! provider call to the durable outbox, attempt record and status: every
//! write fsynced), one at a time and ten at once (a batch, delivered
//! concurrently as the worker does); and the cost of accepting a send.
//!
//! `cargo bench -p hanul-shared --bench notify`

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hanul_shared::embedded::{EmbeddedQueue, EmbeddedStore, EmbeddedTable, Outbox};
use hanul_shared::notify::service::DeliveryMessage;
use hanul_shared::notify::{
    Channel, DeliveryQueue, DeliveryWorker, NotifyService, SendRequest, Senders, Settings,
    WorkerConfig,
};
use hanul_shared::ports::{Queue, SystemClock, Table};

struct Setup {
    worker: DeliveryWorker,
    service: NotifyService,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let table: Arc<dyn Table> = Arc::new(EmbeddedTable::new(store.clone(), "notify"));
    let outbox = Arc::new(Outbox::new(
        Arc::new(EmbeddedTable::new(store.clone(), "outbox")),
        Arc::new(SystemClock),
    ));
    let senders = Senders::all(outbox);
    let queues: HashMap<DeliveryQueue, Arc<dyn Queue>> = DeliveryQueue::ALL
        .into_iter()
        .map(|q| {
            (
                q,
                Arc::new(EmbeddedQueue::new(
                    store.clone(),
                    q.spec(hanul_shared::notify::DEFAULT_MAX_ATTEMPTS),
                )) as Arc<dyn Queue>,
            )
        })
        .collect();
    Setup {
        worker: DeliveryWorker::new(
            table.clone(),
            Arc::new(SystemClock),
            senders,
            WorkerConfig::from_settings(|_| None).unwrap(),
        ),
        service: NotifyService::new(table, Arc::new(SystemClock), queues, None),
        _dir: dir,
    }
}

fn message(i: u64) -> String {
    serde_json::to_string(&DeliveryMessage {
        delivery_id: format!("bench{i:020}-00"),
        notification_id: format!("bench{i:020}"),
        user_id: "bench".into(),
        channel: Channel::Email,
        platform: None,
        device_id: None,
        to: "bench@example.com".into(),
        title: "Bench".into(),
        body: "A notification body of a typical length, about sixty characters.".into(),
        data: None,
        category: "orders".into(),
    })
    .unwrap()
}

fn worker(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = setup();
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "bench@example.com"})).unwrap();
    rt.block_on(s.service.put_settings("bench", settings))
        .unwrap();
    let mut group = c.benchmark_group("notify/worker");
    let mut i = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("one message", |b| {
        b.iter(|| {
            i += 1;
            let body = message(i);
            rt.block_on(s.worker.deliver(&body, 1, 0)).unwrap()
        })
    });
    group.throughput(Throughput::Elements(10));
    group.bench_function("a batch of ten, concurrently", |b| {
        b.iter(|| {
            let bodies: Vec<String> = (0..10)
                .map(|_| {
                    i += 1;
                    message(i)
                })
                .collect();
            rt.block_on(futures::future::join_all(
                bodies.iter().map(|body| s.worker.deliver(body, 1, 0)),
            ))
        })
    });
    group.finish();
}

fn accept(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = setup();
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "bench@example.com"})).unwrap();
    rt.block_on(s.service.put_settings("bench", settings))
        .unwrap();
    let mut group = c.benchmark_group("notify/accept");
    let mut i = 0u64;
    group.bench_function("send: one email delivery", |b| {
        b.iter(|| {
            i += 1;
            let request: SendRequest = serde_json::from_value(serde_json::json!({
                "eventId": format!("bench-{i}"), "userId": "bench", "category": "orders",
                "channels": ["email"], "title": "Bench", "body": "Body",
            }))
            .unwrap();
            rt.block_on(s.service.send(request)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, worker, accept);
criterion_main!(benches);
