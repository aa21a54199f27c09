//! Click analytics. A redirect of a 302 link hands a `ClickEvent` to the
//! `ClickSink`, which sends it to the clicks queue in the background (the
//! redirect never waits on it); the click worker aggregates each event once,
//! however often the queue delivers it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

use super::error::ShortenerError;
use crate::http::emf::Metrics;
use crate::ports::queue::{MAX_BATCH, OutgoingMessage, Queue, QueueSpec};
use crate::ports::table::{Condition, Key, Table, TableError, TxOp, Update, num};
use crate::ports::{Clock, Item};

pub const CLICK_QUEUE: &str = "shortener-clicks";
pub const CLICK_DLQ: &str = "shortener-clicks-dlq";
/// How long an event id is remembered to drop redeliveries: far beyond SQS's
/// retention of a redelivered message under the redrive policy.
const DEDUPE_SECS: u64 = 7 * 24 * 3600;
const SINK_CAPACITY: usize = 10_000;
/// Events per transaction: ten markers and at most forty counters, well
/// under DynamoDB's hundred items.
const CLICKS_PER_TRANSACTION: usize = 10;
/// Retries of a transaction that conflicted with another worker's.
const CONFLICT_RETRIES: u32 = 3;
const MAX_FIELD: usize = 512;

pub fn click_queue() -> QueueSpec {
    QueueSpec::new(CLICK_QUEUE)
        .with_visibility(Duration::from_secs(30))
        .with_dead_letter(CLICK_DLQ, 5)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClickEvent {
    pub event_id: String,
    pub link_id: String,
    pub code: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

fn clip(s: Option<&str>) -> Option<String> {
    s.map(|s| {
        let mut end = s.len().min(MAX_FIELD);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    })
}

impl ClickEvent {
    pub fn new(
        link_id: &str,
        code: &str,
        at_ms: u64,
        referrer: Option<&str>,
        user_agent: Option<&str>,
    ) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().simple().to_string(),
            link_id: link_id.to_owned(),
            code: code.to_owned(),
            at_ms,
            referrer: clip(referrer),
            user_agent: clip(user_agent),
        }
    }

    /// Parses a queue message; anything malformed is refused (it can never
    /// succeed, so the queue sends it to the DLQ).
    pub fn parse(body: &str) -> Result<ClickEvent, String> {
        let event: ClickEvent =
            serde_json::from_str(body).map_err(|e| format!("not a click event: {e}"))?;
        let id_ok =
            |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok(&event.event_id) || !id_ok(&event.link_id) || !id_ok(&event.code) {
            return Err("eventId, linkId and code must be 1 to 64 visible characters".into());
        }
        Ok(event)
    }
}

/// What kind of device a user agent is, coarsely.
pub fn device_class(user_agent: Option<&str>) -> &'static str {
    let Some(ua) = user_agent.map(str::to_ascii_lowercase) else {
        return "other";
    };
    let has = |words: &[&str]| words.iter().any(|w| ua.contains(w));
    if has(&[
        "bot",
        "crawler",
        "spider",
        "curl/",
        "wget/",
        "python-",
        "httpclient",
        "okhttp",
        "go-http",
        "facebookexternalhit",
        "slurp",
        "preview",
    ]) {
        "bot"
    } else if has(&["ipad", "tablet", "kindle", "silk/"])
        || (ua.contains("android") && !ua.contains("mobile"))
    {
        "tablet"
    } else if has(&["mobi", "iphone", "ipod", "android", "windows phone"]) {
        "mobile"
    } else if has(&["windows", "macintosh", "x11", "linux", "cros"]) {
        "desktop"
    } else {
        "other"
    }
}

/// The referrer's host, or `direct` when there is none to read.
pub fn referrer_host(referrer: Option<&str>) -> String {
    referrer
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        })
        .filter(|h| !h.is_empty() && h.len() <= 253)
        .unwrap_or_else(|| "direct".to_owned())
}

/// The UTC day of a time, `YYYY-MM-DD`.
pub fn utc_day(at_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

pub fn stats_pk(link_id: &str) -> String {
    format!("stats#{link_id}")
}

/// Adds each event to its link's counters once.
pub struct ClickAggregator {
    table: Arc<dyn Table>,
    clock: Arc<dyn Clock>,
}

impl ClickAggregator {
    pub fn new(table: Arc<dyn Table>, clock: Arc<dyn Clock>) -> Self {
        Self { table, clock }
    }

    /// Counts `event`; `Ok(false)` if it was counted before.
    pub async fn record(&self, event: &ClickEvent) -> Result<bool, ShortenerError> {
        let mut counted = self.record_batch(std::slice::from_ref(event)).await?;
        Ok(counted.pop().unwrap_or(false))
    }

    /// Counts a batch (a queue delivery): per event, `true` if counted now,
    /// `false` if counted before. One transaction per ten events holds each
    /// event's marker (conditional on its absence) and the sums of their
    /// counters, so a busy link's counters see one write per batch, not one
    /// per click. A marker that exists drops its event and the rest go again;
    /// a conflict with another worker on the same counters is retried here
    /// with backoff before the batch is handed back to the queue.
    pub async fn record_batch(&self, events: &[ClickEvent]) -> Result<Vec<bool>, ShortenerError> {
        let mut fresh = vec![true; events.len()];
        // The same event twice in one delivery: the second is a redelivery.
        let mut seen = std::collections::HashSet::new();
        for (i, e) in events.iter().enumerate() {
            fresh[i] = seen.insert(e.event_id.as_str());
        }
        let candidates: Vec<usize> = (0..events.len()).filter(|i| fresh[*i]).collect();
        for chunk in candidates.chunks(CLICKS_PER_TRANSACTION) {
            self.record_chunk(events, chunk, &mut fresh).await?;
        }
        Ok(fresh)
    }

    async fn record_chunk(
        &self,
        events: &[ClickEvent],
        chunk: &[usize],
        fresh: &mut [bool],
    ) -> Result<(), ShortenerError> {
        let mut conflicts = 0;
        loop {
            let live: Vec<usize> = chunk.iter().copied().filter(|i| fresh[*i]).collect();
            if live.is_empty() {
                return Ok(());
            }
            let now = self.clock.now_secs();
            let mut ops = Vec::with_capacity(live.len() * 5);
            let mut sums: std::collections::BTreeMap<(String, String), i64> = Default::default();
            for &i in &live {
                let event = &events[i];
                let mut marker = Key::new(format!("click#{}", event.event_id), "click").to_item();
                marker.insert("ttl".into(), num(now + DEDUPE_SECS));
                ops.push(TxOp::Put {
                    item: marker,
                    condition: Some(Condition::absent_or_expired(now)),
                });
                let pk = stats_pk(&event.link_id);
                for sk in [
                    "total".to_owned(),
                    format!("day#{}", utc_day(event.at_ms)),
                    format!("ref#{}", referrer_host(event.referrer.as_deref())),
                    format!("dev#{}", device_class(event.user_agent.as_deref())),
                ] {
                    *sums.entry((pk.clone(), sk)).or_default() += 1;
                }
            }
            ops.extend(sums.into_iter().map(|((pk, sk), n)| TxOp::Update {
                key: Key::new(pk, sk),
                update: Update::new().add("clicks", n),
                condition: None,
            }));
            match self.table.transact_write(ops).await {
                Ok(()) => return Ok(()),
                // Markers come first: those that failed were counted before.
                Err(TableError::TransactionCanceled { failed })
                    if !failed.is_empty() && failed.iter().all(|f| *f < live.len()) =>
                {
                    for f in failed {
                        fresh[live[f]] = false;
                    }
                }
                Err(TableError::Throttled) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    let wait = 25u64 << conflicts;
                    tokio::time::sleep(Duration::from_millis(wait + fastrand::u64(0..wait))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Reads a link's aggregated counters.
pub fn fold_stats(items: &[Item], stats: &mut super::link::LinkStats) {
    for item in items {
        let (Some(sk), Some(clicks)) = (
            crate::ports::table::get_str(item, "sk"),
            crate::ports::table::get_i64(item, "clicks").and_then(|c| u64::try_from(c).ok()),
        ) else {
            continue;
        };
        if sk == "total" {
            stats.total_clicks = clicks;
        } else if let Some(day) = sk.strip_prefix("day#") {
            stats.clicks_by_day.insert(day.to_owned(), clicks);
        } else if let Some(host) = sk.strip_prefix("ref#") {
            stats.referrers.insert(host.to_owned(), clicks);
        } else if let Some(class) = sk.strip_prefix("dev#") {
            stats.devices.insert(class.to_owned(), clicks);
        }
    }
}

/// Hands click events to the queue off the request path: a bounded buffer and
/// one background task that sends batches of up to ten. A full buffer or a
/// queue that keeps failing drops events (counted as `ClicksDropped`), never
/// redirects.
#[derive(Clone, Debug)]
pub struct ClickSink {
    tx: mpsc::Sender<ClickEvent>,
    pending: Arc<Pending>,
}

/// Events handed to the sink and not yet sent (or given up on).
#[derive(Debug, Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    fn done(&self, n: usize) {
        if n > 0 && self.count.fetch_sub(n, Ordering::AcqRel) == n {
            self.idle.notify_waiters();
        }
    }
}

impl ClickSink {
    pub fn spawn(queue: Arc<dyn Queue>) -> Self {
        let (tx, rx) = mpsc::channel(SINK_CAPACITY);
        let pending = Arc::new(Pending::default());
        tokio::spawn(send_loop(queue, rx, pending.clone()));
        Self { tx, pending }
    }

    /// Waits until every click recorded so far has been sent (or dropped),
    /// at most `within`; `false` if some were still on their way. For a
    /// host's shutdown: Lambda allows 500 ms after SIGTERM.
    pub async fn flush(&self, within: Duration) -> bool {
        let drained = async {
            loop {
                let idle = self.pending.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.pending.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(within, drained).await.is_ok()
    }

    pub fn record(&self, event: ClickEvent) {
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(event).is_err() {
            self.pending.done(1);
            tracing::warn!("click buffer full; a click was dropped");
            Metrics::new()
                .dimension("Subsystem", "shortener")
                .count("ClicksDropped", 1)
                .emit();
        }
    }
}

async fn send_loop(
    queue: Arc<dyn Queue>,
    mut rx: mpsc::Receiver<ClickEvent>,
    pending: Arc<Pending>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let taken = batch.len();
        send_batch(queue.as_ref(), &mut batch).await;
        pending.done(taken);
    }
}

async fn send_batch(queue: &dyn Queue, batch: &mut Vec<ClickEvent>) {
    let messages: Vec<OutgoingMessage> = batch
        .drain(..)
        .filter_map(|e| serde_json::to_string(&e).ok())
        .map(OutgoingMessage::new)
        .collect();
    let mut delay = Duration::from_millis(50);
    let mut messages = messages;
    for attempt in 1..=4 {
        match queue.send_batch(messages.clone()).await {
            Ok(results) => {
                // Entries the queue refused one by one are tried again.
                let refused: Vec<OutgoingMessage> = messages
                    .iter()
                    .zip(results)
                    .filter(|(_, r)| r.is_err())
                    .map(|(m, _)| m.clone())
                    .collect();
                if refused.is_empty() {
                    break;
                }
                if attempt == 4 {
                    tracing::error!(dropped = refused.len(), "click events refused by the queue");
                    Metrics::new()
                        .dimension("Subsystem", "shortener")
                        .count("ClicksDropped", refused.len() as u64)
                        .emit();
                    break;
                }
                messages = refused;
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) if attempt == 4 => {
                tracing::error!(error = %e, dropped = messages.len(), "click events could not be queued");
                Metrics::new()
                    .dimension("Subsystem", "shortener")
                    .count("ClicksDropped", messages.len() as u64)
                    .emit();
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "queueing click events failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flush_waits_until_every_recorded_click_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::embedded::EmbeddedStore::open(dir.path()).unwrap();
        let queue: Arc<dyn Queue> =
            Arc::new(crate::embedded::EmbeddedQueue::new(store, click_queue()));
        let sink = ClickSink::spawn(queue.clone());
        assert!(
            sink.flush(Duration::from_millis(10)).await,
            "nothing pending"
        );
        for i in 0..25 {
            sink.record(ClickEvent::new("l1", "abc1234", i, None, None));
        }
        assert!(sink.flush(Duration::from_secs(5)).await);
        assert_eq!(queue.depth().await.unwrap(), 25);
    }

    #[test]
    fn devices_are_classified() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
        assert_eq!(device_class(Some(iphone)), "mobile");
        assert_eq!(
            device_class(Some("Mozilla/5.0 (iPad; CPU OS 17_0)")),
            "tablet"
        );
        assert_eq!(
            device_class(Some("Mozilla/5.0 (Linux; Android 14; SM-X200)")),
            "tablet"
        );
        assert_eq!(
            device_class(Some("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile")),
            "mobile"
        );
        assert_eq!(
            device_class(Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64)")),
            "desktop"
        );
        assert_eq!(device_class(Some("Googlebot/2.1")), "bot");
        assert_eq!(device_class(Some("curl/8.5.0")), "bot");
        assert_eq!(device_class(None), "other");
    }

    #[test]
    fn referrers_become_hosts() {
        assert_eq!(
            referrer_host(Some("https://News.Example.com/a?b")),
            "news.example.com"
        );
        assert_eq!(referrer_host(Some("garbage")), "direct");
        assert_eq!(referrer_host(None), "direct");
        assert_eq!(utc_day(0), "1970-01-01");
    }

    #[test]
    fn malformed_events_are_refused() {
        assert!(ClickEvent::parse("{}").is_err());
        assert!(ClickEvent::parse("not json").is_err());
        let ok = ClickEvent::new("l1", "abc", 5, Some("https://x.example/"), None);
        let body = serde_json::to_string(&ok).unwrap();
        assert_eq!(ClickEvent::parse(&body).unwrap(), ok);
        let mut bad = ok.clone();
        bad.event_id = String::new();
        assert!(ClickEvent::parse(&serde_json::to_string(&bad).unwrap()).is_err());
        let long = "é".repeat(400);
        assert_eq!(
            ClickEvent::new("l", "c", 0, Some(&long), None)
                .referrer
                .unwrap()
                .len(),
            512
        );
    }
}
