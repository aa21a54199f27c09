//! The news feed on the embedded store: fan-out through the queue (run here
//! by receiving from the embedded queue and calling the worker logic),
//! continuation jobs, the hybrid merge of hot accounts, paging by post id,
//! backfill, unfollow/delete/block at the next read, idempotent publish,
//! the follow limit and exact counters under concurrency, inactive
//! followers, scrolling past the stored window, the outbox sweeper, and
//! what a feed page costs in table requests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use hanul_shared::embedded::{EmbeddedQueue, EmbeddedStore, EmbeddedTable};
use hanul_shared::feed::keys::{meta_key, profile_key};
use hanul_shared::feed::{
    CreatePost, FanoutOutcome, FeedConfig, FeedError, FeedPage, FeedQuery, FeedService,
    FollowOutcome, ListQuery, PostId, PutProfile, fanout_queue_spec,
};
use hanul_shared::http::ApiError;
use hanul_shared::ids::{IdConfig, IdService};
use hanul_shared::ports::table::{
    Condition, Consistency, Item, Key, Page, Query, TableError, TableStats, TxOp, Update, get_str,
};
use hanul_shared::ports::{
    ManualClock, OutgoingMessage, Queue, QueueError, QueueSpec, ReceivedMessage, Table,
};

const T0: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;

/// The embedded fan-out queue, which can be switched off to lose sends.
struct Flaky {
    inner: Arc<EmbeddedQueue>,
    down: AtomicBool,
}

#[async_trait]
impl Queue for Flaky {
    fn spec(&self) -> &QueueSpec {
        self.inner.spec()
    }

    fn arn(&self) -> String {
        self.inner.arn()
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("switched off by the test".into()));
        }
        self.inner.send(message).await
    }

    async fn send_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        self.inner.send_batch(messages).await
    }

    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, wait, visibility).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt).await
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(receipt, timeout).await
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.inner.depth().await
    }
}

/// The embedded table, recording the keys of every batch read (to show
/// which items a page reads, not only how many requests).
struct Recording {
    inner: Arc<dyn Table>,
    batches: Mutex<Vec<Vec<Key>>>,
}

impl Recording {
    /// The batch reads made since the last call, in order.
    fn take_batches(&self) -> Vec<Vec<Key>> {
        std::mem::take(&mut *self.batches.lock().unwrap())
    }
}

#[async_trait]
impl Table for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn get(&self, key: &Key, consistency: Consistency) -> Result<Option<Item>, TableError> {
        self.inner.get(key, consistency).await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> Result<(), TableError> {
        self.inner.put(item, condition).await
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> Result<Item, TableError> {
        self.inner.update(key, update, condition).await
    }

    async fn delete(
        &self,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>, TableError> {
        self.inner.delete(key, condition).await
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        self.inner.query(query).await
    }

    async fn batch_get(&self, keys: &[Key]) -> Result<Vec<Item>, TableError> {
        self.batches.lock().unwrap().push(keys.to_vec());
        self.inner.batch_get(keys).await
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<(), TableError> {
        self.inner.batch_put(items).await
    }

    async fn transact_write(&self, ops: Vec<TxOp>) -> Result<(), TableError> {
        self.inner.transact_write(ops).await
    }

    fn metrics(&self) -> TableStats {
        self.inner.metrics()
    }
}

fn is_post(key: &Key) -> bool {
    key.pk.starts_with("post#")
}

struct Fixture {
    feed: Arc<FeedService>,
    queue: Arc<Flaky>,
    clock: Arc<ManualClock>,
    table: Arc<dyn Table>,
    recording: Arc<Recording>,
    ids: Arc<IdService>,
    config: FeedConfig,
    _dir: tempfile::TempDir,
}

fn fixture(settings: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    let recording = Arc::new(Recording {
        inner: Arc::new(EmbeddedTable::new(store.clone(), "feed")),
        batches: Mutex::new(Vec::new()),
    });
    let table: Arc<dyn Table> = recording.clone();
    let ids = Arc::new(
        IdService::new(
            Arc::new(EmbeddedTable::new(store.clone(), "id-leases")),
            clock.clone(),
            IdConfig::default(),
        )
        .unwrap(),
    );
    let queue = Arc::new(Flaky {
        inner: Arc::new(EmbeddedQueue::new(store, fanout_queue_spec(5))),
        down: AtomicBool::new(false),
    });
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = FeedConfig::from_settings(|name| {
        settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    let feed = Arc::new(FeedService::new(
        table.clone(),
        queue.clone(),
        ids.clone(),
        clock.clone(),
        config.clone(),
    ));
    Fixture {
        feed,
        queue,
        clock,
        table,
        recording,
        ids,
        config,
        _dir: dir,
    }
}

impl Fixture {
    /// Another warm instance of the service on the same table and queue,
    /// with its own caches (as another Lambda function's would be).
    fn instance(&self) -> Arc<FeedService> {
        Arc::new(FeedService::new(
            self.table.clone(),
            self.queue.clone(),
            self.ids.clone(),
            self.clock.clone(),
            self.config.clone(),
        ))
    }

    /// Runs every queued fan-out job (and the continuations they queue).
    async fn drain(&self) -> Vec<FanoutOutcome> {
        let mut outcomes = Vec::new();
        loop {
            let batch = self.queue.receive(10, Duration::ZERO, None).await.unwrap();
            if batch.is_empty() {
                return outcomes;
            }
            for m in batch {
                outcomes.push(self.feed.handle_fanout_message(&m.body).await.unwrap());
                self.queue.delete(&m.receipt).await.unwrap();
            }
        }
    }

    /// Publishes (the clock moves a millisecond first, as it would).
    async fn post(&self, author: &str, text: &str) -> PostId {
        self.clock.advance(1);
        self.feed
            .create_post(author, CreatePost::text(text))
            .await
            .unwrap()
            .post
            .post
            .id
    }

    async fn read(&self, reader: &str, limit: usize, before: Option<PostId>) -> FeedPage {
        self.feed
            .read_feed(reader, FeedQuery::limit(limit).before(before))
            .await
            .unwrap()
    }

    /// Every post of `reader`'s feed, walking pages of `limit`.
    async fn walk(&self, reader: &str, limit: usize) -> Vec<PostId> {
        let mut out = Vec::new();
        let mut before = None;
        for _ in 0..1000 {
            let page = self.read(reader, limit, before).await;
            out.extend(ids(&page));
            match page.next_before {
                Some(b) => before = Some(b),
                None => return out,
            }
        }
        panic!("the walk did not end");
    }
}

fn ids(page: &FeedPage) -> Vec<PostId> {
    page.posts.iter().map(|p| p.post.id).collect()
}

fn newest_first(mut v: Vec<PostId>) -> Vec<PostId> {
    v.sort();
    v.reverse();
    v
}

fn delta(before: TableStats, after: TableStats) -> TableStats {
    TableStats {
        reads: after.reads - before.reads,
        writes: after.writes - before.writes,
        queries: after.queries - before.queries,
        transactions: after.transactions - before.transactions,
        condition_failures: after.condition_failures - before.condition_failures,
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, FeedError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn a_post_reaches_every_follower_and_nobody_else() {
    let f = fixture(&[]);
    for follower in ["bob", "carol"] {
        f.feed.follow(follower, "alice").await.unwrap();
    }
    f.feed.follow("dave", "carol").await.unwrap();
    let id = f.post("alice", "hello").await;

    // The author sees it at once, before any fan-out ran.
    assert_eq!(ids(&f.read("alice", 20, None).await), vec![id]);
    assert!(f.feed.stored_entry("alice", id).await.unwrap());
    assert!(!f.feed.stored_entry("bob", id).await.unwrap());

    let outcomes = f.drain().await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].delivered, 2);
    for follower in ["bob", "carol"] {
        assert!(
            f.feed.stored_entry(follower, id).await.unwrap(),
            "{follower}"
        );
        let page = f.read(follower, 20, None).await;
        assert_eq!(ids(&page), vec![id], "{follower}");
        assert_eq!(page.posts[0].post.text, "hello");
        assert_eq!(page.posts[0].author.user_id, "alice");
    }
    for outsider in ["dave", "erin"] {
        assert!(!f.feed.stored_entry(outsider, id).await.unwrap());
        assert!(
            f.read(outsider, 20, None).await.posts.is_empty(),
            "{outsider}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_followers_all_get_it_through_continuation_jobs() {
    let f = fixture(&[("FEED_FANOUT_BATCH", "500")]);
    let followers: Vec<String> = (0..2000).map(|i| format!("f{i:04}")).collect();
    futures::stream::iter(followers.iter())
        .map(|u| {
            let feed = f.feed.clone();
            async move { feed.follow(u, "alice").await.unwrap() }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(f.feed.get_user("alice").await.unwrap().followers, 2000);

    let id = f.post("alice", "to everyone").await;
    // Keep each job's body to deliver it again afterwards.
    let mut bodies = Vec::new();
    let mut outcomes = Vec::new();
    loop {
        let batch = f.queue.receive(10, Duration::ZERO, None).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            outcomes.push(f.feed.handle_fanout_message(&m.body).await.unwrap());
            f.queue.delete(&m.receipt).await.unwrap();
            bodies.push(m.body);
        }
    }
    assert_eq!(outcomes.len(), 4, "2,000 followers, 500 per job");
    assert_eq!(
        outcomes.iter().map(|o| o.delivered).sum::<usize>(),
        2000,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| o.continued).count(),
        3,
        "the last job queues no continuation"
    );
    for u in &followers {
        assert!(f.feed.stored_entry(u, id).await.unwrap(), "{u}");
    }

    // Every job delivered again: nothing written, no continuation queued.
    let before = f.table.metrics();
    for body in &bodies {
        let again = f.feed.handle_fanout_message(body).await.unwrap();
        assert!(again.duplicate, "{again:?}");
        assert_eq!(again.delivered, 0);
    }
    let cost = delta(before, f.table.metrics());
    assert_eq!((cost.writes, cost.transactions), (0, 0), "{cost:?}");
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    let page = f.read("f1234", 20, None).await;
    assert_eq!(ids(&page), vec![id]);
}

#[tokio::test]
async fn a_job_redelivered_before_it_recorded_progress_does_not_fork_the_chain() {
    let f = fixture(&[("FEED_FANOUT_BATCH", "2")]);
    for u in ["a", "b", "c", "d", "e"] {
        f.feed.follow(u, "star").await.unwrap();
    }
    let id = f.post("star", "chain").await;
    let first = f.queue.receive(1, Duration::ZERO, None).await.unwrap();
    let body = first[0].body.clone();
    // Two copies of part 0 run (a visibility timeout ran out mid-job).
    let (one, two) = futures::join!(
        f.feed.handle_fanout_message(&body),
        f.feed.handle_fanout_message(&body)
    );
    assert!(one.unwrap().continued && two.unwrap().continued);
    f.queue.delete(&first[0].receipt).await.unwrap();
    let rest = f.drain().await;
    // Parts 1 and 2 ran once each; any second copy found them done.
    let real: Vec<&FanoutOutcome> = rest.iter().filter(|o| !o.duplicate).collect();
    assert!(real.len() >= 2, "{rest:?}");
    assert!(rest.len() <= 4, "duplicates die out after a step: {rest:?}");
    for u in ["a", "b", "c", "d", "e"] {
        assert!(f.feed.stored_entry(u, id).await.unwrap(), "{u}");
        assert_eq!(f.feed.stored_entries(u).await.unwrap(), vec![id]);
    }
}

#[tokio::test]
async fn a_hot_accounts_posts_are_merged_at_read_not_fanned_out() {
    let f = fixture(&[("FEED_HOT_THRESHOLD", "3")]);
    for u in ["f1", "f2", "f3", "f4"] {
        f.feed.follow(u, "star").await.unwrap();
    }
    f.feed.follow("f1", "bob").await.unwrap();
    let p1 = f.post("star", "first past the threshold").await;
    let marked = f.drain().await;
    assert_eq!(marked.len(), 1);
    assert_eq!(
        (marked[0].delivered, marked[0].markers),
        (0, 4),
        "{marked:?}"
    );

    let b1 = f.post("bob", "an ordinary post").await;
    let p2 = f.post("star", "hot now").await;
    let outcomes = f.drain().await;
    let star = outcomes.iter().find(|o| o.hot).expect("star's job");
    assert_eq!(star.delivered, 0);
    assert_eq!(
        outcomes.iter().map(|o| o.delivered).sum::<usize>(),
        1,
        "bob's post to f1"
    );

    for u in ["f1", "f2", "f3", "f4"] {
        let stored = f.feed.stored_entries(u).await.unwrap();
        assert!(
            !stored.contains(&p1) && !stored.contains(&p2),
            "{u}: {stored:?}"
        );
    }
    assert_eq!(ids(&f.read("f1", 20, None).await), vec![p2, b1, p1]);
    assert_eq!(ids(&f.read("f3", 20, None).await), vec![p2, p1]);
    // A later follower gets the marker at once.
    f.feed.follow("f5", "star").await.unwrap();
    assert_eq!(ids(&f.read("f5", 20, None).await), vec![p2, p1]);
    // Unfollowing a hot account takes its posts away at the next read.
    f.feed.unfollow("f3", "star").await.unwrap();
    assert!(f.read("f3", 20, None).await.posts.is_empty());

    // Under 90% of the threshold again: unmarked, markers removed, and its
    // posts fanned out once more.
    f.feed.unfollow("f4", "star").await.unwrap();
    f.feed.unfollow("f5", "star").await.unwrap();
    let p3 = f.post("star", "ordinary again").await;
    let outcomes = f.drain().await;
    assert_eq!(outcomes.len(), 1);
    assert!(!outcomes[0].hot);
    assert_eq!(
        (outcomes[0].delivered, outcomes[0].markers),
        (2, 2),
        "{outcomes:?}"
    );
    for u in ["f1", "f2"] {
        assert!(f.feed.stored_entry(u, p3).await.unwrap(), "{u}");
    }
    assert_eq!(ids(&f.read("f1", 20, None).await), vec![p3, p2, b1, p1]);
    // The hot-period posts still reach into f1's window: the retired marker
    // stays through a trim.
    f.feed.trim("f1").await.unwrap();
    f.feed.cache().clear();
    assert_eq!(ids(&f.read("f1", 20, None).await), vec![p3, p2, b1, p1]);
    let p4 = f.post("star", "and again").await;
    assert_eq!(f.drain().await[0].delivered, 2);
    assert_eq!(ids(&f.read("f2", 2, None).await), vec![p4, p3]);
}

#[tokio::test]
async fn a_page_walk_while_posts_arrive_sees_each_post_once_in_order() {
    let f = fixture(&[]);
    for a in ["ann", "ben"] {
        f.feed.follow("reader", a).await.unwrap();
    }
    let mut initial = Vec::new();
    for i in 0..30 {
        let author = if i % 3 == 0 { "ben" } else { "ann" };
        initial.push(f.post(author, &format!("post {i}")).await);
    }
    f.drain().await;

    let first = f.read("reader", 7, None).await;
    let newest = first.newest_id;
    let mut seen = ids(&first);
    let mut before = first.next_before;
    let mut arrived = Vec::new();
    while let Some(b) = before {
        // Three posts arrive (and are fanned out) between any two pages.
        for i in 0..3 {
            arrived.push(f.post("ann", &format!("late {i}")).await);
        }
        f.drain().await;
        let page = f.read("reader", 7, Some(b)).await;
        seen.extend(ids(&page));
        before = page.next_before;
    }
    assert_eq!(
        seen,
        newest_first(initial.clone()),
        "each post once, newest first"
    );

    // Polling from the first page's newest id finds exactly the arrivals,
    // also when there are more than a page of them.
    let mut polled = Vec::new();
    let mut upper = None;
    loop {
        let page = f
            .feed
            .read_feed("reader", FeedQuery::limit(5).after(newest).before(upper))
            .await
            .unwrap();
        polled.extend(ids(&page));
        match page.next_before {
            Some(b) => upper = Some(b),
            None => break,
        }
    }
    assert_eq!(polled, newest_first(arrived));
}

#[tokio::test]
async fn following_backfills_recent_posts_and_scrolling_reaches_older_ones() {
    let f = fixture(&[("FEED_BACKFILL", "5")]);
    let mut posts = Vec::new();
    for i in 0..8 {
        posts.push(f.post("alice", &format!("old {i}")).await);
    }
    f.drain().await;
    assert!(f.feed.stored_entries("bob").await.unwrap().is_empty());
    assert_eq!(
        f.feed.follow("bob", "alice").await.unwrap(),
        FollowOutcome::Followed
    );
    let newest = newest_first(posts.clone());
    assert_eq!(
        f.feed.stored_entries("bob").await.unwrap(),
        newest[..5].to_vec()
    );
    assert_eq!(ids(&f.read("bob", 3, None).await), newest[..3].to_vec());
    // Past the five copied entries, alice's own timeline carries on.
    assert_eq!(f.walk("bob", 3).await, newest);
}

#[tokio::test]
async fn unfollow_delete_and_block_take_posts_away_at_the_next_read() {
    let f = fixture(&[]);
    f.feed.follow("bob", "alice").await.unwrap();
    f.feed.follow("bob", "carol").await.unwrap();
    f.feed.follow("alice", "bob").await.unwrap();
    let a1 = f.post("alice", "a1").await;
    let a2 = f.post("alice", "a2").await;
    let c1 = f.post("carol", "c1").await;
    f.drain().await;
    assert_eq!(ids(&f.read("bob", 20, None).await), vec![c1, a2, a1]);

    // Delete: others cannot, the author can, and it is gone at once.
    assert_eq!(
        code(f.feed.delete_post("bob", &a2.to_string()).await),
        "post_not_found"
    );
    f.feed.delete_post("alice", &a2.to_string()).await.unwrap();
    assert_eq!(
        code(f.feed.delete_post("alice", &a2.to_string()).await),
        "post_not_found"
    );
    assert_eq!(
        code(f.feed.get_post(None, &a2.to_string()).await),
        "post_not_found"
    );
    assert_eq!(ids(&f.read("bob", 20, None).await), vec![c1, a1]);

    // Unfollow: carol's post leaves the next read; the trimmer removes its
    // entry once the hide marker has done its job.
    assert!(f.feed.unfollow("bob", "carol").await.unwrap());
    assert!(
        !f.feed.unfollow("bob", "carol").await.unwrap(),
        "idempotent"
    );
    assert_eq!(ids(&f.read("bob", 20, None).await), vec![a1]);
    assert!(f.feed.stored_entry("bob", c1).await.unwrap());
    f.feed.trim("bob").await.unwrap();
    assert!(!f.feed.stored_entry("bob", c1).await.unwrap());
    assert_eq!(ids(&f.read("bob", 20, None).await), vec![a1]);

    // Block: both follows end, each one's posts leave the other's feed,
    // and neither can follow the other.
    let b1 = f.post("bob", "b1").await;
    f.drain().await;
    assert!(ids(&f.read("alice", 20, None).await).contains(&b1));
    assert!(f.feed.block("alice", "bob").await.unwrap());
    assert!(!f.feed.block("alice", "bob").await.unwrap(), "idempotent");
    assert!(f.feed.is_blocked_either_way("bob", "alice").await.unwrap());
    assert!(f.feed.is_blocked_either_way("alice", "bob").await.unwrap());
    assert!(!f.feed.is_blocked_either_way("bob", "carol").await.unwrap());
    assert_eq!(
        ids(&f.read("bob", 20, None).await),
        vec![b1],
        "only bob's own"
    );
    assert_eq!(
        ids(&f.read("alice", 20, None).await),
        vec![a1],
        "only alice's own"
    );
    assert_eq!(code(f.feed.follow("bob", "alice").await), "blocked");
    assert_eq!(code(f.feed.follow("alice", "bob").await), "blocked");
    assert_eq!(
        code(f.feed.get_post(Some("bob"), &a1.to_string()).await),
        "post_not_found"
    );
    assert!(
        f.feed
            .get_post(Some("carol"), &a1.to_string())
            .await
            .is_ok()
    );
    let timeline = f
        .feed
        .list_user_posts(Some("bob"), "alice", FeedQuery::default())
        .await
        .unwrap();
    assert!(timeline.posts.is_empty());
    let alice = f.feed.get_user("alice").await.unwrap();
    let bob = f.feed.get_user("bob").await.unwrap();
    assert_eq!((alice.followers, alice.following), (0, 0));
    assert_eq!(
        (bob.followers, bob.following),
        (0, 0),
        "carol was unfollowed before"
    );

    // Unblocked, a new follow brings alice's posts back.
    assert!(f.feed.unblock("alice", "bob").await.unwrap());
    assert!(!f.feed.is_blocked_either_way("bob", "alice").await.unwrap());
    f.feed.follow("bob", "alice").await.unwrap();
    assert_eq!(ids(&f.read("bob", 20, None).await), vec![b1, a1]);
}

#[tokio::test]
async fn the_same_idempotency_key_publishes_once_and_fans_out_once() {
    let f = fixture(&[]);
    f.feed.follow("bob", "alice").await.unwrap();
    let request = CreatePost::text("once").idempotency_key("k-1");
    let first = f.feed.create_post("alice", request.clone()).await.unwrap();
    assert!(first.created);
    let again = f
        .feed
        .create_post(
            "alice",
            CreatePost::text("another text").idempotency_key("k-1"),
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        again.post.post, first.post.post,
        "the first post, as it was"
    );
    // Another author's key is their own.
    let other = f.feed.create_post("carol", request).await.unwrap();
    assert!(other.created);
    assert_ne!(other.post.post.id, first.post.post.id);

    let outcomes = f.drain().await;
    assert_eq!(outcomes.len(), 2, "one job per post: {outcomes:?}");
    assert_eq!(
        ids(&f.read("bob", 20, None).await),
        vec![first.post.post.id]
    );
    let mine = f
        .feed
        .list_user_posts(None, "alice", FeedQuery::default())
        .await
        .unwrap();
    assert_eq!(ids(&mine), vec![first.post.post.id]);
    assert_eq!(f.feed.get_user("alice").await.unwrap().posts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follow_limit_holds_also_under_concurrency() {
    let f = fixture(&[("FEED_MAX_FOLLOWING", "3")]);
    for t in ["t1", "t2", "t3"] {
        f.feed.follow("u", t).await.unwrap();
    }
    assert_eq!(code(f.feed.follow("u", "t4").await), "follow_limit");
    assert_eq!(
        f.feed.follow("u", "t1").await.unwrap(),
        FollowOutcome::AlreadyFollowing,
        "a repeat is not refused"
    );
    assert_eq!(f.feed.get_user("u").await.unwrap().following, 3);
    assert_eq!(f.feed.get_user("t4").await.unwrap().followers, 0);
    let e = ApiError::from(f.feed.follow("u", "t4").await.unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (409, "follow_limit"));

    let results = futures::future::join_all((0..12).map(|i| {
        let feed = f.feed.clone();
        async move { feed.follow("v", &format!("t{i}")).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(FeedError::FollowLimit(3))))
        .count();
    assert_eq!((ok, limited), (3, 9));
    assert_eq!(f.feed.get_user("v").await.unwrap().following, 3);
    let listed = f
        .feed
        .list_following("v", ListQuery::limit(100))
        .await
        .unwrap();
    assert_eq!(listed.users.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_follows_and_unfollows_keep_exact_counts() {
    let f = fixture(&[]);
    let users: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    // Every user follows twice at once.
    futures::future::join_all(users.iter().chain(users.iter()).map(|u| {
        let feed = f.feed.clone();
        async move { feed.follow(u, "star").await.unwrap() }
    }))
    .await;
    assert_eq!(f.feed.get_user("star").await.unwrap().followers, 60);
    futures::future::join_all(users[..25].iter().chain(users[..25].iter()).map(|u| {
        let feed = f.feed.clone();
        async move { feed.unfollow(u, "star").await.unwrap() }
    }))
    .await;
    assert_eq!(f.feed.get_user("star").await.unwrap().followers, 35);
    for (i, u) in users.iter().enumerate() {
        let expected = u64::from(i >= 25);
        assert_eq!(f.feed.get_user(u).await.unwrap().following, expected, "{u}");
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .feed
            .list_followers("star", ListQuery::limit(10).cursor(cursor))
            .await
            .unwrap();
        listed.extend(page.users.into_iter().map(|a| a.user_id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(listed.len(), 35);
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 35);
}

#[tokio::test]
async fn an_inactive_follower_is_skipped_then_gets_a_full_first_page() {
    let f = fixture(&[("FEED_INACTIVE_DAYS", "30"), ("FEED_REBUILD_SIZE", "20")]);
    for a in ["ann", "ben", "cat"] {
        f.feed.follow("sleeper", a).await.unwrap();
    }
    // Posts from before the absence sit in the stored feed.
    let mut old = Vec::new();
    for i in 0..25 {
        old.push(f.post("ann", &format!("before {i}")).await);
    }
    f.drain().await;
    assert_eq!(f.read("sleeper", 20, None).await.posts.len(), 20);
    f.clock.advance(31 * DAY);
    // Someone active follows ann too.
    f.feed.follow("awake", "ann").await.unwrap();

    let mut away = Vec::new();
    for i in 0..30 {
        let author = ["ann", "ben", "cat"][i % 3];
        away.push(f.post(author, &format!("while away {i}")).await);
    }
    let outcomes = f.drain().await;
    assert_eq!(
        outcomes.iter().map(|o| o.skipped_inactive).sum::<usize>(),
        30
    );
    assert_eq!(
        outcomes.iter().map(|o| o.delivered).sum::<usize>(),
        10,
        "awake gets ann's"
    );
    let stored = f.feed.stored_entries("sleeper").await.unwrap();
    assert_eq!(
        stored,
        newest_first(old.clone()),
        "nothing written while away"
    );

    // Back: the first page is full of what came while they were away, not
    // the old stored entries.
    let newest = newest_first(away.clone());
    let page = f.read("sleeper", 20, None).await;
    assert_eq!(ids(&page), newest[..20].to_vec());
    let stored = f.feed.stored_entries("sleeper").await.unwrap();
    assert!(newest[..20].iter().all(|id| stored.contains(id)), "rebuilt");
    // Past the rebuilt window the timelines carry on: every post once.
    let all = newest_first(away.iter().chain(old.iter()).copied().collect());
    assert_eq!(f.walk("sleeper", 20).await, all);
    assert_eq!(f.walk("sleeper", 7).await, all);
    // And the fan-out writes to them again.
    let fresh = f.post("ben", "welcome back").await;
    let outcomes = f.drain().await;
    assert_eq!(outcomes[0].skipped_inactive, 0);
    assert!(f.feed.stored_entry("sleeper", fresh).await.unwrap());
}

#[tokio::test]
async fn scrolling_continues_past_the_stored_window() {
    let f = fixture(&[("FEED_WINDOW", "10"), ("FEED_TRIM_EVERY", "1")]);
    for a in ["ann", "ben"] {
        f.feed.follow("reader", a).await.unwrap();
    }
    let mut posts = Vec::new();
    for i in 0..40 {
        posts.push(f.post(["ann", "ben"][i % 2], &format!("p{i}")).await);
        f.drain().await;
    }
    let stored = f.feed.stored_entries("reader").await.unwrap();
    let newest = newest_first(posts);
    assert_eq!(stored, newest[..10].to_vec(), "trimmed to the window");
    assert_eq!(
        f.walk("reader", 7).await,
        newest,
        "every post, once, in order"
    );
}

#[tokio::test]
async fn a_fan_out_job_lost_at_publish_is_sent_by_the_sweeper() {
    let f = fixture(&[("FEED_OUTBOX_GRACE_SECONDS", "30")]);
    f.feed.follow("bob", "alice").await.unwrap();
    f.queue.down.store(true, Ordering::SeqCst);
    let id = f.post("alice", "while the queue is down").await;
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    f.queue.down.store(false, Ordering::SeqCst);
    assert_eq!(
        f.feed.sweep_outbox().await.unwrap(),
        0,
        "left to the publish for now"
    );
    f.clock.advance(31_000);
    f.queue.down.store(true, Ordering::SeqCst);
    assert!(
        f.feed.sweep_outbox().await.is_err(),
        "still down: the item stays"
    );
    f.queue.down.store(false, Ordering::SeqCst);
    assert_eq!(f.feed.sweep_outbox().await.unwrap(), 1);
    assert_eq!(f.feed.sweep_outbox().await.unwrap(), 0, "sent once");
    let outcomes = f.drain().await;
    assert_eq!(outcomes.len(), 1);
    assert!(f.feed.stored_entry("bob", id).await.unwrap());
    // A publish whose send worked leaves nothing to sweep.
    f.post("alice", "queue up").await;
    f.clock.advance(31_000);
    assert_eq!(f.feed.sweep_outbox().await.unwrap(), 0);
}

#[tokio::test]
async fn a_feed_page_costs_one_query_per_source_and_one_batch_read() {
    let f = fixture(&[("FEED_HOT_THRESHOLD", "3")]);
    for u in ["x1", "x2", "x3", "reader"] {
        f.feed.follow(u, "star").await.unwrap();
    }
    for a in ["ann", "ben"] {
        f.feed.follow("reader", a).await.unwrap();
        f.feed
            .put_profile(
                a,
                PutProfile {
                    display_name: Some(a.to_uppercase()),
                    ..PutProfile::default()
                },
            )
            .await
            .unwrap();
    }
    for i in 0..60 {
        f.post(["ann", "ben"][i % 2], &format!("p{i}")).await;
        if i % 12 == 0 {
            f.post("star", &format!("s{i}")).await;
        }
    }
    let outcomes = f.drain().await;
    assert_eq!(
        outcomes.iter().filter(|o| o.hot).count(),
        4,
        "star fanned out only markers"
    );
    f.feed.cache().clear();

    f.recording.take_batches();
    let before = f.table.metrics();
    let page = f.read("reader", 20, None).await;
    assert_eq!(page.posts.len(), 20);
    assert_eq!(
        delta(before, f.table.metrics()),
        TableStats {
            queries: 2,
            reads: 1,
            writes: 1,
            ..TableStats::default()
        },
        "the feed and star's timeline, one batch read, and the first read's activity"
    );
    let batches = f.recording.take_batches();
    assert_eq!(batches.len(), 1);
    let mut authors: Vec<&Key> = batches[0].iter().filter(|k| !is_post(k)).collect();
    authors.sort();
    assert_eq!(
        authors,
        vec![
            &profile_key("ann"),
            &profile_key("ben"),
            &profile_key("star")
        ],
        "the posts the cache lacks and the page's three authors"
    );
    let stored = |page: &FeedPage| {
        page.posts
            .iter()
            .filter(|p| p.author.user_id != "star")
            .count()
    };
    assert_eq!(
        batches[0].iter().filter(|k| is_post(k)).count(),
        stored(&page),
        "the stored entries' posts; star's came whole from its timeline"
    );
    assert!(page.posts.iter().any(|p| p.author.user_id == "star"));
    assert!(
        page.posts
            .iter()
            .filter(|p| p.author.user_id == "ann")
            .all(|p| p.author.display_name.as_deref() == Some("ANN"))
    );

    let before = f.table.metrics();
    let again = f.read("reader", 20, None).await;
    assert_eq!(ids(&again), ids(&page));
    assert_eq!(
        delta(before, f.table.metrics()),
        TableStats {
            queries: 2,
            reads: 1,
            ..TableStats::default()
        },
        "cached posts: the same two queries and one batch read of the authors"
    );
    let batches = f.recording.take_batches();
    assert_eq!(batches.len(), 1);
    assert!(
        !batches[0].iter().any(is_post),
        "no post item read: {:?}",
        batches[0]
    );
    assert_eq!(batches[0].len(), 3, "ann's, ben's and star's profiles");

    let before = f.table.metrics();
    let next = f.read("reader", 20, page.next_before).await;
    assert_eq!(next.posts.len(), 20);
    assert_eq!(
        delta(before, f.table.metrics()),
        TableStats {
            queries: 2,
            reads: 1,
            ..TableStats::default()
        },
        "the next page: the same two queries and one batch read of its posts, \
         authors and the reader's meta"
    );
    let batches = f.recording.take_batches();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].contains(&meta_key("reader")), "the state check");
    assert_eq!(
        batches[0].iter().filter(|k| is_post(k)).count(),
        stored(&next)
    );
    assert!(ids(&next)[0] < *ids(&page).last().unwrap());

    // Polling for newer posts when there are none: the same two queries.
    let before = f.table.metrics();
    let poll = f
        .feed
        .read_feed("reader", FeedQuery::limit(20).after(page.newest_id))
        .await
        .unwrap();
    assert!(poll.posts.is_empty());
    assert_eq!(
        poll.newest_id, page.newest_id,
        "poll again from the same id"
    );
    assert_eq!(
        delta(before, f.table.metrics()),
        TableStats {
            queries: 2,
            ..TableStats::default()
        },
        "a poll needs no timeline merge"
    );
    let fresh = f.post("ann", "new").await;
    f.drain().await;
    let poll = f
        .feed
        .read_feed("reader", FeedQuery::limit(20).after(page.newest_id))
        .await
        .unwrap();
    assert_eq!(ids(&poll), vec![fresh]);
}

/// Two instances (two Lambda functions) on one table: a post deleted
/// through one leaves the other's feed, post lookup and author timeline at
/// their next read, though the other cached it; and the profile's list of
/// recent deletions stays pruned and bounded.
#[tokio::test]
async fn a_post_deleted_through_one_instance_leaves_another_instances_reads_at_once() {
    let f = fixture(&[]);
    let warm = f.instance();
    f.feed.follow("bob", "ann").await.unwrap();
    let keep = f.post("ann", "keep").await;
    let doomed = f.post("ann", "doomed").await;
    let top = f.post("ann", "top").await;
    f.drain().await;

    // The warm instance caches the posts (feed, lookup, timeline) and
    // bob's state (a later page).
    let page = warm.read_feed("bob", FeedQuery::limit(20)).await.unwrap();
    assert_eq!(ids(&page), vec![top, doomed, keep]);
    let later = warm
        .read_feed("bob", FeedQuery::limit(20).before(Some(top)))
        .await
        .unwrap();
    assert_eq!(ids(&later), vec![doomed, keep]);
    assert!(
        warm.get_post(Some("bob"), &doomed.to_string())
            .await
            .is_ok()
    );
    let timeline = warm
        .list_user_posts(Some("bob"), "ann", FeedQuery::limit(20))
        .await
        .unwrap();
    assert_eq!(ids(&timeline), vec![top, doomed, keep]);

    f.feed
        .delete_post("ann", &doomed.to_string())
        .await
        .unwrap();

    let page = warm.read_feed("bob", FeedQuery::limit(20)).await.unwrap();
    assert_eq!(
        ids(&page),
        vec![top, keep],
        "the warm instance's next first page"
    );
    let later = warm
        .read_feed("bob", FeedQuery::limit(20).before(Some(top)))
        .await
        .unwrap();
    assert_eq!(ids(&later), vec![keep], "and its next later page");
    assert_eq!(
        code(warm.get_post(Some("bob"), &doomed.to_string()).await),
        "post_not_found"
    );
    assert_eq!(
        code(warm.get_post(None, &doomed.to_string()).await),
        "post_not_found"
    );
    let timeline = warm
        .list_user_posts(Some("bob"), "ann", FeedQuery::limit(20))
        .await
        .unwrap();
    assert_eq!(ids(&timeline), vec![top, keep]);
    // The author's own feed, read through yet another warm instance.
    let third = f.instance();
    assert_eq!(
        ids(&third.read_feed("ann", FeedQuery::limit(20)).await.unwrap()),
        vec![top, keep]
    );

    // The list on the profile: pruned past twice the cache TTLs, bounded.
    let deletions = || async {
        let item = f
            .table
            .get(&profile_key("ann"), Consistency::Strong)
            .await
            .unwrap()
            .unwrap();
        get_str(&item, "recentDeletes")
            .unwrap_or_default()
            .to_owned()
    };
    assert!(deletions().await.starts_with(&format!("{doomed}:")));
    let ttl = f.config.cache_ttl.max(f.config.state_ttl).as_millis() as u64;
    f.clock.advance(2 * ttl + 1);
    let mut last = None;
    for i in 0..205 {
        let id = f.post("ann", &format!("n{i}")).await;
        f.feed.delete_post("ann", &id.to_string()).await.unwrap();
        last = Some(id);
    }
    let raw = deletions().await;
    let listed: Vec<&str> = raw.split(',').collect();
    assert_eq!(listed.len(), 200, "at most 200 deletions are remembered");
    assert!(
        !raw.contains(&format!("{doomed}:")),
        "the old one was pruned"
    );
    assert!(listed[199].starts_with(&format!("{}:", last.unwrap())));
    assert_eq!(f.feed.get_user("ann").await.unwrap().posts, 2);
    assert_eq!(
        code(f.feed.delete_post("ann", &doomed.to_string()).await),
        "post_not_found"
    );
}

/// Two instances on one table: an unfollow, a follow and a block through
/// one show on the other's next later page (`before=`), though the other
/// cached the reader's state with the first page; the page after costs the
/// usual again.
#[tokio::test]
async fn an_unfollow_through_one_instance_shows_on_another_instances_next_page() {
    let f = fixture(&[]);
    let warm = f.instance();
    f.feed.follow("bob", "ann").await.unwrap();
    f.feed.follow("bob", "cy").await.unwrap();
    // Older posts below the pages looked at: no page reaches the bottom of
    // the stored window (which would add the timeline merge's requests).
    for i in 0..10 {
        f.post("cy", &format!("old {i}")).await;
    }
    for i in 0..4 {
        f.post("cy", &format!("cy {i}")).await;
        f.post("ann", &format!("ann {i}")).await;
    }
    f.drain().await;
    let authors = |page: &FeedPage| -> Vec<String> {
        page.posts
            .iter()
            .map(|p| p.author.user_id.clone())
            .collect()
    };

    let first = warm.read_feed("bob", FeedQuery::limit(2)).await.unwrap();
    assert_eq!(first.posts.len(), 2);
    let below = first.next_before;
    assert!(f.feed.unfollow("bob", "ann").await.unwrap());
    let before = f.table.metrics();
    let next = warm
        .read_feed("bob", FeedQuery::limit(3).before(below))
        .await
        .unwrap();
    assert_eq!(authors(&next), vec!["cy"; 3], "unfollowed elsewhere");
    assert_eq!(
        delta(before, f.table.metrics()),
        TableStats {
            queries: 4,
            reads: 2,
            ..TableStats::default()
        },
        "right after a change: the page (a query and the batch read that finds the \
         new stateVersion), the markers, then the page again (whose first 5 entries \
         hold 3 of ann's, so a second query of the stored feed) and its batch read"
    );
    let before = f.table.metrics();
    let again = warm
        .read_feed("bob", FeedQuery::limit(3).before(below))
        .await
        .unwrap();
    assert_eq!(again, next);
    assert_eq!(
        delta(before, f.table.metrics()),
        TableStats {
            queries: 2,
            reads: 1,
            ..TableStats::default()
        },
        "unchanged: the stored feed (twice, for the hidden entries) and one batch read"
    );

    // Followed again elsewhere: ann's posts show again (backfilled).
    f.feed.follow("bob", "ann").await.unwrap();
    let next = warm
        .read_feed("bob", FeedQuery::limit(3).before(below))
        .await
        .unwrap();
    assert_eq!(
        authors(&next),
        vec!["ann", "cy", "ann"],
        "followed again elsewhere"
    );

    // cy blocks bob elsewhere: cy's posts go from bob's next page.
    assert!(f.feed.block("cy", "bob").await.unwrap());
    let next = warm
        .read_feed("bob", FeedQuery::limit(3).before(below))
        .await
        .unwrap();
    assert_eq!(authors(&next), vec!["ann"; 3], "blocked elsewhere");
    // Unblocking bumps the state too (nothing shows again: the follow
    // ended with the block).
    let meta = |f: &Fixture| {
        let table = f.table.clone();
        async move {
            let item = table
                .get(&meta_key("bob"), Consistency::Strong)
                .await
                .unwrap()
                .unwrap();
            hanul_shared::ports::table::get_i64(&item, "stateVersion").unwrap()
        }
    };
    let version = meta(&f).await;
    assert!(f.feed.unblock("cy", "bob").await.unwrap());
    assert_eq!(meta(&f).await, version + 1);
    assert!(!f.feed.unblock("cy", "bob").await.unwrap());
    assert_eq!(
        meta(&f).await,
        version + 1,
        "nothing removed, nothing bumped"
    );
    let next = warm
        .read_feed("bob", FeedQuery::limit(3).before(below))
        .await
        .unwrap();
    assert_eq!(authors(&next), vec!["ann"; 3]);
}

/// A hot account followed through one instance is merged on another
/// instance's next later page (the follow's marker bumps the state).
#[tokio::test]
async fn a_hot_follow_through_one_instance_shows_on_another_instances_next_page() {
    let f = fixture(&[("FEED_HOT_THRESHOLD", "2")]);
    let warm = f.instance();
    for u in ["x1", "x2", "x3"] {
        f.feed.follow(u, "star").await.unwrap();
    }
    f.post("star", "warm up").await;
    f.drain().await;
    f.feed.follow("bob", "ann").await.unwrap();
    let mut last = None;
    for i in 0..3 {
        last = Some(f.post("ann", &format!("ann {i}")).await);
        f.post("star", &format!("star {i}")).await;
    }
    f.drain().await;
    let first = warm.read_feed("bob", FeedQuery::limit(1)).await.unwrap();
    assert_eq!(ids(&first), vec![last.unwrap()]);
    f.feed.follow("bob", "star").await.unwrap();
    let next = warm
        .read_feed("bob", FeedQuery::limit(20).before(first.next_before))
        .await
        .unwrap();
    let stars = next
        .posts
        .iter()
        .filter(|p| p.author.user_id == "star")
        .count();
    assert!(stars >= 3, "star's posts merged: {:?}", ids(&next));
}

#[tokio::test]
async fn friends_profiles_and_lists() {
    let f = fixture(&[]);
    for t in ["a", "b", "c", "d", "e"] {
        f.feed.follow("u", t).await.unwrap();
    }
    for t in ["b", "d"] {
        f.feed.follow(t, "u").await.unwrap();
    }
    let friends = f
        .feed
        .list_friends("u", ListQuery::default())
        .await
        .unwrap();
    let names = |l: &hanul_shared::feed::UserList| {
        l.users
            .iter()
            .map(|a| a.user_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&friends), ["b", "d"]);
    // How the caller stands with each: a friend, one-way either way, blocked.
    let rel = |v: hanul_shared::feed::UserProfile| {
        v.relationship
            .map(|r| (r.following, r.followed_by, r.blocking))
    };
    assert_eq!(
        rel(f.feed.view_user("u", "b").await.unwrap()),
        Some((true, true, false))
    );
    assert_eq!(
        rel(f.feed.view_user("u", "a").await.unwrap()),
        Some((true, false, false))
    );
    assert_eq!(
        rel(f.feed.view_user("a", "u").await.unwrap()),
        Some((false, true, false))
    );
    assert_eq!(
        rel(f.feed.view_user("u", "u").await.unwrap()),
        None,
        "oneself"
    );
    f.feed.block("x", "u").await.unwrap();
    assert_eq!(
        rel(f.feed.view_user("x", "u").await.unwrap()),
        Some((false, false, true))
    );
    let one = f.feed.list_friends("u", ListQuery::limit(1)).await.unwrap();
    assert_eq!(names(&one), ["b"]);
    let two = f
        .feed
        .list_friends("u", ListQuery::limit(1).cursor(one.next_cursor.clone()))
        .await
        .unwrap();
    assert_eq!(names(&two), ["d"]);

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .feed
            .list_following("u", ListQuery::limit(2).cursor(cursor))
            .await
            .unwrap();
        pages.push(names(&page));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages.concat(), ["a", "b", "c", "d", "e"]);
    assert_eq!(
        names(
            &f.feed
                .list_followers("u", ListQuery::default())
                .await
                .unwrap()
        ),
        ["b", "d"]
    );
    // A cursor from another list, or made up, is refused.
    assert_eq!(
        code(
            f.feed
                .list_followers("u", ListQuery::default().cursor(one.next_cursor.clone()))
                .await
        ),
        "invalid_cursor"
    );
    assert_eq!(
        code(
            f.feed
                .list_following("u", ListQuery::default().cursor(Some("nope".into())))
                .await
        ),
        "invalid_cursor"
    );

    // An avatar must be a ready image of the caller's (tests/e2e/media.rs);
    // this service has no media, so none is accepted and nothing changes.
    let refused = f
        .feed
        .put_profile(
            "u",
            serde_json::from_value(serde_json::json!({"displayName": "X", "avatarMediaId": "m-1"}))
                .unwrap(),
        )
        .await;
    assert!(matches!(
        refused,
        Err(FeedError::Invalid("invalid_avatar_media_id", _))
    ));
    assert_eq!(f.feed.get_profile("u").await.unwrap().display_name, None);
    let me = f
        .feed
        .put_profile(
            "u",
            serde_json::from_value(serde_json::json!({
                "displayName": "Yu", "bio": "hello\nworld"
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(me.display_name.as_deref(), Some("Yu"));
    assert_eq!(f.feed.get_profile("u").await.unwrap(), me);
    f.post("u", "one").await;
    let user = f.feed.get_user("u").await.unwrap();
    assert_eq!((user.followers, user.following, user.posts), (2, 5, 1));
    let json = serde_json::to_value(&user).unwrap();
    assert_eq!(json["displayName"], "Yu");
    assert_eq!(json["followers"], 2);
    // Clearing a field keeps the counts.
    f.feed
        .put_profile("u", PutProfile::default())
        .await
        .unwrap();
    let user = f.feed.get_user("u").await.unwrap();
    assert_eq!((user.profile.display_name, user.following), (None, 5));
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_and_changes_nothing() {
    let f = fixture(&[]);
    f.feed.follow("bob", "alice").await.unwrap();
    let before = f.table.metrics();
    let queued = f.queue.depth().await.unwrap();
    let feed = &f.feed;
    let checks: Vec<(&str, Result<(), FeedError>)> = vec![
        (
            "cannot_follow_self",
            feed.follow("bob", "bob").await.map(drop),
        ),
        (
            "invalid_user_id",
            feed.follow("bob", "not valid").await.map(drop),
        ),
        ("invalid_user_id", feed.follow("bob", "a#b").await.map(drop)),
        ("invalid_user_id", feed.unfollow("bob", "").await.map(drop)),
        (
            "cannot_block_self",
            feed.block("bob", "bob").await.map(drop),
        ),
        (
            "invalid_text",
            feed.create_post("bob", CreatePost::text(""))
                .await
                .map(drop),
        ),
        (
            "invalid_text",
            feed.create_post("bob", CreatePost::text("x".repeat(5_001)))
                .await
                .map(drop),
        ),
        (
            "invalid_text",
            feed.create_post("bob", CreatePost::text("ding\u{7}"))
                .await
                .map(drop),
        ),
        (
            "invalid_media",
            feed.create_post(
                "bob",
                CreatePost {
                    media_ids: (0..5).map(|i| format!("m{i}")).collect(),
                    ..CreatePost::text("five")
                },
            )
            .await
            .map(drop),
        ),
        (
            "invalid_idempotency_key",
            feed.create_post("bob", CreatePost::text("k").idempotency_key("a b"))
                .await
                .map(drop),
        ),
        (
            "invalid_limit",
            feed.read_feed("bob", FeedQuery::limit(0)).await.map(drop),
        ),
        (
            "invalid_limit",
            feed.read_feed("bob", FeedQuery::limit(101)).await.map(drop),
        ),
        (
            "invalid_before",
            feed.read_feed(
                "bob",
                FeedQuery {
                    before: Some("yesterday".into()),
                    ..FeedQuery::default()
                },
            )
            .await
            .map(drop),
        ),
        ("invalid_post_id", feed.delete_post("bob", "abc").await),
        ("post_not_found", feed.delete_post("bob", "12345").await),
        (
            "post_not_found",
            feed.get_post(None, "12345").await.map(drop),
        ),
        (
            "invalid_display_name",
            feed.put_profile(
                "bob",
                PutProfile {
                    display_name: Some("  ".into()),
                    ..PutProfile::default()
                },
            )
            .await
            .map(drop),
        ),
    ];
    for (expected, result) in checks {
        let e = result.expect_err(expected);
        assert_eq!(e.code(), expected, "{e}");
        let api = ApiError::from(e);
        let status = if expected == "post_not_found" {
            404
        } else {
            400
        };
        assert_eq!((api.status.as_u16(), api.code), (status, expected));
    }
    let cost = delta(before, f.table.metrics());
    assert_eq!((cost.writes, cost.transactions), (0, 0), "{cost:?}");
    assert_eq!(f.queue.depth().await.unwrap(), queued);
    assert_eq!(f.feed.get_user("bob").await.unwrap().following, 1);
    let blocked = ApiError::from(FeedError::Blocked);
    assert_eq!((blocked.status.as_u16(), blocked.code), (403, "blocked"));
}

#[tokio::test]
async fn a_hot_turn_that_failed_part_way_is_resumed_by_the_redelivered_job() {
    let f = fixture(&[("FEED_HOT_THRESHOLD", "3")]);
    for u in ["f1", "f2", "f3", "f4"] {
        f.feed.follow(u, "star").await.unwrap();
    }
    let p1 = f.post("star", "the post that turns the account hot").await;
    // The first attempt flipped the flag, then failed before any marker was
    // written (a throttled batch, a timeout): the profile says hot, by p1.
    let flipped = hanul_shared::ports::table::Update::new()
        .set("hot", hanul_shared::ports::table::num(1))
        .set("hotBy", hanul_shared::ports::table::num(p1.value()));
    f.table
        .update(
            &hanul_shared::feed::keys::profile_key("star"),
            flipped,
            None,
        )
        .await
        .unwrap();
    // The redelivery resumes the markers instead of taking the account as
    // already hot (which would leave every follower without its posts).
    let outcomes = f.drain().await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        (outcomes[0].markers, outcomes[0].hot),
        (4, false),
        "{outcomes:?}"
    );
    for u in ["f1", "f2", "f3", "f4"] {
        assert_eq!(ids(&f.read(u, 20, None).await), vec![p1], "{u}");
    }
    // Another post of the now hot account is merged, not fanned out.
    let p2 = f.post("star", "hot now").await;
    let outcomes = f.drain().await;
    assert!(outcomes[0].hot && outcomes[0].markers == 0, "{outcomes:?}");
    assert_eq!(ids(&f.read("f2", 20, None).await), vec![p2, p1]);
}
