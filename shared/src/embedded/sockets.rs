//! The local host's WebSocket connections: the host registers each socket it
//! accepts, with the sending half of a bounded channel its writer task drains.
//! A post never waits: a socket whose queue is full is too slow to keep up,
//! and is closed and reported gone, as API Gateway reports a dead one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::ports::connections::{ConnectionError, Connections, validate_frame};

/// Frames a socket may have waiting before it counts as gone.
pub const SOCKET_QUEUE: usize = 512;

/// What the host's writer task sends on a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketFrame {
    Text(String),
    /// Close the socket (sent by `close`, or when the queue overflowed).
    Close,
}

#[derive(Debug, Default)]
pub struct LocalSockets {
    open: RwLock<HashMap<String, mpsc::Sender<SocketFrame>>>,
}

impl LocalSockets {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a connection; the receiver is the socket writer's.
    pub fn register(&self, connection_id: &str) -> mpsc::Receiver<SocketFrame> {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        self.open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(connection_id.to_owned(), tx);
        rx
    }

    /// Forgets a connection (its socket closed).
    pub fn unregister(&self, connection_id: &str) {
        self.open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(connection_id);
    }

    pub fn len(&self) -> usize {
        self.open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sender(&self, connection_id: &str) -> Option<mpsc::Sender<SocketFrame>> {
        self.open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(connection_id)
            .cloned()
    }
}

#[async_trait]
impl Connections for LocalSockets {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), ConnectionError> {
        validate_frame(frame)?;
        let Some(tx) = self.sender(connection_id) else {
            return Err(ConnectionError::Gone);
        };
        match tx.try_send(SocketFrame::Text(frame.to_owned())) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.unregister(connection_id);
                Err(ConnectionError::Gone)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    connection = connection_id,
                    "a socket fell {SOCKET_QUEUE} frames behind; closing it"
                );
                self.unregister(connection_id);
                Err(ConnectionError::Gone)
            }
        }
    }

    async fn close(&self, connection_id: &str) -> Result<(), ConnectionError> {
        if let Some(tx) = self.sender(connection_id) {
            let _ = tx.try_send(SocketFrame::Close);
        }
        self.unregister(connection_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_socket_is_closed_and_reported_gone() {
        let sockets = LocalSockets::new();
        let _rx = sockets.register("c1");
        for i in 0..SOCKET_QUEUE {
            sockets.post("c1", &format!("{i}")).await.unwrap();
        }
        assert_eq!(
            sockets.post("c1", "one too many").await,
            Err(ConnectionError::Gone)
        );
        assert_eq!(
            sockets.post("c1", "after").await,
            Err(ConnectionError::Gone)
        );
        assert!(sockets.is_empty());
    }
}
