use super::code::AliasError;
use crate::ports::TableError;

#[derive(Debug, thiserror::Error)]
pub enum ShortenerError {
    #[error("{0}")]
    InvalidUrl(String),
    /// A bad field: the error code and the message.
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Alias(#[from] AliasError),
    #[error("alias {0:?} is already taken")]
    AliasTaken(String),
    #[error("no link with this code")]
    NotFound,
    #[error("this link has expired")]
    Expired,
    #[error("this link has reached its maximum number of visits")]
    Exhausted,
    #[error(
        "this link has {visits} visits, more than {threshold}: repeat with ?force=true to delete it"
    )]
    ConfirmationRequired { visits: u64, threshold: u64 },
    #[error("the link store is busy; retry shortly")]
    Throttled,
    #[error("the link store failed: {0}")]
    Store(String),
}

impl From<TableError> for ShortenerError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Throttled => ShortenerError::Throttled,
            other => ShortenerError::Store(other.to_string()),
        }
    }
}
