//! Chat load: send-to-receive latency over real sockets in a 1:1 and in a
//! 100-member group, messages delivered per second, the host's memory per
//! idle connection, and (in-process, on the embedded store) the table and
//! queue requests one message costs.
//!
//! `cargo run --release -p hanul-e2e --example chat-load -- <base-url> <host-pid>`
//! against a running `hanul-local` (infra/scripts/load.sh starts one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn token(base: &str, user: &str) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/local/v1/token"))
        .json(&json!({"userId": user}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"].as_str().unwrap().to_owned()
}

async fn connect(base: &str, user: &str) -> Socket {
    let tok = token(base, user).await;
    let url = format!("{}/ws?token={tok}", base.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    next_of(&mut socket, "hello").await;
    socket
}

async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a frame within 30 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(&text).unwrap();
            if std::env::var("CHAT_LOAD_DEBUG").is_ok() {
                eprintln!("frame: {}", &text[..text.len().min(200)]);
            }
            if v["type"] == kind {
                return v;
            }
        }
    }
}

async fn conversation(base: &str, owner: &str, members: &[String], name: Option<&str>) -> String {
    let mut body = json!({"members": members});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/me/conversations"))
        .bearer_auth(token(base, owner).await)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["id"].as_str().unwrap().to_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

/// Sends `n` messages one after another from `sender`; each sample is the
/// time until the slowest of `receivers` has it.
async fn latency(
    sender: &mut Socket,
    receivers: &mut [Socket],
    cid: &str,
    n: usize,
    tag: &str,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        sender
            .send(Message::Text(
                json!({"action": "send", "conversationId": cid, "clientMessageId": format!("{tag}{i}"), "text": format!("{tag} {i}")})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        futures_util::future::join_all(receivers.iter_mut().map(|r| async move {
            loop {
                let e = next_of(r, "event").await;
                if e["event"]["kind"] == "message" {
                    return;
                }
            }
        }))
        .await;
        samples.push(started.elapsed());
        next_of(sender, "ack").await;
    }
    samples
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn requests_per_message() {
    use hanul_shared::chat::{CreateConversation, SendMessage};
    use hanul_shared::embedded::EmbeddedStore;
    use hanul_shared::platform::{Platform, TableName};
    let dir = tempfile::tempdir().unwrap();
    let platform = Arc::new(Platform::embedded(EmbeddedStore::open(dir.path()).unwrap()));
    let chat = platform.chat_with_push().await.unwrap();
    let tables = [
        platform.table(TableName::Chat).await.unwrap(),
        platform.table(TableName::Connections).await.unwrap(),
        platform.table(TableName::Feed).await.unwrap(),
        platform.table(TableName::RateLimits).await.unwrap(),
    ];
    let queue = platform
        .queue(&platform.chat_queue_spec().unwrap())
        .await
        .unwrap();
    for (label, size) in [("1:1", 1usize), ("group of 100", 99)] {
        let members: Vec<String> = (0..size)
            .map(|i| format!("m{label}{i}").replace([' ', ':'], ""))
            .collect();
        let (conv, _) = chat
            .create_conversation(
                "owner",
                CreateConversation {
                    members: members.clone(),
                    name: (size > 1).then(|| "load".to_owned()),
                },
            )
            .await
            .unwrap();
        // Drain the creation's job.
        while let Ok(batch) = queue.receive(10, Duration::ZERO, None).await {
            if batch.is_empty() {
                break;
            }
            for m in batch {
                chat.handle_job_message(&m.body).await.unwrap();
                queue.delete(&m.receipt).await.unwrap();
            }
        }
        let before: Vec<_> = tables.iter().map(|t| t.metrics()).collect();
        let sent = Instant::now();
        chat.send(
            "owner",
            &conv.id,
            SendMessage {
                client_message_id: "one".into(),
                text: "hello".into(),
            },
        )
        .await
        .unwrap();
        let send_path: Vec<_> = tables.iter().map(|t| t.metrics()).collect();
        let mut jobs = 0;
        while let Ok(batch) = queue.receive(10, Duration::ZERO, None).await {
            if batch.is_empty() {
                break;
            }
            for m in batch {
                jobs += 1;
                chat.handle_job_message(&m.body).await.unwrap();
                queue.delete(&m.receipt).await.unwrap();
            }
        }
        let after: Vec<_> = tables.iter().map(|t| t.metrics()).collect();
        let sum = |a: &[hanul_shared::ports::table::TableStats],
                   b: &[hanul_shared::ports::table::TableStats]| {
            a.iter().zip(b).fold((0, 0, 0, 0), |acc, (x, y)| {
                (
                    acc.0 + y.reads - x.reads,
                    acc.1 + y.writes - x.writes,
                    acc.2 + y.queries - x.queries,
                    acc.3 + y.transactions - x.transactions,
                )
            })
        };
        let (r1, w1, q1, t1) = sum(&before, &send_path);
        let (r2, w2, q2, t2) = sum(&send_path, &after);
        println!(
            "{label}: send path reads={r1} writes={w1} queries={q1} transactions={t1}, queue sends=1; \
             delivery ({jobs} job) reads={r2} writes={w2} queries={q2} transactions={t2} (in {:?})",
            sent.elapsed()
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let pid: u32 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let idle: usize = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(10_000);
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();

    requests_per_message().await;

    // 1:1.
    let (a, b) = (format!("la{run}"), format!("lb{run}"));
    let cid = conversation(&base, &a, std::slice::from_ref(&b), None).await;
    let mut sa = connect(&base, &a).await;
    let mut sb = [connect(&base, &b).await];
    let warm = latency(&mut sa, &mut sb, &cid, 20, "w").await;
    drop(warm);
    report(
        "1:1 send-to-receive",
        latency(&mut sa, &mut sb, &cid, 300, "d").await,
    );

    // A group of 100, every member online.
    let owner = format!("go{run}");
    let members: Vec<String> = (1..100).map(|i| format!("g{run}-{i}")).collect();
    let gid = conversation(&base, &owner, &members, Some("load")).await;
    let mut so = connect(&base, &owner).await;
    let mut group = Vec::new();
    for m in &members {
        group.push(connect(&base, m).await);
    }
    report(
        "group of 100 send-to-slowest-receive",
        latency(&mut so, &mut group, &gid, 50, "g").await,
    );

    // Throughput: 20 pairs sending at once for 10 s.
    let pairs = 20;
    let mut tasks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in 0..pairs {
        let base = base.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let (x, y) = (format!("tx{run}{p}"), format!("ty{run}{p}"));
            let cid = conversation(&base, &x, std::slice::from_ref(&y), None).await;
            let mut sx = connect(&base, &x).await;
            let mut sy = [connect(&base, &y).await];
            let mut n = 0u64;
            let mut i = 0;
            while Instant::now() < deadline {
                latency(&mut sx, &mut sy, &cid, 1, &format!("t{i}-")).await;
                i += 1;
                n += 1;
            }
            n
        }));
    }
    let mut delivered = 0;
    for t in tasks {
        delivered += t.await.unwrap();
    }
    println!(
        "throughput: {delivered} messages delivered in 10 s by {pairs} pairs = {:.0}/s",
        delivered as f64 / 10.0
    );

    // Idle connections.
    if pid > 0 {
        let before = rss_kb(pid);
        let mut idle_sockets = Vec::with_capacity(idle);
        // One user per socket: a user's presence item lists their devices.
        for i in 0..idle {
            let tok = token(&base, &format!("idle{run}-{i}")).await;
            let url = format!("{}/ws?token={tok}", base.replace("http://", "ws://"));
            let (s, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            idle_sockets.push(s);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss_kb(pid);
        println!(
            "idle: {idle} sockets, host RSS {before} KB -> {after} KB = {:.1} KB per connection",
            (after.saturating_sub(before)) as f64 / idle as f64
        );
    }
}
