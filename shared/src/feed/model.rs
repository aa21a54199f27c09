//! What users send to the feed and get back, checked before anything is
//! written, and how posts and profiles sit in table items.

use std::collections::HashSet;

use serde::{Deserialize, Serialize, Serializer};

use super::FeedError;
use super::keys::{HIDE_PREFIX, HOT_PREFIX, META_SK};
use crate::ids::SnowflakeId;
use crate::ports::table::{AttributeValue, Item, get_i64, get_str, num, s};
use crate::shortener::link::format_instant;

/// Post text: 1 to 5,000 Unicode scalar values (Rust `char`s, not bytes and
/// not grapheme clusters: an emoji with a skin tone counts as 2).
pub const MAX_TEXT_CHARS: usize = 5_000;
/// Media ids per post.
pub const MAX_MEDIA: usize = 4;
pub const MAX_DISPLAY_NAME: usize = 50;
pub const MAX_BIO: usize = 160;
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_LIST_PAGE: usize = 50;
/// The largest post id (ids are positive signed 64-bit integers).
pub const MAX_ID: u64 = i64::MAX as u64;

/// A user id as the rest of the system issues them (the token's `sub`):
/// 1 to 128 ASCII letters, digits, `-`, `_`, `.` or `@` — the rule of
/// `LocalTokens::issue` and of notification user ids. Cognito's UUID `sub`s
/// fit. Never contains `#`, which the table keys use as a separator.
pub fn valid_user_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

pub(crate) fn check_user_id(id: &str) -> Result<(), FeedError> {
    if valid_user_id(id) {
        Ok(())
    } else {
        Err(FeedError::invalid(
            "invalid_user_id",
            format!(
                "user id {:?} must be 1 to 128 letters, digits, `-`, `_`, `.` or `@`",
                id.chars().take(40).collect::<String>()
            ),
        ))
    }
}

/// A media id's shape (the media issue decides what exists): 1 to 64
/// ASCII letters, digits, `-` or `_`.
pub fn valid_media_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_media(ids: &[String]) -> Result<Vec<Media>, FeedError> {
    if ids.len() > MAX_MEDIA {
        return Err(FeedError::invalid(
            "invalid_media",
            format!("a post has at most {MAX_MEDIA} media ids"),
        ));
    }
    let mut seen = HashSet::new();
    for id in ids {
        if !valid_media_id(id) {
            return Err(FeedError::invalid(
                "invalid_media",
                "a media id is 1 to 64 letters, digits, `-` or `_`",
            ));
        }
        if !seen.insert(id) {
            return Err(FeedError::invalid(
                "invalid_media",
                "a media id is named twice",
            ));
        }
    }
    Ok(ids.iter().map(|id| Media::id_only(id.clone())).collect())
}

/// Post text: 1 to 5,000 Unicode scalar values, not only white space, no
/// control characters except newline and tab.
pub fn check_text(text: &str) -> Result<(), FeedError> {
    let n = text.chars().count();
    if n == 0 || n > MAX_TEXT_CHARS || text.trim().is_empty() {
        return Err(FeedError::invalid(
            "invalid_text",
            format!(
                "text must be 1 to {MAX_TEXT_CHARS} characters (Unicode scalar values), not only white space"
            ),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FeedError::invalid(
            "invalid_text",
            "text cannot contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

fn check_idempotency_key(key: &str) -> Result<(), FeedError> {
    if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(FeedError::invalid(
            "invalid_idempotency_key",
            format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        ))
    }
}

/// A page size: `default` when absent, else 1 to `max`.
pub(crate) fn parse_limit(
    raw: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, FeedError> {
    match raw {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                FeedError::invalid("invalid_limit", format!("limit must be from 1 to {max}"))
            }),
    }
}

/// A post's id: a Snowflake id, so ordering by id is ordering by time. JSON
/// carries it as a decimal string (JavaScript numbers stop at 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostId(u64);

impl PostId {
    pub fn value(self) -> u64 {
        self.0
    }

    pub(crate) fn from_u64(id: u64) -> Self {
        PostId(id)
    }

    /// A post id as users send it; another shape is a 400 `invalid_<field>`.
    pub fn parse_field(field: &'static str, raw: &str) -> Result<PostId, FeedError> {
        raw.parse::<SnowflakeId>()
            .map(|id| PostId(id.value()))
            .map_err(|_| {
                let code = match field {
                    "before" => "invalid_before",
                    "after" => "invalid_after",
                    _ => "invalid_post_id",
                };
                FeedError::invalid(
                    code,
                    format!("{field} must be a post id (a positive 64-bit decimal integer)"),
                )
            })
    }

    pub fn parse(raw: &str) -> Result<PostId, FeedError> {
        Self::parse_field("postId", raw)
    }
}

impl From<SnowflakeId> for PostId {
    fn from(id: SnowflakeId) -> Self {
        PostId(id.value())
    }
}

impl std::fmt::Display for PostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for PostId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A media attachment as a post carries it: a snapshot of the ready media
/// (renditions never change once ready), with CDN URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    pub media_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::media::MediaKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The largest rendition (the video for a video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<crate::media::RenditionView>,
}

impl Media {
    pub fn id_only(id: impl Into<String>) -> Self {
        Self {
            media_id: id.into(),
            kind: None,
            content_type: None,
            width: None,
            height: None,
            url: None,
            renditions: Vec::new(),
        }
    }
}

/// A post as stored and as returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Post {
    pub id: PostId,
    pub author_id: String,
    pub text: String,
    pub media: Vec<Media>,
    /// RFC 3339, milliseconds.
    pub created_at: String,
    #[serde(skip)]
    pub created_at_ms: u64,
}

impl Post {
    pub(crate) fn write_attrs(&self, item: &mut Item) {
        item.insert("postId".into(), s(self.id.to_string()));
        item.insert("authorId".into(), s(&self.author_id));
        item.insert("text".into(), s(&self.text));
        item.insert(
            "media".into(),
            serde_dynamo::to_attribute_value(&self.media)
                .unwrap_or_else(|_| AttributeValue::L(Vec::new())),
        );
        item.insert("createdAt".into(), num(self.created_at_ms));
    }

    pub(crate) fn from_item(item: &Item) -> Option<Post> {
        let id = get_str(item, "postId")?.parse::<u64>().ok()?;
        let created_at_ms = get_i64(item, "createdAt").unwrap_or(0).max(0) as u64;
        let media = match item.get("media") {
            Some(AttributeValue::L(list)) => list
                .iter()
                .filter_map(|v| match v {
                    AttributeValue::S(m) => Some(Media::id_only(m.clone())),
                    other => serde_dynamo::from_attribute_value(other.clone()).ok(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Post {
            id: PostId(id),
            author_id: get_str(item, "authorId")?.to_owned(),
            text: get_str(item, "text")?.to_owned(),
            media,
            created_at: format_instant(created_at_ms),
            created_at_ms,
        })
    }
}

/// `POST /api/v1/me/posts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePost {
    pub text: String,
    #[serde(default)]
    pub media_ids: Vec<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl CreatePost {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Checks every field; returns the media list.
    pub(crate) fn validate(&self) -> Result<Vec<Media>, FeedError> {
        check_text(&self.text)?;
        let media = check_media(&self.media_ids)?;
        if let Some(key) = &self.idempotency_key {
            check_idempotency_key(key)?;
        }
        Ok(media)
    }
}

/// The answer to a publish.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    #[serde(flatten)]
    pub post: FeedPost,
    /// False when the idempotency key had been used: the first post, and no
    /// second fan-out.
    #[serde(skip)]
    pub created: bool,
}

/// The author shown with a post, and a user in follow lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Author {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_media_id: Option<String>,
    /// The avatar's small rendition on the CDN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// A post with its author, as feeds and timelines return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedPost {
    #[serde(flatten)]
    pub post: Post,
    pub author: Author,
}

/// A page of posts, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedPage {
    pub posts: Vec<FeedPost>,
    /// Pass as `before` for the next (older) page; absent when nothing
    /// older exists.
    pub next_before: Option<PostId>,
    /// Pass as `after` to poll for newer posts: the newest id on this page,
    /// else the `after` asked with.
    pub newest_id: Option<PostId>,
}

/// `GET /api/v1/me/feed?limit=&before=&after=` (and a user's posts), as the
/// query string gives it; checked by the service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeedQuery {
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
}

impl FeedQuery {
    pub fn limit(limit: usize) -> Self {
        Self {
            limit: Some(limit.to_string()),
            ..Self::default()
        }
    }

    pub fn before(mut self, id: Option<PostId>) -> Self {
        self.before = id.map(|i| i.to_string());
        self
    }

    pub fn after(mut self, id: Option<PostId>) -> Self {
        self.after = id.map(|i| i.to_string());
        self
    }
}

/// `GET /api/v1/me/following` (and followers, friends): `?limit=&cursor=`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn limit(limit: usize) -> Self {
        Self {
            limit: Some(limit.to_string()),
            cursor: None,
        }
    }

    pub fn cursor(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }
}

/// A page of users.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserList {
    pub users: Vec<Author>,
    /// Opaque; pass back as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// `GET`/`PUT /api/v1/me/profile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub user_id: String,
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub avatar_media_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// `PUT /api/v1/me/profile`: the whole profile (an absent field clears it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutProfile {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub bio: Option<String>,
    #[serde(default)]
    pub avatar_media_id: Option<String>,
}

impl PutProfile {
    pub(crate) fn validate(&self) -> Result<(), FeedError> {
        if let Some(name) = &self.display_name {
            let n = name.chars().count();
            if n == 0 || n > MAX_DISPLAY_NAME || name.trim().is_empty() {
                return Err(FeedError::invalid(
                    "invalid_display_name",
                    format!("displayName must be 1 to {MAX_DISPLAY_NAME} characters"),
                ));
            }
            if name.chars().any(char::is_control) {
                return Err(FeedError::invalid(
                    "invalid_display_name",
                    "displayName cannot contain control characters",
                ));
            }
        }
        if let Some(bio) = &self.bio {
            if bio.chars().count() > MAX_BIO {
                return Err(FeedError::invalid(
                    "invalid_bio",
                    format!("bio must be at most {MAX_BIO} characters"),
                ));
            }
            if bio.chars().any(|c| c.is_control() && c != '\n') {
                return Err(FeedError::invalid(
                    "invalid_bio",
                    "bio cannot contain control characters other than newline",
                ));
            }
        }
        if let Some(m) = &self.avatar_media_id
            && !valid_media_id(m)
        {
            return Err(FeedError::invalid(
                "invalid_avatar_media_id",
                "avatarMediaId is 1 to 64 letters, digits, `-` or `_`",
            ));
        }
        Ok(())
    }
}

/// `GET /api/v1/users/{userId}`: the profile with its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    #[serde(flatten)]
    pub profile: Profile,
    pub followers: u64,
    pub following: u64,
    pub posts: u64,
    /// How the caller stands with this user (absent on the caller's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relationship: Option<Relationship>,
}

/// The caller and another user: the follow edges both ways and the
/// caller's block (friends are mutual follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub following: bool,
    pub followed_by: bool,
    pub blocking: bool,
}

/// The profile item: profile fields, the ADD counters, and the hints the
/// fan-out and the timeline merge use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProfileRecord {
    pub profile: Profile,
    pub followers: u64,
    pub following: u64,
    pub posts: u64,
    /// At least the newest post id of this author (an upper bound).
    pub last_post_id: Option<u64>,
    /// Marked hot by the fan-out: not fanned out, merged at read.
    pub hot: bool,
    /// `hotBy`: the post whose fan-out last turned the account hot or back
    /// (its job writes or retires the followers' markers, and a redelivered
    /// job finds it here and resumes that work).
    pub turned_by: Option<u64>,
    /// `recentDeletes`: (post id, deleted at ms) of this author's latest
    /// deletions, oldest first, so that every instance drops a deleted post
    /// its own cache still holds (see `service::delete_post`).
    pub recent_deletes: Vec<(u64, u64)>,
}

impl ProfileRecord {
    pub fn empty(user: &str) -> Self {
        Self {
            profile: Profile {
                user_id: user.to_owned(),
                display_name: None,
                bio: None,
                avatar_media_id: None,
                avatar_url: None,
            },
            followers: 0,
            following: 0,
            posts: 0,
            last_post_id: None,
            hot: false,
            turned_by: None,
            recent_deletes: Vec::new(),
        }
    }

    pub fn from_item(user: &str, item: Option<&Item>) -> Self {
        let Some(item) = item else {
            return Self::empty(user);
        };
        let text = |a: &str| get_str(item, a).map(str::to_owned);
        let count = |a: &str| get_i64(item, a).unwrap_or(0).max(0) as u64;
        Self {
            profile: Profile {
                user_id: user.to_owned(),
                display_name: text("displayName"),
                bio: text("bio"),
                avatar_media_id: text("avatarMediaId"),
                avatar_url: text("avatarUrl"),
            },
            followers: count("followers"),
            following: count("following"),
            posts: count("posts"),
            last_post_id: get_i64(item, "lastPostId")
                .filter(|v| *v > 0)
                .map(|v| v as u64),
            hot: get_i64(item, "hot") == Some(1),
            turned_by: get_i64(item, "hotBy").filter(|v| *v > 0).map(|v| v as u64),
            recent_deletes: get_str(item, RECENT_DELETES)
                .map(parse_deletes)
                .unwrap_or_default(),
        }
    }

    /// Whether this author deleted post `id` lately (ids are never reused,
    /// so a listed id is gone for good).
    pub fn deleted(&self, id: u64) -> bool {
        self.recent_deletes.iter().any(|(p, _)| *p == id)
    }

    pub fn author(&self) -> Author {
        Author {
            user_id: self.profile.user_id.clone(),
            display_name: self.profile.display_name.clone(),
            avatar_media_id: self.profile.avatar_media_id.clone(),
            avatar_url: self.profile.avatar_url.clone(),
        }
    }

    pub fn with_counts(&self) -> UserProfile {
        UserProfile {
            profile: self.profile.clone(),
            followers: self.followers,
            following: self.following,
            posts: self.posts,
            relationship: None,
        }
    }
}

/// The profile attribute listing an author's recent deletions.
pub(crate) const RECENT_DELETES: &str = "recentDeletes";
/// Deletions a profile remembers at most (about 34 bytes each: a few KB of
/// the 400 KB item limit).
pub(crate) const MAX_RECENT_DELETES: usize = 200;
/// The feed-meta counter every change of what a reader may see bumps.
pub(crate) const STATE_VERSION: &str = "stateVersion";

/// `recentDeletes` as stored: `<id>:<ms>` pairs joined by `,`, oldest
/// first. A malformed pair is skipped.
pub(crate) fn parse_deletes(raw: &str) -> Vec<(u64, u64)> {
    raw.split(',')
        .filter_map(|pair| {
            let (id, at) = pair.split_once(':')?;
            Some((id.parse().ok()?, at.parse().ok()?))
        })
        .collect()
}

pub(crate) fn format_deletes(list: &[(u64, u64)]) -> String {
    list.iter()
        .map(|(id, at)| format!("{id}:{at}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The deletions to store after deleting `id` at `now`: the old list less
/// the entries older than `keep_ms` (and any earlier entry of `id`), then
/// `id`, cut to the newest `MAX_RECENT_DELETES`.
pub(crate) fn with_deletion(
    old: &[(u64, u64)],
    id: u64,
    now: u64,
    keep_ms: u64,
) -> Vec<(u64, u64)> {
    let mut list: Vec<(u64, u64)> = old
        .iter()
        .copied()
        .filter(|(p, at)| *p != id && at.saturating_add(keep_ms) > now)
        .collect();
    list.push((id, now));
    if list.len() > MAX_RECENT_DELETES {
        list.drain(..list.len() - MAX_RECENT_DELETES);
    }
    list
}

/// A followed hot account: its timeline is merged at read, up to `until`
/// once the account is no longer hot (its later posts are fanned out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HotMarker {
    pub author: String,
    pub until: Option<u64>,
}

/// What a reader's feed partition says about the reader: the meta item
/// and the hot and hidden markers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FeedState {
    pub hot: Vec<HotMarker>,
    pub hidden: HashSet<String>,
    /// (author, when hidden) for the trimmer's clean-up.
    pub hidden_at: Vec<(String, u64)>,
    pub last_read_at: Option<u64>,
    pub active_at: Option<u64>,
    /// The fan-out skipped this reader while inactive: rebuild on read.
    pub stale: bool,
    /// Entries below this id predate a rebuild: past the stored window.
    pub floor: Option<u64>,
    pub has_meta: bool,
    /// The meta's `stateVersion`: a later page whose cached state has
    /// another version than the stored meta reads the markers again.
    pub version: u64,
}

impl FeedState {
    /// Takes in one item of the feed partition whose sort key starts with
    /// `~`; returns false for anything else.
    pub fn absorb(&mut self, sk: &str, item: &Item) -> bool {
        if sk == META_SK {
            let ms = |a: &str| get_i64(item, a).filter(|v| *v > 0).map(|v| v as u64);
            self.last_read_at = ms("lastReadAt");
            self.active_at = ms("activeAt");
            self.stale = get_i64(item, "stale") == Some(1);
            self.floor = ms("floor");
            self.version = get_i64(item, STATE_VERSION).unwrap_or(0).max(0) as u64;
            self.has_meta = true;
        } else if let Some(author) = sk.strip_prefix(HOT_PREFIX) {
            self.hot.push(HotMarker {
                author: author.to_owned(),
                until: get_i64(item, "until").map(|u| u.max(0) as u64),
            });
        } else if let Some(author) = sk.strip_prefix(HIDE_PREFIX) {
            self.hidden.insert(author.to_owned());
            let at = get_i64(item, "at").unwrap_or(0).max(0) as u64;
            self.hidden_at.push((author.to_owned(), at));
        } else {
            return false;
        }
        true
    }

    /// Whether the fan-out should still write to this reader.
    pub fn active(item: Option<&Item>, now_ms: u64, inactive_ms: u64) -> bool {
        let Some(item) = item else {
            // Never recorded: nothing says they left.
            return true;
        };
        let last = ["lastReadAt", "activeAt"]
            .iter()
            .filter_map(|a| get_i64(item, a))
            .max();
        match last {
            None => true,
            Some(t) => (t.max(0) as u64).saturating_add(inactive_ms) >= now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<impl std::fmt::Debug, FeedError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn text_is_counted_in_scalar_values_and_control_characters_are_refused() {
        assert_eq!(code(check_text("hello")), "ok");
        assert_eq!(code(check_text("line one\nline two\tend")), "ok");
        assert_eq!(code(check_text(&"가".repeat(MAX_TEXT_CHARS))), "ok");
        assert_eq!(code(check_text(&"😀".repeat(MAX_TEXT_CHARS))), "ok");
        assert_eq!(
            code(check_text(&"가".repeat(MAX_TEXT_CHARS + 1))),
            "invalid_text"
        );
        for bad in [
            "",
            "   \n\t",
            "bell\u{7}",
            "nul\0",
            "cr\r\n",
            "esc\u{1b}[31m",
            "\u{85}",
        ] {
            assert_eq!(code(check_text(bad)), "invalid_text", "{bad:?}");
        }
    }

    #[test]
    fn ids_media_and_keys_have_shapes() {
        for good in ["u1", "nina.k@example", "3f2c-11aa_b", &"a".repeat(128)] {
            assert!(valid_user_id(good), "{good}");
        }
        for bad in ["", "a b", "a#b", "ü", &"a".repeat(129), "a/b"] {
            assert!(!valid_user_id(bad), "{bad}");
        }
        let media = |ids: &[&str]| {
            code(check_media(
                &ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ))
        };
        assert_eq!(media(&["m1", "m2", "m3", "m4"]), "ok");
        assert_eq!(media(&["m1", "m2", "m3", "m4", "m5"]), "invalid_media");
        assert_eq!(media(&["m1", "m1"]), "invalid_media");
        assert_eq!(media(&["bad id"]), "invalid_media");
        assert_eq!(code(check_idempotency_key("k-1")), "ok");
        assert_eq!(code(check_idempotency_key("")), "invalid_idempotency_key");
        assert_eq!(
            code(check_idempotency_key("a b")),
            "invalid_idempotency_key"
        );
        assert_eq!(code(PostId::parse("12")), "ok");
        assert_eq!(code(PostId::parse("-1")), "invalid_post_id");
        assert_eq!(code(PostId::parse_field("before", "x")), "invalid_before");
        assert_eq!(code(parse_limit(Some("0"), 20, 100)), "invalid_limit");
        assert_eq!(code(parse_limit(Some("101"), 20, 100)), "invalid_limit");
        assert_eq!(parse_limit(None, 20, 100).unwrap(), 20);
    }

    #[test]
    fn posts_round_trip_through_items_and_serialize_ids_as_strings() {
        let post = Post {
            id: PostId(1234567890123),
            author_id: "nina".into(),
            text: "hi".into(),
            media: vec![Media::id_only("m1")],
            created_at: format_instant(1_800_000_000_000),
            created_at_ms: 1_800_000_000_000,
        };
        let mut item = Item::default();
        post.write_attrs(&mut item);
        assert_eq!(Post::from_item(&item), Some(post.clone()));
        let json = serde_json::to_value(&post).unwrap();
        assert_eq!(json["id"], "1234567890123");
        assert_eq!(json["authorId"], "nina");
        assert_eq!(json["media"][0]["mediaId"], "m1");
    }

    #[test]
    fn recent_deletions_round_trip_prune_and_stay_bounded() {
        let list = with_deletion(&[], 7, 1_000, 500);
        assert_eq!(parse_deletes(&format_deletes(&list)), vec![(7, 1_000)]);
        let list = with_deletion(&[(5, 100), (6, 900)], 8, 1_000, 500);
        assert_eq!(list, vec![(6, 900), (8, 1_000)], "the old entry is pruned");
        let many: Vec<(u64, u64)> = (0..MAX_RECENT_DELETES as u64).map(|i| (i, 1_000)).collect();
        let list = with_deletion(&many, 9_999, 1_000, 500);
        assert_eq!(list.len(), MAX_RECENT_DELETES);
        assert_eq!(list.last(), Some(&(9_999, 1_000)));
        assert_eq!(list[0], (1, 1_000), "the oldest goes first");
        assert!(format_deletes(&list).len() < 10 * 1024);
        assert_eq!(parse_deletes("1:2,bad,3:x,4:5"), vec![(1, 2), (4, 5)]);
        assert!(parse_deletes("").is_empty());
    }

    #[test]
    fn profiles_are_checked() {
        let p = |json: serde_json::Value| {
            code(
                serde_json::from_value::<PutProfile>(json)
                    .unwrap()
                    .validate(),
            )
        };
        assert_eq!(
            p(serde_json::json!({"displayName": "Nina", "bio": "a\nb"})),
            "ok"
        );
        assert_eq!(
            p(serde_json::json!({"displayName": ""})),
            "invalid_display_name"
        );
        assert_eq!(
            p(serde_json::json!({"displayName": "a\nb"})),
            "invalid_display_name"
        );
        assert_eq!(
            p(serde_json::json!({"bio": "x".repeat(161)})),
            "invalid_bio"
        );
        assert_eq!(
            p(serde_json::json!({"avatarMediaId": "a b"})),
            "invalid_avatar_media_id"
        );
        assert!(serde_json::from_value::<PutProfile>(serde_json::json!({"colour": 1})).is_err());
    }
}
