//! The notification service and delivery worker on both table adapters:
//! the scheduler, idempotent delivery, dead tokens, racing duplicates.

#[path = "common/gated.rs"]
mod gated;
#[allow(dead_code)]
#[path = "contract/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use gated::{Call, Gate, Gated};
use hanul_shared::embedded::{EmbeddedQueue, EmbeddedStore};
use hanul_shared::notify::model::RegisterDevice;
use hanul_shared::notify::{
    DEFAULT_MAX_ATTEMPTS, Delivered, DeliveryQueue, DeliveryWorker, NotifyService, SendRequest,
    Senders, Settings, WorkerConfig,
};
use hanul_shared::ports::table::TableError;
use hanul_shared::ports::{
    DevicePlatform, EmailMessage, EmailSender, ManualClock, PushMessage, PushSender, Queue,
    SendError, SmsMessage, SmsSender, Table,
};

const T0: u64 = 1_800_000_000_000;

struct Fixture {
    service: Arc<NotifyService>,
    queues: HashMap<DeliveryQueue, Arc<dyn Queue>>,
    clock: Arc<ManualClock>,
    table: Arc<dyn Table>,
    _dir: tempfile::TempDir,
}

fn fixture(table: Arc<dyn Table>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    let queues: HashMap<DeliveryQueue, Arc<dyn Queue>> = DeliveryQueue::ALL
        .into_iter()
        .map(|q| {
            (
                q,
                Arc::new(EmbeddedQueue::new(
                    store.clone(),
                    q.spec(DEFAULT_MAX_ATTEMPTS),
                )) as Arc<dyn Queue>,
            )
        })
        .collect();
    let service = Arc::new(NotifyService::new(
        table.clone(),
        clock.clone(),
        queues.clone(),
        None,
    ));
    Fixture {
        service,
        queues,
        clock,
        table,
        _dir: dir,
    }
}

fn request(event: &str, channels: &str) -> SendRequest {
    serde_json::from_value(serde_json::json!({
        "eventId": event, "userId": "nina", "category": "orders",
        "channels": serde_json::from_str::<serde_json::Value>(channels).unwrap(),
        "title": "Hi", "body": "There",
    }))
    .unwrap()
}

/// Counts sends; push and SMS answer as told.
#[derive(Default)]
struct Provider {
    sent: AtomicU32,
    dead_token: bool,
    sms_down: bool,
    revived_pushes: AtomicU32,
    /// The user registers the device again while its dead push is out.
    reregister: Option<(Arc<NotifyService>, Arc<ManualClock>, RegisterDevice)>,
}

#[async_trait]
impl PushSender for Provider {
    async fn push(&self, m: &PushMessage) -> Result<String, SendError> {
        if self.dead_token {
            if let Some((service, clock, device)) = &self.reregister {
                clock.advance(1_000);
                service
                    .register_device("nina", device.clone())
                    .await
                    .unwrap();
            }
            return Err(SendError::InvalidRecipient("BadDeviceToken".into()));
        }
        if m.revived {
            self.revived_pushes.fetch_add(1, Ordering::SeqCst);
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok("p".into())
    }
}

#[async_trait]
impl SmsSender for Provider {
    async fn sms(&self, _: &SmsMessage) -> Result<String, SendError> {
        if self.sms_down {
            return Err(SendError::Transient("503 from the SMS gateway".into()));
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok("s".into())
    }
}

#[async_trait]
impl EmailSender for Provider {
    async fn email(&self, _: &EmailMessage) -> Result<String, SendError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok("e".into())
    }
}

fn worker(f: &Fixture, provider: Arc<Provider>) -> DeliveryWorker {
    DeliveryWorker::new(
        f.table.clone(),
        f.clock.clone(),
        Senders::all(provider),
        WorkerConfig::from_settings(|_| None).unwrap(),
    )
}

async fn take(f: &Fixture, q: DeliveryQueue) -> Vec<String> {
    f.queues[&q]
        .receive(10, std::time::Duration::ZERO, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect()
}

async fn the_scheduler_queues_what_is_due_and_nothing_early(table: Arc<dyn Table>) {
    let f = fixture(table);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "nina@example.com"})).unwrap();
    f.service.put_settings("nina", settings).await.unwrap();
    let mut later = request("later", r#"["email"]"#);
    // An hour ahead: past SQS's 15-minute delay, so it waits in the table.
    later.send_at = Some("2027-01-15T09:00:00Z".into());
    f.clock.set(1_800_000_000_000); // 2027-01-15T08:00:00Z
    let sent = f.service.send(later).await.unwrap();
    assert_eq!(sent.status, "scheduled");
    let email = &f.queues[&DeliveryQueue::Email];
    assert_eq!(email.depth().await.unwrap(), 0);
    assert_eq!(f.service.drain_schedule().await.unwrap(), 0, "not yet");
    f.clock.advance(50 * 60 * 1000); // 08:50: due within 15 minutes
    assert_eq!(f.service.drain_schedule().await.unwrap(), 1);
    assert_eq!(email.depth().await.unwrap(), 1, "queued with a delay");
    assert_eq!(
        f.service.drain_schedule().await.unwrap(),
        0,
        "and only once"
    );
    assert!(
        take(&f, DeliveryQueue::Email).await.is_empty(),
        "the delay holds it back"
    );
    f.clock.advance(10 * 60 * 1000 + 1000);
    assert_eq!(
        take(&f, DeliveryQueue::Email).await.len(),
        1,
        "visible when due"
    );
}

async fn a_redelivered_message_is_sent_once(table: Arc<dyn Table>) {
    let f = fixture(table);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"phone": "+821012345678"})).unwrap();
    f.service.put_settings("nina", settings).await.unwrap();
    f.service.send(request("otp", r#"["sms"]"#)).await.unwrap();
    let body = take(&f, DeliveryQueue::Sms).await.remove(0);
    let provider = Arc::new(Provider::default());
    let w = worker(&f, provider.clone());
    assert_eq!(w.deliver(&body, 1, T0).await.unwrap(), Delivered::Sent);
    assert_eq!(w.deliver(&body, 2, T0).await.unwrap(), Delivered::Duplicate);
    assert_eq!(provider.sent.load(Ordering::SeqCst), 1);
    assert!(w.deliver("{garbage", 1, T0).await.is_err());
}

async fn the_configured_last_attempt_dead_letters(table: Arc<dyn Table>) {
    let f = fixture(table);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"phone": "+821012345678"})).unwrap();
    f.service.put_settings("nina", settings).await.unwrap();
    let sent = f.service.send(request("otp", r#"["sms"]"#)).await.unwrap();
    let body = take(&f, DeliveryQueue::Sms).await.remove(0);
    let provider = Arc::new(Provider {
        sms_down: true,
        ..Provider::default()
    });
    let config = WorkerConfig::from_settings(|n| (n == "NOTIFY_MAX_ATTEMPTS").then(|| "2".into()));
    let w = DeliveryWorker::new(
        f.table.clone(),
        f.clock.clone(),
        Senders::all(provider),
        config.unwrap(),
    );
    let status = |attempt: u32| {
        let (w, body, f, id) = (&w, &body, &f, &sent.notification_id);
        async move {
            let outcome = w.deliver(body, attempt, T0).await.unwrap();
            assert!(matches!(outcome, Delivered::Retry { .. }), "{outcome:?}");
            let s = f.service.status(id).await.unwrap();
            (s.deliveries[0].status.clone(), s.deliveries[0].attempts)
        }
    };
    assert_eq!(status(1).await, ("retrying".to_owned(), 1));
    assert_eq!(status(2).await, ("dead_lettered".to_owned(), 2));
    assert_eq!(DeliveryQueue::Sms.spec(2).max_receive_count, 2);
    let bad = WorkerConfig::from_settings(|n| (n == "NOTIFY_MAX_ATTEMPTS").then(|| "0".into()));
    assert!(bad.unwrap_err().contains("NOTIFY_MAX_ATTEMPTS"));
}

async fn a_dead_token_disables_the_device(table: Arc<dyn Table>) {
    let f = fixture(table);
    let device = RegisterDevice {
        platform: DevicePlatform::Ios,
        token: "cd".repeat(32),
    };
    f.service
        .register_device("nina", device.clone())
        .await
        .unwrap();
    let sent = f
        .service
        .send(request("ping", r#"["push"]"#))
        .await
        .unwrap();
    let body = take(&f, DeliveryQueue::PushIos).await.remove(0);
    let provider = Arc::new(Provider {
        dead_token: true,
        ..Provider::default()
    });
    let outcome = worker(&f, provider).deliver(&body, 1, T0).await.unwrap();
    assert!(matches!(outcome, Delivered::Dropped(_)), "{outcome:?}");
    let devices = f.service.devices("nina").await.unwrap();
    assert!(!devices[0].enabled, "the device is off");
    let status = f.service.status(&sent.notification_id).await.unwrap();
    assert_eq!(status.deliveries[0].status, "failed");
    assert_eq!(
        status.deliveries[0].reason.as_deref(),
        Some("invalid_recipient")
    );
    // The next push has no live device; registering again turns it back on.
    let next = f
        .service
        .send(request("ping-2", r#"["push"]"#))
        .await
        .unwrap();
    assert_eq!(next.status, "skipped");
    f.service.register_device("nina", device).await.unwrap();
    assert!(f.service.devices("nina").await.unwrap()[0].enabled);

    // Its next push tells the provider the device came back, so a disabled
    // endpoint may be turned on again.
    f.service
        .send(request("ping-3", r#"["push"]"#))
        .await
        .unwrap();
    let body = take(&f, DeliveryQueue::PushIos).await.remove(0);
    let provider = Arc::new(Provider::default());
    let outcome = worker(&f, provider.clone())
        .deliver(&body, 1, T0)
        .await
        .unwrap();
    assert_eq!(outcome, Delivered::Sent);
    assert_eq!(provider.revived_pushes.load(Ordering::SeqCst), 1);
    // Once: the push went through, so the endpoint is live again.
    f.service
        .send(request("ping-4", r#"["push"]"#))
        .await
        .unwrap();
    let body = take(&f, DeliveryQueue::PushIos).await.remove(0);
    worker(&f, provider.clone())
        .deliver(&body, 1, T0)
        .await
        .unwrap();
    assert_eq!(provider.revived_pushes.load(Ordering::SeqCst), 1);
}

async fn a_dead_token_answer_leaves_a_newer_registration_alone(table: Arc<dyn Table>) {
    let f = fixture(table);
    let device = RegisterDevice {
        platform: DevicePlatform::Ios,
        token: "ef".repeat(32),
    };
    f.service
        .register_device("nina", device.clone())
        .await
        .unwrap();
    f.service
        .send(request("stale", r#"["push"]"#))
        .await
        .unwrap();
    let body = take(&f, DeliveryQueue::PushIos).await.remove(0);
    // The provider refuses the token, but the user registered the device
    // again while the push was out: that registration stands.
    let provider = Arc::new(Provider {
        dead_token: true,
        reregister: Some((f.service.clone(), f.clock.clone(), device)),
        ..Provider::default()
    });
    let outcome = worker(&f, provider).deliver(&body, 1, T0).await.unwrap();
    assert!(matches!(outcome, Delivered::Dropped(_)), "{outcome:?}");
    assert!(f.service.devices("nina").await.unwrap()[0].enabled);
}

async fn racing_sends_of_one_event_make_one_notification(table: Arc<dyn Table>) {
    let f = fixture(table);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "nina@example.com"})).unwrap();
    f.service.put_settings("nina", settings).await.unwrap();
    let sends = (0..10).map(|_| {
        let service = f.service.clone();
        tokio::spawn(async move { service.send(request("race", r#"["email"]"#)).await.unwrap() })
    });
    let mut ids = Vec::new();
    let mut created = 0;
    for s in sends {
        let sent = s.await.unwrap();
        created += usize::from(sent.created);
        ids.push(sent.notification_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    assert_eq!(
        take(&f, DeliveryQueue::Email).await.len(),
        1,
        "one delivery queued"
    );
}

async fn the_scheduler_catches_up_after_an_outage(table: Arc<dyn Table>) {
    let f = fixture(table);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "nina@example.com"})).unwrap();
    f.service.put_settings("nina", settings).await.unwrap();
    f.clock.set(1_800_000_000_000); // 2027-01-15T08:00:00Z
    assert_eq!(
        f.service.drain_schedule().await.unwrap(),
        0,
        "the first run sets the watermark"
    );
    let mut later = request("after-outage", r#"["email"]"#);
    later.send_at = Some("2027-01-15T09:00:00Z".into());
    f.service.send(later).await.unwrap();
    // The scheduler is down for ten hours; the due item is long past.
    f.clock.advance(10 * 3600 * 1000);
    assert_eq!(f.service.drain_schedule().await.unwrap(), 1);
    assert_eq!(take(&f, DeliveryQueue::Email).await.len(), 1);
}

async fn event_ids_belong_to_their_recipient(table: Arc<dyn Table>) {
    let f = fixture(table);
    let a = f
        .service
        .send(request("order-42", r#"["email"]"#))
        .await
        .unwrap();
    let mut other = request("order-42", r#"["email"]"#);
    other.user_id = "omar".into();
    let b = f.service.send(other).await.unwrap();
    assert_ne!(a.notification_id, b.notification_id);
    assert!(b.created);
}

async fn a_queued_delivery_follows_later_opt_outs(table: Arc<dyn Table>) {
    let f = fixture(table);
    let on: Settings =
        serde_json::from_value(serde_json::json!({"phone": "+821012345678"})).unwrap();
    f.service.put_settings("nina", on).await.unwrap();
    let sent = f
        .service
        .send(request("promo", r#"["sms"]"#))
        .await
        .unwrap();
    let body = take(&f, DeliveryQueue::Sms).await.remove(0);
    let off: Settings = serde_json::from_value(
        serde_json::json!({"phone": "+821012345678", "channels": {"sms": false}}),
    )
    .unwrap();
    f.service.put_settings("nina", off).await.unwrap();
    let provider = Arc::new(Provider::default());
    let outcome = worker(&f, provider.clone())
        .deliver(&body, 1, T0)
        .await
        .unwrap();
    assert_eq!(outcome, Delivered::Dropped("channel_off".into()));
    assert_eq!(provider.sent.load(Ordering::SeqCst), 0);
    let status = f.service.status(&sent.notification_id).await.unwrap();
    assert_eq!(status.deliveries[0].status, "skipped");
}

async fn a_send_that_could_not_queue_is_queued_by_the_scheduler(table: Arc<dyn Table>) {
    let f = fixture(table.clone());
    // The same table, but no queues: as if the process died after the commit.
    let broken = NotifyService::new(table, f.clock.clone(), HashMap::new(), None);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "nina@example.com"})).unwrap();
    broken.put_settings("nina", settings).await.unwrap();
    let sent = broken
        .send(request("lost-enqueue", r#"["email"]"#))
        .await
        .unwrap();
    assert_eq!(sent.status, "queued", "accepted: the delivery is recorded");
    assert_eq!(
        f.service.drain_schedule().await.unwrap(),
        0,
        "left to its send at first"
    );
    f.clock.advance(31_000);
    assert_eq!(f.service.drain_schedule().await.unwrap(), 1);
    assert_eq!(take(&f, DeliveryQueue::Email).await.len(), 1);
    assert_eq!(f.service.drain_schedule().await.unwrap(), 0);
}

async fn a_late_commit_into_the_last_hour_is_still_drained(table: Arc<dyn Table>) {
    let f = fixture(table.clone());
    let hour = 1_800_000_000_000; // 2027-01-15T08:00:00Z
    // Another function, its clock ten seconds behind, that died after its
    // commit: its delivery is due in the hour before the scheduler's.
    let behind = ManualClock::new(hour - 10_000);
    let broken = NotifyService::new(table, behind, HashMap::new(), None);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "nina@example.com"})).unwrap();
    broken.put_settings("nina", settings).await.unwrap();
    f.clock.set(hour + 20_000);
    assert_eq!(f.service.drain_schedule().await.unwrap(), 0);
    broken
        .send(request("late-commit", r#"["email"]"#))
        .await
        .unwrap();
    f.clock.advance(60_000);
    assert_eq!(f.service.drain_schedule().await.unwrap(), 1);
    assert_eq!(take(&f, DeliveryQueue::Email).await.len(), 1);
}

/// Cancels the next transactions as conflicts, as DynamoDB cancels the
/// loser of two racing transactions on one item.
#[derive(Default)]
struct Conflicts {
    left: AtomicU32,
    /// What commits first and wins the race: run before the next conflict.
    winner: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

#[async_trait]
impl Gate for Conflicts {
    async fn admit(&self, call: Call) -> Result<(), TableError> {
        let conflict = call == Call::Transaction
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if !conflict {
            return Ok(());
        }
        let winner = self.winner.lock().unwrap().take();
        if let Some(winner) = winner {
            winner.await;
        }
        Err(TableError::Throttled)
    }
}

async fn a_send_that_loses_a_transaction_conflict_answers_the_winner(table: Arc<dyn Table>) {
    let f = fixture(table.clone());
    let conflicting = Arc::new(Gated {
        inner: table,
        gate: Conflicts::default(),
    });
    let other = NotifyService::new(conflicting.clone(), f.clock.clone(), f.queues.clone(), None);
    let settings: Settings =
        serde_json::from_value(serde_json::json!({"email": "nina@example.com"})).unwrap();
    f.service.put_settings("nina", settings).await.unwrap();

    // Both read the event id as new; the winner commits first and the
    // loser's transaction is cancelled as a conflict. The loser answers with
    // the winner's notification, not a 503.
    let won = Arc::new(std::sync::Mutex::new(None));
    let (service, slot) = (f.service.clone(), won.clone());
    *conflicting.gate.winner.lock().unwrap() = Some(Box::pin(async move {
        let sent = service
            .send(request("raced", r#"["email"]"#))
            .await
            .unwrap();
        *slot.lock().unwrap() = Some(sent.notification_id);
    }));
    conflicting.gate.left.store(1, Ordering::SeqCst);
    let lost = other.send(request("raced", r#"["email"]"#)).await.unwrap();
    assert_eq!(Some(lost.notification_id), won.lock().unwrap().clone());
    assert!(!lost.created);

    // With no winner, the cancelled transaction is tried again.
    conflicting.gate.left.store(2, Ordering::SeqCst);
    let sent = other
        .send(request("retried", r#"["email"]"#))
        .await
        .unwrap();
    assert!(sent.created);
    assert_eq!(conflicting.gate.left.load(Ordering::SeqCst), 0);
    assert_eq!(take(&f, DeliveryQueue::Email).await.len(), 2);

    // A store that keeps refusing is still an error in the end.
    conflicting.gate.left.store(10, Ordering::SeqCst);
    assert!(
        other
            .send(request("refused", r#"["email"]"#))
            .await
            .is_err()
    );
}

on_both_tables!(
    a_send_that_loses_a_transaction_conflict_answers_the_winner,
    a_late_commit_into_the_last_hour_is_still_drained,
    a_send_that_could_not_queue_is_queued_by_the_scheduler,
    the_scheduler_catches_up_after_an_outage,
    event_ids_belong_to_their_recipient,
    a_queued_delivery_follows_later_opt_outs,
    the_scheduler_queues_what_is_due_and_nothing_early,
    a_redelivered_message_is_sent_once,
    a_dead_token_disables_the_device,
    a_dead_token_answer_leaves_a_newer_registration_alone,
    the_configured_last_attempt_dead_letters,
    racing_sends_of_one_event_make_one_notification,
);
