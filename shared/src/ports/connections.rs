//! `Connections`: the open WebSocket connections the system talks to. On AWS
//! the API Gateway management API (`PostToConnection`, `DeleteConnection`);
//! locally the host's own sockets.

use async_trait::async_trait;

/// API Gateway's limit on one outgoing WebSocket frame; both adapters hold to it.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectionError {
    /// The connection is closed (API Gateway's `GoneException`, 410): the
    /// caller removes exactly this connection.
    #[error("the connection is gone")]
    Gone,
    #[error("invalid frame: {0}")]
    Invalid(String),
    #[error("the connection service is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Connections: Send + Sync + 'static {
    /// Sends one text frame to a connection.
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), ConnectionError>;

    /// Closes a connection (a no-op when it is already gone).
    async fn close(&self, connection_id: &str) -> Result<(), ConnectionError>;
}

pub fn validate_frame(frame: &str) -> Result<(), ConnectionError> {
    if frame.is_empty() {
        return Err(ConnectionError::Invalid("a frame cannot be empty".into()));
    }
    if frame.len() > MAX_FRAME_BYTES {
        return Err(ConnectionError::Invalid(format!(
            "a frame is at most {MAX_FRAME_BYTES} bytes"
        )));
    }
    Ok(())
}
