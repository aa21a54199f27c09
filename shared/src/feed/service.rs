//! `FeedService`: its dependencies, the table helpers every part uses, and
//! posts. A publish is one transaction: the idempotency key (conditional on
//! being new), the post, its author-timeline copy, the author's own feed
//! entry (so the author sees it at once), the author's counters, and an
//! outbox item holding the fan-out job. After the commit the job goes on the
//! queue and the outbox item is removed; if the send fails, the outbox
//! sweeper sends it later, so no acknowledged post misses its fan-out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::cache::FeedCache;
use super::fanout::FanoutJob;
use super::keys::{
    TIMELINE_PREFIX, block_key, entry_key, id_of, id_range, idem_key, outbox_key, post_key,
    profile_key, timeline_key, timeline_pk,
};
use super::model::{
    Author, CreatePost, DEFAULT_PAGE, FeedPage, FeedPost, FeedQuery, MAX_PAGE, Post, PostId,
    ProfileRecord, Published, RECENT_DELETES, check_user_id, format_deletes, parse_deletes,
    parse_limit, with_deletion,
};
use super::{FeedConfig, FeedError, PostIds};
use crate::http::emf::Metrics;
use crate::ports::Clock;
use crate::ports::queue::{OutgoingMessage, Queue};
use crate::ports::table::{
    CmpOp, Condition, Consistency, Item, Key, MAX_BATCH_GET, MAX_BATCH_PUT, MAX_TRANSACTION_OPS,
    Query, Table, TableError, TxOp, Update, get_str, num, s,
};
use crate::shortener::link::format_instant;

/// Retries of a transaction cancelled by a conflict or throttling (DynamoDB
/// cancels the loser of two transactions on one item, e.g. two follows of
/// one account, as a conflict: nothing was written, so a retry is safe).
const TX_RETRIES: u32 = 6;
/// Retries of a batch write the adapter gave up on (it already retried
/// `UnprocessedItems` with backoff).
const BATCH_RETRIES: u32 = 3;

pub(super) async fn backoff(attempt: u32) {
    let ms = 10u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))).await;
}

pub struct FeedService {
    pub(super) table: Arc<dyn Table>,
    pub(super) queue: Arc<dyn Queue>,
    pub(super) ids: Arc<dyn PostIds>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) config: FeedConfig,
    pub(super) cache: FeedCache,
    /// Where post attachments and avatars are looked up.
    pub(super) media: Option<crate::media::MediaLibrary>,
}

impl std::fmt::Debug for FeedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedService")
            .field("table", &self.table.name())
            .field("queue", &self.queue.spec().name)
            .finish_non_exhaustive()
    }
}

/// The bounds of a page as inclusive ids: `(after, before)` exclusive in,
/// `lo..=hi` out; `None` when the range is empty.
pub(super) fn bounds(before: Option<PostId>, after: Option<PostId>) -> Option<(u64, u64)> {
    let lo = after.map_or(0, |a| a.value().saturating_add(1));
    let hi = before.map_or(super::model::MAX_ID, |b| b.value().saturating_sub(1));
    (lo <= hi).then_some((lo, hi))
}

impl FeedService {
    pub fn new(
        table: Arc<dyn Table>,
        queue: Arc<dyn Queue>,
        ids: Arc<dyn PostIds>,
        clock: Arc<dyn Clock>,
        config: FeedConfig,
    ) -> Self {
        Self {
            cache: FeedCache::new(config.cache_capacity, config.cache_ttl, config.state_ttl),
            table,
            queue,
            ids,
            clock,
            config,
            media: None,
        }
    }

    /// Lets posts attach media and profiles set avatars.
    pub fn with_media(mut self, library: crate::media::MediaLibrary) -> Self {
        self.media = Some(library);
        self
    }

    pub fn config(&self) -> &FeedConfig {
        &self.config
    }

    pub fn cache(&self) -> &FeedCache {
        &self.cache
    }

    pub fn table(&self) -> &Arc<dyn Table> {
        &self.table
    }

    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// A transaction, retried while the table reports a conflict.
    pub(super) async fn transact(&self, ops: Vec<TxOp>) -> Result<(), TableError> {
        let mut attempt = 0;
        loop {
            match self.table.transact_write(ops.clone()).await {
                Err(TableError::Throttled) if attempt < TX_RETRIES => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Items by key, in batches of 100 (one request for up to 100 keys).
    pub(super) async fn batch_get_all(
        &self,
        keys: Vec<Key>,
    ) -> Result<HashMap<Key, Item>, FeedError> {
        let mut unique = Vec::with_capacity(keys.len());
        let mut seen = HashSet::new();
        for k in keys {
            if seen.insert(k.clone()) {
                unique.push(k);
            }
        }
        let mut out = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_BATCH_GET) {
            for item in self.table.batch_get(chunk).await? {
                if let Ok(key) = Key::of_item(&item) {
                    out.insert(key, item);
                }
            }
        }
        Ok(out)
    }

    /// Unconditional puts in batches of 25. The adapter retries a batch's
    /// unprocessed items itself and reports `Throttled` if some stay
    /// unprocessed; the batch is then sent again (puts are idempotent).
    pub(super) async fn batch_put_all(&self, items: Vec<Item>) -> Result<(), FeedError> {
        let mut unique = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for item in items.into_iter().rev() {
            // The last write of a key wins, as it would one by one.
            if let Ok(key) = Key::of_item(&item)
                && seen.insert(key)
            {
                unique.push(item);
            }
        }
        unique.reverse();
        for chunk in unique.chunks(MAX_BATCH_PUT) {
            let mut attempt = 0;
            loop {
                match self.table.batch_put(chunk.to_vec()).await {
                    Ok(()) => break,
                    Err(TableError::Throttled) if attempt < BATCH_RETRIES => {
                        attempt += 1;
                        backoff(attempt + 2).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Deletes keys, 100 to a transaction (the port has no batch delete).
    pub(super) async fn delete_all(&self, keys: Vec<Key>) -> Result<(), FeedError> {
        let unique: Vec<Key> = keys
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for chunk in unique.chunks(MAX_TRANSACTION_OPS) {
            let ops = chunk
                .iter()
                .map(|key| TxOp::Delete {
                    key: key.clone(),
                    condition: None,
                })
                .collect();
            self.transact(ops).await?;
        }
        Ok(())
    }

    /// Profiles for hydration: the cache, then one batch read of the rest.
    /// A user who never wrote a profile has an empty one.
    pub(super) async fn profiles(
        &self,
        users: &[String],
    ) -> Result<HashMap<String, Arc<ProfileRecord>>, FeedError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for u in users {
            match self.cache.profile(u) {
                Some(p) => {
                    out.insert(u.clone(), p);
                }
                None => missing.push(u.clone()),
            }
        }
        if !missing.is_empty() {
            let found = self
                .batch_get_all(missing.iter().map(|u| profile_key(u)).collect())
                .await?;
            for u in missing {
                let record = Arc::new(ProfileRecord::from_item(&u, found.get(&profile_key(&u))));
                self.cache.put_profile(record.clone());
                out.insert(u, record);
            }
        }
        Ok(out)
    }

    pub(super) async fn author(&self, user: &str) -> Result<Author, FeedError> {
        let profiles = self.profiles(&[user.to_owned()]).await?;
        Ok(profiles
            .get(user)
            .map(|p| p.author())
            .unwrap_or_else(|| ProfileRecord::empty(user).author()))
    }

    /// How long a profile remembers a deletion: twice the longer of
    /// `FEED_CACHE_TTL_SECONDS` and `FEED_STATE_TTL_SECONDS`, past the life
    /// of any cached copy of the post in any instance.
    pub(super) fn deletion_memory_ms(&self) -> u64 {
        2 * self.config.cache_ttl.max(self.config.state_ttl).as_millis() as u64
    }

    /// The post item itself, read fresh (one read): another instance may
    /// have deleted it since this one cached it. Updates the cache.
    pub(super) async fn load_post_fresh(&self, id: PostId) -> Result<Option<Arc<Post>>, FeedError> {
        let item = self
            .table
            .get(&post_key(id.value()), Consistency::Strong)
            .await?;
        match item.as_ref().and_then(Post::from_item) {
            Some(p) => {
                let p = Arc::new(p);
                self.cache.put_post(p.clone());
                Ok(Some(p))
            }
            None => {
                self.cache.post_gone(id.value());
                Ok(None)
            }
        }
    }

    /// Publishes a post: one transaction, then the fan-out job on the queue.
    pub async fn create_post(
        &self,
        caller: &str,
        request: CreatePost,
    ) -> Result<Published, FeedError> {
        check_user_id(caller)?;
        let mut media = request.validate()?;
        if !media.is_empty() {
            let Some(library) = &self.media else {
                return Err(FeedError::invalid(
                    "invalid_media",
                    "media is not configured on this deployment",
                ));
            };
            media = library.attachable(caller, &request.media_ids).await?;
        }
        let now = self.clock.now_ms();
        let idem = request
            .idempotency_key
            .as_deref()
            .map(|k| idem_key(caller, k));
        if let Some(key) = &idem
            && let Some(post) = self.idempotent_post(key).await?
        {
            return self.published(post, false).await;
        }
        let id = PostId::from(self.ids.next_post_id().await?);
        let post = Post {
            id,
            author_id: caller.to_owned(),
            text: request.text,
            media,
            created_at: format_instant(now),
            created_at_ms: now,
        };
        let job = FanoutJob::for_post(&post);
        let body =
            serde_json::to_string(&job).map_err(|e| FeedError::Store(format!("job: {e}")))?;
        let outbox = outbox_key(id.value());
        let ttl_secs = now / 1000 + self.config.idempotency_ttl.as_secs();
        let build = |newest: bool| -> (Vec<TxOp>, usize) {
            let with_post = |key: Key| {
                let mut item = key.to_item();
                post.write_attrs(&mut item);
                item
            };
            let mut ops = Vec::new();
            if let Some(key) = &idem {
                let mut item = with_post(key.clone());
                item.insert("ttl".into(), num(ttl_secs));
                ops.push(TxOp::Put {
                    item,
                    condition: Some(Condition::absent_or_expired(now / 1000)),
                });
            }
            ops.push(TxOp::Put {
                item: with_post(post_key(id.value())),
                condition: Some(Condition::NotExists),
            });
            ops.push(TxOp::Put {
                item: with_post(timeline_key(caller, id.value())),
                condition: None,
            });
            let mut entry = entry_key(caller, id.value()).to_item();
            entry.insert("postId".into(), s(id.to_string()));
            entry.insert("authorId".into(), s(caller));
            ops.push(TxOp::Put {
                item: entry,
                condition: None,
            });
            // `lastPostId` only ever grows: a post that commits after a
            // newer one of the same author leaves it alone (the retry
            // without it below).
            let profile_index = ops.len();
            let mut update = Update::new().add("posts", 1);
            let mut condition = None;
            if newest {
                update = update.set("lastPostId", num(id.value()));
                condition = Some(Condition::Or(vec![
                    Condition::AttrNotExists("lastPostId".into()),
                    Condition::cmp("lastPostId", CmpOp::Lt, num(id.value())),
                ]));
            }
            ops.push(TxOp::Update {
                key: profile_key(caller),
                update,
                condition,
            });
            let mut out = outbox.to_item();
            out.insert("job".into(), s(&body));
            out.insert("createdAt".into(), num(now));
            ops.push(TxOp::Put {
                item: out,
                condition: None,
            });
            (ops, profile_index)
        };
        let mut newest = true;
        loop {
            let (ops, profile_index) = build(newest);
            match self.transact(ops).await {
                Ok(()) => break,
                Err(TableError::TransactionCanceled { failed }) => {
                    if idem.is_some() && failed.contains(&0) {
                        // Another publish with this key won the race.
                        let key = idem.as_ref().ok_or(FeedError::Store("no key".into()))?;
                        let post = self.idempotent_post(key).await?.ok_or_else(|| {
                            FeedError::Store("the idempotency key vanished".into())
                        })?;
                        return self.published(post, false).await;
                    }
                    if newest && failed == [profile_index] {
                        newest = false;
                        continue;
                    }
                    return Err(FeedError::Store(format!(
                        "the post transaction was cancelled at {failed:?}"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        match self.queue.send(OutgoingMessage::new(body)).await {
            Ok(_) => {
                if let Err(e) = self.table.delete(&outbox, None).await {
                    tracing::warn!(error = %e, post = %id, "a sent outbox item stays; the sweeper sends it again (fan-out is idempotent)");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, post = %id, "the fan-out job is not queued yet; the outbox sweeper will send it");
            }
        }
        Metrics::new()
            .dimension("Subsystem", "feed")
            .count("PostsPublished", 1)
            .emit();
        let post = Arc::new(post);
        self.cache.put_post(post.clone());
        self.published(post, true).await
    }

    async fn idempotent_post(&self, key: &Key) -> Result<Option<Arc<Post>>, FeedError> {
        let item = self.table.get(key, Consistency::Strong).await?;
        Ok(item.as_ref().and_then(Post::from_item).map(Arc::new))
    }

    async fn published(&self, post: Arc<Post>, created: bool) -> Result<Published, FeedError> {
        let author = self.author(&post.author_id).await?;
        Ok(Published {
            post: FeedPost {
                post: (*post).clone(),
                author,
            },
            created,
        })
    }

    /// `GET /api/v1/posts/{postId}`: missing, deleted, or by someone who
    /// blocked the viewer (or whom the viewer blocked) is a 404. The post is
    /// read fresh (one read, never the cache: it may have been deleted
    /// through another instance), then the blocks (one batch read) and the
    /// author (cached).
    pub async fn get_post(
        &self,
        viewer: Option<&str>,
        post_id: &str,
    ) -> Result<FeedPost, FeedError> {
        let id = PostId::parse(post_id)?;
        if let Some(v) = viewer {
            check_user_id(v)?;
        }
        let post = self
            .load_post_fresh(id)
            .await?
            .ok_or(FeedError::PostNotFound)?;
        if let Some(v) = viewer
            && v != post.author_id
            && self.is_blocked_either_way(v, &post.author_id).await?
        {
            return Err(FeedError::PostNotFound);
        }
        let author = self.author(&post.author_id).await?;
        Ok(FeedPost {
            post: (*post).clone(),
            author,
        })
    }

    /// `DELETE /api/v1/me/posts/{postId}`: the author's only; anyone else's
    /// or a missing post is a 404. The post leaves every feed at the next
    /// read: followers' entries stay until trimmed, but no longer hydrate.
    ///
    /// Other instances may still cache the post, so the same transaction
    /// records the deletion on the author's profile (`recentDeletes`, see
    /// `model::with_deletion`), which every feed read gets with the page's
    /// authors: a listed post is dropped (and evicted) wherever it was
    /// cached. The list is replaced under the condition that it is as read,
    /// so concurrent deletions by one author retry rather than lose one.
    pub async fn delete_post(&self, caller: &str, post_id: &str) -> Result<(), FeedError> {
        check_user_id(caller)?;
        let id = PostId::parse(post_id)?;
        let (post, profile) = (post_key(id.value()), profile_key(caller));
        let mut attempt = 0;
        loop {
            let found = self
                .batch_get_all(vec![post.clone(), profile.clone()])
                .await?;
            let Some(stored) = found.get(&post).and_then(Post::from_item) else {
                self.cache.post_gone(id.value());
                return Err(FeedError::PostNotFound);
            };
            if stored.author_id != caller {
                return Err(FeedError::PostNotFound);
            }
            let raw = found
                .get(&profile)
                .and_then(|i| get_str(i, RECENT_DELETES))
                .map(str::to_owned);
            let old = raw.as_deref().map(parse_deletes).unwrap_or_default();
            let now = self.clock.now_ms();
            let list = with_deletion(&old, id.value(), now, self.deletion_memory_ms());
            let unchanged = match raw {
                Some(r) => Condition::eq(RECENT_DELETES, s(r)),
                None => Condition::AttrNotExists(RECENT_DELETES.into()),
            };
            let ops = vec![
                TxOp::Delete {
                    key: post.clone(),
                    condition: Some(Condition::eq("authorId", s(caller))),
                },
                TxOp::Delete {
                    key: timeline_key(caller, id.value()),
                    condition: None,
                },
                TxOp::Delete {
                    key: entry_key(caller, id.value()),
                    condition: None,
                },
                TxOp::Update {
                    key: profile.clone(),
                    update: Update::new()
                        .add("posts", -1)
                        .set(RECENT_DELETES, s(format_deletes(&list))),
                    condition: Some(unchanged),
                },
            ];
            match self.transact(ops).await {
                Ok(()) => break,
                Err(TableError::TransactionCanceled { failed })
                    if failed == [3] && attempt < TX_RETRIES =>
                {
                    // Another deletion of this author's changed the list.
                    attempt += 1;
                    backoff(attempt).await;
                }
                Err(TableError::TransactionCanceled { failed }) if failed.contains(&0) => {
                    return Err(FeedError::PostNotFound);
                }
                Err(TableError::TransactionCanceled { .. }) => return Err(FeedError::Throttled),
                Err(e) => return Err(e.into()),
            }
        }
        self.cache.post_gone(id.value());
        Ok(())
    }

    /// `GET /api/v1/users/{userId}/posts`: the author's timeline, newest
    /// first, paged by post id like the feed. Between blocked users it is
    /// empty. One batch read (the author's profile, fresh, and the blocks)
    /// and one query; posts the profile lists as recently deleted are
    /// dropped.
    pub async fn list_user_posts(
        &self,
        viewer: Option<&str>,
        author: &str,
        query: FeedQuery,
    ) -> Result<FeedPage, FeedError> {
        check_user_id(author)?;
        if let Some(v) = viewer {
            check_user_id(v)?;
        }
        let limit = parse_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
        let before = query
            .before
            .as_deref()
            .map(|b| PostId::parse_field("before", b))
            .transpose()?;
        let after = query
            .after
            .as_deref()
            .map(|a| PostId::parse_field("after", a))
            .transpose()?;
        let empty = FeedPage {
            posts: Vec::new(),
            next_before: None,
            newest_id: after,
        };
        let Some((lo, hi)) = bounds(before, after) else {
            return Ok(empty);
        };
        // The author's profile, read fresh (its recent deletions), and the
        // blocks between viewer and author: one batch read.
        let mut keys = vec![profile_key(author)];
        if let Some(v) = viewer
            && v != author
        {
            keys.extend([block_key(v, author), block_key(author, v)]);
        }
        let found = self.batch_get_all(keys).await?;
        if found.keys().any(|k| k != &profile_key(author)) {
            return Ok(empty);
        }
        let record = Arc::new(ProfileRecord::from_item(
            author,
            found.get(&profile_key(author)),
        ));
        self.cache.put_profile(record.clone());
        let page = self
            .table
            .query(
                Query::partition(timeline_pk(author))
                    .sort(id_range(TIMELINE_PREFIX, lo, hi))
                    .backward()
                    .limit(limit as u32),
            )
            .await?;
        let posts: Vec<Arc<Post>> = page
            .items
            .iter()
            .filter(|i| {
                get_str(i, "sk")
                    .and_then(|sk| id_of(sk, TIMELINE_PREFIX))
                    .is_some()
            })
            .filter_map(Post::from_item)
            .filter(|p| {
                // A timeline query answered just before a deletion's commit
                // was seen (on DynamoDB an index can lag): the profile,
                // read after it, lists it.
                let gone = record.deleted(p.id.value());
                if gone {
                    self.cache.post_gone(p.id.value());
                }
                !gone
            })
            .map(Arc::new)
            .collect();
        for p in &posts {
            self.cache.put_post(p.clone());
        }
        let author = record.author();
        let next_before = match (page.next, posts.last()) {
            (Some(_), Some(last)) => Some(last.id),
            _ => None,
        };
        Ok(FeedPage {
            newest_id: posts.first().map(|p| p.id).or(after),
            posts: posts
                .iter()
                .map(|p| FeedPost {
                    post: (**p).clone(),
                    author: author.clone(),
                })
                .collect(),
            next_before,
        })
    }
}
