//! `Queue`: the part of SQS the system uses, producer and consumer side.
//! Both adapters enforce SQS's limits (message size, batch size, delay).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
pub const MAX_BATCH: usize = 10;
pub const MAX_DELAY: Duration = Duration::from_secs(900);
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// FIFO queues drop a repeated deduplication id within this window.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(300);

/// How a queue behaves: the settings SQS keeps on the queue and its redrive
/// policy. The local host creates queues from these; on AWS, template.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Logical name, e.g. `notify-email`; FIFO queues end in `.fifo`.
    pub name: String,
    pub visibility_timeout: Duration,
    /// After this many receives a message goes to the dead-letter queue.
    pub max_receive_count: u32,
    /// Name of the dead-letter queue, itself a queue with no DLQ.
    pub dead_letter: Option<String>,
    pub delay: Duration,
}

impl QueueSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
            dead_letter: None,
            delay: Duration::ZERO,
        }
    }

    pub fn fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }

    pub fn with_dead_letter(mut self, dlq: impl Into<String>, max_receive_count: u32) -> Self {
        self.dead_letter = Some(dlq.into());
        self.max_receive_count = max_receive_count;
        self
    }

    pub fn with_visibility(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// The spec of this queue's dead-letter queue, if it has one.
    pub fn dead_letter_spec(&self) -> Option<QueueSpec> {
        self.dead_letter.as_ref().map(|name| QueueSpec {
            name: name.clone(),
            visibility_timeout: self.visibility_timeout,
            max_receive_count: u32::MAX,
            dead_letter: None,
            delay: Duration::ZERO,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    pub delay: Option<Duration>,
    /// FIFO only: messages of one group are delivered in order, one at a time.
    pub group_id: Option<String>,
    /// FIFO only: a repeat within five minutes is accepted and dropped.
    pub dedupe_id: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

impl OutgoingMessage {
    pub fn new(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    pub fn group(mut self, group: impl Into<String>, dedupe_id: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self.dedupe_id = Some(dedupe_id.into());
        self
    }

    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// SQS's rules for one message on a queue of the given kind.
    pub fn validate(&self, fifo: bool) -> Result<(), QueueError> {
        if self.body.is_empty() {
            return Err(QueueError::Invalid("a message body cannot be empty".into()));
        }
        if self.size() > MAX_MESSAGE_BYTES {
            return Err(QueueError::Invalid(format!(
                "a message is at most {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        if self.delay.is_some_and(|d| d > MAX_DELAY) {
            return Err(QueueError::Invalid(
                "a message delay is at most 900 seconds".into(),
            ));
        }
        if fifo {
            if self.group_id.as_deref().is_none_or(str::is_empty) {
                return Err(QueueError::Invalid(
                    "a FIFO message needs a group id".into(),
                ));
            }
            if self.dedupe_id.as_deref().is_none_or(str::is_empty) {
                return Err(QueueError::Invalid(
                    "a FIFO message needs a deduplication id".into(),
                ));
            }
            if self.delay.is_some_and(|d| !d.is_zero()) {
                return Err(QueueError::Invalid(
                    "FIFO queues take no per-message delay".into(),
                ));
            }
        } else if self.group_id.is_some() || self.dedupe_id.is_some() {
            return Err(QueueError::Invalid(
                "group and deduplication ids are for FIFO queues only".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// 1 on the first delivery.
    pub receive_count: u32,
    pub sent_at_ms: u64,
    pub first_received_at_ms: u64,
    pub group_id: Option<String>,
    pub dedupe_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue request: {0}")]
    Invalid(String),
    /// The receipt handle is unknown or stale (the message was received again).
    #[error("the receipt handle is not valid")]
    ReceiptInvalid,
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    fn spec(&self) -> &QueueSpec;

    /// The ARN reported as `eventSourceARN` in SQS events.
    fn arn(&self) -> String;

    /// Returns the message id. A FIFO duplicate returns the first one's id.
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError>;

    /// Up to 10 messages; one result per message, in order.
    async fn send_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Result<String, QueueError>>, QueueError>;

    /// Up to `max` (1 to 10) visible messages, waiting up to `wait` (at most
    /// 20 s) for the first. Each is hidden for `visibility` (or the queue's
    /// timeout). Messages past `max_receive_count` go to the dead-letter queue.
    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Hides an in-flight message for `timeout` from now (zero: visible now).
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;

    /// Approximate number of visible plus in-flight plus delayed messages.
    async fn depth(&self) -> Result<u64, QueueError>;
}

pub fn validate_batch(messages: &[OutgoingMessage]) -> Result<(), QueueError> {
    if messages.is_empty() || messages.len() > MAX_BATCH {
        return Err(QueueError::Invalid(format!(
            "a batch holds 1 to {MAX_BATCH} messages, got {}",
            messages.len()
        )));
    }
    let total: usize = messages.iter().map(OutgoingMessage::size).sum();
    if total > MAX_MESSAGE_BYTES {
        return Err(QueueError::Invalid(format!(
            "a batch is at most {MAX_MESSAGE_BYTES} bytes in all"
        )));
    }
    Ok(())
}

pub fn validate_visibility(timeout: Duration) -> Result<(), QueueError> {
    if timeout > MAX_VISIBILITY {
        return Err(QueueError::Invalid(
            "visibility timeout is at most 12 hours".into(),
        ));
    }
    Ok(())
}

pub fn validate_receive(
    max: u32,
    wait: Duration,
    visibility: Option<Duration>,
) -> Result<(), QueueError> {
    if !(1..=MAX_BATCH as u32).contains(&max) {
        return Err(QueueError::Invalid("receive takes 1 to 10 messages".into()));
    }
    if wait > MAX_WAIT {
        return Err(QueueError::Invalid(
            "receive waits at most 20 seconds".into(),
        ));
    }
    if visibility.is_some_and(|v| v > MAX_VISIBILITY) {
        return Err(QueueError::Invalid(
            "visibility timeout is at most 12 hours".into(),
        ));
    }
    Ok(())
}

/// Moves up to `max` messages from a dead-letter queue back to `target`
/// (body and attributes; a fresh receive count). Each is sent before it is
/// deleted, so a crash repeats a message rather than losing it. Returns how
/// many moved.
pub async fn redrive(dlq: &dyn Queue, target: &dyn Queue, max: usize) -> Result<usize, QueueError> {
    let mut moved = 0;
    while moved < max {
        let want = (max - moved).min(MAX_BATCH) as u32;
        let batch = dlq
            .receive(want, Duration::ZERO, Some(Duration::from_secs(30)))
            .await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let mut out = OutgoingMessage::new(m.body.clone());
            for (k, v) in &m.attributes {
                out = out.attribute(k.clone(), v.clone());
            }
            if target.spec().fifo() {
                let group = m.group_id.clone().unwrap_or_else(|| "redrive".into());
                out = out.group(
                    group,
                    m.dedupe_id.clone().unwrap_or_else(|| m.message_id.clone()),
                );
            }
            target.send(out).await?;
            dlq.delete(&m.receipt).await?;
            moved += 1;
        }
    }
    Ok(moved)
}
