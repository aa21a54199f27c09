//! The local host's providers: every push, SMS and email that would have left
//! is written, durably and in send order, to an outbox table, readable at
//! `GET /local/v1/outbox`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Serialize;

use crate::ports::Clock;
use crate::ports::senders::{
    EmailMessage, EmailSender, PushMessage, PushSender, SendError, SmsMessage, SmsSender,
};
use crate::ports::table::{Item, Key, Query, Table, get_str, num, s};

const OUTBOX_PK: &str = "outbox";

/// One message that left, as `GET /local/v1/outbox` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxItem {
    pub notification_id: String,
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub to: String,
    pub title: String,
    pub body: String,
    pub sent_at: String,
}

pub struct Outbox {
    table: Arc<dyn Table>,
    clock: Arc<dyn Clock>,
    seq: AtomicU64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    pub fn new(table: Arc<dyn Table>, clock: Arc<dyn Clock>) -> Self {
        Self {
            table,
            clock,
            seq: AtomicU64::new(0),
        }
    }

    async fn record(
        &self,
        notification_id: &str,
        channel: &str,
        platform: Option<&str>,
        to: &str,
        title: &str,
        body: &str,
    ) -> Result<String, SendError> {
        let now = self.clock.now_ms();
        // Time, then a per-process counter: the sort key is the send order.
        let sk = format!("{now:015}#{:012}", self.seq.fetch_add(1, Ordering::Relaxed));
        let mut item = Key::new(OUTBOX_PK, sk.clone()).to_item();
        item.insert("notificationId".into(), s(notification_id));
        item.insert("channel".into(), s(channel));
        if let Some(p) = platform {
            item.insert("platform".into(), s(p));
        }
        item.insert("to".into(), s(to));
        item.insert("title".into(), s(title));
        item.insert("body".into(), s(body));
        item.insert("sentAt".into(), num(now));
        self.table
            .put(item, None)
            .await
            .map_err(|e| SendError::Transient(format!("the outbox could not be written: {e}")))?;
        Ok(format!("outbox-{sk}"))
    }

    /// Every message, oldest first.
    pub async fn list(&self) -> Result<Vec<OutboxItem>, crate::ports::TableError> {
        let mut items = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(Query::partition(OUTBOX_PK).limit(1000).after(cursor))
                .await?;
            items.extend(page.items.iter().map(to_outbox_item));
            cursor = page.next;
            if cursor.is_none() {
                return Ok(items);
            }
        }
    }
}

fn to_outbox_item(item: &Item) -> OutboxItem {
    let text = |attr: &str| get_str(item, attr).unwrap_or_default().to_owned();
    let sent = crate::ports::table::get_i64(item, "sentAt")
        .unwrap_or(0)
        .max(0) as u64;
    OutboxItem {
        notification_id: text("notificationId"),
        channel: text("channel"),
        platform: get_str(item, "platform").map(str::to_owned),
        to: text("to"),
        title: text("title"),
        body: text("body"),
        sent_at: humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(sent),
        )
        .to_string(),
    }
}

#[async_trait]
impl PushSender for Outbox {
    async fn push(&self, m: &PushMessage) -> Result<String, SendError> {
        self.record(
            &m.notification_id,
            "push",
            Some(m.platform.as_str()),
            &m.token,
            &m.title,
            &m.body,
        )
        .await
    }
}

#[async_trait]
impl SmsSender for Outbox {
    async fn sms(&self, m: &SmsMessage) -> Result<String, SendError> {
        self.record(&m.notification_id, "sms", None, &m.to, "", &m.body)
            .await
    }
}

#[async_trait]
impl EmailSender for Outbox {
    async fn email(&self, m: &EmailMessage) -> Result<String, SendError> {
        self.record(
            &m.notification_id,
            "email",
            None,
            &m.to,
            &m.subject,
            &m.body,
        )
        .await
    }
}
