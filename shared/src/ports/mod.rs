//! Ports: what the domain needs from the outside world, one small trait per
//! capability. Each has an `aws` and an `embedded` adapter.

pub mod cdn;
pub mod clock;
pub mod connections;
pub mod media;
pub mod queue;
pub mod senders;
pub mod table;

pub use cdn::{Cdn, CdnError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use connections::{ConnectionError, Connections};
pub use queue::{OutgoingMessage, Queue, QueueError, QueueSpec, ReceivedMessage};
pub use senders::{
    DevicePlatform, EmailMessage, EmailSender, PushMessage, PushSender, SendError, SmsMessage,
    SmsSender,
};
pub use table::{
    Condition, Consistency, Cursor, Item, Key, Page, Query, SortKey, Table, TableError, TxOp,
    Update,
};
