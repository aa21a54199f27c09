//! The news feed: a follow graph with exact counters and blocks, posts
//! published through a transactional outbox, fan-out on write through a
//! queue (hybrid: accounts over a follower threshold are merged at read
//! time instead), and a feed read that pages by post id, hydrates from a
//! read-through cache, and falls back to merging the followed accounts'
//! timelines past the stored window.
//!
//! Layers: `model` (what users send and get, checked), `keys` (the table
//! layout), `graph` (follows, blocks, profiles), `service` (posts),
//! `fanout` (the worker logic, trimming, the outbox sweeper), `read` (the
//! feed read), `cache` (posts, profiles, per-reader feed state).
//!
//! Each function instance (a Lambda each) has its own service and caches;
//! writes leave what every other instance needs to notice them at its next
//! read in the table itself: deletions on the author's profile
//! (`recentDeletes`), reader-state changes as `stateVersion` on the
//! reader's feed meta (see `read` and `cache`).

mod cache;
mod error;
mod fanout;
mod graph;
pub mod keys;
pub mod model;
mod read;
mod service;

use std::time::Duration;

use async_trait::async_trait;

pub use cache::FeedCache;
pub use error::FeedError;
pub use fanout::{FANOUT_DLQ, FANOUT_QUEUE, FanoutJob, FanoutOutcome, Markers, fanout_queue_spec};
pub use graph::FollowOutcome;
pub use model::{
    Author, CreatePost, FeedPage, FeedPost, FeedQuery, ListQuery, Media, Post, PostId, Profile,
    Published, PutProfile, UserList, UserProfile, valid_media_id, valid_user_id,
};
pub use service::FeedService;

use crate::ids::{IdError, IdService, SnowflakeId};

/// Where post ids come from: the Snowflake `IdService` in production, any
/// time-ordered unique source in tests.
#[async_trait]
pub trait PostIds: Send + Sync + 'static {
    async fn next_post_id(&self) -> Result<SnowflakeId, IdError>;
}

#[async_trait]
impl PostIds for IdService {
    async fn next_post_id(&self) -> Result<SnowflakeId, IdError> {
        self.generate(1)
            .await?
            .into_iter()
            .next()
            .ok_or(IdError::LeaseExpired)
    }
}

/// The feed's settings, read once at start (DESIGN rule 7).
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// `FEED_MAX_FOLLOWING`: accounts one user may follow.
    pub max_following: u64,
    /// `FEED_HOT_THRESHOLD`: an author with more followers is not fanned
    /// out; readers merge their posts at read time.
    pub hot_threshold: u64,
    /// `FEED_INACTIVE_DAYS`: followers who have neither read their feed nor
    /// followed anyone for this long are skipped at fan-out.
    pub inactive: Duration,
    /// `FEED_ACTIVITY_REFRESH_SECONDS`: a read records itself at most this
    /// often (one write per period, not per read).
    pub activity_refresh: Duration,
    /// `FEED_WINDOW`: feed entries kept per user (trimmed at fan-out).
    pub window: usize,
    /// `FEED_TRIM_EVERY`: about one delivery in this many trims the
    /// receiving feed back to the window.
    pub trim_every: u64,
    /// `FEED_FANOUT_BATCH`: followers one fan-out job handles before it
    /// hands the rest to a continuation job.
    pub fanout_batch: usize,
    /// `FEED_BACKFILL`: a new follow copies this many of the followee's
    /// latest posts into the follower's feed.
    pub backfill: usize,
    /// `FEED_REBUILD_SIZE`: entries a returning (skipped) reader's feed is
    /// rebuilt with (at least the page asked for).
    pub rebuild_size: usize,
    /// `FEED_MERGE_CONCURRENCY`: timeline queries in flight at once when
    /// merging followed accounts' timelines.
    pub merge_concurrency: usize,
    /// `FEED_CACHE_CAPACITY`: posts (and, separately, profiles) cached.
    pub cache_capacity: u64,
    /// `FEED_CACHE_TTL_SECONDS`: how long a cached post or profile is used
    /// (a post only while its author's profile, read with every page, does
    /// not list it deleted). Profiles remember deletions for twice the
    /// longer of this and `FEED_STATE_TTL_SECONDS`.
    pub cache_ttl: Duration,
    /// `FEED_STATE_TTL_SECONDS`: how long a reader's hot and hidden
    /// accounts are reused by the pages after their first (while the
    /// meta's `stateVersion`, read with each such page, is unchanged).
    pub state_ttl: Duration,
    /// `FEED_OUTBOX_GRACE_SECONDS`: the sweeper leaves a fresh outbox item
    /// this long to the publish that wrote it.
    pub outbox_grace: Duration,
    /// `FEED_IDEMPOTENCY_HOURS`: how long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            max_following: 5_000,
            hot_threshold: 10_000,
            inactive: Duration::from_secs(30 * 86_400),
            activity_refresh: Duration::from_secs(3_600),
            window: 800,
            trim_every: 50,
            fanout_batch: 1_000,
            backfill: 20,
            rebuild_size: 100,
            merge_concurrency: 16,
            cache_capacity: 100_000,
            cache_ttl: Duration::from_secs(60),
            state_ttl: Duration::from_secs(30),
            outbox_grace: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3_600),
        }
    }
}

impl FeedConfig {
    /// Reads the settings through `get` (the environment, or the host's
    /// defaults behind it); unset ones take the defaults above.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let d = Self::default();
        let number = |name: &str, default: u64, min: u64, max: u64| {
            crate::settings::bounded(&get, name, default, min, max, "a whole number")
        };
        let config = Self {
            max_following: number("FEED_MAX_FOLLOWING", d.max_following, 1, 1_000_000)?,
            hot_threshold: number("FEED_HOT_THRESHOLD", d.hot_threshold, 1, 1_000_000_000)?,
            inactive: Duration::from_secs(86_400 * number("FEED_INACTIVE_DAYS", 30, 1, 3_650)?),
            activity_refresh: Duration::from_secs(number(
                "FEED_ACTIVITY_REFRESH_SECONDS",
                d.activity_refresh.as_secs(),
                1,
                86_400,
            )?),
            window: number("FEED_WINDOW", d.window as u64, 1, 10_000)? as usize,
            trim_every: number("FEED_TRIM_EVERY", d.trim_every, 1, 100_000)?,
            fanout_batch: number("FEED_FANOUT_BATCH", d.fanout_batch as u64, 1, 10_000)? as usize,
            backfill: number("FEED_BACKFILL", d.backfill as u64, 0, 100)? as usize,
            rebuild_size: number("FEED_REBUILD_SIZE", d.rebuild_size as u64, 1, 1_000)? as usize,
            merge_concurrency: number("FEED_MERGE_CONCURRENCY", d.merge_concurrency as u64, 1, 64)?
                as usize,
            cache_capacity: number("FEED_CACHE_CAPACITY", d.cache_capacity, 0, 100_000_000)?,
            cache_ttl: Duration::from_secs(number(
                "FEED_CACHE_TTL_SECONDS",
                d.cache_ttl.as_secs(),
                0,
                86_400,
            )?),
            state_ttl: Duration::from_secs(number(
                "FEED_STATE_TTL_SECONDS",
                d.state_ttl.as_secs(),
                0,
                3_600,
            )?),
            outbox_grace: Duration::from_secs(number(
                "FEED_OUTBOX_GRACE_SECONDS",
                d.outbox_grace.as_secs(),
                0,
                3_600,
            )?),
            idempotency_ttl: Duration::from_secs(
                3_600 * number("FEED_IDEMPOTENCY_HOURS", 24, 1, 720)?,
            ),
        };
        if config.activity_refresh >= config.inactive {
            return Err(
                "FEED_ACTIVITY_REFRESH_SECONDS must be shorter than FEED_INACTIVE_DAYS".into(),
            );
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_defaults_bounds_and_overrides() {
        let c = FeedConfig::from_settings(|_| None).unwrap();
        assert_eq!(c.max_following, 5_000);
        assert_eq!(c.hot_threshold, 10_000);
        assert_eq!(c.inactive, Duration::from_secs(30 * 86_400));
        assert_eq!(c.window, 800);
        let c = FeedConfig::from_settings(|n| match n {
            "FEED_MAX_FOLLOWING" => Some("3".into()),
            "FEED_INACTIVE_DAYS" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((c.max_following, c.inactive.as_secs()), (3, 2 * 86_400));
        let err =
            FeedConfig::from_settings(|n| (n == "FEED_WINDOW").then(|| "0".into())).unwrap_err();
        assert!(err.contains("FEED_WINDOW"), "{err}");
        assert!(
            FeedConfig::from_settings(|n| (n == "FEED_HOT_THRESHOLD").then(|| "many".into()))
                .is_err()
        );
    }
}
