//! The follow graph, blocks and profiles.
//!
//! A follow is one transaction: the edge (conditional on being new, so a
//! repeated follow changes no count), its reverse edge, `ADD following 1`
//! on the follower's profile under the condition `following < max` (so the
//! limit holds under concurrent follows), `ADD followers 1` on the
//! followee's, checks that neither has blocked the other, and the follower's
//! feed markers. No count is ever read, changed and written back.
//! An unfollow is the mirror image with a conditional delete. A block ends
//! both follows in one transaction that also checks the edges it found
//! absent are still absent, so a racing follow cannot survive it.
//!
//! Every change of what a reader may see (follow, unfollow, block, unblock,
//! and the hot markers written at a follow or by the fan-out) adds 1 to
//! `stateVersion` on the reader's feed meta in the same transaction, so a
//! warm instance that cached the reader's state sees the change at its next
//! page (`read`).

use std::collections::HashMap;
use std::sync::Arc;

use super::FeedError;
use super::keys::{
    TIMELINE_PREFIX, block_key, entry_key, feed_pk, follower_key, followers_pk, following_key,
    following_pk, hide_key, hot_key, id_range, meta_key, profile_key, timeline_pk,
};
use super::model::{
    DEFAULT_LIST_PAGE, ListQuery, MAX_ID, MAX_PAGE, Post, Profile, ProfileRecord, PutProfile,
    STATE_VERSION, UserList, UserProfile, check_user_id, parse_limit,
};
use super::service::FeedService;
use crate::ports::table::{
    CmpOp, Condition, Consistency, Cursor, Item, Key, Query, TableError, TxOp, Update, get_str,
    num, s,
};

/// What a follow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowOutcome {
    Followed,
    AlreadyFollowing,
}

/// Bumps `user`'s reader-state version (in the same transaction as the
/// change): every instance's next page of `user`'s feed sees it.
pub(super) fn bump(user: &str) -> TxOp {
    TxOp::Update {
        key: meta_key(user),
        update: Update::new().add(STATE_VERSION, 1),
        condition: None,
    }
}

/// Retries of a block whose view of the edges changed under it.
const BLOCK_ATTEMPTS: usize = 4;

fn check_pair(caller: &str, target: &str, self_code: &'static str) -> Result<(), FeedError> {
    check_user_id(caller)?;
    check_user_id(target)?;
    if caller == target {
        return Err(FeedError::invalid(
            self_code,
            match self_code {
                "cannot_follow_self" => "you cannot follow yourself",
                _ => "you cannot block yourself",
            },
        ));
    }
    Ok(())
}

fn edge_item(key: Key, now: u64) -> Item {
    let mut item = key.to_item();
    item.insert("followedAt".into(), num(now));
    item
}

fn parse_cursor(raw: Option<&str>, pk: &str) -> Result<Option<Cursor>, FeedError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let bad = || FeedError::invalid("invalid_cursor", "cursor is not one this list returned");
    let cursor = Cursor::parse(raw).map_err(|_| bad())?;
    match cursor.to_key() {
        Ok(key) if key.pk == pk => Ok(Some(cursor)),
        _ => Err(bad()),
    }
}

impl FeedService {
    /// `PUT /api/v1/me/following/{userId}`. Idempotent; yourself or a bad
    /// id is 400, past the limit 409 `follow_limit`, blocked 403. Then the
    /// followee's latest posts are copied into the follower's feed (or, for
    /// a hot account, a marker makes reads merge its timeline).
    pub async fn follow(&self, caller: &str, target: &str) -> Result<FollowOutcome, FeedError> {
        check_pair(caller, target, "cannot_follow_self")?;
        let now = self.clock.now_ms();
        let max = self.config.max_following;
        let ops = vec![
            TxOp::Put {
                item: edge_item(following_key(caller, target), now),
                condition: Some(Condition::NotExists),
            },
            TxOp::Put {
                item: edge_item(follower_key(target, caller), now),
                condition: None,
            },
            TxOp::Update {
                key: profile_key(caller),
                update: Update::new().add("following", 1),
                condition: Some(Condition::Or(vec![
                    Condition::AttrNotExists("following".into()),
                    Condition::cmp("following", CmpOp::Lt, num(max)),
                ])),
            },
            TxOp::Update {
                key: profile_key(target),
                update: Update::new().add("followers", 1),
                condition: None,
            },
            TxOp::Check {
                key: block_key(caller, target),
                condition: Condition::NotExists,
            },
            TxOp::Check {
                key: block_key(target, caller),
                condition: Condition::NotExists,
            },
            // Their stored posts show again.
            TxOp::Delete {
                key: hide_key(caller, target),
                condition: None,
            },
            // Following someone is activity: the fan-out writes to them.
            // The new reader state shows in every instance at its next page.
            TxOp::Update {
                key: meta_key(caller),
                update: Update::new()
                    .set("activeAt", num(now))
                    .add(STATE_VERSION, 1),
                condition: None,
            },
        ];
        match self.transact(ops).await {
            Ok(()) => {}
            Err(TableError::TransactionCanceled { failed }) => {
                return if failed.contains(&4) || failed.contains(&5) {
                    Err(FeedError::Blocked)
                } else if failed.contains(&0) {
                    Ok(FollowOutcome::AlreadyFollowing)
                } else if failed.contains(&2) {
                    Err(FeedError::FollowLimit(max))
                } else {
                    Err(FeedError::Store(format!(
                        "the follow was cancelled at {failed:?}"
                    )))
                };
            }
            Err(e) => return Err(e.into()),
        }
        self.cache.forget_state(caller);
        // Read after the commit: a fan-out that marks the account hot after
        // this read also finds the new edge in its follower pages.
        let item = self
            .table
            .get(&profile_key(target), Consistency::Strong)
            .await?;
        let followee = ProfileRecord::from_item(target, item.as_ref());
        if followee.hot {
            let mut marker = hot_key(caller, target).to_item();
            marker.insert("since".into(), num(now));
            self.transact(vec![
                TxOp::Put {
                    item: marker,
                    condition: None,
                },
                bump(caller),
            ])
            .await?;
            self.cache.forget_state(caller);
        } else if self.config.backfill > 0 {
            self.backfill(caller, target).await?;
        }
        Ok(FollowOutcome::Followed)
    }

    /// Copies the followee's latest posts into the follower's feed: one
    /// query and one batch write.
    async fn backfill(&self, follower: &str, followee: &str) -> Result<(), FeedError> {
        let page = self
            .table
            .query(
                Query::partition(timeline_pk(followee))
                    .sort(id_range(TIMELINE_PREFIX, 0, MAX_ID))
                    .backward()
                    .limit(self.config.backfill as u32),
            )
            .await?;
        let entries: Vec<Item> = page
            .items
            .iter()
            .filter_map(Post::from_item)
            .map(|p| {
                let mut entry = entry_key(follower, p.id.value()).to_item();
                entry.insert("postId".into(), s(p.id.to_string()));
                entry.insert("authorId".into(), s(&p.author_id));
                self.cache.put_post(Arc::new(p));
                entry
            })
            .collect();
        self.batch_put_all(entries).await
    }

    /// `DELETE /api/v1/me/following/{userId}`. Idempotent; returns whether a
    /// follow ended. The followee's posts leave the feed at the next read
    /// (a hide marker filters the stored entries; the trimmer removes them).
    pub async fn unfollow(&self, caller: &str, target: &str) -> Result<bool, FeedError> {
        check_pair(caller, target, "cannot_follow_self")?;
        let now = self.clock.now_ms();
        let mut hide = hide_key(caller, target).to_item();
        hide.insert("at".into(), num(now));
        let ops = vec![
            TxOp::Delete {
                key: following_key(caller, target),
                condition: Some(Condition::Exists),
            },
            TxOp::Delete {
                key: follower_key(target, caller),
                condition: None,
            },
            TxOp::Update {
                key: profile_key(caller),
                update: Update::new().add("following", -1),
                condition: None,
            },
            TxOp::Update {
                key: profile_key(target),
                update: Update::new().add("followers", -1),
                condition: None,
            },
            TxOp::Put {
                item: hide,
                condition: None,
            },
            TxOp::Delete {
                key: hot_key(caller, target),
                condition: None,
            },
            bump(caller),
        ];
        match self.transact(ops).await {
            Ok(()) => {
                self.cache.forget_state(caller);
                Ok(true)
            }
            Err(TableError::TransactionCanceled { failed }) if failed.contains(&0) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `PUT /api/v1/me/blocks/{userId}`: ends the follows both ways (with
    /// their counts), hides each one's posts from the other, and refuses
    /// new follows between them. Idempotent; returns whether anything
    /// changed.
    pub async fn block(&self, caller: &str, target: &str) -> Result<bool, FeedError> {
        check_pair(caller, target, "cannot_block_self")?;
        for _ in 0..BLOCK_ATTEMPTS {
            let now = self.clock.now_ms();
            let forward = following_key(caller, target);
            let backward = following_key(target, caller);
            let block = block_key(caller, target);
            let found = self
                .batch_get_all(vec![forward.clone(), backward.clone(), block.clone()])
                .await?;
            let (c_follows_t, t_follows_c) =
                (found.contains_key(&forward), found.contains_key(&backward));
            if found.contains_key(&block) && !c_follows_t && !t_follows_c {
                return Ok(false);
            }
            let mut item = block.to_item();
            item.insert("blockedAt".into(), num(now));
            let mut ops = vec![TxOp::Put {
                item,
                condition: None,
            }];
            // Per user: (following delta, followers delta).
            let mut deltas: HashMap<&str, (i64, i64)> = HashMap::new();
            for (a, b, exists) in [(caller, target, c_follows_t), (target, caller, t_follows_c)] {
                if exists {
                    ops.push(TxOp::Delete {
                        key: following_key(a, b),
                        condition: Some(Condition::Exists),
                    });
                    ops.push(TxOp::Delete {
                        key: follower_key(b, a),
                        condition: None,
                    });
                    deltas.entry(a).or_default().0 -= 1;
                    deltas.entry(b).or_default().1 -= 1;
                } else {
                    ops.push(TxOp::Check {
                        key: following_key(a, b),
                        condition: Condition::NotExists,
                    });
                }
                let mut hide = hide_key(b, a).to_item();
                hide.insert("at".into(), num(now));
                ops.push(TxOp::Put {
                    item: hide,
                    condition: None,
                });
                ops.push(TxOp::Delete {
                    key: hot_key(b, a),
                    condition: None,
                });
            }
            // Both readers' states change (hide and hot markers).
            ops.push(bump(caller));
            ops.push(bump(target));
            for (user, (following, followers)) in deltas {
                let mut update = Update::new();
                if following != 0 {
                    update = update.add("following", following);
                }
                if followers != 0 {
                    update = update.add("followers", followers);
                }
                ops.push(TxOp::Update {
                    key: profile_key(user),
                    update,
                    condition: None,
                });
            }
            match self.transact(ops).await {
                Ok(()) => {
                    self.cache.forget_state(caller);
                    self.cache.forget_state(target);
                    return Ok(true);
                }
                // An edge came or went since the read: look again.
                Err(TableError::TransactionCanceled { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FeedError::Throttled)
    }

    /// `DELETE /api/v1/me/blocks/{userId}`. Follows ended by the block stay
    /// ended. Returns whether a block was removed. One transaction: the
    /// block and both readers' state versions.
    pub async fn unblock(&self, caller: &str, target: &str) -> Result<bool, FeedError> {
        check_pair(caller, target, "cannot_block_self")?;
        let ops = vec![
            TxOp::Delete {
                key: block_key(caller, target),
                condition: Some(Condition::Exists),
            },
            bump(caller),
            bump(target),
        ];
        match self.transact(ops).await {
            Ok(()) => {
                self.cache.forget_state(caller);
                self.cache.forget_state(target);
                Ok(true)
            }
            Err(TableError::TransactionCanceled { failed }) if failed.contains(&0) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether either user has blocked the other: one batch read.
    pub async fn is_blocked_either_way(&self, a: &str, b: &str) -> Result<bool, FeedError> {
        check_user_id(a)?;
        check_user_id(b)?;
        if a == b {
            return Ok(false);
        }
        let found = self
            .batch_get_all(vec![block_key(a, b), block_key(b, a)])
            .await?;
        Ok(!found.is_empty())
    }

    /// A page of a user's edge partition, with profiles: one query and at
    /// most one batch read (uncached profiles).
    async fn list_edges(&self, pk: String, query: ListQuery) -> Result<UserList, FeedError> {
        let limit = parse_limit(query.limit.as_deref(), DEFAULT_LIST_PAGE, MAX_PAGE)?;
        let cursor = parse_cursor(query.cursor.as_deref(), &pk)?;
        let page = self
            .table
            .query(Query::partition(pk).limit(limit as u32).after(cursor))
            .await?;
        let users: Vec<String> = page
            .items
            .iter()
            .filter_map(|i| get_str(i, "sk").map(str::to_owned))
            .collect();
        self.user_list(users, page.next.map(|c| c.as_str().to_owned()))
            .await
    }

    async fn user_list(
        &self,
        users: Vec<String>,
        next_cursor: Option<String>,
    ) -> Result<UserList, FeedError> {
        let profiles = self.profiles(&users).await?;
        Ok(UserList {
            users: users
                .iter()
                .map(|u| {
                    profiles
                        .get(u)
                        .map(|p| p.author())
                        .unwrap_or_else(|| ProfileRecord::empty(u).author())
                })
                .collect(),
            next_cursor,
        })
    }

    /// `GET /api/v1/me/following`: by user id, cursor pages.
    pub async fn list_following(
        &self,
        user: &str,
        query: ListQuery,
    ) -> Result<UserList, FeedError> {
        check_user_id(user)?;
        self.list_edges(following_pk(user), query).await
    }

    /// `GET /api/v1/me/followers`: by user id, cursor pages.
    pub async fn list_followers(
        &self,
        user: &str,
        query: ListQuery,
    ) -> Result<UserList, FeedError> {
        check_user_id(user)?;
        self.list_edges(followers_pk(user), query).await
    }

    /// `GET /api/v1/me/friends`: the accounts the user follows that follow
    /// back. Walks the following list a page at a time, checking each page
    /// with one batch read of the reverse edges, until the page is full
    /// (or a few pages were walked: then a shorter page with a cursor).
    pub async fn list_friends(&self, user: &str, query: ListQuery) -> Result<UserList, FeedError> {
        check_user_id(user)?;
        let limit = parse_limit(query.limit.as_deref(), DEFAULT_LIST_PAGE, MAX_PAGE)?;
        let pk = following_pk(user);
        let mut cursor = parse_cursor(query.cursor.as_deref(), &pk)?;
        let mut friends = Vec::new();
        for _ in 0..8 {
            let page = self
                .table
                .query(
                    Query::partition(pk.clone())
                        .limit(limit as u32)
                        .after(cursor.take()),
                )
                .await?;
            let followees: Vec<String> = page
                .items
                .iter()
                .filter_map(|i| get_str(i, "sk").map(str::to_owned))
                .collect();
            let back = self
                .batch_get_all(followees.iter().map(|f| follower_key(user, f)).collect())
                .await?;
            let mut full_at = None;
            for f in followees {
                if back.contains_key(&follower_key(user, &f)) {
                    friends.push(f.clone());
                    if friends.len() == limit {
                        full_at = Some(f);
                        break;
                    }
                }
            }
            cursor = match full_at {
                Some(last) => Some(Cursor::from_key(&following_key(user, &last))),
                None => page.next,
            };
            if friends.len() == limit || cursor.is_none() {
                break;
            }
        }
        self.user_list(friends, cursor.map(|c| c.as_str().to_owned()))
            .await
    }

    /// `GET /api/v1/me/profile`.
    pub async fn get_profile(&self, caller: &str) -> Result<Profile, FeedError> {
        Ok(self.get_user(caller).await?.profile)
    }

    /// `PUT /api/v1/me/profile`: replaces the profile fields; the counters
    /// are left alone (one update).
    pub async fn put_profile(
        &self,
        caller: &str,
        request: PutProfile,
    ) -> Result<Profile, FeedError> {
        check_user_id(caller)?;
        request.validate()?;
        // An avatar is the caller's own ready image.
        let avatar_url = match &request.avatar_media_id {
            Some(id) => Some(match &self.media {
                Some(library) => library.avatar(caller, id).await?,
                None => {
                    return Err(FeedError::invalid(
                        "invalid_avatar_media_id",
                        "media is not configured on this deployment",
                    ));
                }
            }),
            None => None,
        };
        let mut update = Update::new();
        for (attr, value) in [
            ("displayName", &request.display_name),
            ("bio", &request.bio),
            ("avatarMediaId", &request.avatar_media_id),
            ("avatarUrl", &avatar_url),
        ] {
            update = match value {
                Some(v) => update.set(attr, s(v)),
                None => update.remove(attr),
            };
        }
        let item = self
            .table
            .update(&profile_key(caller), update, None)
            .await?;
        let record = Arc::new(ProfileRecord::from_item(caller, Some(&item)));
        self.cache.put_profile(record.clone());
        Ok(record.profile.clone())
    }

    /// `GET /api/v1/users/{userId}`: the profile and its counts, read fresh
    /// (one read). A user who never wrote a profile has an empty one.
    pub async fn get_user(&self, user: &str) -> Result<UserProfile, FeedError> {
        check_user_id(user)?;
        let item = self
            .table
            .get(&profile_key(user), Consistency::Strong)
            .await?;
        let record = Arc::new(ProfileRecord::from_item(user, item.as_ref()));
        self.cache.put_profile(record.clone());
        Ok(record.with_counts())
    }

    /// `GET /api/v1/users/{userId}` for `caller`: the profile and counts,
    /// and how the caller stands with that user (one batch read of the
    /// three edges).
    pub async fn view_user(&self, caller: &str, user: &str) -> Result<UserProfile, FeedError> {
        check_user_id(caller)?;
        let mut view = self.get_user(user).await?;
        if caller != user {
            let found = self
                .batch_get_all(vec![
                    following_key(caller, user),
                    following_key(user, caller),
                    block_key(caller, user),
                ])
                .await?;
            view.relationship = Some(super::model::Relationship {
                following: found.contains_key(&following_key(caller, user)),
                followed_by: found.contains_key(&following_key(user, caller)),
                blocking: found.contains_key(&block_key(caller, user)),
            });
        }
        Ok(view)
    }

    /// Every account `user` follows (the timeline merge's input).
    pub(super) async fn all_following(&self, user: &str) -> Result<Vec<String>, FeedError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(
                    Query::partition(following_pk(user))
                        .limit(1000)
                        .after(cursor),
                )
                .await?;
            out.extend(
                page.items
                    .iter()
                    .filter_map(|i| get_str(i, "sk").map(str::to_owned)),
            );
            cursor = page.next;
            if cursor.is_none() {
                return Ok(out);
            }
        }
    }

    /// The feed partition's markers (for a page after the first when the
    /// reader's state is not cached).
    pub(super) async fn load_markers(
        &self,
        user: &str,
    ) -> Result<super::model::FeedState, FeedError> {
        let mut state = super::model::FeedState::default();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(
                    Query::partition(feed_pk(user))
                        .sort(crate::ports::table::SortKey::BeginsWith("~".into()))
                        .limit(1000)
                        .after(cursor),
                )
                .await?;
            for item in &page.items {
                if let Some(sk) = get_str(item, "sk") {
                    state.absorb(sk, item);
                }
            }
            cursor = page.next;
            if cursor.is_none() {
                return Ok(state);
            }
        }
    }
}
