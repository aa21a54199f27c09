//! `Queue` on the embedded store, with SQS semantics: visibility timeout,
//! delay, receive counts, redrive to a dead-letter queue after
//! `max_receive_count` receives, FIFO groups and five-minute deduplication.
//! Messages live in SQLite, so they survive a restart or a `kill -9`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};

use super::store::{EmbeddedStore, Unavailable};
use crate::ports::queue::{self, OutgoingMessage, Queue, QueueError, QueueSpec, ReceivedMessage};

pub struct EmbeddedQueue {
    store: Arc<EmbeddedStore>,
    spec: QueueSpec,
}

impl EmbeddedQueue {
    pub fn new(store: Arc<EmbeddedStore>, spec: QueueSpec) -> Self {
        Self { store, spec }
    }
}

impl From<rusqlite::Error> for QueueError {
    fn from(e: rusqlite::Error) -> Self {
        QueueError::Unavailable(format!("sqlite: {e}"))
    }
}

impl From<Unavailable> for QueueError {
    fn from(e: Unavailable) -> Self {
        QueueError::Unavailable(e.0)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn insert(
    tx: &Transaction<'_>,
    spec: &QueueSpec,
    message: &OutgoingMessage,
    now: i64,
) -> Result<String, QueueError> {
    if let (true, Some(dedupe)) = (spec.fifo(), &message.dedupe_id) {
        let existing: Option<String> = tx
            .query_row(
                "SELECT message_id FROM queue_dedupe
                 WHERE queue = ?1 AND dedupe_id = ?2 AND expires_at > ?3",
                params![spec.name, dedupe, now],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(id);
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let delay = message.delay.unwrap_or(spec.delay);
    let attributes = serde_json::to_string(&message.attributes)
        .map_err(|e| QueueError::Invalid(format!("attributes: {e}")))?;
    tx.execute(
        "INSERT INTO messages (queue, id, body, attributes, group_id, dedupe_id, sent_at, visible_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            spec.name,
            id,
            message.body,
            attributes,
            message.group_id,
            message.dedupe_id,
            now,
            now + millis(delay)
        ],
    )?;
    if let (true, Some(dedupe)) = (spec.fifo(), &message.dedupe_id) {
        tx.execute(
            "INSERT OR REPLACE INTO queue_dedupe (queue, dedupe_id, message_id, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![spec.name, dedupe, id, now + millis(queue::DEDUPE_WINDOW)],
        )?;
    }
    Ok(id)
}

struct Candidate {
    seq: i64,
    id: String,
    body: String,
    attributes: String,
    group_id: Option<String>,
    dedupe_id: Option<String>,
    sent_at: i64,
    receive_count: u32,
    first_received_at: Option<i64>,
}

fn take_visible(
    tx: &Transaction<'_>,
    spec: &QueueSpec,
    max: usize,
    visibility: Duration,
    now: i64,
) -> Result<Vec<ReceivedMessage>, QueueError> {
    // FIFO: a group with a message in flight delivers nothing more until
    // that message is deleted or becomes visible again; such groups are left
    // out in SQL so they cannot starve the others.
    let mut stmt = tx.prepare(
        "SELECT seq, id, body, attributes, group_id, dedupe_id, sent_at, receive_count, first_received_at
         FROM messages m WHERE queue = ?1 AND visible_at <= ?2
           AND (group_id IS NULL OR group_id NOT IN (
                SELECT group_id FROM messages
                WHERE queue = ?1 AND receipt IS NOT NULL AND visible_at > ?2 AND group_id IS NOT NULL))
         ORDER BY seq LIMIT ?3",
    )?;
    // Room for messages moved to the DLQ and for later messages of a group
    // whose earlier one is taken in this same call.
    let scan = max as i64 * 4 + 16;
    let candidates = stmt
        .query_map(params![spec.name, now, scan], |row| {
            Ok(Candidate {
                seq: row.get(0)?,
                id: row.get(1)?,
                body: row.get(2)?,
                attributes: row.get(3)?,
                group_id: row.get(4)?,
                dedupe_id: row.get(5)?,
                sent_at: row.get(6)?,
                receive_count: row.get(7)?,
                first_received_at: row.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // Groups whose head message was dead-lettered in this call stay blocked.
    let mut blocked: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for c in candidates {
        if out.len() == max {
            break;
        }
        if let Some(g) = &c.group_id
            && blocked.contains(g)
        {
            continue;
        }
        if let Some(dlq) = &spec.dead_letter
            && c.receive_count >= spec.max_receive_count
        {
            // SQS moves the message when a receive would exceed maxReceiveCount.
            tx.execute(
                "UPDATE messages SET queue = ?1, visible_at = ?2, receipt = NULL WHERE seq = ?3",
                params![dlq, now, c.seq],
            )?;
            if let Some(g) = &c.group_id {
                blocked.insert(g.clone());
            }
            continue;
        }
        let receipt = uuid::Uuid::new_v4().to_string();
        let first = c.first_received_at.unwrap_or(now);
        tx.execute(
            "UPDATE messages SET receipt = ?1, visible_at = ?2, receive_count = receive_count + 1,
             first_received_at = ?3 WHERE seq = ?4",
            params![receipt, now + millis(visibility), first, c.seq],
        )?;
        let attributes: BTreeMap<String, String> =
            serde_json::from_str(&c.attributes).unwrap_or_default();
        out.push(ReceivedMessage {
            message_id: c.id,
            receipt,
            body: c.body,
            attributes,
            receive_count: c.receive_count + 1,
            sent_at_ms: c.sent_at.max(0) as u64,
            first_received_at_ms: first.max(0) as u64,
            group_id: c.group_id,
            dedupe_id: c.dedupe_id,
        });
    }
    Ok(out)
}

impl EmbeddedQueue {
    fn now(&self) -> i64 {
        self.store.clock.now_ms() as i64
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    fn arn(&self) -> String {
        format!("arn:aws:sqs:local:000000000000:{}", self.spec.name)
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        message.validate(self.spec.fifo())?;
        let spec = self.spec.clone();
        let now = self.now();
        let id = self
            .store
            .write(move |tx| insert(tx, &spec, &message, now))
            .await?;
        self.store.sent.notify_waiters();
        Ok(id)
    }

    async fn send_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        queue::validate_batch(&messages)?;
        let fifo = self.spec.fifo();
        let spec = self.spec.clone();
        let now = self.now();
        let results = self
            .store
            .write(move |tx| {
                let mut results = Vec::with_capacity(messages.len());
                for m in &messages {
                    results.push(match m.validate(fifo) {
                        Ok(()) => Ok(insert(tx, &spec, m, now)?),
                        Err(e) => Err(e),
                    });
                }
                Ok::<_, QueueError>(results)
            })
            .await?;
        self.store.sent.notify_waiters();
        Ok(results)
    }

    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        queue::validate_receive(max, wait, visibility)?;
        let visibility = visibility.unwrap_or(self.spec.visibility_timeout);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a send in between wakes us.
            let sent = self.store.sent.notified();
            let spec = self.spec.clone();
            let now = self.now();
            let got = self
                .store
                .write(move |tx| take_visible(tx, &spec, max as usize, visibility, now))
                .await?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !got.is_empty() || remaining.is_zero() {
                return Ok(got);
            }
            // Delayed and timed-out messages become visible without a send.
            let _ = tokio::time::timeout(remaining.min(Duration::from_millis(50)), sent).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let (name, receipt) = (self.spec.name.clone(), receipt.to_owned());
        self.store
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM messages WHERE queue = ?1 AND receipt = ?2",
                    params![name, receipt],
                )?;
                Ok(())
            })
            .await
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        queue::validate_visibility(timeout)?;
        let (name, receipt) = (self.spec.name.clone(), receipt.to_owned());
        let now = self.now();
        let changed = self
            .store
            .write(move |tx| {
                Ok::<_, QueueError>(tx.execute(
                    "UPDATE messages SET visible_at = ?1
                     WHERE queue = ?2 AND receipt = ?3 AND visible_at > ?4",
                    params![now + millis(timeout), name, receipt, now],
                )?)
            })
            .await?;
        if changed == 0 {
            return Err(QueueError::ReceiptInvalid);
        }
        if timeout.is_zero() {
            self.store.sent.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let name = self.spec.name.clone();
        self.store
            .read(move |conn| {
                let n: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM messages WHERE queue = ?1",
                    [name],
                    |row| row.get(0),
                )?;
                Ok(n.max(0) as u64)
            })
            .await
    }
}
