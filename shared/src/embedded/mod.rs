//! Adapters for the local host: a durable SQLite store behind every port.

pub mod cdn;
mod codec;
mod expr;
pub mod media;
pub mod outbox;
pub mod queue;
pub mod sockets;
pub mod store;
pub mod table;

pub use cdn::LocalEdge;
pub use media::FileMediaStore;
pub use outbox::{Outbox, OutboxItem};
pub use queue::EmbeddedQueue;
pub use sockets::{LocalSockets, SocketFrame};
pub use store::{EmbeddedStore, StoreError, private_dir, private_file};
pub use table::EmbeddedTable;
