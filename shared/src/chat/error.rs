use crate::ids::IdError;
use crate::ports::{ConnectionError, QueueError, TableError};

/// Every way a chat operation fails. Client errors carry a stable snake_case
/// code (`ChatError::code`), the same in HTTP answers and error frames; the
/// HTTP mapping lives in `crate::http::error`.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A bad field or parameter (400).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// No such conversation, or the caller is not a member (404).
    #[error("no such conversation")]
    ConversationNotFound,
    /// No such message in the conversation (404).
    #[error("no such message")]
    MessageNotFound,
    /// No presence the caller may see (404).
    #[error("no such user, or none you share a conversation with")]
    PresenceNotVisible,
    /// Only the message's sender may change it (403).
    #[error("only the sender may change a message")]
    NotSender,
    /// Only a group's admins may do this (403).
    #[error("only the group's admins may do this")]
    NotAdmin,
    /// One of the two users has blocked the other (403).
    #[error("{0}")]
    Blocked(String),
    /// The message was deleted (410).
    #[error("the message was deleted")]
    MessageDeleted,
    /// A user is in as many conversations as allowed (409).
    #[error("{0}")]
    ConversationLimit(String),
    /// Too many requests (429), with the seconds to wait.
    #[error("too many messages; retry in {0} s")]
    RateLimited(u64),
    #[error("the chat store is busy; retry shortly")]
    Throttled,
    #[error("cannot issue a message id: {0}")]
    Ids(String),
    #[error("the chat store failed: {0}")]
    Store(String),
}

impl ChatError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ChatError::Invalid(code, message.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            ChatError::Invalid(code, _) => code,
            ChatError::ConversationNotFound => "conversation_not_found",
            ChatError::MessageNotFound => "message_not_found",
            ChatError::PresenceNotVisible => "not_found",
            ChatError::NotSender => "not_sender",
            ChatError::NotAdmin => "not_admin",
            ChatError::Blocked(_) => "blocked",
            ChatError::MessageDeleted => "message_deleted",
            ChatError::ConversationLimit(_) => "conversation_limit",
            ChatError::RateLimited(_) => "rate_limited",
            ChatError::Throttled => "throttled",
            ChatError::Ids(_) => "ids_unavailable",
            ChatError::Store(_) => "unavailable",
        }
    }

    /// Whether the caller did something wrong (a 4xx), rather than us.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            ChatError::Throttled | ChatError::Ids(_) | ChatError::Store(_)
        )
    }
}

impl From<TableError> for ChatError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Throttled => ChatError::Throttled,
            TableError::Invalid(m) => ChatError::Invalid("invalid_request", m),
            other => ChatError::Store(other.to_string()),
        }
    }
}

impl From<IdError> for ChatError {
    fn from(e: IdError) -> Self {
        ChatError::Ids(e.to_string())
    }
}

impl From<QueueError> for ChatError {
    fn from(e: QueueError) -> Self {
        ChatError::Store(format!("the delivery queue: {e}"))
    }
}

impl From<ConnectionError> for ChatError {
    fn from(e: ConnectionError) -> Self {
        ChatError::Store(format!("the connections: {e}"))
    }
}

impl From<crate::feed::FeedError> for ChatError {
    fn from(e: crate::feed::FeedError) -> Self {
        ChatError::Store(format!("the block list: {e}"))
    }
}
