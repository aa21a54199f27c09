//! The feed table's layout: one table, string `pk`/`sk`, user ids never
//! contain `#` (see `model::valid_user_id`), post ids are zero-padded to 19
//! digits in sort keys so string order is id order (and so time order).
//!
//! | item | pk | sk | attributes |
//! | --- | --- | --- | --- |
//! | profile + counters | `user#<u>` | `profile` | displayName, bio, avatarMediaId, followers, following, posts (ADD counters), lastPostId, hot, recentDeletes |
//! | follow edge | `following#<u>` | `<followee>` | followedAt |
//! | reverse edge | `followers#<followee>` | `<u>` | followedAt |
//! | block | `block#<blocker>` | `<blocked>` | blockedAt |
//! | post | `post#<id>` | `post` | postId, authorId, text, media, createdAt |
//! | author timeline | `posts#<author>` | `p#<id19>` | the post's attributes again |
//! | idempotency key | `idem#<author>#<key>` | `idem` | the post's attributes, ttl |
//! | feed entry | `feed#<u>` | `e#<id19>` | postId, authorId |
//! | feed meta | `feed#<u>` | `~meta` | lastReadAt, activeAt, stale, floor, stateVersion (ADD) |
//! | followed hot account | `feed#<u>` | `~hot#<author>` | since |
//! | hidden account | `feed#<u>` | `~hide#<author>` | at |
//! | outbox (fan-out job) | `outbox#<id mod 8>` | `<id19>` | job, createdAt |
//! | fan-out progress | `fanout#<id>` | `progress` | part, ttl |
//!
//! `~` sorts after `e#`, so a newest-first query of `feed#<u>` from the top
//! returns the reader's meta and markers first, then the newest entries:
//! one query serves both.

use crate::ports::table::{Key, SortKey};

pub const PROFILE_SK: &str = "profile";
pub const META_SK: &str = "~meta";
pub const HOT_PREFIX: &str = "~hot#";
pub const HIDE_PREFIX: &str = "~hide#";
pub const ENTRY_PREFIX: &str = "e#";
pub const TIMELINE_PREFIX: &str = "p#";
pub const OUTBOX_SHARDS: u64 = 8;

pub fn pad(id: u64) -> String {
    format!("{id:019}")
}

pub fn profile_key(user: &str) -> Key {
    Key::new(format!("user#{user}"), PROFILE_SK)
}

pub fn following_pk(user: &str) -> String {
    format!("following#{user}")
}

pub fn following_key(user: &str, followee: &str) -> Key {
    Key::new(following_pk(user), followee)
}

pub fn followers_pk(user: &str) -> String {
    format!("followers#{user}")
}

pub fn follower_key(followee: &str, follower: &str) -> Key {
    Key::new(followers_pk(followee), follower)
}

pub fn block_key(blocker: &str, blocked: &str) -> Key {
    Key::new(format!("block#{blocker}"), blocked)
}

pub fn post_key(id: u64) -> Key {
    Key::new(format!("post#{id}"), "post")
}

pub fn timeline_pk(author: &str) -> String {
    format!("posts#{author}")
}

pub fn timeline_key(author: &str, id: u64) -> Key {
    Key::new(timeline_pk(author), format!("{TIMELINE_PREFIX}{}", pad(id)))
}

pub fn idem_key(author: &str, key: &str) -> Key {
    Key::new(format!("idem#{author}#{key}"), "idem")
}

pub fn feed_pk(user: &str) -> String {
    format!("feed#{user}")
}

pub fn entry_key(user: &str, id: u64) -> Key {
    Key::new(feed_pk(user), format!("{ENTRY_PREFIX}{}", pad(id)))
}

pub fn meta_key(user: &str) -> Key {
    Key::new(feed_pk(user), META_SK)
}

pub fn hot_key(user: &str, author: &str) -> Key {
    Key::new(feed_pk(user), format!("{HOT_PREFIX}{author}"))
}

pub fn hide_key(user: &str, author: &str) -> Key {
    Key::new(feed_pk(user), format!("{HIDE_PREFIX}{author}"))
}

pub fn outbox_pk(shard: u64) -> String {
    format!("outbox#{shard}")
}

/// Spread by the id's millisecond (bits 22 and up), not its low bits: those
/// are the per-millisecond sequence, 0 for most posts.
pub fn outbox_key(id: u64) -> Key {
    Key::new(outbox_pk((id >> 22) % OUTBOX_SHARDS), pad(id))
}

pub fn progress_key(id: u64) -> Key {
    Key::new(format!("fanout#{id}"), "progress")
}

/// Sort keys `<prefix><lo>` to `<prefix><hi>`, both ends included.
pub fn id_range(prefix: &str, lo: u64, hi: u64) -> SortKey {
    SortKey::Between(
        format!("{prefix}{}", pad(lo)),
        format!("{prefix}{}", pad(hi)),
    )
}

/// The post id in a sort key such as `e#0000…42`.
pub fn id_of(sk: &str, prefix: &str) -> Option<u64> {
    sk.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_ids_sort_as_numbers_and_markers_sort_above_entries() {
        let (a, b) = (entry_key("u", 9), entry_key("u", 10));
        assert!(a.sk < b.sk);
        assert!(entry_key("u", i64::MAX as u64).sk.as_str() < META_SK);
        assert!(entry_key("u", i64::MAX as u64).sk < hot_key("u", "a").sk);
        assert!(entry_key("u", i64::MAX as u64).sk < hide_key("u", "a").sk);
        assert_eq!(id_of(&b.sk, ENTRY_PREFIX), Some(10));
        assert!(id_range(ENTRY_PREFIX, 0, u64::MAX >> 1).matches(&a.sk));
        assert!(!id_range(ENTRY_PREFIX, 0, u64::MAX >> 1).matches(META_SK));
    }
}
