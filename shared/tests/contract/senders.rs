//! The notification providers: the local outbox, and SNS/SES on moto
//! (push to platform endpoints, SMS, email, a disabled endpoint).

use std::sync::Arc;

use hanul_shared::aws::{SesEmail, SnsPush, SnsSms, bootstrap};
use hanul_shared::embedded::{EmbeddedStore, EmbeddedTable, Outbox};
use hanul_shared::ports::{
    DevicePlatform, EmailMessage, EmailSender, PushMessage, PushSender, SendError, SmsMessage,
    SmsSender, SystemClock,
};

use crate::support::{moto, unique};

fn push(token: &str, platform: DevicePlatform) -> PushMessage {
    PushMessage {
        notification_id: "n1".into(),
        dedupe_id: "n1-00".into(),
        platform,
        token: token.into(),
        title: "Hello".into(),
        body: "World".into(),
        data: Some(serde_json::json!({"orderId": 1042})),
        revived: false,
    }
}

#[tokio::test]
async fn the_outbox_keeps_every_message_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let outbox = Outbox::new(
        Arc::new(EmbeddedTable::new(store, "outbox")),
        Arc::new(SystemClock),
    );
    outbox
        .push(&push(&"ab".repeat(32), DevicePlatform::Ios))
        .await
        .unwrap();
    outbox
        .sms(&SmsMessage {
            notification_id: "n2".into(),
            dedupe_id: "n2-00".into(),
            to: "+821012345678".into(),
            body: "code 1234".into(),
        })
        .await
        .unwrap();
    outbox
        .email(&EmailMessage {
            notification_id: "n3".into(),
            dedupe_id: "n3-00".into(),
            to: "nina@example.com".into(),
            subject: "Hi".into(),
            body: "There".into(),
        })
        .await
        .unwrap();
    let items = outbox.list().await.unwrap();
    let seen: Vec<(&str, &str, Option<&str>)> = items
        .iter()
        .map(|i| {
            (
                i.notification_id.as_str(),
                i.channel.as_str(),
                i.platform.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("n1", "push", Some("ios")),
            ("n2", "sms", None),
            ("n3", "email", None)
        ]
    );
    assert_eq!(items[2].title, "Hi");
    assert!(items[0].sent_at.ends_with('Z'));
}

#[tokio::test]
async fn sns_delivers_pushes_and_a_disabled_endpoint_is_an_invalid_recipient() {
    let config = moto().await;
    let sns = aws_sdk_sns::Client::new(&config);
    let apns = bootstrap::ensure_platform_application(&sns, &unique("apns"), "APNS")
        .await
        .unwrap();
    let fcm = bootstrap::ensure_platform_application(&sns, &unique("fcm"), "GCM")
        .await
        .unwrap();
    let sender = SnsPush::new(sns.clone(), apns.clone(), fcm.clone());
    let token = format!("{:0>64}", unique("t").replace('-', ""))
        .chars()
        .map(|c| if c.is_ascii_hexdigit() { c } else { 'a' })
        .collect::<String>();
    let id = sender
        .push(&push(&token, DevicePlatform::Ios))
        .await
        .unwrap();
    assert!(!id.is_empty());
    let fcm_token = unique("fcm-token");
    sender
        .push(&push(&fcm_token, DevicePlatform::Android))
        .await
        .unwrap();

    // Disable the FCM endpoint, as SNS does when FCM says the token is dead.
    let endpoints = sns
        .list_endpoints_by_platform_application()
        .platform_application_arn(&fcm)
        .send()
        .await
        .unwrap();
    let endpoint = endpoints
        .endpoints()
        .iter()
        .find(|e| e.attributes().and_then(|a| a.get("Token")) == Some(&fcm_token))
        .and_then(|e| e.endpoint_arn())
        .unwrap()
        .to_owned();
    sns.set_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    let err = sender
        .push(&push(&fcm_token, DevicePlatform::Android))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient(_)), "{err}");

    // Another instance (nothing cached) finds the endpoint disabled too:
    // still a dead recipient, not turned back on behind the platform's back.
    let fresh = SnsPush::new(sns.clone(), apns.clone(), fcm.clone());
    let err = fresh
        .push(&push(&fcm_token, DevicePlatform::Android))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient(_)), "{err}");

    // The user registers the device again (revived): the endpoint SNS
    // disabled is turned back on, and pushes reach it.
    let again = PushMessage {
        revived: true,
        ..push(&fcm_token, DevicePlatform::Android)
    };
    fresh.push(&again).await.unwrap();

    // Disabled once more while `fresh` has the endpoint cached: a revived
    // device's push looks it up afresh rather than trusting the cache.
    sns.set_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    fresh.push(&again).await.unwrap();
    let enabled = sns
        .get_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .send()
        .await
        .unwrap();
    assert_eq!(
        enabled
            .attributes()
            .and_then(|a| a.get("Enabled"))
            .map(String::as_str),
        Some("true")
    );
}

#[tokio::test]
async fn sns_sends_sms_and_ses_sends_email() {
    let config = moto().await;
    let sms = SnsSms::new(aws_sdk_sns::Client::new(&config));
    let id = sms
        .sms(&SmsMessage {
            notification_id: "n".into(),
            dedupe_id: "n-00".into(),
            to: "+821012345678".into(),
            body: "hello".into(),
        })
        .await
        .unwrap();
    assert!(!id.is_empty());

    let ses = aws_sdk_sesv2::Client::new(&config);
    let from = format!("{}@hanul.example", unique("noreply"));
    bootstrap::ensure_email_identity(&ses, &from).await.unwrap();
    bootstrap::ensure_email_identity(&ses, &from).await.unwrap();
    let email = SesEmail::new(ses, from);
    let id = email
        .email(&EmailMessage {
            notification_id: "n".into(),
            dedupe_id: "n-00".into(),
            to: "nina@example.com".into(),
            subject: "Hi".into(),
            body: "There".into(),
        })
        .await
        .unwrap();
    assert!(!id.is_empty());
    // An unverified sender is refused for good, not retried.
    let stranger = SesEmail::new(
        aws_sdk_sesv2::Client::new(&config),
        "nobody@unverified.example",
    );
    let err = stranger
        .email(&EmailMessage {
            notification_id: "n".into(),
            dedupe_id: "n-01".into(),
            to: "nina@example.com".into(),
            subject: "Hi".into(),
            body: "There".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Rejected(_)), "{err}");
}
