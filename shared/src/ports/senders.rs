//! Providers that deliver a notification: push (APNs, FCM), SMS and email.
//! On AWS, SNS platform endpoints, SNS SMS and SES v2; locally, a durable
//! outbox.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Where a push goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePlatform {
    /// APNs.
    Ios,
    /// FCM.
    Android,
    /// FCM web push.
    Web,
}

impl DevicePlatform {
    pub fn as_str(self) -> &'static str {
        match self {
            DevicePlatform::Ios => "ios",
            DevicePlatform::Android => "android",
            DevicePlatform::Web => "web",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushMessage {
    pub notification_id: String,
    /// The same for every attempt of one delivery: APNs' collapse id.
    pub dedupe_id: String,
    pub platform: DevicePlatform,
    pub token: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The device registered again after its token was found dead: a
    /// provider that disabled the token's endpoint may turn it back on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revived: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SmsMessage {
    pub notification_id: String,
    pub dedupe_id: String,
    /// E.164.
    pub to: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailMessage {
    pub notification_id: String,
    pub dedupe_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The token is invalid or the endpoint disabled: stop sending there.
    #[error("the recipient cannot be reached: {0}")]
    InvalidRecipient(String),
    /// The provider refused this message for good (retrying cannot help).
    #[error("the provider refused the message: {0}")]
    Rejected(String),
    /// Worth retrying.
    #[error("the provider failed: {0}")]
    Transient(String),
}

#[async_trait]
pub trait PushSender: Send + Sync + 'static {
    /// Returns the provider's message id.
    async fn push(&self, message: &PushMessage) -> Result<String, SendError>;
}

#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    async fn sms(&self, message: &SmsMessage) -> Result<String, SendError>;
}

#[async_trait]
pub trait EmailSender: Send + Sync + 'static {
    async fn email(&self, message: &EmailMessage) -> Result<String, SendError>;
}
