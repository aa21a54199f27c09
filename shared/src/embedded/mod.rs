//! Adapters for the local host: a durable SQLite store behind every port.

mod codec;
mod expr;
pub mod queue;
pub mod store;
pub mod table;

pub use queue::EmbeddedQueue;
pub use store::{EmbeddedStore, StoreError};
pub use table::EmbeddedTable;
