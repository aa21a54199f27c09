//! Delivering one queued message. Before the provider is called, an attempt
//! record is claimed with a conditional put, so a redelivered message whose
//! delivery already went out is dropped, and two workers never send one
//! delivery at once; the provider's own dedupe id (APNs collapse-id) covers
//! a crash between the send and the record. A provider that says the token
//! is dead disables the device instead of retrying.

use std::sync::Arc;
use std::time::Duration;

use super::Channel;
use super::service::DeliveryMessage;
use crate::http::emf::{Metrics, Unit};
use crate::ports::Clock;
use crate::ports::senders::{
    EmailMessage, EmailSender, PushMessage, PushSender, SendError, SmsMessage, SmsSender,
};
use crate::ports::table::{CmpOp, Condition, Key, Table, TableError, Update, get_str, num, s};

/// The providers, one per channel.
#[derive(Clone)]
pub struct Senders {
    pub push: Arc<dyn PushSender>,
    pub sms: Arc<dyn SmsSender>,
    pub email: Arc<dyn EmailSender>,
}

impl Senders {
    /// One provider for every channel (the outbox, a decorator).
    pub fn all<P: PushSender + SmsSender + EmailSender>(provider: Arc<P>) -> Self {
        Self {
            push: provider.clone(),
            sms: provider.clone(),
            email: provider,
        }
    }
}

impl std::fmt::Debug for Senders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Senders").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `NOTIFY_BACKOFF_BASE_MS`: the first retry's delay (then doubling).
    pub backoff_base: Duration,
    /// `NOTIFY_BACKOFF_MAX_MS`: the longest retry delay.
    pub backoff_max: Duration,
    /// How long a claimed attempt keeps others off it.
    pub lease: Duration,
    /// `NOTIFY_MAX_ATTEMPTS`: the last attempt's failure is `dead_lettered`.
    pub max_attempts: u32,
}

impl WorkerConfig {
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let ms = |name: &str, default: u64, min: u64, max: u64| {
            crate::settings::bounded(&get, name, default, min, max, "milliseconds")
        };
        let base = ms("NOTIFY_BACKOFF_BASE_MS", 1000, 1, 900_000)?;
        let max = ms("NOTIFY_BACKOFF_MAX_MS", 300_000, base, 43_200_000)?;
        Ok(Self {
            backoff_base: Duration::from_millis(base),
            backoff_max: Duration::from_millis(max),
            lease: Duration::from_secs(60),
            max_attempts: super::max_attempts(&get)?,
        })
    }

    /// Exponential backoff with equal jitter for the `attempt`-th failure.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.backoff_max);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// What a push's worker read of its device.
#[derive(Debug, Clone, Copy, Default)]
struct DeviceSeen {
    /// Registered again since its token was found dead, and not pushed to
    /// since.
    revived: bool,
    /// When it was last registered (ms), to act on that registration only.
    registered_at: Option<i64>,
}

fn device_key(m: &DeliveryMessage, device: &str) -> Key {
    Key::new(format!("user#{}", m.user_id), format!("device#{device}"))
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    /// Already sent by an earlier delivery of the message.
    Duplicate,
    /// Not sent, for good: device gone, token dead, provider refusal.
    Dropped(String),
    /// Failed for now: retry after `after`.
    Retry {
        after: Duration,
        reason: String,
    },
}

pub struct DeliveryWorker {
    table: Arc<dyn Table>,
    clock: Arc<dyn Clock>,
    senders: Senders,
    config: WorkerConfig,
}

impl std::fmt::Debug for DeliveryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryWorker").finish_non_exhaustive()
    }
}

fn metrics(channel: &str) -> Metrics {
    Metrics::new()
        .dimension("Subsystem", "notify")
        .dimension("Channel", channel)
}

impl DeliveryWorker {
    pub fn new(
        table: Arc<dyn Table>,
        clock: Arc<dyn Clock>,
        senders: Senders,
        config: WorkerConfig,
    ) -> Self {
        Self {
            table,
            clock,
            senders,
            config,
        }
    }

    /// Delivers one queue message (`receive_count` 1 on the first try).
    pub async fn deliver(
        &self,
        body: &str,
        receive_count: u32,
        sent_at_ms: u64,
    ) -> Result<Delivered, String> {
        let message: DeliveryMessage =
            serde_json::from_str(body).map_err(|e| format!("not a delivery message: {e}"))?;
        let channel = message.channel.as_str();
        let now = self.clock.now_ms();
        let outcome = self.deliver_message(&message, receive_count, now).await;
        let m = metrics(channel);
        let m = match &outcome {
            Ok(Delivered::Sent) => m.count("NotificationsSent", 1).metric(
                "QueueLatency",
                now.saturating_sub(sent_at_ms) as f64,
                Unit::Milliseconds,
            ),
            Ok(Delivered::Duplicate) => m.count("NotificationsDeduplicated", 1),
            Ok(Delivered::Dropped(_)) => m.count("NotificationsFailed", 1),
            Ok(Delivered::Retry { .. }) | Err(_) => m.count("NotificationsRetried", 1),
        };
        m.emit();
        outcome
    }

    async fn deliver_message(
        &self,
        m: &DeliveryMessage,
        attempt: u32,
        now: u64,
    ) -> Result<Delivered, String> {
        let attempt_key = Key::new(format!("attempt#{}", m.delivery_id), "attempt");
        // Claim: nobody sent it, and nobody is sending it right now.
        let lease_start = now.saturating_sub(self.config.lease.as_millis() as u64);
        let free = Condition::Or(vec![
            Condition::NotExists,
            Condition::And(vec![
                Condition::cmp("state", CmpOp::Ne, s("sent")),
                Condition::Or(vec![
                    Condition::eq("state", s("failed")),
                    Condition::cmp("at", CmpOp::Lt, num(lease_start)),
                ]),
            ]),
        ]);
        let mut claim = attempt_key.to_item();
        claim.insert("state".into(), s("sending"));
        claim.insert("at".into(), num(now));
        claim.insert("attempt".into(), num(attempt));
        claim.insert("ttl".into(), num(now / 1000 + 30 * 24 * 3600));
        match self.table.put(claim, Some(free)).await {
            Ok(()) => {}
            Err(TableError::ConditionFailed { current }) => {
                let state = current.as_ref().and_then(|c| get_str(c, "state"));
                return Ok(if state == Some("sent") {
                    Delivered::Duplicate
                } else {
                    Delivered::Retry {
                        after: self.config.lease,
                        reason: "another worker is sending it".into(),
                    }
                });
            }
            Err(e) => return Err(format!("cannot claim the delivery: {e}")),
        }

        let outcome = self.send_claimed(m, &attempt_key, attempt).await;
        if outcome.is_err() {
            // Free the claim, so the retry does not wait out the lease.
            let release = Update::new().set("state", s("failed"));
            if let Err(e) = self.table.update(&attempt_key, release, None).await {
                tracing::warn!(error = %e, "an attempt record stays claimed until its lease ends");
            }
        }
        outcome
    }

    /// The user's settings now: a delivery follows opt-outs and address
    /// changes made after it was queued (a schedule can be a year long).
    async fn current_settings(&self, user: &str) -> Result<super::Settings, String> {
        let item = self
            .table
            .get(
                &Key::new(format!("user#{user}"), "settings"),
                crate::ports::table::Consistency::Strong,
            )
            .await
            .map_err(|e| format!("cannot read the settings: {e}"))?;
        match item.as_ref().and_then(|i| get_str(i, "doc")) {
            Some(doc) => serde_json::from_str(doc).map_err(|e| format!("bad settings: {e}")),
            None => Ok(super::Settings::default()),
        }
    }

    async fn send_claimed(
        &self,
        m: &DeliveryMessage,
        attempt_key: &Key,
        attempt: u32,
    ) -> Result<Delivered, String> {
        let settings = self.current_settings(&m.user_id).await?;
        let address = match m.channel {
            Channel::Push => Some(m.to.clone()),
            Channel::Sms => settings.phone.clone(),
            Channel::Email => settings.email.clone(),
        };
        let mut device = DeviceSeen::default();
        let skip = if !settings.channels.allows(m.channel) {
            Some("channel_off".to_owned())
        } else if !m.category.is_empty() && !settings.category_on(&m.category) {
            Some("category_off".to_owned())
        } else if address.is_none() {
            Some(
                if m.channel == Channel::Sms {
                    "no_phone"
                } else {
                    "no_email"
                }
                .to_owned(),
            )
        } else if m.channel == Channel::Push {
            let (gone, seen) = self.device_state(m).await?;
            device = seen;
            gone
        } else {
            None
        };
        if let Some(reason) = skip {
            self.finish(
                m,
                attempt_key,
                "skipped",
                Some(reason.as_str()),
                attempt,
                None,
            )
            .await;
            return Ok(Delivered::Dropped(reason));
        }
        let to = address.unwrap_or_default();
        let attempt_key = attempt_key.clone();

        let sent = match m.channel {
            Channel::Push => {
                let Some(platform) = m.platform else {
                    return Err("a push delivery without a platform".into());
                };
                self.senders
                    .push
                    .push(&PushMessage {
                        notification_id: m.notification_id.clone(),
                        dedupe_id: m.delivery_id.clone(),
                        platform,
                        token: to.clone(),
                        title: m.title.clone(),
                        body: m.body.clone(),
                        data: m.data.clone(),
                        revived: device.revived,
                    })
                    .await
            }
            Channel::Sms => {
                self.senders
                    .sms
                    .sms(&SmsMessage {
                        notification_id: m.notification_id.clone(),
                        dedupe_id: m.delivery_id.clone(),
                        to: to.clone(),
                        body: format!("{}\n{}", m.title, m.body),
                    })
                    .await
            }
            Channel::Email => {
                self.senders
                    .email
                    .email(&EmailMessage {
                        notification_id: m.notification_id.clone(),
                        dedupe_id: m.delivery_id.clone(),
                        to: to.clone(),
                        subject: m.title.clone(),
                        body: m.body.clone(),
                    })
                    .await
            }
        };
        match sent {
            Ok(provider_id) => {
                if device.revived {
                    self.settle_revival(m, &device).await;
                }
                self.finish(m, &attempt_key, "sent", None, attempt, Some(&provider_id))
                    .await;
                Ok(Delivered::Sent)
            }
            Err(SendError::InvalidRecipient(reason)) => {
                if m.channel == Channel::Push {
                    self.disable_device(m, &device, &reason).await;
                }
                self.finish(
                    m,
                    &attempt_key,
                    "failed",
                    Some("invalid_recipient"),
                    attempt,
                    None,
                )
                .await;
                Ok(Delivered::Dropped(reason))
            }
            Err(SendError::Rejected(reason)) => {
                self.finish(m, &attempt_key, "failed", Some("rejected"), attempt, None)
                    .await;
                Ok(Delivered::Dropped(reason))
            }
            Err(SendError::Transient(reason)) => {
                // Free the claim so the retry can take it at once.
                let release = Update::new().set("state", s("failed"));
                if let Err(e) = self.table.update(&attempt_key, release, None).await {
                    tracing::warn!(error = %e, "an attempt record stays claimed until its lease ends");
                }
                let status = if attempt >= self.config.max_attempts {
                    "dead_lettered"
                } else {
                    "retrying"
                };
                self.set_status(m, status, Some(&reason), attempt, None)
                    .await;
                Ok(Delivered::Retry {
                    after: self.config.backoff(attempt),
                    reason,
                })
            }
        }
    }

    /// Why a push's device no longer takes pushes, if it does not; and
    /// what the worker saw of it.
    async fn device_state(
        &self,
        m: &DeliveryMessage,
    ) -> Result<(Option<String>, DeviceSeen), String> {
        let Some(device) = &m.device_id else {
            return Ok((None, DeviceSeen::default()));
        };
        let item = self
            .table
            .get(
                &device_key(m, device),
                crate::ports::table::Consistency::Strong,
            )
            .await
            .map_err(|e| format!("cannot read the device: {e}"))?;
        let flag = |i: &crate::ports::Item, name: &str| crate::ports::table::get_i64(i, name);
        Ok(match item {
            None => (Some("device_removed".into()), DeviceSeen::default()),
            Some(i) if flag(&i, "enabled") == Some(0) => {
                (Some("device_disabled".into()), DeviceSeen::default())
            }
            Some(i) => (
                None,
                DeviceSeen {
                    revived: flag(&i, "revived") == Some(1),
                    registered_at: flag(&i, "registeredAt"),
                },
            ),
        })
    }

    /// The registration this worker saw, and only it: a registration since
    /// (a new token, or the device back from the dead) is left alone.
    fn same_registration(seen: &DeviceSeen) -> Condition {
        match seen.registered_at {
            Some(at) => Condition::eq("registeredAt", num(at)),
            None => Condition::Exists.and(Condition::AttrNotExists("registeredAt".into())),
        }
    }

    /// A push reached a device that came back: the endpoint is live again,
    /// and later lookups must not turn it on behind the platform's back.
    async fn settle_revival(&self, m: &DeliveryMessage, seen: &DeviceSeen) {
        let Some(device) = &m.device_id else { return };
        let update = Update::new().remove("revived");
        let condition = Self::same_registration(seen);
        match self
            .table
            .update(&device_key(m, device), update, Some(condition))
            .await
        {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "a revived device keeps its mark"),
        }
    }

    async fn disable_device(&self, m: &DeliveryMessage, seen: &DeviceSeen, reason: &str) {
        let Some(device) = &m.device_id else { return };
        let update = Update::new()
            .set("enabled", num(0))
            .set(
                "disabledReason",
                s(reason.chars().take(200).collect::<String>()),
            )
            .remove("revived");
        match self
            .table
            .update(
                &device_key(m, device),
                update,
                Some(Self::same_registration(seen)),
            )
            .await
        {
            Ok(_) => tracing::info!(device = %device, "device disabled: its token is dead"),
            // Gone, or registered again since: the new registration stands.
            Err(TableError::ConditionFailed { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "could not disable a dead device"),
        }
    }

    async fn finish(
        &self,
        m: &DeliveryMessage,
        attempt_key: &Key,
        status: &str,
        reason: Option<&str>,
        attempt: u32,
        provider_id: Option<&str>,
    ) {
        // The attempt record is final: a redelivery will not send again.
        let done = Update::new().set("state", s("sent"));
        if let Err(e) = self.table.update(attempt_key, done, None).await {
            tracing::warn!(error = %e, "the attempt record was not closed");
        }
        self.set_status(m, status, reason, attempt, provider_id)
            .await;
    }

    async fn set_status(
        &self,
        m: &DeliveryMessage,
        status: &str,
        reason: Option<&str>,
        attempt: u32,
        provider_id: Option<&str>,
    ) {
        let now = self.clock.now_ms();
        let mut update = Update::new()
            .set("status", s(status))
            .set("attempts", num(attempt))
            .set("updatedAt", num(now));
        update = match reason {
            Some(r) => update.set("reason", s(r.chars().take(300).collect::<String>())),
            None => update.remove("reason"),
        };
        if status == "sent" {
            update = update.set("sentAt", num(now));
        }
        if let Some(id) = provider_id {
            update = update.set("providerMessageId", s(id));
        }
        // Never overwrite a delivery that went out.
        let condition = Condition::Exists.and(Condition::cmp("status", CmpOp::Ne, s("sent")));
        match self.table.update(&m.key(), update, Some(condition)).await {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, delivery = %m.delivery_id, "delivery status not updated")
            }
        }
    }
}

/// The provider of a channel this function does not deliver: refuses.
#[derive(Debug, Clone, Copy)]
pub struct Unconfigured;

#[async_trait::async_trait]
impl PushSender for Unconfigured {
    async fn push(&self, _: &PushMessage) -> Result<String, SendError> {
        Err(SendError::Rejected(
            "push is not configured in this function".into(),
        ))
    }
}

#[async_trait::async_trait]
impl SmsSender for Unconfigured {
    async fn sms(&self, _: &SmsMessage) -> Result<String, SendError> {
        Err(SendError::Rejected(
            "SMS is not configured in this function".into(),
        ))
    }
}

#[async_trait::async_trait]
impl EmailSender for Unconfigured {
    async fn email(&self, _: &EmailMessage) -> Result<String, SendError> {
        Err(SendError::Rejected(
            "email is not configured in this function".into(),
        ))
    }
}
