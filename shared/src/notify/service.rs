//! Devices, settings, sends and status. A send is one transaction: the event
//! id (conditional on being new: a second send of it finds the first), the
//! notification, one item per delivery, and for each delivery to make a due
//! item (the outbox). After the commit the due deliveries are put on their
//! queues and their due items removed; whatever a crash leaves behind, the
//! scheduler sends within a minute. A later `sendAt` (past SQS's 15-minute
//! delay) waits in its due item until the scheduler takes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{Channel, Device, MAX_DEVICES, RegisterDevice, SendRequest, Settings};
use super::{DeliveryQueue, NotifyError};
use crate::http::emf::Metrics;
use crate::ports::Clock;
use crate::ports::queue::{MAX_DELAY, OutgoingMessage, Queue};
use crate::ports::senders::DevicePlatform;
use crate::ports::table::{
    Condition, Consistency, Item, Key, Query, SortKey, Table, TableError, TxOp, get_i64, get_str,
    num, s,
};
use crate::ratelimit::RateLimiter;
use crate::shortener::link::format_instant;

/// Due items and event ids live this long.
const KEEP_SECS: u64 = 30 * 24 * 3600;
/// How long the scheduler leaves a due item to the send that wrote it, so
/// one delivery is not queued twice (the worker would drop the second, but
/// each copy would have its own attempt count).
const GRACE_MS: u64 = 30_000;
/// Retries of a send's transaction cancelled by a conflict (or throttling).
const CONFLICT_RETRIES: u32 = 3;
/// Where the scheduler starts the first time (no watermark yet).
const LOOKBACK_HOURS: u64 = 6;
/// How far behind now the scheduler's watermark stays: well past the longest
/// send (its store timeouts) plus clock skew between functions.
const WATERMARK_MARGIN_MS: u64 = 5 * 60_000;

fn user_pk(user: &str) -> String {
    format!("user#{user}")
}

fn notification_pk(id: &str) -> String {
    format!("notification#{id}")
}

fn due_pk(at_ms: u64) -> String {
    let hour = format_instant(at_ms);
    format!("due#{}", &hour[..13])
}

/// What a delivery worker receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryMessage {
    pub delivery_id: String,
    pub notification_id: String,
    pub user_id: String,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DevicePlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub to: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Checked again against the user's settings when it goes out.
    #[serde(default)]
    pub category: String,
}

impl DeliveryMessage {
    pub fn key(&self) -> Key {
        delivery_key(&self.notification_id, &self.delivery_id)
    }
}

pub fn delivery_key(notification_id: &str, delivery_id: &str) -> Key {
    let index = delivery_id.rsplit('-').next().unwrap_or("00");
    Key::new(
        notification_pk(notification_id),
        format!("delivery#{index}"),
    )
}

/// The answer to a send.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub notification_id: String,
    /// `queued`, `scheduled` or `skipped` (all deliveries skipped).
    pub status: String,
    /// False when the event id had been sent before.
    #[serde(skip)]
    pub created: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    pub delivery_id: String,
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub status: String,
    pub attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    pub notification_id: String,
    pub event_id: String,
    pub user_id: String,
    pub category: String,
    pub created_at: String,
    pub deliveries: Vec<DeliveryStatus>,
}

pub struct NotifyService {
    table: Arc<dyn Table>,
    clock: Arc<dyn Clock>,
    queues: HashMap<DeliveryQueue, Arc<dyn Queue>>,
    limiter: Option<Arc<RateLimiter>>,
}

impl std::fmt::Debug for NotifyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyService")
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

struct Planned {
    item: Item,
    /// Set when the delivery is to be sent (not skipped).
    message: Option<(DeliveryQueue, DeliveryMessage, u64)>,
}

fn device_from(item: &Item) -> Option<Device> {
    let platform: DevicePlatform =
        serde_json::from_value(serde_json::Value::String(get_str(item, "platform")?.into()))
            .ok()?;
    let token = get_str(item, "token")?.to_owned();
    let suffix = token[token.len().saturating_sub(6)..].to_owned();
    Some(Device {
        device_id: get_str(item, "deviceId")?.to_owned(),
        platform,
        token_suffix: suffix,
        token,
        enabled: get_i64(item, "enabled") != Some(0),
        disabled_reason: get_str(item, "disabledReason").map(str::to_owned),
        created_at: format_instant(get_i64(item, "createdAt").unwrap_or(0).max(0) as u64),
        revived: get_i64(item, "revived") == Some(1),
    })
}

impl NotifyService {
    pub fn new(
        table: Arc<dyn Table>,
        clock: Arc<dyn Clock>,
        queues: HashMap<DeliveryQueue, Arc<dyn Queue>>,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Self {
        Self {
            table,
            clock,
            queues,
            limiter,
        }
    }

    pub fn table(&self) -> &Arc<dyn Table> {
        &self.table
    }

    /// The user's settings and devices: one query of their partition.
    async fn user(&self, user: &str) -> Result<(Settings, Vec<Device>), NotifyError> {
        let mut settings = Settings::default();
        let mut devices = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(Query::partition(user_pk(user)).limit(100).after(cursor))
                .await?;
            for item in &page.items {
                match get_str(item, "sk") {
                    Some("settings") => {
                        if let Some(doc) = get_str(item, "doc") {
                            settings = serde_json::from_str(doc)
                                .map_err(|e| NotifyError::Store(format!("settings: {e}")))?;
                        }
                    }
                    Some(sk) if sk.starts_with("device#") => devices.extend(device_from(item)),
                    _ => {}
                }
            }
            cursor = page.next;
            if cursor.is_none() {
                return Ok((settings, devices));
            }
        }
    }

    pub async fn register_device(
        &self,
        user: &str,
        request: RegisterDevice,
    ) -> Result<(Device, bool), NotifyError> {
        request.validate()?;
        let id = request.device_id();
        let (_, devices) = self.user(user).await?;
        let known = devices.iter().find(|d| d.device_id == id);
        if known.is_none() && devices.len() >= MAX_DEVICES {
            return Err(NotifyError::TooManyDevices(MAX_DEVICES));
        }
        let created_at = match known {
            Some(_) => get_i64(
                &self
                    .table
                    .get(
                        &Key::new(user_pk(user), format!("device#{id}")),
                        Consistency::Strong,
                    )
                    .await?
                    .unwrap_or_default(),
                "createdAt",
            )
            .unwrap_or(0)
            .max(0) as u64,
            None => self.clock.now_ms(),
        };
        let mut item = Key::new(user_pk(user), format!("device#{id}")).to_item();
        item.insert("deviceId".into(), s(&id));
        item.insert("platform".into(), s(request.platform.as_str()));
        item.insert("token".into(), s(&request.token));
        // Registering again turns a disabled device back on, and lets the
        // push worker turn its provider endpoint back on too.
        item.insert("enabled".into(), num(1));
        if known.is_some_and(|d| !d.enabled || d.revived) {
            item.insert("revived".into(), num(1));
        }
        item.insert("createdAt".into(), num(created_at));
        // Each registration is told apart, so a worker acting on what it read
        // of an earlier one (disabling a dead token) leaves this one alone.
        item.insert(
            "registeredAt".into(),
            num(self.clock.now_ms().max(created_at)),
        );
        self.table.put(item.clone(), None).await?;
        let device = device_from(&item).ok_or_else(|| NotifyError::Store("device item".into()))?;
        Ok((device, known.is_none()))
    }

    pub async fn devices(&self, user: &str) -> Result<Vec<Device>, NotifyError> {
        Ok(self.user(user).await?.1)
    }

    pub async fn remove_device(&self, user: &str, device_id: &str) -> Result<(), NotifyError> {
        if device_id.len() != 16 || !device_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NotifyError::DeviceNotFound);
        }
        let key = Key::new(user_pk(user), format!("device#{device_id}"));
        match self.table.delete(&key, Some(Condition::Exists)).await {
            Ok(_) => Ok(()),
            Err(TableError::ConditionFailed { .. }) => Err(NotifyError::DeviceNotFound),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn settings(&self, user: &str) -> Result<Settings, NotifyError> {
        let item = self
            .table
            .get(&Key::new(user_pk(user), "settings"), Consistency::Strong)
            .await?;
        match item.as_ref().and_then(|i| get_str(i, "doc")) {
            Some(doc) => {
                serde_json::from_str(doc).map_err(|e| NotifyError::Store(format!("settings: {e}")))
            }
            None => Ok(Settings::default()),
        }
    }

    pub async fn put_settings(
        &self,
        user: &str,
        settings: Settings,
    ) -> Result<Settings, NotifyError> {
        settings.validate()?;
        let doc =
            serde_json::to_string(&settings).map_err(|e| NotifyError::Store(e.to_string()))?;
        let mut item = Key::new(user_pk(user), "settings").to_item();
        item.insert("doc".into(), s(doc));
        self.table.put(item, None).await?;
        Ok(settings)
    }

    /// The channels whose per-user rate limit refuses this send.
    async fn limited_channels(
        &self,
        user: &str,
        channels: &[Channel],
    ) -> Result<Vec<Channel>, NotifyError> {
        let Some(limiter) = &self.limiter else {
            return Ok(Vec::new());
        };
        let mut limited = Vec::new();
        for channel in channels {
            let verdict = limiter
                .check_scope(&format!("@notify/{}", channel.as_str()), user)
                .await;
            if let Some(down) = verdict.unavailable.first() {
                return Err(NotifyError::Store(down.to_string()));
            }
            if !verdict.violated().is_empty() {
                limited.push(*channel);
            }
        }
        Ok(limited)
    }

    /// Accepts a notification: every delivery is durably recorded before
    /// this returns, so none is lost, and the event id makes a repeat (also a
    /// racing one) a no-op that answers the first notification's id.
    pub async fn send(&self, request: SendRequest) -> Result<Sent, NotifyError> {
        let now = self.clock.now_ms();
        let send_at = request.validate(now)?;
        // Event ids are the producer's: one per recipient, so two services
        // that both say "order-42" for different users do not collide.
        let event_key = Key::new(
            format!("event#{}#{}", request.user_id, request.event_id),
            "event",
        );
        if let Some(sent) = self.already_sent(&event_key).await? {
            return Ok(sent);
        }
        let (settings, devices) = self.user(&request.user_id).await?;
        let limited = self
            .limited_channels(&request.user_id, &request.channels)
            .await?;
        let notification_id = uuid::Uuid::new_v4().simple().to_string();

        let mut due = send_at.unwrap_or(now).max(now);
        if !request.critical
            && let Some(end) = settings.quiet_until(due)
        {
            due = end;
        }
        let mut planned: Vec<Planned> = Vec::new();
        let mut plan = |channel: Channel,
                        target: Option<(&str, Option<DevicePlatform>, Option<&str>)>,
                        skip: Option<&str>| {
            let delivery_id = format!("{notification_id}-{:02}", planned.len());
            let mut item = delivery_key(&notification_id, &delivery_id).to_item();
            item.insert("deliveryId".into(), s(&delivery_id));
            item.insert("channel".into(), s(channel.as_str()));
            item.insert("attempts".into(), num(0));
            item.insert("updatedAt".into(), num(now));
            let mut message = None;
            match (target, skip) {
                (Some((to, platform, device_id)), None) => {
                    if let Some(p) = platform {
                        item.insert("platform".into(), s(p.as_str()));
                    }
                    if let Some(d) = device_id {
                        item.insert("deviceId".into(), s(d));
                    }
                    let status = if due > now { "scheduled" } else { "queued" };
                    item.insert("status".into(), s(status));
                    if due > now {
                        item.insert("scheduledFor".into(), num(due));
                    }
                    let queue = DeliveryQueue::for_delivery(channel, platform);
                    message = Some((
                        queue,
                        DeliveryMessage {
                            delivery_id: delivery_id.clone(),
                            notification_id: notification_id.clone(),
                            user_id: request.user_id.clone(),
                            channel,
                            platform,
                            device_id: device_id.map(str::to_owned),
                            to: to.to_owned(),
                            title: request.title.clone(),
                            body: request.body.clone(),
                            data: request.data.clone(),
                            category: request.category.clone(),
                        },
                        due,
                    ));
                }
                (_, reason) => {
                    item.insert("status".into(), s("skipped"));
                    item.insert("reason".into(), s(reason.unwrap_or("no_recipient")));
                }
            }
            planned.push(Planned { item, message });
        };

        for &channel in &request.channels {
            let skip = if !settings.channels.allows(channel) {
                Some("channel_off")
            } else if !settings.category_on(&request.category) {
                Some("category_off")
            } else if limited.contains(&channel) {
                Some("rate_limited")
            } else {
                None
            };
            match (channel, skip) {
                (_, Some(reason)) => plan(channel, None, Some(reason)),
                (Channel::Push, None) => {
                    // Capped: concurrent registrations can pass the limit,
                    // and a send must stay one transaction.
                    let live: Vec<&Device> = devices
                        .iter()
                        .filter(|d| d.enabled)
                        .take(MAX_DEVICES)
                        .collect();
                    if live.is_empty() {
                        plan(channel, None, Some("no_device"));
                    }
                    for d in live {
                        plan(
                            channel,
                            Some((&d.token, Some(d.platform), Some(&d.device_id))),
                            None,
                        );
                    }
                }
                (Channel::Sms, None) => match &settings.phone {
                    Some(phone) => plan(channel, Some((phone, None, None)), None),
                    None => plan(channel, None, Some("no_phone")),
                },
                (Channel::Email, None) => match &settings.email {
                    Some(email) => plan(channel, Some((email, None, None)), None),
                    None => plan(channel, None, Some("no_email")),
                },
            }
        }

        let mut header = Key::new(notification_pk(&notification_id), "notification").to_item();
        header.insert("notificationId".into(), s(&notification_id));
        header.insert("eventId".into(), s(&request.event_id));
        header.insert("userId".into(), s(&request.user_id));
        header.insert("category".into(), s(&request.category));
        header.insert("createdAt".into(), num(now));
        let mut event = event_key.to_item();
        event.insert("notificationId".into(), s(&notification_id));
        event.insert("ttl".into(), num(now / 1000 + KEEP_SECS));

        let mut ops = vec![
            TxOp::Put {
                item: event,
                condition: Some(Condition::absent_or_expired(now / 1000)),
            },
            TxOp::Put {
                item: header,
                condition: None,
            },
        ];
        let mut due_items = Vec::new();
        for p in &planned {
            ops.push(TxOp::Put {
                item: p.item.clone(),
                condition: None,
            });
            if let Some((queue, message, at)) = &p.message {
                let key = Key::new(due_pk(*at), format!("{at:015}#{}", message.delivery_id));
                let mut item = key.to_item();
                item.insert("queue".into(), s(queue.name()));
                item.insert(
                    "message".into(),
                    s(serde_json::to_string(message)
                        .map_err(|e| NotifyError::Store(e.to_string()))?),
                );
                item.insert("due".into(), num(*at));
                item.insert("ttl".into(), num(at / 1000 + KEEP_SECS));
                if *at <= now + MAX_DELAY.as_millis() as u64 {
                    // This send queues it right after the commit: the
                    // scheduler leaves it alone unless that did not happen.
                    item.insert("graceUntil".into(), num(now + GRACE_MS));
                }
                ops.push(TxOp::Put {
                    item,
                    condition: None,
                });
                due_items.push((key, *queue, message.clone(), *at));
            }
        }
        let mut attempt = 0;
        loop {
            match self.table.transact_write(ops.clone()).await {
                Ok(()) => break,
                Err(TableError::TransactionCanceled { failed }) if failed.contains(&0) => {
                    // Another send of this event id won the race.
                    return self
                        .race_winner(&event_key)
                        .await?
                        .ok_or_else(|| NotifyError::Store("the event id vanished".into()));
                }
                // DynamoDB cancels the loser of two racing transactions on
                // one item as a conflict, not a failed condition: the winner
                // may be another send of this event, so look before retrying.
                Err(TableError::Throttled) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    let wait = 10u64 << attempt;
                    tokio::time::sleep(Duration::from_millis(wait + fastrand::u64(0..wait))).await;
                    if let Some(sent) = self.race_winner(&event_key).await? {
                        return Ok(sent);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (key, queue, message, at) in due_items {
            if at <= now + MAX_DELAY.as_millis() as u64 {
                // Best effort: a failure here leaves the due item to the scheduler.
                if self.enqueue(queue, &message, at.saturating_sub(now)).await
                    && let Err(e) = self.table.delete(&key, None).await
                {
                    tracing::warn!(error = %e, "a sent due item stays; the scheduler will skip it");
                }
            }
        }
        let skipped = planned.iter().filter(|p| p.message.is_none()).count();
        Metrics::new()
            .dimension("Subsystem", "notify")
            .count("NotificationsAccepted", 1)
            .count("DeliveriesSkipped", skipped as u64)
            .emit();
        let status = if skipped == planned.len() {
            "skipped"
        } else if due > now {
            "scheduled"
        } else {
            "queued"
        };
        Ok(Sent {
            notification_id,
            status: status.into(),
            created: true,
        })
    }

    /// The notification of a send that won the race for this event id, if
    /// one did (counted as a deduplication).
    async fn race_winner(&self, event_key: &Key) -> Result<Option<Sent>, NotifyError> {
        let winner = self.already_sent(event_key).await?;
        if winner.is_some() {
            Metrics::new()
                .dimension("Subsystem", "notify")
                .count("NotificationsDeduplicated", 1)
                .emit();
        }
        Ok(winner)
    }

    async fn already_sent(&self, event_key: &Key) -> Result<Option<Sent>, NotifyError> {
        let Some(event) = self.table.get(event_key, Consistency::Strong).await? else {
            return Ok(None);
        };
        let Some(id) = get_str(&event, "notificationId") else {
            return Ok(None);
        };
        let status = self.status(id).await?;
        let summary = if status.deliveries.iter().all(|d| d.status == "skipped") {
            "skipped"
        } else if status.deliveries.iter().any(|d| d.status == "scheduled") {
            "scheduled"
        } else {
            "queued"
        };
        Ok(Some(Sent {
            notification_id: id.to_owned(),
            status: summary.into(),
            created: false,
        }))
    }

    /// Puts a delivery on its queue (with a delay up to SQS's 15 minutes).
    async fn enqueue(
        &self,
        queue: DeliveryQueue,
        message: &DeliveryMessage,
        delay_ms: u64,
    ) -> bool {
        let Some(q) = self.queues.get(&queue) else {
            tracing::error!(queue = queue.name(), "no such delivery queue");
            return false;
        };
        let Ok(body) = serde_json::to_string(message) else {
            return false;
        };
        let delay = Duration::from_millis(delay_ms).min(MAX_DELAY);
        match q.send(OutgoingMessage::new(body).delay(delay)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, queue = queue.name(), "a delivery could not be queued yet");
                false
            }
        }
    }

    /// Sends every due item that is due within SQS's delay horizon: the
    /// periodic scheduler's work. Returns how many it queued.
    pub async fn drain_schedule(&self) -> Result<usize, NotifyError> {
        let now = self.clock.now_ms();
        let horizon = now + MAX_DELAY.as_millis() as u64 - 60_000;
        let mut queued = 0;
        // From the oldest hour that may still hold due items (the watermark),
        // so no accepted delivery is left behind however long the scheduler
        // or the queue was down.
        let watermark_key = Key::new("due#watermark", "watermark");
        let first = match self.table.get(&watermark_key, Consistency::Strong).await? {
            Some(item) => get_i64(&item, "hour").unwrap_or(0).max(0) as u64,
            None => now.saturating_sub(LOOKBACK_HOURS * 3_600_000),
        };
        let current = now - now % 3_600_000;
        let mut hour = first - first % 3_600_000;
        let mut oldest_left: Option<u64> = None;
        while hour <= horizon {
            let mut cursor = None;
            let mut left = false;
            loop {
                let page = self
                    .table
                    .query(
                        Query::partition(due_pk(hour))
                            .sort(SortKey::Le(format!("{horizon:015}#~")))
                            .limit(100)
                            .after(cursor),
                    )
                    .await?;
                for item in &page.items {
                    let sent = self.send_due(item, now).await;
                    queued += usize::from(sent);
                    left |= !sent;
                }
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
            if left && oldest_left.is_none() {
                oldest_left = Some(hour);
            }
            hour += 3_600_000;
        }
        // A send that read its clock a little earlier may still commit a due
        // item into the last hour (and functions' clocks differ), so the
        // watermark stays a margin behind now; everything before the oldest
        // hour with leftovers is done.
        let settled = now.saturating_sub(WATERMARK_MARGIN_MS);
        let next = oldest_left
            .unwrap_or(current)
            .min(settled - settled % 3_600_000);
        if next != first {
            let mut item = watermark_key.to_item();
            item.insert("hour".into(), num(next));
            self.table.put(item, None).await?;
        }
        if queued > 0 {
            Metrics::new()
                .dimension("Subsystem", "notify")
                .count("ScheduledQueued", queued as u64)
                .emit();
        }
        Ok(queued)
    }

    async fn send_due(&self, item: &Item, now: u64) -> bool {
        let parsed = get_str(item, "message")
            .and_then(|m| serde_json::from_str::<DeliveryMessage>(m).ok())
            .zip(
                get_str(item, "queue")
                    .and_then(|q| DeliveryQueue::ALL.into_iter().find(|d| d.name() == q)),
            );
        let Ok(key) = Key::of_item(item) else {
            return false;
        };
        let Some((message, queue)) = parsed else {
            tracing::error!(pk = %key.pk, sk = %key.sk, "a malformed due item is dropped");
            let _ = self.table.delete(&key, None).await;
            return false;
        };
        if get_i64(item, "graceUntil").is_some_and(|g| g > now as i64) {
            return false;
        }
        let due = get_i64(item, "due").unwrap_or(0).max(0) as u64;
        if !self.enqueue(queue, &message, due.saturating_sub(now)).await {
            return false;
        }
        if let Err(e) = self.table.delete(&key, None).await {
            tracing::warn!(error = %e, "a queued due item stays; its delivery is deduplicated");
        }
        true
    }

    pub async fn status(&self, notification_id: &str) -> Result<NotificationStatus, NotifyError> {
        let page = self
            .table
            .query(Query::partition(notification_pk(notification_id)).limit(100))
            .await?;
        let header = page
            .items
            .iter()
            .find(|i| get_str(i, "sk") == Some("notification"))
            .ok_or(NotifyError::NotificationNotFound)?;
        let text = |i: &Item, a: &str| get_str(i, a).unwrap_or_default().to_owned();
        let when = |i: &Item, a: &str| {
            get_i64(i, a)
                .filter(|v| *v > 0)
                .map(|v| format_instant(v as u64))
        };
        let deliveries = page
            .items
            .iter()
            .filter(|i| get_str(i, "sk").is_some_and(|sk| sk.starts_with("delivery#")))
            .map(|i| DeliveryStatus {
                delivery_id: text(i, "deliveryId"),
                channel: text(i, "channel"),
                platform: get_str(i, "platform").map(str::to_owned),
                device_id: get_str(i, "deviceId").map(str::to_owned),
                status: text(i, "status"),
                attempts: get_i64(i, "attempts").unwrap_or(0).max(0) as u64,
                reason: get_str(i, "reason").map(str::to_owned),
                scheduled_for: when(i, "scheduledFor"),
                sent_at: when(i, "sentAt"),
            })
            .collect();
        Ok(NotificationStatus {
            notification_id: notification_id.to_owned(),
            event_id: text(header, "eventId"),
            user_id: text(header, "userId"),
            category: text(header, "category"),
            created_at: when(header, "createdAt").unwrap_or_default(),
            deliveries,
        })
    }
}
