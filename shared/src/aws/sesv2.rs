//! Email through SES v2.

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

use crate::ports::senders::{EmailMessage, EmailSender, SendError};

#[derive(Debug, Clone)]
pub struct SesEmail {
    client: Client,
    from: String,
}

impl SesEmail {
    pub fn new(client: Client, from: impl Into<String>) -> Self {
        Self {
            client,
            from: from.into(),
        }
    }
}

#[async_trait]
impl EmailSender for SesEmail {
    async fn email(&self, m: &EmailMessage) -> Result<String, SendError> {
        let text = |data: &str| {
            Content::builder()
                .data(data)
                .charset("UTF-8")
                .build()
                .map_err(|e| SendError::Rejected(e.to_string()))
        };
        let message = Message::builder()
            .subject(text(&m.subject)?)
            .body(Body::builder().text(text(&m.body)?).build())
            .build();
        let out = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&m.to).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|e| {
                let code = e.code().unwrap_or_default().to_owned();
                let text = DisplayErrorContext(&e).to_string();
                match code.as_str() {
                    "MessageRejected" | "BadRequestException" | "NotFoundException" => {
                        SendError::Rejected(text)
                    }
                    _ => SendError::Transient(text),
                }
            })?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }
}
