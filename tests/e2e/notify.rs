//! Notifications end to end: devices and settings, fan-out to the right
//! providers, duplicates, retries, the DLQ and its redrive, a malformed
//! message, quiet hours and schedules, and bad input that changes nothing.

use std::time::{Duration, Instant};

use hanul_e2e::{Backend, LocalHost, client, error_code, rfc3339_in, token};
use hanul_shared::notify::{DEFAULT_MAX_ATTEMPTS, DeliveryQueue};
use hanul_shared::ports::OutgoingMessage;
use serde_json::{Value, json};

const KEY: &str = "e2e-notify-key-0123456789abcdef";

fn start(backend: Backend, extra: &[(&str, &str)]) -> LocalHost {
    let mut env = vec![
        ("SERVICE_API_KEYS", "e2e:e2e-notify-key-0123456789abcdef"),
        ("NOTIFY_BACKOFF_BASE_MS", "50"),
        ("NOTIFY_BACKOFF_MAX_MS", "200"),
        ("WORKER_BACKOFF_BASE_MS", "50"),
        ("WORKER_BACKOFF_MAX_MS", "200"),
        ("NOTIFY_SCHEDULER_INTERVAL_MS", "200"),
    ];
    env.extend_from_slice(extra);
    LocalHost::start_with(backend, &env)
}

async fn setup_user(
    host: &LocalHost,
    user: &str,
    settings: Value,
    devices: &[(&str, &str)],
) -> String {
    let c = client();
    let t = token(host, user).await;
    for (platform, tok) in devices {
        let r = c
            .put(host.url("/api/v1/me/devices"))
            .bearer_auth(&t)
            .json(&json!({"platform": platform, "token": tok}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{platform}");
    }
    let r = c
        .put(host.url("/api/v1/me/notification-settings"))
        .bearer_auth(&t)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t
}

async fn send(host: &LocalHost, body: Value) -> reqwest::Response {
    client()
        .post(host.url("/api/v1/notifications"))
        .header("x-api-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn outbox(host: &LocalHost) -> Vec<Value> {
    let r = client()
        .get(host.url("/local/v1/outbox"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

async fn outbox_of(host: &LocalHost, notification: &str, expect: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let items: Vec<Value> = outbox(host)
            .await
            .into_iter()
            .filter(|i| i["notificationId"] == notification)
            .collect();
        if items.len() >= expect || Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(host: &LocalHost, id: &str) -> Value {
    let r = client()
        .get(host.url(&format!("/api/v1/notifications/{id}")))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn wait_status(host: &LocalHost, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let s = status(host, id).await;
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ios_token(seed: u8) -> String {
    format!("{:02x}", seed).repeat(32)
}

async fn fan_out_reaches_exactly_the_right_providers(backend: Backend) {
    let host = start(backend, &[]);
    let nina = setup_user(
        &host,
        "nina",
        json!({"channels": {"push": true, "sms": false, "email": true},
               "phone": "+821012345678", "email": "nina@example.com"}),
        &[
            ("ios", &ios_token(1)),
            ("android", "fcm-nina-0123456789abcdef"),
        ],
    )
    .await;
    let r = send(
        &host,
        json!({"eventId": "order-1-shipped", "userId": "nina", "category": "orders",
               "channels": ["push", "sms", "email"], "title": "Shipped", "body": "Order 1 left"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    let id = body["notificationId"].as_str().unwrap().to_owned();

    let items = outbox_of(&host, &id, 3).await;
    let mut seen: Vec<(String, String, String)> = items
        .iter()
        .map(|i| {
            (
                i["channel"].as_str().unwrap().to_owned(),
                i["platform"].as_str().unwrap_or("-").to_owned(),
                i["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("email".into(), "-".into(), "nina@example.com".into()),
            (
                "push".into(),
                "android".into(),
                "fcm-nina-0123456789abcdef".into()
            ),
            ("push".into(), "ios".into(), ios_token(1)),
        ],
        "two devices, two pushes; SMS is off"
    );
    assert!(
        items
            .iter()
            .all(|i| i["title"] == "Shipped" && i["body"] == "Order 1 left")
    );

    let s = wait_status(&host, &id, |s| {
        s["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "sent")
            .count()
            == 3
    })
    .await;
    let deliveries = s["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    let sms = deliveries.iter().find(|d| d["channel"] == "sms").unwrap();
    assert_eq!(
        (sms["status"].as_str(), sms["reason"].as_str()),
        (Some("skipped"), Some("channel_off"))
    );
    // The recipient may read it with their own token; nobody else may.
    let c = client();
    let url = host.url(&format!("/api/v1/notifications/{id}"));
    let r = c.get(&url).bearer_auth(&nina).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let omar = token(&host, "omar").await;
    let r = c.get(&url).bearer_auth(&omar).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "notification_not_found");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");

    // A category the user turned off: nothing leaves.
    let r = send(
        &host,
        json!({"eventId": "promo-1", "userId": "nina", "category": "marketing",
               "channels": ["email"], "title": "Sale", "body": "50% off"}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    let r = client()
        .put(host.url("/api/v1/me/notification-settings"))
        .bearer_auth(&nina)
        .json(&json!({"categories": {"marketing": false}, "email": "nina@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(
        &host,
        json!({"eventId": "promo-2", "userId": "nina", "category": "marketing",
               "channels": ["email"], "title": "Sale", "body": "60% off"}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "skipped");

    // A removed device gets nothing more.
    let devices: Value = c
        .get(host.url("/api/v1/me/devices"))
        .bearer_auth(&nina)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);
    let android = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["platform"] == "android")
        .unwrap()["deviceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .delete(host.url(&format!("/api/v1/me/devices/{android}")))
        .bearer_auth(&nina)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(host.url(&format!("/api/v1/me/devices/{android}")))
        .bearer_auth(&nina)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "device_not_found");
    let r = send(
        &host,
        json!({"eventId": "order-2-shipped", "userId": "nina", "category": "orders",
               "channels": ["push"], "title": "Shipped", "body": "Order 2 left"}),
    )
    .await;
    let id2 = r.json::<Value>().await.unwrap()["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let items = outbox_of(&host, &id2, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items2 = outbox_of(&host, &id2, 1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items2.len(), 1);
    assert_eq!(items2[0]["platform"], "ios");
}

async fn a_duplicate_event_is_delivered_once_even_when_racing(backend: Backend) {
    let host = start(backend, &[]);
    setup_user(&host, "dana", json!({"email": "dana@example.com"}), &[]).await;
    let body = json!({"eventId": "welcome-dana", "userId": "dana", "category": "account",
                      "channels": ["email"], "title": "Welcome", "body": "Hello Dana"});
    let c = client();
    let sends = (0..8).map(|_| {
        let c = c.clone();
        let url = host.url("/api/v1/notifications");
        let body = body.clone();
        tokio::spawn(async move {
            let r = c
                .post(url)
                .header("x-api-key", KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["notificationId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    });
    let mut ids = Vec::new();
    for s in sends {
        ids.push(s.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every racer gets the same notificationId");
    let items = outbox_of(&host, &ids[0], 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = send(&host, body).await;
    assert_eq!(
        again.json::<Value>().await.unwrap()["notificationId"],
        ids[0].as_str()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(items.len(), 1);
    assert_eq!(outbox_of(&host, &ids[0], 1).await.len(), 1, "one delivery");
}

async fn failures_are_retried_then_dead_lettered_and_redriven(backend: Backend) {
    let host = start(backend, &[("LOCAL_SENDER_FAILURES", "email:2,sms:5")]);
    setup_user(
        &host,
        "eve",
        json!({"email": "eve@example.com", "phone": "+14155550100"}),
        &[],
    )
    .await;
    // Email fails twice, then goes out on the third attempt.
    let r = send(
        &host,
        json!({"eventId": "retry-email", "userId": "eve", "category": "account",
               "channels": ["email"], "title": "Retry", "body": "third time lucky"}),
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = wait_status(&host, &id, |s| s["deliveries"][0]["status"] == "sent").await;
    assert_eq!(s["deliveries"][0]["status"], "sent", "{s}");
    assert_eq!(s["deliveries"][0]["attempts"], 3);
    assert_eq!(outbox_of(&host, &id, 1).await.len(), 1);

    // SMS fails all five attempts: dead-lettered, and in the DLQ.
    let r = send(
        &host,
        json!({"eventId": "dead-sms", "userId": "eve", "category": "account",
               "channels": ["sms"], "title": "Code", "body": "123456"}),
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = wait_status(&host, &id, |s| {
        s["deliveries"][0]["status"] == "dead_lettered"
    })
    .await;
    assert_eq!(s["deliveries"][0]["status"], "dead_lettered", "{s}");
    assert_eq!(s["deliveries"][0]["attempts"], 5);
    let platform = host.platform().await;
    let dlq = platform
        .dead_letter_queue(&DeliveryQueue::Sms.spec(DEFAULT_MAX_ATTEMPTS))
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dlq.depth().await.unwrap() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dlq.depth().await.unwrap(), 1);
    assert!(outbox_of(&host, &id, 0).await.is_empty());

    // The redrive command sends it back; the provider works now.
    let printed = host.redrive("notify-sms");
    assert!(printed.contains("moved 1"), "{printed}");
    let s = wait_status(&host, &id, |s| s["deliveries"][0]["status"] == "sent").await;
    assert_eq!(s["deliveries"][0]["status"], "sent", "{s}");
    assert_eq!(outbox_of(&host, &id, 1).await.len(), 1);
}

async fn a_malformed_message_goes_to_the_dlq_without_blocking_others(backend: Backend) {
    let host = start(backend, &[]);
    setup_user(&host, "finn", json!({"email": "finn@example.com"}), &[]).await;
    let platform = host.platform().await;
    let queue = platform
        .queue(&DeliveryQueue::Email.spec(DEFAULT_MAX_ATTEMPTS))
        .await
        .unwrap();
    queue
        .send(OutgoingMessage::new("{this is not a delivery"))
        .await
        .unwrap();
    let r = send(
        &host,
        json!({"eventId": "after-garbage", "userId": "finn", "category": "account",
               "channels": ["email"], "title": "Still", "body": "delivered"}),
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        outbox_of(&host, &id, 1).await.len(),
        1,
        "the good message is not blocked"
    );
    let dlq = platform
        .dead_letter_queue(&DeliveryQueue::Email.spec(DEFAULT_MAX_ATTEMPTS))
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dlq.depth().await.unwrap() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        dlq.depth().await.unwrap(),
        1,
        "the malformed one rests in the DLQ"
    );
}

fn hhmm(offset_minutes: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minutes = ((now / 60 + offset_minutes) % 1440 + 1440) % 1440;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

async fn quiet_hours_and_schedules_delay_sends(backend: Backend) {
    let host = start(backend, &[]);
    setup_user(
        &host,
        "gus",
        json!({"email": "gus@example.com",
               "quietHours": {"start": hhmm(-60), "end": hhmm(60), "timeZone": "UTC"}}),
        &[],
    )
    .await;
    // Quiet now: a normal message waits for the end...
    let r = send(
        &host,
        json!({"eventId": "quiet-1", "userId": "gus", "category": "news",
               "channels": ["email"], "title": "News", "body": "later"}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "scheduled");
    let quiet = body["notificationId"].as_str().unwrap().to_owned();
    let s = status(&host, &quiet).await;
    assert_eq!(s["deliveries"][0]["status"], "scheduled");
    assert!(s["deliveries"][0]["scheduledFor"].is_string());
    // ...a critical one goes at once.
    let r = send(
        &host,
        json!({"eventId": "critical-1", "userId": "gus", "category": "security",
               "channels": ["email"], "title": "New sign-in", "body": "was it you?", "critical": true}),
    )
    .await;
    let critical = r.json::<Value>().await.unwrap()["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(outbox_of(&host, &critical, 1).await.len(), 1);
    assert!(outbox_of(&host, &quiet, 0).await.is_empty());

    // sendAt a few seconds ahead (an SQS delay), and beyond SQS's 15 minutes
    // (a durable schedule that the scheduler drains).
    let r = client()
        .put(host.url("/api/v1/me/notification-settings"))
        .bearer_auth(token(&host, "gus").await)
        .json(&json!({"email": "gus@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(
        &host,
        json!({"eventId": "soon-1", "userId": "gus", "category": "news",
               "channels": ["email"], "title": "Soon", "body": "in 4 s", "sendAt": rfc3339_in(4)}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "scheduled");
    let soon = body["notificationId"].as_str().unwrap().to_owned();
    assert!(
        outbox_of(&host, &soon, 0).await.is_empty(),
        "not before its time"
    );
    assert_eq!(outbox_of(&host, &soon, 1).await.len(), 1, "sent once due");
    let r = send(
        &host,
        json!({"eventId": "later-1", "userId": "gus", "category": "news",
               "channels": ["email"], "title": "Later", "body": "in an hour", "sendAt": rfc3339_in(3600)}),
    )
    .await;
    let later = r.json::<Value>().await.unwrap()["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status(&host, &later).await["deliveries"][0]["status"],
        "scheduled"
    );
    assert!(outbox_of(&host, &later, 0).await.is_empty());
}

async fn bad_input_is_refused_and_nothing_is_queued(backend: Backend) {
    let host = start(backend, &[]);
    let hana = setup_user(&host, "hana", json!({"email": "hana@example.com"}), &[]).await;
    let c = client();
    let good = json!({"eventId": "e", "userId": "hana", "category": "news",
                      "channels": ["email"], "title": "t", "body": "b"});
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for (field, value, code) in [
        ("eventId", json!(""), "invalid_event_id"),
        ("userId", json!("has space"), "invalid_user_id"),
        ("category", json!("Bad Category"), "invalid_category"),
        ("channels", json!([]), "invalid_channels"),
        ("channels", json!(["email", "email"]), "invalid_channels"),
        ("channels", json!(["fax"]), "invalid_body"),
        ("title", json!("x".repeat(201)), "invalid_title"),
        ("body", json!(""), "invalid_body"),
        ("data", json!([1, 2]), "invalid_data"),
        ("sendAt", json!("tomorrow-ish"), "invalid_send_at"),
        ("critical", json!("yes"), "invalid_body"),
        ("extra", json!(1), "invalid_body"),
    ] {
        let mut body = good.clone();
        body[field] = value;
        cases.push((body, code));
    }
    // Too big for a push (APNs/FCM take 4 KB), or for one SMS.
    let mut push = good.clone();
    push["channels"] = json!(["push", "email"]);
    push["body"] = json!("b".repeat(1_900));
    push["data"] = json!({"blob": "d".repeat(2_100)});
    cases.push((push, "invalid_push_payload"));
    let mut sms = good.clone();
    sms["channels"] = json!(["sms"]);
    sms["body"] = json!("s".repeat(1_600));
    cases.push((sms, "invalid_body"));
    for (body, code) in cases {
        let r = send(&host, body.clone()).await;
        assert_eq!(error_code(r, 400).await, code, "{body}");
    }
    let r = c
        .post(host.url("/api/v1/notifications"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_api_key");
    let r = c
        .post(host.url("/api/v1/notifications"))
        .header("x-api-key", "not-the-key-0123456789abcdefgh")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_api_key");

    for (body, code) in [
        (
            json!({"platform": "blackberry", "token": "x"}),
            "invalid_body",
        ),
        (
            json!({"platform": "ios", "token": "nothex"}),
            "invalid_token",
        ),
        (
            json!({"platform": "android", "token": "short"}),
            "invalid_token",
        ),
        (json!({"platform": "ios"}), "invalid_body"),
    ] {
        let r = c
            .put(host.url("/api/v1/me/devices"))
            .bearer_auth(&hana)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, code, "{body}");
    }
    let r = c.get(host.url("/api/v1/me/devices")).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");

    let before: Value = c
        .get(host.url("/api/v1/me/notification-settings"))
        .bearer_auth(&hana)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (body, code) in [
        (json!({"phone": "010-1234-5678"}), "invalid_phone"),
        (json!({"email": "not-an-address"}), "invalid_email"),
        (
            json!({"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Asia/Atlantis"}}),
            "invalid_time_zone",
        ),
        (
            json!({"quietHours": {"start": "24:00", "end": "07:00", "timeZone": "UTC"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"quietHours": {"start": "07:00", "end": "07:00", "timeZone": "UTC"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"categories": {"Has Space": false}}),
            "invalid_categories",
        ),
        (json!({"channels": {"pigeon": true}}), "invalid_body"),
    ] {
        let r = c
            .put(host.url("/api/v1/me/notification-settings"))
            .bearer_auth(&hana)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, code, "{body}");
    }
    let after: Value = c
        .get(host.url("/api/v1/me/notification-settings"))
        .bearer_auth(&hana)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before, after, "bad settings changed nothing");

    // Nothing was queued and nothing left.
    let platform = host.platform().await;
    for spec in [DeliveryQueue::Email, DeliveryQueue::Sms].map(|q| q.spec(DEFAULT_MAX_ATTEMPTS)) {
        assert_eq!(
            platform.queue(&spec).await.unwrap().depth().await.unwrap(),
            0
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(outbox(&host).await.is_empty());
}

hanul_e2e::on_both_backends!(
    fan_out_reaches_exactly_the_right_providers,
    a_duplicate_event_is_delivered_once_even_when_racing,
    failures_are_retried_then_dead_lettered_and_redriven,
    a_malformed_message_goes_to_the_dlq_without_blocking_others,
    quiet_hours_and_schedules_delay_sends,
    bad_input_is_refused_and_nothing_is_queued,
);
