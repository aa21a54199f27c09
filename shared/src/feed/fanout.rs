//! Fan-out on write: one job per post on the `feed-fanout` queue, split
//! into continuation jobs of at most `FEED_FANOUT_BATCH` followers each.
//!
//! A job (part `k`, follower cursor `c`):
//! 1. reads the post, the job's progress item and (part 0) the author's
//!    profile in one batch read. A post already deleted ends the job; so
//!    does progress past `k` (a redelivered job that finished: nothing is
//!    written twice).
//! 2. part 0 decides: an author with more followers than
//!    `FEED_HOT_THRESHOLD` is not fanned out (readers merge the author's
//!    timeline). The first job that finds an author newly hot marks the
//!    profile and, instead of entries, gives every follower a hot marker;
//!    an author fallen under 90% of the threshold is unmarked and its posts
//!    are fanned out again, while the markers are retired rather than
//!    removed: readers keep merging the posts of the hot period (which no
//!    fan-out wrote) until the trimmer finds them below the stored window.
//!    Markers are written 50 to a transaction, each with a bump of its
//!    reader's `stateVersion` (see `read`).
//! 3. reads one page of followers (one query), their activity (batch reads
//!    of 100), and writes one entry per active follower (batch writes of 25,
//!    retried). Entries are keyed by post id, so a repeat overwrites, never
//!    duplicates. Followers inactive for `FEED_INACTIVE_DAYS` are skipped and
//!    marked stale once, so their next read rebuilds their feed.
//! 4. if more followers remain, sends part `k+1` with the page's cursor,
//!    then records progress `k+1`. A redelivered part `k` that finds
//!    progress past `k` stops before step 3. Only two copies of part `k`
//!    running at once (a visibility timeout shorter than the job), or a
//!    crash between the send and the progress write, can send part `k+1`
//!    twice; the second copy of `k+1` then finds progress past `k+1` once
//!    the first has finished and stops, so duplicates die out after a step
//!    and write only what was written already.
//!
//! A message that cannot be parsed is an error on every receive, so the
//! queue's redrive moves it to the DLQ.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FeedError;
use super::graph::bump;
use super::keys::{
    ENTRY_PREFIX, OUTBOX_SHARDS, entry_key, feed_pk, followers_pk, hide_key, hot_key, id_of,
    id_range, meta_key, outbox_pk, post_key, profile_key, progress_key,
};
use super::model::{MAX_ID, Post, PostId, ProfileRecord, check_user_id};
use super::service::FeedService;
use crate::http::emf::Metrics;
use crate::ports::queue::{OutgoingMessage, QueueSpec};
use crate::ports::table::{
    CmpOp, Condition, Cursor, Item, Key, Query, TableError, TxOp, Update, get_i64, get_str, num, s,
};

pub const FANOUT_QUEUE: &str = "feed-fanout";
pub const FANOUT_DLQ: &str = "feed-fanout-dlq";
/// Progress items live this long (far past any redelivery).
const PROGRESS_KEEP_SECS: u64 = 7 * 86_400;
/// A hide marker stays at least this long, past any fan-out still in flight
/// for a follower list read before the unfollow.
const HIDE_GRACE_MS: u64 = 86_400_000;
/// How far past the unmarking post a retired hot marker reaches.
const RETIRE_MARGIN_MS: u64 = 60_000;
/// Snowflake ids: milliseconds start at this bit.
const ID_TIME_SHIFT: u32 = 22;

/// The fan-out queue: its DLQ after `max_attempts` receives. A job touches
/// at most `FEED_FANOUT_BATCH` followers, well inside two minutes.
pub fn fanout_queue_spec(max_attempts: u32) -> QueueSpec {
    QueueSpec::new(FANOUT_QUEUE)
        .with_visibility(Duration::from_secs(120))
        .with_dead_letter(FANOUT_DLQ, max_attempts)
}

/// What the job does to the followers' hot markers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Markers {
    /// Write feed entries (the ordinary fan-out).
    #[default]
    None,
    /// The author just became hot: write a hot marker, no entries.
    Add,
    /// The author is no longer hot: retire the marker, write entries.
    Remove,
}

impl Markers {
    fn is_none(&self) -> bool {
        *self == Markers::None
    }
}

/// One message on the fan-out queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FanoutJob {
    pub post_id: String,
    pub author_id: String,
    /// 0 for the first job of a post, then 1, 2, … for continuations.
    #[serde(default)]
    pub part: u32,
    /// Where this part's follower page starts (the previous page's cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Markers::is_none")]
    pub markers: Markers,
}

impl FanoutJob {
    pub fn for_post(post: &Post) -> Self {
        Self {
            post_id: post.id.to_string(),
            author_id: post.author_id.clone(),
            part: 0,
            cursor: None,
            markers: Markers::None,
        }
    }

    pub fn parse(body: &str) -> Result<Self, FeedError> {
        serde_json::from_str(body)
            .map_err(|e| FeedError::invalid("invalid_job", format!("not a fan-out job: {e}")))
    }
}

/// What one job did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutOutcome {
    /// Feed entries written.
    pub delivered: usize,
    /// Followers skipped as inactive.
    pub skipped_inactive: usize,
    /// Hot markers written or removed.
    pub markers: usize,
    /// The author is hot: nothing fanned out.
    pub hot: bool,
    /// A continuation job was sent (or had been already).
    pub continued: bool,
    /// This part had finished before (a redelivery): nothing written.
    pub duplicate: bool,
    /// The post was deleted before its fan-out.
    pub post_gone: bool,
}

/// Whether this delivery of `post` to `user` also trims `user`'s feed:
/// about one in `every`, spread by a hash so every feed gets its turn.
fn sampled(post: u64, user: &str, every: u64) -> bool {
    if every <= 1 {
        return true;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ post;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.is_multiple_of(every)
}

impl FeedService {
    /// The worker's entry point: one message body.
    pub async fn handle_fanout_message(&self, body: &str) -> Result<FanoutOutcome, FeedError> {
        let job = FanoutJob::parse(body)?;
        let outcome = self.fan_out(&job).await?;
        Metrics::new()
            .dimension("Subsystem", "feed")
            .count("FeedEntriesWritten", outcome.delivered as u64)
            .count("FanoutSkippedInactive", outcome.skipped_inactive as u64)
            .count("FanoutDuplicates", u64::from(outcome.duplicate))
            .emit();
        Ok(outcome)
    }

    /// Runs one fan-out job (see the module docs).
    pub async fn fan_out(&self, job: &FanoutJob) -> Result<FanoutOutcome, FeedError> {
        let id = PostId::parse(&job.post_id)?.value();
        let author = job.author_id.as_str();
        check_user_id(author)?;
        let followers = followers_pk(author);
        let cursor = match &job.cursor {
            None => None,
            Some(raw) => {
                let c = Cursor::parse(raw).map_err(|_| {
                    FeedError::invalid("invalid_job", "a malformed follower cursor")
                })?;
                if c.to_key().map(|k| k.pk != followers).unwrap_or(true) {
                    return Err(FeedError::invalid(
                        "invalid_job",
                        "the follower cursor belongs to another list",
                    ));
                }
                Some(c)
            }
        };
        let mut outcome = FanoutOutcome::default();
        let mut keys = vec![post_key(id), progress_key(id)];
        if job.part == 0 {
            keys.push(profile_key(author));
        }
        let found = self.batch_get_all(keys).await?;
        let done = found
            .get(&progress_key(id))
            .and_then(|p| get_i64(p, "part"))
            .unwrap_or(0);
        if done > i64::from(job.part) {
            outcome.duplicate = true;
            return Ok(outcome);
        }
        if !found.contains_key(&post_key(id)) {
            outcome.post_gone = true;
            return Ok(outcome);
        }
        let now = self.clock.now_ms();
        let mut markers = job.markers;
        if job.part == 0 {
            if sampled(id, author, self.config.trim_every) {
                self.trim_quietly(author).await;
            }
            let profile = ProfileRecord::from_item(author, found.get(&profile_key(author)));
            let threshold = self.config.hot_threshold;
            // The job that flips the flag owns the markers' work; its post id
            // is kept with the flag, so a redelivery of that job (after a
            // failure part-way) resumes the work instead of skipping it.
            let ours = profile.turned_by == Some(id);
            if profile.followers > threshold {
                if profile.hot && ours {
                    markers = Markers::Add;
                } else if profile.hot || !self.set_hot(author, true, id).await? {
                    outcome.hot = true;
                    return Ok(outcome);
                } else {
                    markers = Markers::Add;
                    tracing::info!(
                        author,
                        followers = profile.followers,
                        "an account turned hot"
                    );
                }
            } else if profile.hot {
                if profile.followers > threshold * 9 / 10 {
                    outcome.hot = true;
                    return Ok(outcome);
                }
                if self.set_hot(author, false, id).await? {
                    markers = Markers::Remove;
                }
            } else if ours {
                markers = Markers::Remove;
            }
        }

        let page = self
            .table
            .query(
                Query::partition(followers)
                    .limit(self.config.fanout_batch as u32)
                    .after(cursor),
            )
            .await?;
        let users: Vec<String> = page
            .items
            .iter()
            .filter_map(|i| get_str(i, "sk").map(str::to_owned))
            .collect();
        self.deliver(id, author, &users, markers, now, &mut outcome)
            .await?;

        let next_part = job.part + 1;
        if let Some(next) = page.next {
            outcome.continued = true;
            let next_job = FanoutJob {
                post_id: job.post_id.clone(),
                author_id: job.author_id.clone(),
                part: next_part,
                cursor: Some(next.as_str().to_owned()),
                markers,
            };
            self.continue_with(id, &next_job).await?;
        }
        self.record_progress(id, next_part, now).await?;
        Ok(outcome)
    }

    /// Marks (or unmarks) an author hot; false if another job did first.
    async fn set_hot(&self, author: &str, hot: bool, by: u64) -> Result<bool, FeedError> {
        let (update, condition) = if hot {
            (
                Update::new().set("hot", num(1)).set("hotBy", num(by)),
                Condition::cmp("hot", CmpOp::Ne, num(1)),
            )
        } else {
            (
                Update::new().remove("hot").set("hotBy", num(by)),
                Condition::eq("hot", num(1)),
            )
        };
        match self
            .table
            .update(&profile_key(author), update, Some(condition))
            .await
        {
            Ok(_) => Ok(true),
            Err(TableError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One page of followers: markers to all, entries to the active ones.
    async fn deliver(
        &self,
        id: u64,
        author: &str,
        users: &[String],
        markers: Markers,
        now: u64,
        outcome: &mut FanoutOutcome,
    ) -> Result<(), FeedError> {
        match markers {
            Markers::Add => {
                let items = users
                    .iter()
                    .map(|u| {
                        let mut m = hot_key(u, author).to_item();
                        m.insert("since".into(), num(now));
                        m
                    })
                    .collect();
                self.put_markers(items, users).await?;
                outcome.markers += users.len();
                return Ok(());
            }
            Markers::Remove => {
                // Posts up to a minute after this one may have been skipped
                // by jobs that read the hot flag before it was cleared.
                let until = id.saturating_add(RETIRE_MARGIN_MS << ID_TIME_SHIFT);
                let items = users
                    .iter()
                    .map(|u| {
                        let mut m = hot_key(u, author).to_item();
                        m.insert("since".into(), num(now));
                        m.insert("until".into(), num(until.min(MAX_ID)));
                        m
                    })
                    .collect();
                self.put_markers(items, users).await?;
                outcome.markers += users.len();
            }
            Markers::None => {}
        }
        let metas = self
            .batch_get_all(users.iter().map(|u| meta_key(u)).collect())
            .await?;
        let inactive_ms = self.config.inactive.as_millis() as u64;
        let mut entries = Vec::with_capacity(users.len());
        let mut receivers = Vec::with_capacity(users.len());
        for u in users {
            let meta = metas.get(&meta_key(u));
            if super::model::FeedState::active(meta, now, inactive_ms) {
                let mut entry = entry_key(u, id).to_item();
                entry.insert("postId".into(), s(id.to_string()));
                entry.insert("authorId".into(), s(author));
                entries.push(entry);
                receivers.push(u);
            } else {
                outcome.skipped_inactive += 1;
                if meta.is_some_and(|m| get_i64(m, "stale") != Some(1)) {
                    self.mark_stale(u).await?;
                }
            }
        }
        outcome.delivered += entries.len();
        self.batch_put_all(entries).await?;
        for u in receivers {
            if sampled(id, u, self.config.trim_every) {
                self.trim_quietly(u).await;
            }
        }
        Ok(())
    }

    /// Writes hot markers, each with its reader's state-version bump, in
    /// transactions of 50 markers: warm instances that cached a reader's
    /// state see the change at its next page.
    async fn put_markers(&self, items: Vec<Item>, users: &[String]) -> Result<(), FeedError> {
        for (markers, users) in items.chunks(50).zip(users.chunks(50)) {
            let mut ops = Vec::with_capacity(2 * markers.len());
            for (item, user) in markers.iter().zip(users) {
                ops.push(TxOp::Put {
                    item: item.clone(),
                    condition: None,
                });
                ops.push(bump(user));
            }
            self.transact(ops).await?;
        }
        Ok(())
    }

    /// A skipped follower's feed misses posts from now on: their next read
    /// rebuilds it. Written once per absence, not once per skipped post.
    async fn mark_stale(&self, user: &str) -> Result<(), FeedError> {
        match self
            .table
            .update(
                &meta_key(user),
                Update::new().set("stale", num(1)),
                Some(Condition::Exists.and(Condition::cmp("stale", CmpOp::Ne, num(1)))),
            )
            .await
        {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends the next part unless progress says it went out already.
    async fn continue_with(&self, id: u64, next: &FanoutJob) -> Result<(), FeedError> {
        let progress = self
            .table
            .get(&progress_key(id), crate::ports::Consistency::Strong)
            .await?;
        if progress
            .as_ref()
            .and_then(|p| get_i64(p, "part"))
            .is_some_and(|p| p >= i64::from(next.part))
        {
            return Ok(());
        }
        let body =
            serde_json::to_string(next).map_err(|e| FeedError::Store(format!("job: {e}")))?;
        self.queue.send(OutgoingMessage::new(body)).await?;
        Ok(())
    }

    /// Progress `part`: every part before it is done (and its continuation
    /// sent). Only ever moves forward.
    async fn record_progress(&self, id: u64, part: u32, now: u64) -> Result<(), FeedError> {
        let update = Update::new()
            .set("part", num(part))
            .set("ttl", num(now / 1000 + PROGRESS_KEEP_SECS));
        let condition = Condition::Or(vec![
            Condition::AttrNotExists("part".into()),
            Condition::cmp("part", CmpOp::Lt, num(part)),
        ]);
        match self
            .table
            .update(&progress_key(id), update, Some(condition))
            .await
        {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn trim_quietly(&self, user: &str) {
        if let Err(e) = self.trim(user).await {
            tracing::warn!(error = %e, user, "trimming a feed failed; a later delivery retries");
        }
    }

    /// Trims `user`'s stored feed to the newest `FEED_WINDOW` entries, drops
    /// the entries of hidden (unfollowed or blocked) accounts, and the hide
    /// markers that no longer hide anything. Returns the items deleted.
    pub async fn trim(&self, user: &str) -> Result<usize, FeedError> {
        check_user_id(user)?;
        let pk = feed_pk(user);
        let mut kept: Vec<(Key, String)> = Vec::new();
        let mut doomed: Vec<Key> = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(
                    Query::partition(pk.clone())
                        .sort(id_range(ENTRY_PREFIX, 0, MAX_ID))
                        .backward()
                        .limit(1000)
                        .after(cursor),
                )
                .await?;
            for item in &page.items {
                let Ok(key) = Key::of_item(item) else {
                    continue;
                };
                if kept.len() < self.config.window {
                    let author = get_str(item, "authorId").unwrap_or_default().to_owned();
                    kept.push((key, author));
                } else {
                    doomed.push(key);
                }
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        let state = self.load_markers(user).await?;
        let now = self.clock.now_ms();
        for (author, at) in &state.hidden_at {
            doomed.extend(
                kept.iter()
                    .filter(|(_, a)| a == author)
                    .map(|(k, _)| k.clone()),
            );
            if at.saturating_add(HIDE_GRACE_MS) < now {
                doomed.push(hide_key(user, author));
            }
        }
        // A retired hot marker is needed while its hot-period posts reach
        // into the stored window; below the window the fallback serves them.
        let floor = state.floor.unwrap_or(0);
        let bottom = kept
            .iter()
            .filter_map(|(k, _)| id_of(&k.sk, ENTRY_PREFIX))
            .filter(|id| *id >= floor)
            .min()
            .unwrap_or(MAX_ID);
        for marker in &state.hot {
            if marker.until.is_some_and(|u| u < bottom) {
                doomed.push(hot_key(user, &marker.author));
            }
        }
        let n = doomed.len();
        if n > 0 {
            self.delete_all(doomed).await?;
        }
        Ok(n)
    }

    /// Sends the fan-out jobs whose publish could not (the periodic
    /// function's work): every outbox item older than the grace period.
    /// Returns how many it sent. A job sent twice is harmless: the fan-out
    /// is idempotent.
    pub async fn sweep_outbox(&self) -> Result<usize, FeedError> {
        let now = self.clock.now_ms();
        let grace = self.config.outbox_grace.as_millis() as u64;
        let mut sent = 0;
        for shard in 0..OUTBOX_SHARDS {
            let mut cursor = None;
            loop {
                let page = self
                    .table
                    .query(Query::partition(outbox_pk(shard)).limit(100).after(cursor))
                    .await?;
                for item in &page.items {
                    let Ok(key) = Key::of_item(item) else {
                        continue;
                    };
                    let created = get_i64(item, "createdAt").unwrap_or(0).max(0) as u64;
                    if created.saturating_add(grace) > now {
                        continue;
                    }
                    let Some(job) = get_str(item, "job").filter(|j| FanoutJob::parse(j).is_ok())
                    else {
                        tracing::error!(pk = %key.pk, sk = %key.sk, "a malformed outbox item is dropped");
                        self.table.delete(&key, None).await?;
                        continue;
                    };
                    self.queue.send(OutgoingMessage::new(job)).await?;
                    if let Err(e) = self.table.delete(&key, None).await {
                        tracing::warn!(error = %e, "a swept outbox item stays; its job is sent again next time");
                    }
                    sent += 1;
                }
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
        }
        if sent > 0 {
            Metrics::new()
                .dimension("Subsystem", "feed")
                .count("OutboxSwept", sent as u64)
                .emit();
        }
        Ok(sent)
    }

    /// A post's entry in `user`'s stored feed, if any (for tests and tools).
    pub async fn stored_entry(&self, user: &str, post: PostId) -> Result<bool, FeedError> {
        check_user_id(user)?;
        Ok(self
            .table
            .get(
                &entry_key(user, post.value()),
                crate::ports::Consistency::Strong,
            )
            .await?
            .is_some())
    }

    /// How many entries `user`'s stored feed holds (for tests and tools).
    pub async fn stored_entries(&self, user: &str) -> Result<Vec<PostId>, FeedError> {
        check_user_id(user)?;
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(
                    Query::partition(feed_pk(user))
                        .sort(id_range(ENTRY_PREFIX, 0, MAX_ID))
                        .backward()
                        .limit(1000)
                        .after(cursor),
                )
                .await?;
            out.extend(
                page.items
                    .iter()
                    .filter_map(|i| get_str(i, "sk").and_then(|sk| id_of(sk, ENTRY_PREFIX)))
                    .map(PostId::from_u64),
            );
            cursor = page.next;
            if cursor.is_none() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_refuse_strangers() {
        let job = FanoutJob {
            post_id: "42".into(),
            author_id: "nina".into(),
            part: 3,
            cursor: Some("abc".into()),
            markers: Markers::Add,
        };
        let body = serde_json::to_string(&job).unwrap();
        assert_eq!(FanoutJob::parse(&body).unwrap(), job);
        let first: FanoutJob = FanoutJob::parse(r#"{"postId": "42", "authorId": "nina"}"#).unwrap();
        assert_eq!((first.part, first.markers), (0, Markers::None));
        assert!(FanoutJob::parse("{}").is_err());
        assert!(FanoutJob::parse(r#"{"postId": "1", "authorId": "a", "x": 1}"#).is_err());
    }

    #[test]
    fn trimming_samples_about_one_in_n() {
        let hits = (0..10_000u64)
            .filter(|i| sampled(1_000_000 + i, "nina", 50))
            .count();
        assert!((120..=280).contains(&hits), "{hits}");
        assert!(sampled(7, "x", 1));
        let users = (0..10_000)
            .filter(|i| sampled(99, &format!("u{i}"), 50))
            .count();
        assert!((120..=280).contains(&users), "{users}");
    }
}
