//! Reading the feed: a k-way merge, newest first, by post id, of
//!
//! - the stored feed (`feed#<reader>`, written by the fan-out): one query.
//!   A first page (no `before`) reads from the top of the partition, so the
//!   same query returns the reader's meta item and hot and hide markers
//!   (they sort above the entries); later pages reuse the state cached by
//!   the first (`FEED_STATE_TTL_SECONDS`), or read the markers once. A
//!   reused state is checked: the page's batch read also gets the reader's
//!   meta, and if its `stateVersion` (bumped by every follow, unfollow,
//!   block, unblock and hot-marker change, in any instance) is not the
//!   cached one, the markers are read again and the page is assembled anew
//!   with them;
//! - one timeline query per followed hot account (not fanned out);
//! - past the bottom of the stored window, the followed accounts' own
//!   timelines (`merge_timelines`), so scrolling goes on while older
//!   posts exist.
//!
//! Pages are id ranges (`after < id < before`), never offsets: posts that
//! arrive between two pages fall outside the older page's range, so a walk
//! sees each post once. Entries of hidden accounts (unfollowed, blocked)
//! are dropped at read and removed later by the trimmer. Hydration takes
//! posts from the cache and, in one batch read, the uncached posts, the
//! page's authors' profiles (always: never from the cache) and, on a later
//! page with a cached state, the reader's meta. A post missing from the
//! table, or listed in its author's `recentDeletes` (written by the
//! deleting transaction), is dropped and marked gone in this instance's
//! cache, so a deletion through another instance shows at the next read.
//! A store failure fails the page; profiles are not served from the cache
//! in its place.
//!
//! Table requests for a page of 20: one query of the stored feed, one query
//! per followed hot account, exactly one batch read (the uncached posts, the
//! authors, and on a later page the reader's meta; a page whose posts are
//! all cached reads no post item), and a write of the reader's activity at
//! most once per `FEED_ACTIVITY_REFRESH_SECONDS`. A page with no posts to
//! show needs no batch read (a first page) or one of the meta alone (a
//! later page). More: a page that filters out more than a few entries; a
//! later page whose reader state is not cached (one more query, of the
//! markers); a later page right after a change of the reader's state (the
//! markers query, then the page again: its queries and a batch read of the
//! authors); and a page that reaches the bottom of the stored window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures::future::join_all;

use super::FeedError;
use super::cache::CachedPost;
use super::keys::{
    ENTRY_PREFIX, META_SK, TIMELINE_PREFIX, entry_key, feed_pk, id_of, id_range, meta_key,
    post_key, profile_key, timeline_pk,
};
use super::model::{
    DEFAULT_PAGE, FeedPage, FeedPost, FeedQuery, FeedState, MAX_ID, MAX_PAGE, Post, PostId,
    ProfileRecord, STATE_VERSION, check_user_id, parse_limit,
};
use super::service::{FeedService, bounds};
use crate::ports::table::{Cursor, Item, Key, Query, SortKey, Update, get_str, num, s};

/// Markers read along with the first page's entries before another query
/// is needed.
const MARKER_ALLOWANCE: usize = 64;
/// Merge-and-hydrate rounds per page (a round is needed again only when
/// picked posts turn out deleted).
const MAX_ROUNDS: usize = 4;

/// A post to show: a stored entry (to hydrate) or a post read whole from a
/// timeline.
enum Cand {
    Entry { id: u64, author: String },
    Post(Arc<Post>),
}

impl Cand {
    fn id(&self) -> u64 {
        match self {
            Cand::Entry { id, .. } => *id,
            Cand::Post(p) => p.id.value(),
        }
    }

    fn author(&self) -> &str {
        match self {
            Cand::Entry { author, .. } => author,
            Cand::Post(p) => &p.author_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Stored,
    Hot(String),
    Fallback,
}

/// One input of the merge: a buffer, newest first, and how to get more.
struct Source {
    kind: Kind,
    buf: VecDeque<Cand>,
    cursor: Option<Cursor>,
    done: bool,
    /// Stored: the sort-key condition of its queries.
    sort: SortKey,
    /// Stored: entries below this id predate a rebuild.
    floor: u64,
    /// Stored: the page's lowest id. An entry below it proves the stored
    /// window covers the whole range (no fallback needed).
    lo: u64,
    /// Stored: an entry below `lo` was seen.
    covered: bool,
    /// Stored: the lowest entry id seen (the stored window ends there).
    low: Option<u64>,
    /// Hot: the highest id its marker covers. Fallback: the highest id
    /// still to merge.
    upper: u64,
}

impl Source {
    fn new(kind: Kind, sort: SortKey) -> Self {
        Self {
            kind,
            buf: VecDeque::new(),
            cursor: None,
            done: false,
            sort,
            floor: 0,
            lo: 0,
            covered: false,
            low: None,
            upper: 0,
        }
    }

    fn take_entries(&mut self, items: &[Item]) {
        for item in items {
            let Some(id) = get_str(item, "sk").and_then(|sk| id_of(sk, ENTRY_PREFIX)) else {
                continue;
            };
            if id < self.floor || id < self.lo {
                // Below the floor: past the window. Below the page: the
                // window goes on further than this page needs.
                self.covered = id >= self.floor;
                self.done = true;
                self.cursor = None;
                return;
            }
            self.low = Some(self.low.map_or(id, |l| l.min(id)));
            let author = get_str(item, "authorId").unwrap_or_default().to_owned();
            self.buf.push_back(Cand::Entry { id, author });
        }
    }

    fn take_posts(&mut self, items: &[Item]) {
        self.buf.extend(
            items
                .iter()
                .filter_map(Post::from_item)
                .map(|p| Cand::Post(Arc::new(p))),
        );
    }
}

fn stored_limit(limit: usize) -> usize {
    limit + limit / 4 + 2
}

impl FeedService {
    /// `GET /api/v1/me/feed?limit=&before=&after=`: newest first, 1 to 100
    /// posts (default 20), each with its author and media.
    pub async fn read_feed(&self, reader: &str, query: FeedQuery) -> Result<FeedPage, FeedError> {
        check_user_id(reader)?;
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
        let Some((lo, hi)) = bounds(before, after) else {
            return Ok(FeedPage {
                posts: Vec::new(),
                next_before: None,
                newest_id: after,
            });
        };
        let first = before.is_none();
        let mut rebuilt = false;
        // A later page whose cached state turned out stale reads it again.
        let mut reload = false;
        loop {
            let mut stored = Source::new(Kind::Stored, SortKey::All);
            stored.lo = lo;
            // Not bounded below by `after`: seeing an older entry is how a
            // poll knows the window covers it without the fallback.
            // `verify`: the state came from the cache, so the page's batch
            // read takes the reader's meta along to check its version.
            let mut verify = false;
            let state = if first {
                stored.sort = SortKey::Ge(ENTRY_PREFIX.to_owned());
                let state = self.first_fill(reader, &mut stored, limit).await?;
                self.cache.put_state(reader, Arc::new(state.clone()));
                state
            } else {
                let cached = if reload {
                    None
                } else {
                    self.cache.state(reader)
                };
                let state = match cached {
                    Some(s) => {
                        verify = true;
                        (*s).clone()
                    }
                    None => {
                        let s = self.load_markers(reader).await?;
                        self.cache.put_state(reader, Arc::new(s.clone()));
                        s
                    }
                };
                stored.floor = state.floor.unwrap_or(0);
                if stored.floor > hi {
                    stored.done = true;
                } else {
                    stored.sort = id_range(ENTRY_PREFIX, stored.floor, hi);
                    self.refill_stored(reader, &mut stored, limit).await?;
                }
                state
            };
            if first && state.stale && !rebuilt {
                self.rebuild(reader, limit).await?;
                rebuilt = true;
                continue;
            }
            if first {
                self.touch(reader, &state).await;
            }
            match self
                .assemble(reader, limit, (lo, hi), after, &state, verify, stored)
                .await?
            {
                Some(page) => return Ok(page),
                None => {
                    // Changed elsewhere since this instance cached it.
                    self.cache.forget_state(reader);
                    reload = true;
                }
            }
        }
    }

    /// The first page's query: meta and markers, then the newest entries.
    async fn first_fill(
        &self,
        reader: &str,
        stored: &mut Source,
        limit: usize,
    ) -> Result<FeedState, FeedError> {
        let mut state = FeedState::default();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(
                    Query::partition(feed_pk(reader))
                        .sort(stored.sort.clone())
                        .backward()
                        .limit((stored_limit(limit) + MARKER_ALLOWANCE) as u32)
                        .after(cursor),
                )
                .await?;
            for item in &page.items {
                if let Some(sk) = get_str(item, "sk")
                    && sk.starts_with('~')
                {
                    state.absorb(sk, item);
                }
            }
            // Markers come first in this order: the floor is known here.
            stored.floor = state.floor.unwrap_or(0);
            stored.take_entries(&page.items);
            if stored.done {
                break;
            }
            cursor = page.next;
            if cursor.is_none() {
                stored.done = true;
                break;
            }
            if !stored.buf.is_empty() {
                stored.cursor = cursor;
                break;
            }
        }
        Ok(state)
    }

    async fn refill_stored(
        &self,
        reader: &str,
        stored: &mut Source,
        limit: usize,
    ) -> Result<(), FeedError> {
        let page = self
            .table
            .query(
                Query::partition(feed_pk(reader))
                    .sort(stored.sort.clone())
                    .backward()
                    .limit(stored_limit(limit) as u32)
                    .after(stored.cursor.take()),
            )
            .await?;
        stored.take_entries(&page.items);
        if !stored.done {
            stored.cursor = page.next;
            stored.done = stored.cursor.is_none();
        }
        Ok(())
    }

    async fn refill_timeline(
        &self,
        author: &str,
        source: &mut Source,
        (lo, hi): (u64, u64),
        limit: usize,
    ) -> Result<(), FeedError> {
        let page = self
            .table
            .query(
                Query::partition(timeline_pk(author))
                    .sort(id_range(TIMELINE_PREFIX, lo, hi))
                    .backward()
                    .limit(limit as u32 + 1)
                    .after(source.cursor.take()),
            )
            .await?;
        source.take_posts(&page.items);
        source.cursor = page.next;
        source.done = source.cursor.is_none();
        Ok(())
    }

    async fn refill_fallback(
        &self,
        reader: &str,
        source: &mut Source,
        lo: u64,
        limit: usize,
    ) -> Result<(), FeedError> {
        if source.upper < lo {
            source.done = true;
            return Ok(());
        }
        let want = limit + 1;
        let posts = self.merge_timelines(reader, lo, source.upper, want).await?;
        source.done = posts.len() < want;
        if let Some(last) = posts.last() {
            match last.id.value().checked_sub(1) {
                Some(u) => source.upper = u,
                None => source.done = true,
            }
        }
        source.buf.extend(posts.into_iter().map(Cand::Post));
        Ok(())
    }

    async fn refill(
        &self,
        reader: &str,
        source: &mut Source,
        range: (u64, u64),
        limit: usize,
    ) -> Result<(), FeedError> {
        match source.kind.clone() {
            Kind::Stored => self.refill_stored(reader, source, limit).await,
            Kind::Hot(author) => {
                let top = source.upper;
                self.refill_timeline(&author, source, (range.0, top), limit)
                    .await
            }
            Kind::Fallback => self.refill_fallback(reader, source, range.0, limit).await,
        }
    }

    /// Merges the sources into one page and hydrates it. With `verify`,
    /// the first batch read also gets the reader's meta; `None` when its
    /// `stateVersion` is not `state`'s (read the state again).
    #[allow(clippy::too_many_arguments)]
    async fn assemble(
        &self,
        reader: &str,
        limit: usize,
        range: (u64, u64),
        after: Option<PostId>,
        state: &FeedState,
        verify: bool,
        stored: Source,
    ) -> Result<Option<FeedPage>, FeedError> {
        let mut sources = vec![stored];
        // Each followed hot account over the part of the range its marker
        // covers (a retired marker stops at its `until`).
        let hot: Vec<(String, (u64, u64))> = state
            .hot
            .iter()
            .filter(|m| m.author != reader && !state.hidden.contains(&m.author))
            .map(|m| {
                let top = m.until.map_or(range.1, |u| u.min(range.1));
                (m.author.clone(), (range.0, top))
            })
            .filter(|(_, (lo, hi))| lo <= hi)
            .collect();
        for wave in hot.chunks(self.config.merge_concurrency) {
            let mut wave_sources: Vec<Source> = wave
                .iter()
                .map(|(a, (_, top))| {
                    let mut src = Source::new(Kind::Hot(a.clone()), SortKey::All);
                    src.upper = *top;
                    src
                })
                .collect();
            let fills = join_all(
                wave_sources
                    .iter_mut()
                    .zip(wave)
                    .map(|(src, (a, r))| self.refill_timeline(a, src, *r, limit)),
            )
            .await;
            for r in fills {
                r?;
            }
            sources.extend(wave_sources);
        }

        let mut seen = HashSet::new();
        let mut page: Vec<FeedPost> = Vec::with_capacity(limit);
        let mut lowest: Option<u64> = None;
        let mut exhausted = false;
        let mut fallback = false;
        let mut profiles: HashMap<String, Arc<ProfileRecord>> = HashMap::new();
        let mut verify = verify.then_some(reader);
        for _ in 0..MAX_ROUNDS {
            let need = limit - page.len();
            let mut picked = Vec::with_capacity(need);
            while picked.len() < need {
                for src in sources.iter_mut() {
                    if src.buf.is_empty() && !src.done {
                        self.refill(reader, src, range, limit).await?;
                    }
                }
                if !fallback && !sources[0].covered && sources[0].done && sources[0].buf.is_empty()
                {
                    // The bottom of the stored window: below it, the
                    // followed accounts' own timelines.
                    fallback = true;
                    let mut f = Source::new(Kind::Fallback, SortKey::All);
                    match sources[0].low {
                        Some(0) => f.done = true,
                        Some(low) => f.upper = (low - 1).min(range.1),
                        None => f.upper = range.1,
                    }
                    sources.push(f);
                    continue;
                }
                let best = sources
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.buf.front().map(|c| (c.id(), i)))
                    .max();
                let Some((_, i)) = best else {
                    exhausted = true;
                    break;
                };
                let Some(cand) = sources[i].buf.pop_front() else {
                    continue;
                };
                if !seen.insert(cand.id()) {
                    continue;
                }
                if cand.author() != reader && state.hidden.contains(cand.author()) {
                    continue;
                }
                lowest = Some(cand.id());
                picked.push(cand);
            }
            let (posts, version) = self.hydrate(picked, &mut profiles, verify.take()).await?;
            if version.is_some_and(|v| v != state.version) {
                return Ok(None);
            }
            page.extend(posts);
            if exhausted || page.len() >= limit {
                break;
            }
        }
        Ok(Some(FeedPage {
            newest_id: page.first().map(|p| p.post.id).or(after),
            next_before: if exhausted {
                None
            } else {
                lowest.map(PostId::from_u64)
            },
            posts: page,
        }))
    }

    /// Posts and authors for the picked candidates: posts from the cache,
    /// then one batch read of the uncached posts, the authors' profiles
    /// (always read: they list the authors' recent deletions, which another
    /// instance may have made; `profiles` keeps them for the page's later
    /// rounds) and, with `meta_of`, the reader's meta, whose `stateVersion`
    /// is returned. Deleted posts drop out, and leave the cache.
    async fn hydrate(
        &self,
        picked: Vec<Cand>,
        profiles: &mut HashMap<String, Arc<ProfileRecord>>,
        meta_of: Option<&str>,
    ) -> Result<(Vec<FeedPost>, Option<u64>), FeedError> {
        if picked.is_empty() && meta_of.is_none() {
            return Ok((Vec::new(), None));
        }
        let mut posts: HashMap<u64, Arc<Post>> = HashMap::new();
        let mut want_posts = Vec::new();
        let mut authors: Vec<String> = Vec::new();
        for c in &picked {
            match c {
                Cand::Post(p) => {
                    posts.insert(p.id.value(), p.clone());
                }
                Cand::Entry { id, .. } => match self.cache.post(*id) {
                    Some(CachedPost::Found(p)) => {
                        if p.author_id != c.author() {
                            authors.push(p.author_id.clone());
                        }
                        posts.insert(*id, p);
                    }
                    Some(CachedPost::Gone) => continue,
                    None => want_posts.push(*id),
                },
            }
            authors.push(c.author().to_owned());
        }
        authors.sort();
        authors.dedup();
        authors.retain(|a| !profiles.contains_key(a));
        let mut keys: Vec<Key> = want_posts
            .iter()
            .map(|id| post_key(*id))
            .chain(authors.iter().map(|a| profile_key(a)))
            .collect();
        if let Some(reader) = meta_of {
            keys.push(meta_key(reader));
        }
        let mut version = None;
        if !keys.is_empty() {
            let found = self.batch_get_all(keys).await?;
            for id in want_posts {
                match found.get(&post_key(id)).and_then(Post::from_item) {
                    Some(p) => {
                        posts.insert(id, Arc::new(p));
                    }
                    None => self.cache.post_gone(id),
                }
            }
            for a in authors {
                let record = Arc::new(ProfileRecord::from_item(&a, found.get(&profile_key(&a))));
                self.cache.put_profile(record.clone());
                profiles.insert(a, record);
            }
            if let Some(reader) = meta_of {
                let mut state = FeedState::default();
                if let Some(meta) = found.get(&meta_key(reader)) {
                    state.absorb(META_SK, meta);
                }
                version = Some(state.version);
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        for c in &picked {
            let Some(post) = posts.get(&c.id()) else {
                continue;
            };
            let profile = profiles.get(&post.author_id);
            if profile.is_some_and(|p| p.deleted(c.id())) {
                // Deleted, maybe through another instance: this one's
                // cached copy (or a lagging timeline's) goes too.
                self.cache.post_gone(c.id());
                continue;
            }
            self.cache.put_post(post.clone());
            let author = match profile {
                Some(p) => p.author(),
                // An entry naming another author than its post: not written
                // by this code, but answer correctly anyway.
                None => self.author(&post.author_id).await?,
            };
            out.push(FeedPost {
                post: (**post).clone(),
                author,
            });
        }
        Ok((out, version))
    }

    /// Records the read at most once per `FEED_ACTIVITY_REFRESH_SECONDS`.
    async fn touch(&self, reader: &str, state: &FeedState) {
        let now = self.clock.now_ms();
        let refresh = self.config.activity_refresh.as_millis() as u64;
        if state
            .last_read_at
            .is_some_and(|t| t.saturating_add(refresh) > now)
        {
            return;
        }
        if let Err(e) = self
            .table
            .update(
                &meta_key(reader),
                Update::new().set("lastReadAt", num(now)),
                None,
            )
            .await
        {
            tracing::warn!(error = %e, reader, "could not record a feed read");
        }
    }

    /// Rebuilds a returning reader's feed, whom the fan-out skipped while
    /// they were away, from their followees' timelines: the newest
    /// `FEED_REBUILD_SIZE` posts (at least a page) become the stored window
    /// and older entries are set below its floor (the timeline merge serves
    /// them). The reader is marked active first: a fan-out that still found
    /// them inactive had committed its post before this write, so the merge
    /// below finds it.
    async fn rebuild(&self, reader: &str, limit: usize) -> Result<(), FeedError> {
        let now = self.clock.now_ms();
        self.table
            .update(
                &meta_key(reader),
                Update::new().set("lastReadAt", num(now)).remove("stale"),
                None,
            )
            .await?;
        let want = self.config.rebuild_size.max(limit);
        let posts = self.merge_timelines(reader, 0, MAX_ID, want).await?;
        let entries = posts
            .iter()
            .map(|p| {
                let mut entry = entry_key(reader, p.id.value()).to_item();
                entry.insert("postId".into(), s(p.id.to_string()));
                entry.insert("authorId".into(), s(&p.author_id));
                entry
            })
            .collect();
        self.batch_put_all(entries).await?;
        if let Some(oldest) = posts.last() {
            self.table
                .update(
                    &meta_key(reader),
                    Update::new()
                        .set("floor", num(oldest.id.value()))
                        .add(STATE_VERSION, 1),
                    None,
                )
                .await?;
        }
        self.cache.forget_state(reader);
        tracing::info!(
            reader,
            entries = posts.len(),
            "rebuilt a returning reader's feed"
        );
        Ok(())
    }

    /// The newest `want` posts with ids in `lo..=hi` across the accounts
    /// `reader` follows and `reader`'s own: a k-way merge of their
    /// timelines. Each account's profile says its newest post id, so the
    /// accounts are queried newest first, `FEED_MERGE_CONCURRENCY` at a
    /// time, and the merge stops once no remaining account can have a post
    /// newer than the `want`-th found. Costs the following list (a query per
    /// 1,000), a batch read per 100 accounts, and a query per account that
    /// can still contribute.
    pub(super) async fn merge_timelines(
        &self,
        reader: &str,
        lo: u64,
        hi: u64,
        want: usize,
    ) -> Result<Vec<Arc<Post>>, FeedError> {
        let mut users = self.all_following(reader).await?;
        users.push(reader.to_owned());
        let found = self
            .batch_get_all(users.iter().map(|u| profile_key(u)).collect())
            .await?;
        let mut heads: Vec<(u64, String)> = Vec::new();
        for u in users {
            let record = ProfileRecord::from_item(&u, found.get(&profile_key(&u)));
            if let Some(last) = record.last_post_id.filter(|l| *l >= lo) {
                heads.push((last, u));
            }
            self.cache.put_profile(Arc::new(record));
        }
        heads.sort_by(|a, b| b.cmp(a));
        let mut best: Vec<Arc<Post>> = Vec::new();
        for wave in heads.chunks(self.config.merge_concurrency) {
            if best.len() >= want && best.last().is_some_and(|p| wave[0].0 < p.id.value()) {
                break;
            }
            let pages = join_all(wave.iter().map(|(last, user)| {
                self.table.query(
                    Query::partition(timeline_pk(user))
                        .sort(id_range(TIMELINE_PREFIX, lo, hi.min(*last)))
                        .backward()
                        .limit(want as u32),
                )
            }))
            .await;
            for page in pages {
                best.extend(page?.items.iter().filter_map(Post::from_item).map(Arc::new));
            }
            best.sort_by_key(|p| std::cmp::Reverse(p.id));
            best.dedup_by_key(|p| p.id);
            best.truncate(want);
        }
        Ok(best)
    }
}
