//! Push and SMS through SNS: a platform endpoint per device token (APNs or
//! FCM platform application), and SMS by phone number.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use serde_json::json;

use crate::ports::senders::{
    DevicePlatform, PushMessage, PushSender, SendError, SmsMessage, SmsSender,
};

/// Maps an SNS failure: a disabled endpoint means the device cannot be
/// reached; a refused parameter is this message's fault (too big, say) and is
/// not retried, but says nothing about the device; throttling and server
/// errors are worth a retry.
fn send_error<E, R>(e: SdkError<E, R>) -> SendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or_default().to_owned();
    let text = DisplayErrorContext(&e).to_string();
    match code.as_str() {
        "EndpointDisabled" | "EndpointDisabledException" => SendError::InvalidRecipient(text),
        "InvalidParameter" | "InvalidParameterException" | "InvalidParameterValue" => {
            SendError::Rejected(text)
        }
        "OptedOut"
        | "OptedOutException"
        | "PlatformApplicationDisabled"
        | "PlatformApplicationDisabledException"
        | "AuthorizationError" => SendError::Rejected(text),
        _ => SendError::Transient(text),
    }
}

/// The endpoint ARN in SNS's answer to creating an endpoint whose token is
/// already registered with other attributes: "... Endpoint <arn> already
/// exists with the same Token, but different attributes."
fn existing_endpoint(message: &str) -> Option<&str> {
    let start = message.find("Endpoint arn:")? + "Endpoint ".len();
    let rest = &message[start..];
    let end = rest.find(char::is_whitespace)?;
    rest[end..]
        .trim_start()
        .starts_with("already exists")
        .then_some(&rest[..end])
}

pub struct SnsPush {
    client: Client,
    /// Platform application per device platform.
    applications: HashMap<DevicePlatform, String>,
    endpoints: moka::sync::Cache<(DevicePlatform, String), String>,
}

impl std::fmt::Debug for SnsPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsPush")
            .field("applications", &self.applications)
            .finish_non_exhaustive()
    }
}

impl SnsPush {
    /// `apns`: the APNs platform application's ARN; `fcm`: FCM's (Android
    /// and web).
    pub fn new(client: Client, apns: String, fcm: String) -> Self {
        Self {
            client,
            applications: HashMap::from([
                (DevicePlatform::Ios, apns),
                (DevicePlatform::Android, fcm.clone()),
                (DevicePlatform::Web, fcm),
            ]),
            endpoints: moka::sync::Cache::new(100_000),
        }
    }

    /// The token's endpoint (creating it is idempotent in SNS). SNS disables
    /// an endpoint whose token the platform refused; creating it again then
    /// fails with "different attributes". That is a dead recipient, unless
    /// the device registered again since (`revived`): then it is enabled.
    async fn endpoint(
        &self,
        platform: DevicePlatform,
        token: &str,
        revived: bool,
    ) -> Result<String, SendError> {
        let key = (platform, token.to_owned());
        // A revived device's endpoint may be cached here from before SNS
        // disabled it: look it up afresh.
        if !revived && let Some(arn) = self.endpoints.get(&key) {
            return Ok(arn);
        }
        let application = self.applications.get(&platform).ok_or_else(|| {
            SendError::Rejected(format!("no application for {}", platform.as_str()))
        })?;
        let created = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(application)
            .token(token)
            .send()
            .await;
        let arn = match created {
            Ok(out) => out
                .endpoint_arn()
                .ok_or_else(|| SendError::Transient("SNS returned no endpoint".into()))?
                .to_owned(),
            Err(e) => match e.message().and_then(existing_endpoint) {
                Some(arn) if revived => {
                    let arn = arn.to_owned();
                    self.client
                        .set_endpoint_attributes()
                        .endpoint_arn(&arn)
                        .attributes("Enabled", "true")
                        .send()
                        .await
                        .map_err(send_error)?;
                    arn
                }
                Some(arn) => {
                    return Err(SendError::InvalidRecipient(format!(
                        "endpoint {arn} is disabled: the platform refused its token"
                    )));
                }
                None => {
                    return Err(match send_error(e) {
                        // Creating an endpoint refuses a malformed token.
                        SendError::Rejected(text) => SendError::InvalidRecipient(text),
                        other => other,
                    });
                }
            },
        };
        self.endpoints.insert(key, arn.clone());
        Ok(arn)
    }
}

#[async_trait]
impl PushSender for SnsPush {
    async fn push(&self, m: &PushMessage) -> Result<String, SendError> {
        let endpoint = self.endpoint(m.platform, &m.token, m.revived).await?;
        let data = m.data.clone().unwrap_or_else(|| json!({}));
        let apns = json!({"aps": {"alert": {"title": m.title, "body": m.body}}, "data": data});
        let fcm = json!({
            "notification": {"title": m.title, "body": m.body},
            "data": data,
            "collapse_key": m.dedupe_id,
        });
        let message = json!({
            "default": m.body,
            "APNS": apns.to_string(),
            "APNS_SANDBOX": apns.to_string(),
            "GCM": fcm.to_string(),
        });
        let mut publish = self
            .client
            .publish()
            .target_arn(&endpoint)
            .message_structure("json")
            .message(message.to_string());
        if m.platform == DevicePlatform::Ios {
            // APNs drops a second notification with the same collapse id.
            let collapse = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(&m.dedupe_id)
                .build()
                .map_err(|e| SendError::Rejected(e.to_string()))?;
            publish = publish.message_attributes("AWS.SNS.MOBILE.APNS.COLLAPSE_ID", collapse);
        }
        match publish.send().await {
            Ok(out) => Ok(out.message_id().unwrap_or_default().to_owned()),
            Err(e) => {
                // Whatever went wrong, the next attempt looks the endpoint up
                // again: it may have been disabled or deleted meanwhile.
                self.endpoints.invalidate(&(m.platform, m.token.clone()));
                Err(match send_error(e) {
                    // Deleted behind our back: the retry creates it anew.
                    SendError::Rejected(text) if text.contains("No endpoint found") => {
                        SendError::Transient(text)
                    }
                    other => other,
                })
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct SnsSms {
    client: Client,
}

impl SnsSms {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl SmsSender for SnsSms {
    async fn sms(&self, m: &SmsMessage) -> Result<String, SendError> {
        let transactional = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("Transactional")
            .build()
            .map_err(|e| SendError::Rejected(e.to_string()))?;
        let out = self
            .client
            .publish()
            .phone_number(&m.to)
            .message(&m.body)
            .message_attributes("AWS.SNS.SMS.SMSType", transactional)
            .send()
            .await
            .map_err(|e| match send_error(e) {
                // A number SNS refuses is not a device to disable.
                SendError::InvalidRecipient(text) => SendError::Rejected(text),
                other => other,
            })?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::existing_endpoint;

    #[test]
    fn the_existing_endpoint_is_read_from_the_message() {
        let arn = "arn:aws:sns:us-east-1:123456789012:endpoint/GCM/fcm/57b6c47a";
        let message = format!(
            "Invalid parameter: Token Reason: Endpoint {arn} already exists with the same Token, but different attributes."
        );
        assert_eq!(existing_endpoint(&message), Some(arn));
        for other in [
            "Invalid parameter: Token",
            "Invalid parameter: Endpoint arn:aws:sns:x is malformed",
            "Endpoint arn:",
            "",
        ] {
            assert_eq!(existing_endpoint(other), None, "{other}");
        }
    }
}
