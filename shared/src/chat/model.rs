//! What users send and get, checked, and the records behind them.

use serde::{Deserialize, Serialize};

use super::ChatError;
use crate::feed::valid_user_id;
use crate::ports::table::{Item, Key};
use crate::shortener::link::format_instant;

/// The largest id or position: Snowflakes fit in 63 bits.
pub const MAX_ID: u64 = i64::MAX as u64;
pub const MAX_TEXT_CHARS: usize = 4_000;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_CLIENT_ID: usize = 64;
pub const DEFAULT_HISTORY: usize = 50;
pub const MAX_HISTORY: usize = 100;
pub const DEFAULT_SYNC: usize = 100;
pub const MAX_SYNC: usize = 500;
pub const DEFAULT_LIST: usize = 20;
pub const MAX_LIST: usize = 100;

pub fn check_user(id: &str) -> Result<(), ChatError> {
    if valid_user_id(id) {
        Ok(())
    } else {
        Err(ChatError::invalid(
            "invalid_user_id",
            format!(
                "user id {:?} must be 1 to 128 letters, digits, `-`, `_`, `.` or `@`",
                id.chars().take(40).collect::<String>()
            ),
        ))
    }
}

/// A conversation id as the API hands them out: `d` + 32 hex digits for a
/// 1:1, `g` + a Snowflake for a group. Anything else names no conversation.
pub fn check_conversation_id(id: &str) -> Result<(), ChatError> {
    let ok = match id.split_at_checked(1) {
        Some(("d", hex)) => hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        Some(("g", digits)) => {
            (1..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ChatError::ConversationNotFound)
    }
}

pub fn check_text(text: &str) -> Result<(), ChatError> {
    let chars = text.chars().count();
    if text.trim().is_empty() || chars > MAX_TEXT_CHARS {
        return Err(ChatError::invalid(
            "invalid_text",
            format!("text must be 1 to {MAX_TEXT_CHARS} characters, not only spaces"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ChatError::invalid(
            "invalid_text",
            "text cannot hold control characters other than newlines and tabs",
        ));
    }
    Ok(())
}

pub fn check_client_id(id: &str) -> Result<(), ChatError> {
    if (1..=MAX_CLIENT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Ok(())
    } else {
        Err(ChatError::invalid(
            "invalid_client_message_id",
            format!(
                "clientMessageId must be 1 to {MAX_CLIENT_ID} of A-Z, a-z, 0-9, `.`, `_`, `:` or `-`"
            ),
        ))
    }
}

pub fn check_name(name: &str) -> Result<(), ChatError> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ChatError::invalid(
            "invalid_name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters, no control characters"),
        ));
    }
    Ok(())
}

/// An id in a path or body: decimal, 1..=MAX_ID.
pub fn parse_id(field: &'static str, raw: &str) -> Result<u64, ChatError> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| (1..=MAX_ID).contains(id) && !raw.starts_with('+'))
        .ok_or_else(|| ChatError::invalid("invalid_id", format!("{field} must be a message id")))
}

pub fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ChatError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ChatError::invalid("invalid_limit", format!("limit must be 1 to {max}"))
            }),
    }
}

/// Ids travel as strings: JavaScript loses precision above 2^53.
pub mod id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

pub mod opt_id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_str(&id.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        raw.map(|r| r.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A message as stored (`msg#` items) and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(with = "id_string")]
    pub id: u64,
    pub conversation_id: String,
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// `None` once deleted (the tombstone).
    pub text: Option<String>,
    pub created_at: String,
    pub edited_at: Option<String>,
    pub deleted: bool,
}

/// The stored form: the message plus what only the server needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    pub id: u64,
    pub conversation_id: String,
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at_ms: Option<u64>,
    #[serde(default)]
    pub deleted: bool,
    /// Its ordinal among the conversation's messages (1, 2, ...): unread
    /// counts are differences of these.
    pub number: u64,
}

impl MessageRecord {
    pub fn view(&self) -> Message {
        Message {
            id: self.id,
            conversation_id: self.conversation_id.clone(),
            sender_id: self.sender_id.clone(),
            client_message_id: self.client_message_id.clone(),
            text: if self.deleted {
                None
            } else {
                self.text.clone()
            },
            created_at: format_instant(self.created_at_ms),
            edited_at: self.edited_at_ms.map(format_instant),
            deleted: self.deleted,
        }
    }

    pub fn to_item(&self, key: &Key) -> Result<Item, ChatError> {
        with_key(key, self)
    }
}

/// `serde_dynamo` item of `value` under `key`.
pub fn with_key<T: Serialize>(key: &Key, value: &T) -> Result<Item, ChatError> {
    let mut item: Item = serde_dynamo::to_item(value)
        .map_err(|e| ChatError::Store(format!("encoding an item: {e}")))?;
    for (k, v) in key.to_item().into_inner() {
        item.insert(k, v);
    }
    Ok(item)
}

pub fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, ChatError> {
    serde_dynamo::from_item(item).map_err(|e| ChatError::Store(format!("decoding an item: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Direct,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

/// One member, as the conversation's meta lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberEntry {
    pub user_id: String,
    pub role: Role,
    pub joined_at_ms: u64,
    #[serde(default)]
    pub muted: bool,
}

/// `conv#{id}/meta`: the conversation, its member list (at most 100, so
/// one read answers "who is in it" for every check and every delivery),
/// and its counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_by: String,
    pub created_at_ms: u64,
    pub members: Vec<MemberEntry>,
    /// Bumped by every change of `members` (mutes included), so cached
    /// member lists know when they are stale.
    pub members_version: u64,
    /// Events in the log (its last event's number).
    pub events: u64,
    /// Messages ever sent (deleted ones included).
    pub messages: u64,
    pub last_event_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    pub last_activity_ms: u64,
}

impl Meta {
    pub fn member(&self, user: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.user_id == user)
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.member(user).is_some_and(|m| m.role == Role::Admin)
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.user_id.clone()).collect()
    }
}

/// `user#{user}/conv#{id}`: the user's read state in one conversation, and
/// (`member`) that the user's list shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_up_to: Option<u64>,
    #[serde(default)]
    pub read_count: u64,
    #[serde(default)]
    pub member: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub user_id: String,
    pub role: Role,
    pub joined_at: String,
    #[serde(with = "opt_id_string")]
    pub read_up_to: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub kind: Kind,
    pub name: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub member_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    pub last_message: Option<Message>,
    pub last_activity_at: String,
    pub unread_count: u64,
    pub muted: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    pub conversations: Vec<Conversation>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateConversation {
    pub members: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMembers {
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rename {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessage {
    pub client_message_id: String,
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditMessage {
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadMarker {
    pub message_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mute {
    pub muted: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    pub before: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncQuery {
    pub since: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub messages: Vec<Message>,
    #[serde(with = "opt_id_string")]
    pub next_before: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub message: Message,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadState {
    pub conversation_id: String,
    #[serde(with = "opt_id_string")]
    pub read_up_to: Option<u64>,
    pub unread_count: u64,
}

/// What changed, as a sync page and a live frame carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Message,
    Edit,
    Delete,
    Conversation,
}

/// The conversation as a `conversation` event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationChange {
    pub id: String,
    pub kind: Kind,
    pub name: Option<String>,
    pub member_count: u64,
    /// What happened: `created`, `renamed`, `members_added`, `member_removed`.
    pub change: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// One entry of a user's sync stream (without its position, which is the
/// user's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatEvent {
    pub kind: EventKind,
    pub conversation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncEvent {
    #[serde(with = "id_string")]
    pub position: u64,
    #[serde(flatten)]
    pub event: ChatEvent,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPage {
    pub events: Vec<SyncEvent>,
    #[serde(with = "id_string")]
    pub next_since: u64,
    pub limited: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub user_id: String,
    pub status: PresenceStatus,
    pub last_active_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_checked_by_shape() {
        assert!(check_conversation_id("g123").is_ok());
        assert!(check_conversation_id(&format!("d{}", "a".repeat(32))).is_ok());
        for bad in ["", "g", "gx1", "d12", "x123", "g12345678901234567890", "é"] {
            assert!(check_conversation_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_bounds() {
        assert!(check_text("hi").is_ok());
        assert!(check_text(&"가".repeat(4000)).is_ok());
        assert!(check_text(&"a".repeat(4001)).is_err());
        assert!(check_text("   ").is_err());
        assert!(check_text("a\u{7}b").is_err());
        assert!(check_text("line\nline").is_ok());
    }

    #[test]
    fn ids_travel_as_strings() {
        let e = SyncEvent {
            position: 9_007_199_254_740_993,
            event: ChatEvent {
                kind: EventKind::Delete,
                conversation_id: "g1".into(),
                message: None,
                conversation: None,
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["position"], "9007199254740993");
        assert_eq!(json["kind"], "delete");
        let back: SyncEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
