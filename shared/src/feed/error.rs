use crate::ids::IdError;
use crate::ports::{QueueError, TableError};

/// Every way a feed operation fails. Client errors carry a stable
/// snake_case code (`FeedError::code`); the HTTP mapping lives in
/// `crate::http::error`.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A bad field or parameter: the code and the message (400).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// No such post, or not one the caller may see or delete (404).
    #[error("no such post")]
    PostNotFound,
    /// The caller already follows the most accounts allowed (409).
    #[error("you follow {0} accounts, the most allowed; unfollow one first")]
    FollowLimit(u64),
    /// One of the two users has blocked the other (403).
    #[error("one of you has blocked the other")]
    Blocked,
    #[error("the feed store is busy; retry shortly")]
    Throttled,
    #[error("cannot issue a post id: {0}")]
    Ids(String),
    #[error("the feed store failed: {0}")]
    Store(String),
}

impl FeedError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        FeedError::Invalid(code, message.into())
    }

    /// The stable code of this error, as the API reports it.
    pub fn code(&self) -> &'static str {
        match self {
            FeedError::Invalid(code, _) => code,
            FeedError::PostNotFound => "post_not_found",
            FeedError::FollowLimit(_) => "follow_limit",
            FeedError::Blocked => "blocked",
            FeedError::Throttled => "throttled",
            FeedError::Ids(_) => "ids_unavailable",
            FeedError::Store(_) => "unavailable",
        }
    }
}

impl From<TableError> for FeedError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Throttled => FeedError::Throttled,
            // Keys and items past the store's limits come from the request.
            TableError::Invalid(m) => FeedError::Invalid("invalid_request", m),
            other => FeedError::Store(other.to_string()),
        }
    }
}

impl From<IdError> for FeedError {
    fn from(e: IdError) -> Self {
        FeedError::Ids(e.to_string())
    }
}

impl From<QueueError> for FeedError {
    fn from(e: QueueError) -> Self {
        FeedError::Store(format!("the fan-out queue: {e}"))
    }
}
