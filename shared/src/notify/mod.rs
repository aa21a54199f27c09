//! Notifications: devices and settings per user; a send fans out to one
//! delivery per channel (and per device for push), each on its channel's
//! queue; workers deliver through the providers exactly once per delivery
//! as far as they can tell, retry with backoff, and leave the rest in the DLQ.

pub mod model;
pub mod service;
pub mod worker;

use std::time::Duration;

pub use model::{Channel, Device, RegisterDevice, SendRequest, Settings};
pub use service::{NotificationStatus, NotifyService, Sent};
pub use worker::{Delivered, DeliveryWorker, Senders, WorkerConfig};

use crate::ports::TableError;
use crate::ports::queue::QueueSpec;
use crate::ports::senders::DevicePlatform;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("no such device")]
    DeviceNotFound,
    #[error("no such notification")]
    NotificationNotFound,
    #[error("a user has at most {0} devices; remove one first")]
    TooManyDevices(usize),
    #[error("the notification store is busy; retry shortly")]
    Throttled,
    #[error("the notification store failed: {0}")]
    Store(String),
}

impl From<TableError> for NotifyError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Throttled => NotifyError::Throttled,
            // Keys and items past the store's limits come from the request.
            TableError::Invalid(m) => NotifyError::Invalid("invalid_request", m),
            other => NotifyError::Store(other.to_string()),
        }
    }
}

/// Attempts per delivery by default (the queues' `maxReceiveCount`); then
/// the DLQ.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// `NOTIFY_MAX_ATTEMPTS` (1 to 100, default 5): attempts per delivery before
/// its message is left in the DLQ. On AWS it must equal the queues'
/// `maxReceiveCount`; the template sets both from one parameter.
pub fn max_attempts(get: impl Fn(&str) -> Option<String>) -> Result<u32, String> {
    let n = crate::settings::bounded(
        &get,
        "NOTIFY_MAX_ATTEMPTS",
        DEFAULT_MAX_ATTEMPTS.into(),
        1,
        100,
        "a number of attempts",
    )?;
    Ok(n as u32)
}

/// The four delivery queues: push iOS, push Android (FCM, also web), SMS,
/// email. Each has a DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryQueue {
    PushIos,
    PushAndroid,
    Sms,
    Email,
}

impl DeliveryQueue {
    pub const ALL: [DeliveryQueue; 4] = [
        DeliveryQueue::PushIos,
        DeliveryQueue::PushAndroid,
        DeliveryQueue::Sms,
        DeliveryQueue::Email,
    ];

    pub fn for_delivery(channel: Channel, platform: Option<DevicePlatform>) -> DeliveryQueue {
        match (channel, platform) {
            (Channel::Push, Some(DevicePlatform::Ios)) => DeliveryQueue::PushIos,
            (Channel::Push, _) => DeliveryQueue::PushAndroid,
            (Channel::Sms, _) => DeliveryQueue::Sms,
            (Channel::Email, _) => DeliveryQueue::Email,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DeliveryQueue::PushIos => "notify-push-ios",
            DeliveryQueue::PushAndroid => "notify-push-android",
            DeliveryQueue::Sms => "notify-sms",
            DeliveryQueue::Email => "notify-email",
        }
    }

    /// The queue, its DLQ after `max_attempts` receives.
    pub fn spec(self, max_attempts: u32) -> QueueSpec {
        QueueSpec::new(self.name())
            .with_visibility(Duration::from_secs(60))
            .with_dead_letter(format!("{}-dlq", self.name()), max_attempts)
    }
}
