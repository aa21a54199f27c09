use std::time::Duration;

use hanul_shared::platform::Platform;
use hanul_shared::ports::{OutgoingMessage, QueueError, QueueSpec};

fn spec(name: &str) -> QueueSpec {
    QueueSpec::new(format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .with_visibility(Duration::from_secs(30))
}

const NO_WAIT: Duration = Duration::ZERO;
const WAIT: Duration = Duration::from_secs(1);

async fn send_receive_delete(p: Platform) {
    let q = p.queue(&spec("basic")).await.unwrap();
    let id = q
        .send(OutgoingMessage::new("hello").attribute("kind", "greeting"))
        .await
        .unwrap();
    let got = q.receive(10, WAIT, None).await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(
        (m.message_id.as_str(), m.body.as_str(), m.receive_count),
        (id.as_str(), "hello", 1)
    );
    assert_eq!(
        m.attributes.get("kind").map(String::as_str),
        Some("greeting")
    );
    assert!(m.sent_at_ms > 0);
    // In flight: nobody else sees it.
    assert!(q.receive(10, NO_WAIT, None).await.unwrap().is_empty());
    q.delete(&m.receipt).await.unwrap();
    q.change_visibility(&m.receipt, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(q.receive(10, NO_WAIT, None).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), 0);
}

async fn visibility_timeout_redelivers(p: Platform) {
    let q = p.queue(&spec("visibility")).await.unwrap();
    q.send(OutgoingMessage::new("again")).await.unwrap();
    let first = q
        .receive(1, WAIT, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let second = q.receive(1, WAIT, None).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    // Making it visible again at once.
    q.change_visibility(&second[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let third = q.receive(1, WAIT, None).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].receive_count, 3);
}

async fn delay_hides_a_message_until_due(p: Platform) {
    let q = p.queue(&spec("delay")).await.unwrap();
    q.send(OutgoingMessage::new("later").delay(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(q.receive(1, NO_WAIT, None).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let got = q.receive(1, WAIT, None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "later");
}

async fn batches_send_in_order_and_respect_limits(p: Platform) {
    let q = p.queue(&spec("batch")).await.unwrap();
    let messages: Vec<_> = (0..10)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    let results = q.send_batch(messages).await.unwrap();
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(Result::is_ok));
    let mut bodies = Vec::new();
    for _ in 0..10 {
        for m in q.receive(10, WAIT, None).await.unwrap() {
            bodies.push(m.body.clone());
            q.delete(&m.receipt).await.unwrap();
        }
        if bodies.len() == 10 {
            break;
        }
    }
    bodies.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(bodies, want);
    let eleven: Vec<_> = (0..11)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    assert!(matches!(
        q.send_batch(eleven).await,
        Err(QueueError::Invalid(_))
    ));
    // One bad entry fails alone.
    let mixed = vec![OutgoingMessage::new("ok"), OutgoingMessage::new("")];
    let results = q.send_batch(mixed).await.unwrap();
    assert!(results[0].is_ok() && matches!(results[1], Err(QueueError::Invalid(_))));
}

async fn failed_messages_go_to_the_dead_letter_queue(p: Platform) {
    let spec =
        spec("redrive").with_dead_letter(format!("dlq-{}", uuid::Uuid::new_v4().simple()), 2);
    let q = p.queue(&spec).await.unwrap();
    let dlq = p.dead_letter_queue(&spec).await.unwrap().unwrap();
    let id = q.send(OutgoingMessage::new("poison")).await.unwrap();
    for attempt in 1..=2 {
        let got = q.receive(1, WAIT, None).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        q.change_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    // The third receive would exceed maxReceiveCount = 2: the queue moves it.
    assert!(q.receive(1, WAIT, None).await.unwrap().is_empty());
    let dead = dlq.receive(1, WAIT, None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].body.as_str()),
        (id.as_str(), "poison")
    );
}

async fn fifo_keeps_group_order_and_drops_duplicates(p: Platform) {
    let spec = QueueSpec::new(format!("order-{}.fifo", uuid::Uuid::new_v4().simple()));
    let q = p.queue(&spec).await.unwrap();
    q.send(OutgoingMessage::new("a1").group("a", "d1"))
        .await
        .unwrap();
    // A repeated deduplication id is accepted and dropped: never delivered below.
    q.send(OutgoingMessage::new("a1 again").group("a", "d1"))
        .await
        .unwrap();
    q.send(OutgoingMessage::new("a2").group("a", "d2"))
        .await
        .unwrap();
    q.send(OutgoingMessage::new("b1").group("b", "d3"))
        .await
        .unwrap();
    let got = q.receive(1, WAIT, None).await.unwrap();
    assert_eq!(got[0].body, "a1");
    assert_eq!(got[0].group_id.as_deref(), Some("a"));
    // While a1 is in flight, group a is held back; group b is not.
    let next = q.receive(10, WAIT, None).await.unwrap();
    let bodies: Vec<&str> = next.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["b1"]);
    q.delete(&got[0].receipt).await.unwrap();
    let after = q.receive(10, WAIT, None).await.unwrap();
    let bodies: Vec<&str> = after.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["a2"]);
    assert!(matches!(
        q.send(OutgoingMessage::new("no group")).await,
        Err(QueueError::Invalid(_))
    ));
}

async fn invalid_messages_are_refused(p: Platform) {
    let q = p.queue(&spec("invalid")).await.unwrap();
    let refuse = |m: OutgoingMessage| {
        let q = q.clone();
        async move { assert!(matches!(q.send(m).await, Err(QueueError::Invalid(_)))) }
    };
    refuse(OutgoingMessage::new("")).await;
    refuse(OutgoingMessage::new("x".repeat(256 * 1024 + 1))).await;
    refuse(OutgoingMessage::new("late").delay(Duration::from_secs(901))).await;
    refuse(OutgoingMessage::new("grouped").group("g", "d")).await;
    assert!(matches!(
        q.receive(0, NO_WAIT, None).await,
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        q.receive(11, NO_WAIT, None).await,
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        q.receive(1, Duration::from_secs(21), None).await,
        Err(QueueError::Invalid(_))
    ));
    assert_eq!(q.depth().await.unwrap(), 0);
}

crate::on_both_platforms!(
    send_receive_delete,
    visibility_timeout_redelivers,
    delay_hides_a_message_until_due,
    batches_send_in_order_and_respect_limits,
    failed_messages_go_to_the_dead_letter_queue,
    fifo_keeps_group_order_and_drops_duplicates,
    invalid_messages_are_refused,
);

/// A queue made earlier with other settings (a moto server or account that
/// outlives a change of `NOTIFY_MAX_ATTEMPTS`) is brought to the new ones.
#[tokio::test]
async fn aws_bootstrap_brings_an_existing_queue_to_its_spec() {
    use aws_sdk_sqs::types::QueueAttributeName;
    use hanul_shared::aws::bootstrap::ensure_queue;

    let client = aws_sdk_sqs::Client::new(&crate::support::moto().await);
    let dlq = spec("settings-dlq");
    let dlq_url = ensure_queue(&client, &dlq, &dlq.name, None).await.unwrap();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap();
    let queue = spec("settings");
    let open = |receives: u32| {
        let spec = queue.clone().with_dead_letter(dlq.name.clone(), receives);
        let (client, dlq_arn) = (&client, &dlq_arn);
        async move {
            ensure_queue(client, &spec, &spec.name, Some(dlq_arn))
                .await
                .unwrap()
        }
    };
    let first = open(5).await;
    assert_eq!(open(2).await, first, "the same queue");
    let redrive = client
        .get_queue_attributes()
        .queue_url(&first)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy).cloned())
        .unwrap();
    let redrive: serde_json::Value = serde_json::from_str(&redrive).unwrap();
    assert_eq!(redrive["maxReceiveCount"].as_u64(), Some(2), "{redrive}");
}
