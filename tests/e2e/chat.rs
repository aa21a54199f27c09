//! Chat end to end with real WebSocket clients: 1:1 and a 100-member group
//! delivered to every device in order, sync by `since` over several pages,
//! idempotent resends, pushes to offline members (none when muted),
//! presence after missed heartbeats, a killed socket, non-members refused,
//! and bad frames answered with the socket kept.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hanul_e2e::{Backend, LocalHost, client, eventually, token};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a frame may take to arrive: moto serves every aws-backend
/// write from one Python thread, so a group delivery on a loaded machine
/// takes tens of seconds there (milliseconds on the embedded store).
const ARRIVE: Duration = Duration::from_secs(60);

struct Device {
    socket: Socket,
}

impl Device {
    async fn connect(host: &LocalHost, user: &str) -> Device {
        let tok = token(host, user).await;
        let url = host
            .url(&format!("/ws?token={tok}"))
            .replace("http://", "ws://");
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut device = Device { socket };
        let hello = device.next_of("hello").await;
        assert_eq!(hello["userId"], user);
        device
    }

    async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    async fn send_raw(&mut self, text: String) {
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next frame of type `kind`, skipping others.
    async fn next_of(&mut self, kind: &str) -> Value {
        tokio::time::timeout(ARRIVE, async {
            loop {
                let message = self.socket.next().await.unwrap().unwrap();
                if let Message::Text(text) = message {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["type"] == kind {
                        return frame;
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} frame within {ARRIVE:?}"))
    }

    /// The next `n` message events (of conversation `cid`).
    async fn messages(&mut self, cid: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let frame = self.next_of("event").await;
            let event = &frame["event"];
            if event["kind"] == "message" && event["conversationId"] == cid {
                out.push(event["message"].clone());
            }
        }
        out
    }

    /// Frames that arrive within `wait`, of any type.
    async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(wait, self.socket.next()).await
        {
            out.push(serde_json::from_str(&text).unwrap());
        }
        out
    }
}

async fn create(host: &LocalHost, user: &str, members: &[&str], name: Option<&str>) -> Value {
    let tok = token(host, user).await;
    let mut body = json!({ "members": members });
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    let r = client()
        .post(host.url("/api/v1/me/conversations"))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status() == 201 || r.status() == 200, "{}", r.status());
    r.json().await.unwrap()
}

async fn send_http(
    host: &LocalHost,
    user: &str,
    cid: &str,
    client_id: &str,
    text: &str,
) -> (u16, Value) {
    let tok = token(host, user).await;
    let r = client()
        .post(host.url(&format!("/api/v1/conversations/{cid}/messages")))
        .bearer_auth(tok)
        .json(&json!({"clientMessageId": client_id, "text": text}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn get(host: &LocalHost, user: &str, path: &str) -> (u16, Value) {
    let tok = token(host, user).await;
    let r = client()
        .get(host.url(path))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn direct_chat_reaches_every_device_in_order(backend: Backend) {
    let host = LocalHost::start(backend);
    let conversation = create(&host, "ann", &["bob"], None).await;
    let cid = conversation["id"].as_str().unwrap().to_owned();
    assert_eq!(conversation["kind"], "direct");
    // The same pair, whoever asks, gets the same conversation.
    let again = create(&host, "bob", &["ann"], None).await;
    assert_eq!(again["id"], cid);

    let mut ann = Device::connect(&host, "ann").await;
    let mut bob_phone = Device::connect(&host, "bob").await;
    let mut bob_laptop = Device::connect(&host, "bob").await;
    for i in 0..10 {
        ann.send(json!({"action": "send", "conversationId": cid, "clientMessageId": format!("m{i}"), "text": format!("hello {i}")}))
            .await;
        let ack = ann.next_of("ack").await;
        assert_eq!(ack["clientMessageId"], format!("m{i}"));
        assert_eq!(ack["created"], true);
    }
    let phone = bob_phone.messages(&cid, 10).await;
    let laptop = bob_laptop.messages(&cid, 10).await;
    let texts: Vec<&str> = phone.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        (0..10).map(|i| format!("hello {i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&phone),
        ids(&laptop),
        "both devices get the same messages"
    );
    let mut sorted = ids(&phone);
    sorted.sort_unstable();
    assert_eq!(ids(&phone), sorted, "in id order");

    // Non-members are refused over HTTP and over the socket.
    let (status, _) = get(
        &host,
        "eve",
        &format!("/api/v1/conversations/{cid}/messages"),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send_http(&host, "eve", &cid, "x1", "let me in").await;
    assert_eq!(status, 404);
    let mut eve = Device::connect(&host, "eve").await;
    eve.send(
        json!({"action": "send", "conversationId": cid, "clientMessageId": "e1", "text": "hi"}),
    )
    .await;
    let error = eve.next_of("error").await;
    assert_eq!(error["code"], "conversation_not_found");
    // History for a member: newest first.
    let (status, history) = get(
        &host,
        "bob",
        &format!("/api/v1/conversations/{cid}/messages?limit=3"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"][0]["text"], "hello 9");
    assert!(history["nextBefore"].is_string());
    // Unread counts: bob has read nothing, ann everything she sent.
    let (_, list) = get(&host, "bob", "/api/v1/me/conversations").await;
    assert_eq!(list["conversations"][0]["unreadCount"], 10);
    let (_, list) = get(&host, "ann", "/api/v1/me/conversations").await;
    assert_eq!(list["conversations"][0]["unreadCount"], 0);
    // A read marker is seen by the other member.
    bob_phone
        .send(json!({"action": "read", "conversationId": cid, "messageId": phone[9]["id"]}))
        .await;
    let ack = bob_phone.next_of("read_ack").await;
    assert_eq!(ack["unreadCount"], 0);
    let read = ann.next_of("read").await;
    assert_eq!(read["userId"], "bob");
}

async fn offline_device_syncs_by_since_in_pages(backend: Backend) {
    let host = LocalHost::start(backend);
    let cid = create(&host, "cat", &["dan"], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sent = Vec::new();
    for i in 0..50 {
        let (status, body) =
            send_http(&host, "cat", &cid, &format!("c{i}"), &format!("note {i}")).await;
        assert_eq!(status, 201, "{body}");
        sent.push(body["message"]["id"].as_str().unwrap().to_owned());
    }
    // Let delivery append everything to dan's stream.
    eventually(Duration::from_secs(30), || async {
        let (_, page) = get(&host, "dan", "/api/v1/me/messages?limit=500").await;
        let n = page["events"].as_array().map_or(0, Vec::len);
        if n >= 51 {
            Ok(())
        } else {
            Err(format!("{n} events so far"))
        }
    })
    .await;
    // A device that was offline catches up page by page.
    let mut seen = Vec::new();
    let mut positions = HashSet::new();
    let mut since = "0".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = get(
            &host,
            "dan",
            &format!("/api/v1/me/messages?since={since}&limit=20"),
        )
        .await;
        assert_eq!(status, 200);
        pages += 1;
        for e in page["events"].as_array().unwrap() {
            assert!(
                positions.insert(e["position"].as_str().unwrap().to_owned()),
                "a repeat"
            );
            if e["kind"] == "message" {
                seen.push(e["message"]["id"].as_str().unwrap().to_owned());
            }
        }
        since = page["nextSince"].as_str().unwrap().to_owned();
        if page["limited"] == false {
            break;
        }
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen, sent, "every message, once, oldest first");
    // The same over the socket, from where it stopped: nothing new.
    let mut dan = Device::connect(&host, "dan").await;
    dan.send(json!({"action": "sync", "since": since})).await;
    let page = dan.next_of("sync").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0);
    // A retry after a lost ack (a reconnect) makes no second message.
    let mut cat = Device::connect(&host, "cat").await;
    cat.send(
        json!({"action": "send", "conversationId": cid, "clientMessageId": "c7", "text": "note 7"}),
    )
    .await;
    let ack = cat.next_of("ack").await;
    assert_eq!(ack["created"], false);
    assert_eq!(ack["message"]["id"], sent[7]);
    // An edit and a delete reach the stream above the device's position.
    let tok = token(&host, "cat").await;
    let r = client()
        .delete(host.url(&format!("/api/v1/conversations/{cid}/messages/{}", sent[3])))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted = dan.next_of("event").await;
    assert_eq!(deleted["event"]["kind"], "delete");
    assert_eq!(deleted["event"]["message"]["text"], Value::Null);
    let r = client()
        .delete(host.url(&format!("/api/v1/conversations/{cid}/messages/{}", sent[4])))
        .bearer_auth(token(&host, "dan").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "only the sender deletes");
}

async fn a_group_of_100_is_delivered_to_every_device(backend: Backend) {
    // These devices send no heartbeats: a long heartbeat interval keeps
    // the sweeper from closing them if moto makes the test slow.
    let host = LocalHost::start_with(backend, &[("CHAT_HEARTBEAT_SECONDS", "300")]);
    let members: Vec<String> = (1..100).map(|i| format!("g{i:03}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let conversation = create(&host, "owner", &refs, Some("everyone")).await;
    let cid = conversation["id"].as_str().unwrap().to_owned();
    assert_eq!(conversation["memberCount"], 100);
    // Ten at a time, as a group's members come online in practice.
    let mut devices = Vec::new();
    for chunk in members.chunks(10) {
        let connects = chunk.iter().map(|m| Device::connect(&host, m));
        devices.extend(futures_util::future::join_all(connects).await);
    }
    for i in 0..3 {
        let (status, _) =
            send_http(&host, "owner", &cid, &format!("o{i}"), &format!("all {i}")).await;
        assert_eq!(status, 201);
    }
    let all = futures_util::future::join_all(devices.iter_mut().map(|d| d.messages(&cid, 3))).await;
    for got in all {
        let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["all 0", "all 1", "all 2"]);
    }
    // A 101st member is refused.
    let tok = token(&host, "owner").await;
    let r = client()
        .post(host.url(&format!("/api/v1/conversations/{cid}/members")))
        .bearer_auth(tok)
        .json(&json!({"members": ["one-too-many"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn offline_members_get_one_push_and_muted_ones_none(backend: Backend) {
    let host = LocalHost::start(backend);
    for user in ["pia", "quin"] {
        let r = client()
            .put(host.url("/api/v1/me/devices"))
            .bearer_auth(token(&host, user).await)
            .json(&json!({"platform": "ios", "token": "ab".repeat(32)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let cid = create(&host, "oli", &["pia", "quin"], Some("trio")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client()
        .put(host.url(&format!("/api/v1/me/conversations/{cid}/mute")))
        .bearer_auth(token(&host, "quin").await)
        .json(&json!({"muted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = send_http(&host, "oli", &cid, "p1", "are you there?").await;
    assert_eq!(status, 201);
    let pushes = eventually(ARRIVE, || async {
        let outbox: Value = client()
            .get(host.url("/local/v1/outbox"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items: Vec<Value> = outbox["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            Err("no push yet".to_owned())
        } else {
            Ok(items)
        }
    })
    .await;
    // Redeliveries would show as more: wait a little and count again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outbox: Value = client()
        .get(host.url("/local/v1/outbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = outbox["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one push, to pia only: {items:?}");
    assert_eq!(pushes[0]["channel"], "push");
    assert!(
        items[0]["body"]
            .as_str()
            .unwrap()
            .contains("are you there?")
    );
}

async fn presence_goes_offline_after_missed_heartbeats(backend: Backend) {
    let host = LocalHost::start_with(
        backend,
        &[
            ("CHAT_HEARTBEAT_SECONDS", "1"),
            ("CHAT_SWEEP_INTERVAL_MS", "200"),
        ],
    );
    let cid = create(&host, "rae", &["sam"], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!cid.is_empty());
    let mut sam = Device::connect(&host, "sam").await;
    let mut rae = Device::connect(&host, "rae").await;
    let online = sam.next_of("presence").await;
    assert_eq!(
        (online["userId"].as_str(), online["status"].as_str()),
        (Some("rae"), Some("online"))
    );
    let (_, p) = get(&host, "sam", "/api/v1/users/rae/presence").await;
    assert_eq!(p["status"], "online");
    // sam keeps heartbeating, rae stops: after two missed, the sweep
    // takes rae offline, and sam hears it once.
    let mut frames = Vec::new();
    for _ in 0..8 {
        sam.send(json!({"action": "heartbeat"})).await;
        frames.extend(sam.drain(Duration::from_millis(700)).await);
    }
    let presence: Vec<&Value> = frames.iter().filter(|f| f["type"] == "presence").collect();
    assert_eq!(presence.len(), 1, "{presence:?}");
    assert_eq!(presence[0]["userId"], "rae");
    assert_eq!(presence[0]["status"], "offline");
    let (_, p) = get(&host, "sam", "/api/v1/users/rae/presence").await;
    assert_eq!(p["status"], "offline");
    assert!(p["lastActiveAt"].is_string());
    // Presence is not for strangers.
    let (status, _) = get(&host, "zed", "/api/v1/users/rae/presence").await;
    assert_eq!(status, 404);
    drop(rae.drain(Duration::from_millis(10)).await);
}

async fn a_killed_socket_is_removed_and_others_still_served(backend: Backend) {
    let host = LocalHost::start(backend);
    let cid = create(&host, "uma", &["vic"], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dead = Device::connect(&host, "vic").await;
    let mut alive = Device::connect(&host, "vic").await;
    // Gone without a close frame, as a killed process or a lost network.
    drop(dead.socket.into_inner());
    for i in 0..3 {
        let (status, _) =
            send_http(&host, "uma", &cid, &format!("k{i}"), &format!("still {i}")).await;
        assert_eq!(status, 201);
    }
    let got = alive.messages(&cid, 3).await;
    assert_eq!(got.len(), 3);
    let (_, p) = get(&host, "uma", "/api/v1/users/vic/presence").await;
    assert_eq!(
        p["status"], "online",
        "vic's other device still holds a socket"
    );
}

async fn bad_frames_are_answered_and_the_socket_kept(backend: Backend) {
    let host = LocalHost::start(backend);
    let mut d = Device::connect(&host, "wes").await;
    let cases = [
        ("not json".to_owned(), "bad_frame"),
        ("[1,2]".to_owned(), "bad_frame"),
        (json!({"action": "dance"}).to_string(), "unknown_action"),
        (json!({"no": "action"}).to_string(), "unknown_action"),
        (json!({"action": "send", "conversationId": "g1"}).to_string(), "invalid_request"),
        (json!({"action": "send", "conversationId": "g1", "clientMessageId": "a", "text": ""}).to_string(), "invalid_text"),
        (json!({"action": "sync", "since": "-3"}).to_string(), "invalid_since"),
        (json!({"action": "send", "conversationId": "g1", "clientMessageId": "a", "text": "x".repeat(40_000)}).to_string(), "frame_too_large"),
    ];
    for (frame, code) in cases {
        d.send_raw(frame.clone()).await;
        let error = d.next_of("error").await;
        assert_eq!(error["code"], code, "{}", &frame[..frame.len().min(60)]);
    }
    d.send(json!({"action": "heartbeat"})).await;
    let ack = d.next_of("heartbeat_ack").await;
    assert!(ack["heartbeatSeconds"].as_u64().unwrap() >= 1);
    // No token, a bad token: no socket.
    let url = host.url("/ws").replace("http://", "ws://");
    assert!(tokio_tungstenite::connect_async(url.clone()).await.is_err());
    assert!(
        tokio_tungstenite::connect_async(format!("{url}?token=nope"))
            .await
            .is_err()
    );
}

hanul_e2e::on_both_backends!(
    direct_chat_reaches_every_device_in_order,
    offline_device_syncs_by_since_in_pages,
    a_group_of_100_is_delivered_to_every_device,
    offline_members_get_one_push_and_muted_ones_none,
    presence_goes_offline_after_missed_heartbeats,
    a_killed_socket_is_removed_and_others_still_served,
    bad_frames_are_answered_and_the_socket_kept,
);
