//! `kill -9` during writes: every write the embedded store acknowledged is
//! there after a restart, in the table and on the queue.
//!
//! The test runs itself a second time as a child process that writes and
//! prints each acknowledgement, kills it with SIGKILL mid-stream, reopens the
//! store and checks every acknowledged key and message.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use hanul_shared::embedded::{EmbeddedQueue, EmbeddedStore, EmbeddedTable};
use hanul_shared::ports::table::{Consistency, Key, Table, num};
use hanul_shared::ports::{OutgoingMessage, Queue, QueueSpec};

const CHILD: &str = "HANUL_CRASH_CHILD_DIR";
const TEST: &str = "acknowledged_writes_survive_kill_9";

fn spec() -> QueueSpec {
    QueueSpec::new("crash").with_visibility(Duration::from_secs(60))
}

async fn write_until_killed(dir: &str) {
    let store = EmbeddedStore::open(std::path::Path::new(dir)).unwrap();
    let table = EmbeddedTable::new(store.clone(), "crash");
    let queue = EmbeddedQueue::new(store, spec());
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let mut item = Key::new("k", format!("{i:08}")).to_item();
        item.insert("i".into(), num(i));
        table.put(item, None).await.unwrap();
        queue
            .send(OutgoingMessage::new(i.to_string()))
            .await
            .unwrap();
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(write_until_killed(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u64>().unwrap());
            if acked.len() == 200 {
                // SIGKILL, mid-stream: the child is writing the next item now.
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(acked.len(), 200, "the child stopped early");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let table = EmbeddedTable::new(store.clone(), "crash");
        for i in &acked {
            let got = table
                .get(&Key::new("k", format!("{i:08}")), Consistency::Strong)
                .await
                .unwrap();
            assert!(got.is_some(), "acknowledged item {i} lost");
        }
        let queue = EmbeddedQueue::new(store, spec());
        let mut bodies = HashSet::new();
        loop {
            let got = queue.receive(10, Duration::ZERO, None).await.unwrap();
            if got.is_empty() {
                break;
            }
            bodies.extend(got.into_iter().map(|m| m.body.parse::<u64>().unwrap()));
        }
        for i in &acked {
            assert!(bodies.contains(i), "acknowledged message {i} lost");
        }
    });
}
