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

/// Attempts per delivery (the queues' `maxReceiveCount`); then the DLQ.
pub const MAX_ATTEMPTS: u32 = 5;

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

    pub fn spec(self) -> QueueSpec {
        QueueSpec::new(self.name())
            .with_visibility(Duration::from_secs(60))
            .with_dead_letter(format!("{}-dlq", self.name()), MAX_ATTEMPTS)
    }
}

pub fn push_ios_queue() -> QueueSpec {
    DeliveryQueue::PushIos.spec()
}
pub fn push_android_queue() -> QueueSpec {
    DeliveryQueue::PushAndroid.spec()
}
pub fn sms_queue() -> QueueSpec {
    DeliveryQueue::Sms.spec()
}
pub fn email_queue() -> QueueSpec {
    DeliveryQueue::Email.spec()
}
