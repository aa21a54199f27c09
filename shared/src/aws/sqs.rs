//! `Queue` on SQS (aws-sdk-sqs).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use crate::ports::queue::{self, OutgoingMessage, Queue, QueueError, QueueSpec, ReceivedMessage};

pub struct SqsQueue {
    client: Client,
    url: String,
    arn: String,
    spec: QueueSpec,
}

fn sdk_error<E, R>(err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().unwrap_or_default().to_owned();
    if code.contains("ReceiptHandleIsInvalid") || code.contains("MessageNotInflight") {
        QueueError::ReceiptInvalid
    } else if code.contains("InvalidParameter")
        || code.contains("Validation")
        || code.contains("InvalidMessageContents")
    {
        QueueError::Invalid(err.message().unwrap_or(&code).to_owned())
    } else {
        QueueError::Unavailable(DisplayErrorContext(&err).to_string())
    }
}

/// Whole seconds, rounded up: SQS counts in seconds, and a retry delay of
/// 0.6 s must not become "now".
fn secs(d: Duration) -> i32 {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(whole).unwrap_or(i32::MAX)
}

fn attribute_values(
    attrs: &BTreeMap<String, String>,
) -> Result<Option<std::collections::HashMap<String, MessageAttributeValue>>, QueueError> {
    if attrs.is_empty() {
        return Ok(None);
    }
    attrs
        .iter()
        .map(|(k, v)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map(|value| (k.clone(), value))
                .map_err(|e| QueueError::Invalid(e.to_string()))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

impl SqsQueue {
    /// Binds to an existing queue by URL, reading its ARN.
    pub async fn connect(client: Client, url: String, spec: QueueSpec) -> Result<Self, QueueError> {
        let out = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sdk_error)?;
        let arn = out
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_else(|| format!("arn:aws:sqs:unknown:000000000000:{}", spec.name));
        Ok(Self {
            client,
            url,
            arn,
            spec,
        })
    }

    /// Binds to a queue by URL without a call (a producer needs only
    /// `sqs:SendMessage`); the ARN is read off the URL's
    /// `https://sqs.<region>.amazonaws.com/<account>/<name>` shape.
    pub fn from_url(client: Client, url: String, spec: QueueSpec) -> Self {
        let parts: Vec<&str> = url.trim_end_matches('/').rsplit('/').take(2).collect();
        let region = url
            .split("://")
            .nth(1)
            .and_then(|host| host.split('.').nth(1))
            .unwrap_or("unknown");
        let arn = match parts.as_slice() {
            [name, account] => format!("arn:aws:sqs:{region}:{account}:{name}"),
            _ => format!("arn:aws:sqs:{region}:000000000000:{}", spec.name),
        };
        Self {
            client,
            url,
            arn,
            spec,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    fn arn(&self) -> String {
        self.arn.clone()
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        message.validate(self.spec.fifo())?;
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body)
            .set_delay_seconds(message.delay.map(secs))
            .set_message_group_id(message.group_id)
            .set_message_deduplication_id(message.dedupe_id)
            .set_message_attributes(attribute_values(&message.attributes)?)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.message_id.unwrap_or_default())
    }

    async fn send_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        queue::validate_batch(&messages)?;
        let fifo = self.spec.fifo();
        let mut results: Vec<Option<Result<String, QueueError>>> =
            Vec::with_capacity(messages.len());
        let mut entries = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            if let Err(e) = m.validate(fifo) {
                results.push(Some(Err(e)));
                continue;
            }
            results.push(None);
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.body)
                    .set_delay_seconds(m.delay.map(secs))
                    .set_message_group_id(m.group_id)
                    .set_message_deduplication_id(m.dedupe_id)
                    .set_message_attributes(attribute_values(&m.attributes)?)
                    .build()
                    .map_err(|e| QueueError::Invalid(e.to_string()))?,
            );
        }
        if !entries.is_empty() {
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sdk_error)?;
            for ok in out.successful {
                if let Some(slot) = ok.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Some(Ok(ok.message_id));
                }
            }
            for failed in out.failed {
                if let Some(slot) = failed
                    .id
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| results.get_mut(i))
                {
                    let reason = failed.message.unwrap_or(failed.code);
                    *slot = Some(Err(if failed.sender_fault {
                        QueueError::Invalid(reason)
                    } else {
                        QueueError::Unavailable(reason)
                    }));
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(QueueError::Unavailable("no result for entry".into())))
            })
            .collect())
    }

    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        queue::validate_receive(max, wait, visibility)?;
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(secs(wait))
            .set_visibility_timeout(visibility.map(secs))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sdk_error)?;
        let mut received = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let system = m.attributes.unwrap_or_default();
            let sys = |name: MessageSystemAttributeName| system.get(&name).cloned();
            let number = |name| sys(name).and_then(|v| v.parse::<u64>().ok());
            let attributes = m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
                .collect();
            received.push(ReceivedMessage {
                message_id: m.message_id.unwrap_or_default(),
                receipt: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
                attributes,
                receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
                    .unwrap_or(1) as u32,
                sent_at_ms: number(MessageSystemAttributeName::SentTimestamp).unwrap_or(0),
                first_received_at_ms: number(
                    MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                )
                .unwrap_or(0),
                group_id: sys(MessageSystemAttributeName::MessageGroupId),
                dedupe_id: sys(MessageSystemAttributeName::MessageDeduplicationId),
            });
        }
        Ok(received)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        queue::validate_visibility(timeout)?;
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(timeout))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out
            .attributes
            .unwrap_or_default()
            .values()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum())
    }
}
