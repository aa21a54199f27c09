//! What the local host puts around the notification providers: on the aws
//! backend, a copy of every message that left (SNS/SES, e.g. on moto) goes to
//! the outbox too, so `GET /local/v1/outbox` reads the same on both
//! backends; and `LOCAL_SENDER_FAILURES=email:3,sms:1` makes the first N
//! sends of a channel fail, so retries can be watched.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use hanul_shared::embedded::Outbox;
use hanul_shared::notify::Senders;
use hanul_shared::ports::{
    EmailMessage, EmailSender, PushMessage, PushSender, SendError, SmsMessage, SmsSender,
};

/// Sends through `inner`, then records the message in the outbox.
pub struct Recorded {
    inner: Senders,
    outbox: Arc<Outbox>,
}

impl Recorded {
    pub fn senders(inner: Senders, outbox: Arc<Outbox>) -> Senders {
        let recorded = Arc::new(Recorded { inner, outbox });
        Senders::all(recorded)
    }
}

#[async_trait]
impl PushSender for Recorded {
    async fn push(&self, m: &PushMessage) -> Result<String, SendError> {
        let id = self.inner.push.push(m).await?;
        self.outbox.push(m).await?;
        Ok(id)
    }
}

#[async_trait]
impl SmsSender for Recorded {
    async fn sms(&self, m: &SmsMessage) -> Result<String, SendError> {
        let id = self.inner.sms.sms(m).await?;
        self.outbox.sms(m).await?;
        Ok(id)
    }
}

#[async_trait]
impl EmailSender for Recorded {
    async fn email(&self, m: &EmailMessage) -> Result<String, SendError> {
        let id = self.inner.email.email(m).await?;
        self.outbox.email(m).await?;
        Ok(id)
    }
}

/// Fails the first N sends of each channel named in `LOCAL_SENDER_FAILURES`.
pub struct Failing {
    inner: Senders,
    left: HashMap<&'static str, AtomicU32>,
}

impl Failing {
    /// Parses `push:2,sms:1,email:3`.
    pub fn parse(spec: &str) -> Result<HashMap<&'static str, u32>, String> {
        let mut out = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (channel, n) = part.split_once(':').ok_or(format!(
                "LOCAL_SENDER_FAILURES: {part:?} is not channel:count"
            ))?;
            let channel = match channel.trim() {
                "push" => "push",
                "sms" => "sms",
                "email" => "email",
                other => {
                    return Err(format!(
                        "LOCAL_SENDER_FAILURES: {other:?} is not push, sms or email"
                    ));
                }
            };
            let n = n.trim().parse::<u32>().map_err(|_| {
                format!("LOCAL_SENDER_FAILURES: {part:?}: the count is not a number")
            })?;
            out.insert(channel, n);
        }
        Ok(out)
    }

    pub fn senders(inner: Senders, failures: HashMap<&'static str, u32>) -> Senders {
        let failing = Arc::new(Failing {
            inner,
            left: failures
                .into_iter()
                .map(|(k, v)| (k, AtomicU32::new(v)))
                .collect(),
        });
        Senders::all(failing)
    }

    fn should_fail(&self, channel: &str) -> bool {
        self.left.get(channel).is_some_and(|left| {
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    fn injected(channel: &str) -> SendError {
        SendError::Transient(format!(
            "{channel} failure injected by LOCAL_SENDER_FAILURES"
        ))
    }
}

#[async_trait]
impl PushSender for Failing {
    async fn push(&self, m: &PushMessage) -> Result<String, SendError> {
        if self.should_fail("push") {
            return Err(Self::injected("push"));
        }
        self.inner.push.push(m).await
    }
}

#[async_trait]
impl SmsSender for Failing {
    async fn sms(&self, m: &SmsMessage) -> Result<String, SendError> {
        if self.should_fail("sms") {
            return Err(Self::injected("sms"));
        }
        self.inner.sms.sms(m).await
    }
}

#[async_trait]
impl EmailSender for Failing {
    async fn email(&self, m: &EmailMessage) -> Result<String, SendError> {
        if self.should_fail("email") {
            return Err(Self::injected("email"));
        }
        self.inner.email.email(m).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_specs_parse() {
        let f = Failing::parse("email:3, sms:1").unwrap();
        assert_eq!(f.get("email"), Some(&3));
        assert_eq!(f.get("sms"), Some(&1));
        assert!(Failing::parse("fax:1").is_err());
        assert!(Failing::parse("email").is_err());
        assert!(Failing::parse("email:x").is_err());
        assert!(Failing::parse("").unwrap().is_empty());
    }
}
