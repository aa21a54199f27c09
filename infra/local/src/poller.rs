//! An event source mapping in small: polls a queue and invokes a worker with
//! the Lambda signature, `LambdaEvent<SqsEvent>` → `SqsBatchResponse`.
//!
//! As on AWS: messages come in batches; the handler reports failed message
//! ids (partial batch failure); an error or a timeout fails the whole batch;
//! failed messages come back after a backoff (exponential with jitter, by
//! changing their visibility), and after `max_receive_count` receives the
//! queue moves them to its dead-letter queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use hanul_shared::ports::{Queue, ReceivedMessage};
use lambda_runtime::{Context, LambdaEvent};
use tokio::sync::watch;

pub use hanul_functions::SqsHandler;
pub use hanul_functions::routes::HandlerFuture;

#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub batch_size: u32,
    /// Long-poll wait per receive; short, so shutdown is quick.
    pub wait: Duration,
    /// First retry delay; doubles per receive up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Batches of one queue handled at once. Lambda runs an event source
    /// mapping's batches concurrently (a FIFO queue: one per message group
    /// at a time, which the queue itself enforces), so one slow batch must
    /// not hold back the others: a chat greeting waited behind a group
    /// delivery when this was one at a time.
    pub concurrency: usize,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            batch_size: 10,
            wait: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            concurrency: 4,
        }
    }
}

impl PollerConfig {
    /// `WORKER_BACKOFF_BASE_MS` (default 1000: a local retry shows at once),
    /// `WORKER_BACKOFF_MAX_MS` (default 60000), `WORKER_BATCH_SIZE` (1-10),
    /// `WORKER_CONCURRENCY` (1-64, default 4).
    pub fn from_env() -> Result<Self, String> {
        let mut config = Self::default();
        let read =
            |name: &str, range: std::ops::RangeInclusive<u64>| -> Result<Option<u64>, String> {
                match std::env::var(name) {
                    Err(_) => Ok(None),
                    Ok(v) => v
                        .parse::<u64>()
                        .ok()
                        .filter(|n| range.contains(n))
                        .map(Some)
                        .ok_or_else(|| {
                            format!(
                                "{name} must be {} to {}, got `{v}`",
                                range.start(),
                                range.end()
                            )
                        }),
                }
            };
        if let Some(ms) = read("WORKER_BACKOFF_BASE_MS", 1..=3_600_000)? {
            config.backoff_base = Duration::from_millis(ms);
        }
        if let Some(ms) = read("WORKER_BACKOFF_MAX_MS", 1..=43_200_000)? {
            config.backoff_max = Duration::from_millis(ms);
        }
        if let Some(n) = read("WORKER_BATCH_SIZE", 1..=10)? {
            config.batch_size = n as u32;
        }
        if let Some(n) = read("WORKER_CONCURRENCY", 1..=64)? {
            config.concurrency = n as usize;
        }
        Ok(config)
    }

    /// The delay before the next try of a message received `receive_count`
    /// times: `base * 2^(n-1)` capped at `max`, with "equal jitter" (half
    /// fixed, half random) so a failed batch does not come back in lockstep.
    pub fn backoff(&self, receive_count: u32) -> Duration {
        let exp = receive_count.saturating_sub(1).min(20);
        let full = self
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// The SQS event Lambda would deliver for these messages.
pub fn sqs_event(messages: &[ReceivedMessage], queue_arn: &str) -> SqsEvent {
    let records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.message_id.clone());
            record.receipt_handle = Some(m.receipt.clone());
            record.body = Some(m.body.clone());
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(queue_arn.to_owned());
            record.aws_region = queue_arn.split(':').nth(3).map(str::to_owned);
            let attrs = &mut record.attributes;
            attrs.insert(
                "ApproximateReceiveCount".into(),
                m.receive_count.to_string(),
            );
            attrs.insert("SentTimestamp".into(), m.sent_at_ms.to_string());
            attrs.insert(
                "ApproximateFirstReceiveTimestamp".into(),
                m.first_received_at_ms.to_string(),
            );
            if let Some(g) = &m.group_id {
                attrs.insert("MessageGroupId".into(), g.clone());
            }
            if let Some(d) = &m.dedupe_id {
                attrs.insert("MessageDeduplicationId".into(), d.clone());
            }
            for (name, value) in &m.attributes {
                let mut attr = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
                attr.string_value = Some(value.clone());
                attr.data_type = Some("String".into());
                record.message_attributes.insert(name.clone(), attr);
            }
            record
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// What happened to one batch, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub deleted: usize,
    pub retried: usize,
}

/// Delivers one batch to the handler and settles each message.
pub async fn deliver(
    queue: &dyn Queue,
    handler: &SqsHandler,
    messages: Vec<ReceivedMessage>,
    config: &PollerConfig,
) -> BatchOutcome {
    // The invocation must end before the messages become visible again, or
    // their retry delay could no longer be set.
    let visibility = queue.spec().visibility_timeout;
    let timeout = visibility
        .saturating_sub(Duration::from_secs(2))
        .max(visibility / 2);
    let event = sqs_event(&messages, &queue.arn());
    let mut context = Context::default();
    context.request_id = uuid::Uuid::new_v4().to_string();
    context.deadline = (std::time::SystemTime::now() + timeout)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    context.invoked_function_arn = queue.arn();
    let ids: HashSet<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    // Each invocation runs in its own task: a panicking handler fails its
    // batch (as a crashed Lambda would) instead of stopping the poller.
    let invocation = tokio::spawn(handler(LambdaEvent::new(event, context)));
    let abort = invocation.abort_handle();
    let result = match tokio::time::timeout(timeout, invocation).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(join)) => Err(format!("handler panicked: {join}")),
        Err(_) => {
            abort.abort();
            Err("handler timed out".to_owned())
        }
    };
    let whole_batch = || ids.iter().map(|s| (*s).to_owned()).collect();
    let failed: HashSet<String> = match result {
        Ok(Ok(response)) => {
            let reported: HashSet<String> = response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            // Lambda fails the whole batch when a reported id is not in it.
            if reported.iter().all(|id| ids.contains(id.as_str())) {
                reported
            } else {
                tracing::warn!(queue = %queue.spec().name, "handler reported unknown message ids; retrying the batch");
                whole_batch()
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(queue = %queue.spec().name, error = %e, "handler failed; retrying the batch");
            whole_batch()
        }
        Err(why) => {
            tracing::warn!(queue = %queue.spec().name, %why, "retrying the batch");
            whole_batch()
        }
    };
    let mut outcome = BatchOutcome::default();
    for m in messages {
        if failed.contains(&m.message_id) {
            let delay = config.backoff(m.receive_count);
            if let Err(e) = queue.change_visibility(&m.receipt, delay).await {
                // The message reappears when its visibility timeout ends anyway.
                tracing::warn!(error = %e, "could not set the retry delay");
            }
            outcome.retried += 1;
        } else if let Err(e) = queue.delete(&m.receipt).await {
            tracing::warn!(error = %e, "could not delete a processed message; it will be redelivered");
        } else {
            outcome.deleted += 1;
        }
    }
    outcome
}

/// How long a FIFO poller waits after an empty receive (at most twenty
/// receives a second per FIFO queue; a new message waits at most this).
const FIFO_PAUSE: Duration = Duration::from_millis(50);

/// Polls until `shutdown` turns true, with up to `config.concurrency`
/// batches in flight; finishes the batches in hand first.
pub async fn run(
    queue: Arc<dyn Queue>,
    handler: SqsHandler,
    config: PollerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = queue.spec().name.clone();
    tracing::info!(queue = %name, "poller started");
    let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let config = Arc::new(config);
    let mut in_flight = tokio::task::JoinSet::new();
    let fifo = queue.spec().fifo();
    loop {
        // Reap finished batches so the set does not grow.
        while in_flight.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break;
        }
        // A free slot before receiving: a message is never taken (and its
        // visibility timeout started) without a worker ready for it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        // A FIFO queue is polled without waiting, with a pause between
        // empty polls: while any of its groups has a message in flight or
        // waiting out a retry delay, that group's later messages are
        // visible but held back, and moto's long poll spins a whole core
        // on them for the wait (its wake-up condition is "any visible
        // message"), slowing every test that shares the server.
        let short = fifo;
        let wait = if short { Duration::ZERO } else { config.wait };
        // Not raced against shutdown: a receive dropped half-way could hide
        // messages it took until their visibility timeout. The wait is short.
        let received = queue.receive(config.batch_size, wait, None).await;
        match received {
            Ok(messages) if messages.is_empty() => {
                drop(slot);
                if short {
                    // A batch finishing may free its group: look again then.
                    tokio::select! {
                        _ = tokio::time::sleep(FIFO_PAUSE) => {}
                        Some(_) = in_flight.join_next() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            Ok(messages) => {
                let (queue, handler, config, name) =
                    (queue.clone(), handler.clone(), config.clone(), name.clone());
                in_flight.spawn(async move {
                    let outcome = deliver(queue.as_ref(), &handler, messages, &config).await;
                    tracing::debug!(queue = %name, ?outcome, "batch settled");
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(queue = %name, error = %e, "receive failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
    tracing::info!(queue = %name, "poller stopped");
}
