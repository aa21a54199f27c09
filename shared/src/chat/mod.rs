//! Chat: 1:1 and group conversations over WebSocket, with presence, a
//! per-account sync stream for every device, and pushes to offline members.
//!
//! Layers: `model` (what users send and get, checked), `keys` (the tables'
//! layout), `service` (conversations, messages, the event commit),
//! `stream` (each user's sync stream), `deliver` (the `chat-deliver`
//! worker), `presence` (connections, heartbeats, the sweeper), `socket`
//! (the frame protocol).

mod deliver;
mod error;
pub mod keys;
pub mod model;
mod presence;
mod service;
pub mod socket;
mod stream;

use std::time::Duration;

use async_trait::async_trait;

pub use deliver::{DELIVER_DLQ, DELIVER_QUEUE, Delivered, Job, deliver_queue_spec};
pub use error::ChatError;
pub use model::{
    AddMembers, ChatEvent, Conversation, ConversationList, CreateConversation, EditMessage,
    EventKind, History, HistoryQuery, ListQuery, Message, Mute, Presence, PresenceStatus,
    ReadMarker, ReadState, Rename, SendMessage, Sent, SyncEvent, SyncPage, SyncQuery,
};
pub use presence::Swept;
pub use service::{ChatDeps, ChatService, direct_id};

use crate::ids::{IdError, IdService};

/// Where event (and so message) ids come from: the Snowflake `IdService`
/// in production, any time-ordered unique source in tests.
#[async_trait]
pub trait EventIds: Send + Sync + 'static {
    async fn next_event_id(&self) -> Result<u64, IdError>;
}

#[async_trait]
impl EventIds for IdService {
    async fn next_event_id(&self) -> Result<u64, IdError> {
        self.generate(1)
            .await?
            .into_iter()
            .next()
            .map(|id| id.value())
            .ok_or(IdError::LeaseExpired)
    }
}

/// Chat's settings, read once at start (DESIGN rule 7).
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// `CHAT_HEARTBEAT_SECONDS`: how often devices heartbeat; two missed
    /// and the device is offline.
    pub heartbeat: Duration,
    /// `CHAT_MAX_MEMBERS`: a group's members, its creator included.
    pub max_members: usize,
    /// `CHAT_MAX_CONVERSATIONS`: conversations one user may be in.
    pub max_conversations: u64,
    /// `CHAT_OUTBOX_GRACE_SECONDS`: the sweeper leaves a fresh outbox item
    /// this long to the commit that wrote it.
    pub outbox_grace: Duration,
    /// `CHAT_IDEMPOTENCY_DAYS`: how long a clientMessageId is remembered.
    pub idempotency_ttl: Duration,
    /// `CHAT_CACHE_CAPACITY`: member lists (and connection owners) cached.
    pub cache_capacity: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(30),
            max_members: 100,
            max_conversations: 1_000,
            outbox_grace: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(7 * 86_400),
            cache_capacity: 100_000,
        }
    }
}

impl ChatConfig {
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let d = Self::default();
        let number = |name: &str, default: u64, min: u64, max: u64| {
            crate::settings::bounded(&get, name, default, min, max, "a whole number")
        };
        Ok(Self {
            heartbeat: Duration::from_secs(number("CHAT_HEARTBEAT_SECONDS", 30, 1, 300)?),
            max_members: number("CHAT_MAX_MEMBERS", d.max_members as u64, 2, 100)? as usize,
            max_conversations: number("CHAT_MAX_CONVERSATIONS", d.max_conversations, 1, 100_000)?,
            outbox_grace: Duration::from_secs(number("CHAT_OUTBOX_GRACE_SECONDS", 30, 0, 3_600)?),
            idempotency_ttl: Duration::from_secs(
                86_400 * number("CHAT_IDEMPOTENCY_DAYS", 7, 1, 90)?,
            ),
            cache_capacity: number("CHAT_CACHE_CAPACITY", d.cache_capacity, 0, 100_000_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_defaults_and_bounds() {
        let c = ChatConfig::from_settings(|_| None).unwrap();
        assert_eq!((c.heartbeat.as_secs(), c.max_members), (30, 100));
        let c = ChatConfig::from_settings(|n| (n == "CHAT_HEARTBEAT_SECONDS").then(|| "2".into()))
            .unwrap();
        assert_eq!(c.heartbeat.as_secs(), 2);
        assert!(
            ChatConfig::from_settings(|n| (n == "CHAT_MAX_MEMBERS").then(|| "101".into())).is_err()
        );
    }

    #[test]
    fn a_pair_always_gets_the_same_direct_conversation() {
        assert_eq!(direct_id("ann", "bob"), direct_id("bob", "ann"));
        assert_ne!(direct_id("ann", "bob"), direct_id("ann", "bo"));
        assert!(model::check_conversation_id(&direct_id("a", "b")).is_ok());
    }
}
