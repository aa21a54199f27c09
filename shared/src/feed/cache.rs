//! The feed's read-through cache in each warm instance: posts (and posts
//! known to be gone: ids are never reused, so a miss stays a miss), author
//! profiles, and each reader's feed state (hot and hidden accounts) for the
//! pages after the first. Bounded in entries, each kind for its TTL.
//!
//! Every function instance has its own cache, and a change made through one
//! must show in all of them at the next read, so nothing here is trusted
//! alone: a cached post is shown only if its author's profile, read with
//! every page, does not list it as recently deleted; a cached reader state
//! is used only if its `stateVersion` is the meta's, read with every later
//! page. The feed read never serves profiles from here (follow lists and
//! publish answers do, for `FEED_CACHE_TTL_SECONDS`).

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::model::{FeedState, Post, ProfileRecord};

#[derive(Debug, Clone)]
pub(crate) enum CachedPost {
    Found(Arc<Post>),
    /// Deleted, or never written.
    Gone,
}

#[derive(Clone)]
pub struct FeedCache {
    posts: Cache<u64, CachedPost>,
    profiles: Cache<String, Arc<ProfileRecord>>,
    states: Cache<String, Arc<FeedState>>,
}

impl std::fmt::Debug for FeedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedCache")
            .field("posts", &self.posts.entry_count())
            .field("profiles", &self.profiles.entry_count())
            .field("states", &self.states.entry_count())
            .finish()
    }
}

impl FeedCache {
    /// `capacity` posts and as many profiles for `ttl`; a quarter as many
    /// (at least 1,024) reader states for `state_ttl`.
    pub fn new(capacity: u64, ttl: Duration, state_ttl: Duration) -> Self {
        Self {
            posts: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            profiles: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            states: Cache::builder()
                .max_capacity(capacity.min((capacity / 4).max(1024)))
                .time_to_live(state_ttl)
                .build(),
        }
    }

    /// Forgets everything (as a cold instance would start).
    pub fn clear(&self) {
        self.posts.invalidate_all();
        self.profiles.invalidate_all();
        self.states.invalidate_all();
    }

    pub(crate) fn post(&self, id: u64) -> Option<CachedPost> {
        self.posts.get(&id)
    }

    pub(crate) fn put_post(&self, post: Arc<Post>) {
        self.posts.insert(post.id.value(), CachedPost::Found(post));
    }

    pub(crate) fn post_gone(&self, id: u64) {
        self.posts.insert(id, CachedPost::Gone);
    }

    pub(crate) fn profile(&self, user: &str) -> Option<Arc<ProfileRecord>> {
        self.profiles.get(user)
    }

    pub(crate) fn put_profile(&self, record: Arc<ProfileRecord>) {
        self.profiles.insert(record.profile.user_id.clone(), record);
    }

    pub(crate) fn state(&self, user: &str) -> Option<Arc<FeedState>> {
        self.states.get(user)
    }

    pub(crate) fn put_state(&self, user: &str, state: Arc<FeedState>) {
        self.states.insert(user.to_owned(), state);
    }

    pub(crate) fn forget_state(&self, user: &str) {
        self.states.invalidate(user);
    }
}
