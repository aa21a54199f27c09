//! The `chat-deliver` worker: what happens after a change is committed.
//!
//! Jobs travel on a FIFO queue, one message group per conversation, so one
//! conversation's jobs run one at a time and in order. An `events` job says
//! "deliver this conversation's log up to event n": the worker reads the
//! events above its watermark (so a lost, repeated or late job never skips
//! or repeats one), appends each to every member's sync stream, posts it to
//! their online connections, pushes to members with none, and moves the
//! watermark. Member lists come from a cache checked against the version
//! each event carries: one read per membership change, not per message.

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{HashMap, HashSet};

use super::ChatError;
use super::keys::{conv_pk, delivered_key, event_range};
use super::model::{ChatEvent, EventKind, MemberEntry, SyncEvent};
use super::service::{ChatService, mirror_join_ops, mirror_leave_ops};
use crate::notify::{Channel, SendRequest};
use crate::ports::queue::QueueSpec;
use crate::ports::table::{CmpOp, Condition, Query, TableError, Update, get_i64, get_str, num};

pub const DELIVER_QUEUE: &str = "chat-deliver.fifo";
pub const DELIVER_DLQ: &str = "chat-deliver-dlq.fifo";

/// The delivery queue; `max_attempts` receives before the DLQ.
pub fn deliver_queue_spec(max_attempts: u32) -> QueueSpec {
    QueueSpec::new(DELIVER_QUEUE)
        .with_dead_letter(DELIVER_DLQ, max_attempts)
        .with_visibility(std::time::Duration::from_secs(60))
}

/// Appends and posts in flight at once for one event.
const FANOUT_CONCURRENCY: usize = 16;
/// Events one job reads per page of the log.
const EVENT_PAGE: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Job {
    /// Deliver the conversation's events up to `up_to`.
    #[serde(rename_all = "camelCase")]
    Events { conversation_id: String, up_to: u64 },
    /// Tell the members' devices that `user_id` read up to `message_id`.
    #[serde(rename_all = "camelCase")]
    Read {
        conversation_id: String,
        user_id: String,
        message_id: u64,
    },
    /// Tell the people `user_id` shares a conversation with that their
    /// status changed.
    #[serde(rename_all = "camelCase")]
    Presence {
        user_id: String,
        online: bool,
        last_active_ms: u64,
        version: u64,
    },
    /// Greet a new connection (API Gateway takes no posts before `$connect`
    /// has answered).
    #[serde(rename_all = "camelCase")]
    Hello {
        connection_id: String,
        user_id: String,
    },
}

impl Job {
    pub fn body(&self) -> Result<String, ChatError> {
        serde_json::to_string(self).map_err(|e| ChatError::Store(format!("job: {e}")))
    }

    pub fn parse(body: &str) -> Result<Job, ChatError> {
        serde_json::from_str(body)
            .map_err(|e| ChatError::invalid("invalid_job", format!("not a chat job: {e}")))
    }

    /// The FIFO group (what must stay in order) and deduplication id.
    pub fn group_and_dedupe(&self) -> (String, String) {
        match self {
            Job::Events {
                conversation_id,
                up_to,
            } => (
                conversation_id.clone(),
                format!("ev:{conversation_id}:{up_to}"),
            ),
            Job::Read {
                conversation_id,
                user_id,
                message_id,
            } => (
                conversation_id.clone(),
                format!("read:{}:{message_id}", super::keys::fnv(user_id)),
            ),
            Job::Presence {
                user_id,
                online,
                version,
                ..
            } => (
                format!("presence-{}", super::keys::fnv(user_id)),
                format!("presence:{}:{version}:{online}", super::keys::fnv(user_id)),
            ),
            Job::Hello { connection_id, .. } => {
                let c = super::keys::fnv(connection_id);
                (format!("hello-{c}"), format!("hello:{connection_id}"))
            }
        }
    }
}

/// What a stored event holds.
struct StoredEvent {
    n: u64,
    event_id: u64,
    members_version: u64,
    event: ChatEvent,
    also: Vec<String>,
}

/// What one job did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    pub events: usize,
    pub appended: usize,
    pub posted: usize,
    pub gone: usize,
    pub pushed: usize,
}

impl ChatService {
    pub async fn handle_job_message(&self, body: &str) -> Result<Delivered, ChatError> {
        self.handle_job(Job::parse(body)?).await
    }

    pub async fn handle_job(&self, job: Job) -> Result<Delivered, ChatError> {
        match job {
            Job::Events {
                conversation_id,
                up_to,
            } => self.deliver_events(&conversation_id, up_to).await,
            Job::Read {
                conversation_id,
                user_id,
                message_id,
            } => {
                let frame = json!({
                    "type": "read",
                    "conversationId": conversation_id,
                    "userId": user_id,
                    "messageId": message_id.to_string(),
                })
                .to_string();
                let list = self.member_list(&conversation_id, None).await?;
                let users: Vec<String> = list.members.iter().map(|m| m.user_id.clone()).collect();
                let (posted, gone, _) = self.post_to_users(&users, |_| Some(frame.clone())).await?;
                Ok(Delivered {
                    posted,
                    gone,
                    ..Delivered::default()
                })
            }
            Job::Presence {
                user_id,
                online,
                last_active_ms,
                ..
            } => {
                let peers: Vec<String> = self.peers(&user_id).await?.into_iter().collect();
                let frame = json!({
                    "type": "presence",
                    "userId": user_id,
                    "status": if online { "online" } else { "offline" },
                    "lastActiveAt": crate::shortener::link::format_instant(last_active_ms),
                })
                .to_string();
                let (posted, gone, _) = self.post_to_users(&peers, |_| Some(frame.clone())).await?;
                Ok(Delivered {
                    posted,
                    gone,
                    ..Delivered::default()
                })
            }
            Job::Hello {
                connection_id,
                user_id,
            } => {
                let frame = json!({
                    "type": "hello",
                    "connectionId": connection_id,
                    "userId": user_id,
                    "heartbeatSeconds": self.config.heartbeat.as_secs(),
                })
                .to_string();
                match self.connections.post(&connection_id, &frame).await {
                    Ok(()) => Ok(Delivered {
                        posted: 1,
                        ..Delivered::default()
                    }),
                    Err(crate::ports::ConnectionError::Gone) => {
                        self.drop_connection(&user_id, &connection_id).await?;
                        Ok(Delivered {
                            gone: 1,
                            ..Delivered::default()
                        })
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    async fn deliver_events(&self, cid: &str, up_to: u64) -> Result<Delivered, ChatError> {
        let mut done = Delivered::default();
        let mut delivered = self.delivered_up_to(cid).await?;
        while delivered < up_to {
            let page = self
                .table
                .query(
                    Query::partition(conv_pk(cid))
                        .sort(event_range(delivered + 1, up_to))
                        .limit(EVENT_PAGE),
                )
                .await?;
            if page.items.is_empty() {
                // The job names events not committed: nothing to do.
                return Ok(done);
            }
            for item in &page.items {
                let stored = stored_event(item)?;
                let outcome = self.deliver_event(cid, &stored).await?;
                done.events += 1;
                done.appended += outcome.appended;
                done.posted += outcome.posted;
                done.gone += outcome.gone;
                done.pushed += outcome.pushed;
                self.advance_watermark(cid, stored.n).await?;
                delivered = stored.n;
            }
        }
        Ok(done)
    }

    async fn advance_watermark(&self, cid: &str, n: u64) -> Result<(), ChatError> {
        let condition = Condition::Or(vec![
            Condition::AttrNotExists("upTo".into()),
            Condition::cmp("upTo", CmpOp::Lt, num(n)),
        ]);
        match self
            .table
            .update(
                &delivered_key(cid),
                Update::new().set("upTo", num(n)),
                Some(condition),
            )
            .await
        {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn deliver_event(&self, cid: &str, stored: &StoredEvent) -> Result<Delivered, ChatError> {
        let list = self.member_list(cid, Some(stored.members_version)).await?;
        let mut recipients: Vec<String> = list.members.iter().map(|m| m.user_id.clone()).collect();
        for u in &stored.also {
            if !recipients.contains(u) {
                recipients.push(u.clone());
            }
        }
        // Conversation changes put the conversation in (or out of) lists.
        if stored.event.kind == EventKind::Conversation
            && let Some(change) = &stored.event.conversation
        {
            let joined: Vec<String> = match change.change.as_str() {
                "created" | "members_added" => change.users.clone(),
                _ => Vec::new(),
            };
            for u in &joined {
                self.mirror(mirror_join_ops(u, cid)).await?;
            }
            if change.change == "member_removed" {
                for u in &change.users {
                    self.mirror(mirror_leave_ops(u, cid)).await?;
                }
            }
        }
        let positions: Vec<Result<(String, u64), ChatError>> =
            futures::stream::iter(recipients.iter().cloned())
                .map(|user| async move {
                    let p = self.append(&user, stored.event_id, &stored.event).await?;
                    Ok((user, p))
                })
                .buffer_unordered(FANOUT_CONCURRENCY)
                .collect()
                .await;
        let mut at = HashMap::new();
        for p in positions {
            let (user, position) = p?;
            at.insert(user, position);
        }
        let frames: HashMap<String, String> = at
            .iter()
            .map(|(user, &position)| {
                let frame = json!({
                    "type": "event",
                    "event": SyncEvent { position, event: stored.event.clone() },
                })
                .to_string();
                (user.clone(), frame)
            })
            .collect();
        let (posted, gone, reached) = self
            .post_to_users(&recipients, |user| frames.get(user).cloned())
            .await?;
        let mut pushed = 0;
        if stored.event.kind == EventKind::Message
            && let Some(message) = &stored.event.message
        {
            let offline: Vec<&MemberEntry> = list
                .members
                .iter()
                .filter(|m| {
                    m.user_id != message.sender_id && !m.muted && !reached.contains(&m.user_id)
                })
                .collect();
            for member in offline {
                if self.push(member, message).await? {
                    pushed += 1;
                }
            }
        }
        Ok(Delivered {
            events: 1,
            appended: at.len(),
            posted,
            gone,
            pushed,
        })
    }

    async fn mirror(&self, ops: Vec<crate::ports::table::TxOp>) -> Result<(), ChatError> {
        match self.transact(ops).await {
            // Already done (a repeated job).
            Ok(()) | Err(TableError::TransactionCanceled { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A push through the notification service to an offline member: one
    /// per message and recipient however often this runs (its event id).
    async fn push(
        &self,
        member: &MemberEntry,
        message: &super::model::Message,
    ) -> Result<bool, ChatError> {
        let Some(notify) = self.notify.get() else {
            return Ok(false);
        };
        let mut body: String = message.text.clone().unwrap_or_default();
        if body.chars().count() > 180 {
            body = body.chars().take(179).collect::<String>() + "…";
        }
        let request = SendRequest {
            event_id: format!("chat-{}", message.id),
            user_id: member.user_id.clone(),
            category: "chat".into(),
            channels: vec![Channel::Push],
            title: format!("Message from {}", message.sender_id)
                .chars()
                .take(150)
                .collect(),
            body,
            data: Some(json!({
                "conversationId": message.conversation_id,
                "messageId": message.id.to_string(),
            })),
            send_at: None,
            critical: false,
        };
        match notify.send(request).await {
            Ok(_) => Ok(true),
            Err(e @ crate::notify::NotifyError::Invalid(..)) => {
                tracing::warn!(error = %e, user = %member.user_id, "a chat push was refused");
                Ok(false)
            }
            Err(e) => Err(ChatError::Store(format!("the notification service: {e}"))),
        }
    }

    /// Posts to every online connection of `users` (one batch read of their
    /// presence per 100): answers how many posts went out, how many
    /// connections were gone (each removed), and who was reached.
    pub(super) async fn post_to_users(
        &self,
        users: &[String],
        frame_for: impl Fn(&str) -> Option<String>,
    ) -> Result<(usize, usize, HashSet<String>), ChatError> {
        let online = self.connections_of(users).await?;
        let mut targets = Vec::new();
        for (user, connections) in &online {
            if let Some(frame) = frame_for(user) {
                for c in connections {
                    targets.push((user.clone(), c.clone(), frame.clone()));
                }
            }
        }
        let results: Vec<(String, String, Result<(), crate::ports::ConnectionError>)> =
            futures::stream::iter(targets)
                .map(|(user, connection, frame)| async move {
                    let r = self.connections.post(&connection, &frame).await;
                    (user, connection, r)
                })
                .buffer_unordered(FANOUT_CONCURRENCY)
                .collect()
                .await;
        let (mut posted, mut gone) = (0, 0);
        let mut reached = HashSet::new();
        for (user, connection, result) in results {
            match result {
                Ok(()) => {
                    posted += 1;
                    reached.insert(user);
                }
                Err(crate::ports::ConnectionError::Gone) => {
                    gone += 1;
                    self.drop_connection(&user, &connection).await?;
                }
                Err(e) => {
                    // The event is in their stream: the device syncs it.
                    tracing::warn!(error = %e, connection, "a post failed");
                    reached.insert(user);
                }
            }
        }
        Ok((posted, gone, reached))
    }
}

fn stored_event(item: &crate::ports::table::Item) -> Result<StoredEvent, ChatError> {
    let bad = || ChatError::Store("a malformed event in the log".into());
    let event: ChatEvent = get_str(item, "payload")
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or_else(bad)?;
    let also: Vec<String> = get_str(item, "also")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    Ok(StoredEvent {
        n: get_i64(item, "n").ok_or_else(bad)? as u64,
        event_id: get_i64(item, "eventId").ok_or_else(bad)? as u64,
        members_version: get_i64(item, "membersVersion").unwrap_or(0) as u64,
        event,
        also,
    })
}
