//! `ChatService`: its dependencies, the event commit every change goes
//! through, conversations and messages.
//!
//! Every change of a conversation (a message, an edit, a delete, a rename,
//! members added or removed) is one transaction: its own items, the next
//! event of the conversation's log, the meta's counters (conditional on the
//! event count read, so the log's order is the commit order and event ids
//! only grow), and an outbox item. After the commit a delivery job goes on
//! the FIFO queue (one group per conversation) and the outbox item is
//! removed; when the send fails the sweeper sends it later.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::deliver::Job;
use super::keys::{
    CONV_PREFIX, block_keys, delivered_key, event_key, idem_key, membership_key, message_key,
    message_range, meta_key, outbox_key, user_count_key, user_pk,
};
use super::model::{
    AddMembers, ChatEvent, Conversation, ConversationChange, ConversationList, CreateConversation,
    DEFAULT_HISTORY, DEFAULT_LIST, EditMessage, EventKind, History, HistoryQuery, Kind, ListQuery,
    MAX_HISTORY, MAX_ID, MAX_LIST, MemberEntry, MemberView, Message, MessageRecord, Meta, Mirror,
    ReadState, Rename, Role, SendMessage, Sent, check_client_id, check_conversation_id, check_name,
    check_text, check_user, from_item, parse_id, parse_limit, with_key,
};
use super::{ChatConfig, ChatError, EventIds};
use crate::notify::NotifyService;
use crate::ports::queue::{OutgoingMessage, Queue};
use crate::ports::table::{
    Condition, Consistency, Key, MAX_BATCH_GET, Query, SortKey, Table, TableError, TxOp, Update,
    get_i64, num, s,
};
use crate::ports::{Clock, Connections};
use crate::ratelimit::RateLimiter;
use crate::shortener::link::format_instant;

/// Retries of a commit that lost the race for the conversation's next event.
const COMMIT_RETRIES: u32 = 20;

pub(super) async fn backoff(attempt: u32) {
    let ms = 4u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))).await;
}

/// A conversation's members as the deliveries use them, cached by version.
#[derive(Debug, Clone)]
pub(super) struct MemberList {
    pub version: u64,
    pub members: Vec<MemberEntry>,
}

pub struct ChatService {
    pub(super) table: Arc<dyn Table>,
    pub(super) presence_table: Arc<dyn Table>,
    /// The news feed's table, read for blocks (`None` in functions that
    /// never check one).
    pub(super) blocks: Option<Arc<dyn Table>>,
    pub(super) queue: Arc<dyn Queue>,
    pub(super) connections: Arc<dyn Connections>,
    pub(super) ids: Arc<dyn EventIds>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) config: ChatConfig,
    pub(super) limiter: Option<Arc<RateLimiter>>,
    pub(super) notify: OnceLock<Arc<NotifyService>>,
    pub(super) members: Cache<String, Arc<MemberList>>,
    /// Connection id → user: fixed for a connection's life.
    pub(super) connection_users: Cache<String, String>,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("table", &self.table.name())
            .field("queue", &self.queue.spec().name)
            .finish_non_exhaustive()
    }
}

/// The dependencies of a `ChatService`.
pub struct ChatDeps {
    pub table: Arc<dyn Table>,
    pub presence_table: Arc<dyn Table>,
    pub blocks: Option<Arc<dyn Table>>,
    pub queue: Arc<dyn Queue>,
    pub connections: Arc<dyn Connections>,
    pub ids: Arc<dyn EventIds>,
    pub clock: Arc<dyn Clock>,
    pub limiter: Option<Arc<RateLimiter>>,
}

/// The id of the 1:1 between two users: the same whoever asks.
pub fn direct_id(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest(format!("{lo}\n{hi}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("d{hex}")
}

/// One change to commit: its own operations and what the log records.
pub(super) struct Change {
    pub ops: Vec<TxOp>,
    pub event: ChatEvent,
    /// Users told besides the members (a removed member).
    pub also: Vec<String>,
    /// Extra `SET`s on the meta (members, name, counters).
    pub meta_sets: Vec<(String, crate::ports::table::AttributeValue)>,
    pub new_message: bool,
    pub members_changed: bool,
    /// The change creates the conversation: the meta is put (if absent)
    /// rather than updated.
    pub create: bool,
}

/// What a commit did: the event's number and id, or the indexes of the
/// change's own operations whose condition failed (`EXISTS` when a created
/// conversation already existed).
pub(super) type Committed = Result<(u64, u64), Vec<usize>>;

pub(super) const EXISTS: usize = usize::MAX;

impl ChatService {
    pub fn new(deps: ChatDeps, config: ChatConfig) -> Self {
        Self {
            members: Cache::builder()
                .max_capacity(config.cache_capacity)
                .time_to_live(Duration::from_secs(300))
                .build(),
            connection_users: Cache::builder()
                .max_capacity(config.cache_capacity)
                .time_to_live(Duration::from_secs(3 * 3600))
                .build(),
            table: deps.table,
            presence_table: deps.presence_table,
            blocks: deps.blocks,
            queue: deps.queue,
            connections: deps.connections,
            ids: deps.ids,
            clock: deps.clock,
            limiter: deps.limiter,
            notify: OnceLock::new(),
            config,
        }
    }

    /// Pushes to offline members go through this notification service
    /// (the delivery worker's; other functions never push).
    pub fn set_push(&self, notify: Arc<NotifyService>) {
        let _ = self.notify.set(notify);
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    pub fn table(&self) -> &Arc<dyn Table> {
        &self.table
    }

    pub fn presence_table(&self) -> &Arc<dyn Table> {
        &self.presence_table
    }

    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A transaction, retried while the table reports a conflict.
    pub(super) async fn transact(&self, ops: Vec<TxOp>) -> Result<(), TableError> {
        let mut attempt = 0;
        loop {
            match self.table.transact_write(ops.clone()).await {
                Err(TableError::Throttled) if attempt < 6 => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                other => return other,
            }
        }
    }

    pub(super) async fn meta(&self, cid: &str) -> Result<Option<Meta>, ChatError> {
        match self.table.get(&meta_key(cid), Consistency::Strong).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    /// The conversation if the caller is in it; 404 otherwise (whether or
    /// not it exists).
    pub(super) async fn member_meta(&self, caller: &str, cid: &str) -> Result<Meta, ChatError> {
        check_user(caller)?;
        check_conversation_id(cid)?;
        let meta = self
            .meta(cid)
            .await?
            .ok_or(ChatError::ConversationNotFound)?;
        if meta.member(caller).is_none() {
            return Err(ChatError::ConversationNotFound);
        }
        Ok(meta)
    }

    /// The member list at `version` (or newer): from the cache, else one read.
    pub(super) async fn member_list(
        &self,
        cid: &str,
        version: Option<u64>,
    ) -> Result<Arc<MemberList>, ChatError> {
        if let Some(list) = self.members.get(cid)
            && version.is_none_or(|v| list.version >= v)
        {
            return Ok(list);
        }
        let meta = self
            .meta(cid)
            .await?
            .ok_or(ChatError::ConversationNotFound)?;
        let list = Arc::new(MemberList {
            version: meta.members_version,
            members: meta.members,
        });
        self.members.insert(cid.to_owned(), list.clone());
        Ok(list)
    }

    /// Whether either of `a`, `b` has blocked the other, for each `b`: one
    /// batch read of the news feed's block items per 50 users.
    pub(super) async fn blocked_among(
        &self,
        a: &str,
        others: &[String],
    ) -> Result<Vec<String>, ChatError> {
        let blocks = self.blocks.as_ref().ok_or_else(|| {
            ChatError::Store("FEED_TABLE is not set: this function cannot check blocks".into())
        })?;
        let mut blocked = Vec::new();
        for chunk in others.chunks(MAX_BATCH_GET / 2) {
            let keys: Vec<Key> = chunk.iter().flat_map(|b| block_keys(a, b)).collect();
            for item in blocks.batch_get(&keys).await? {
                if let Ok(key) = Key::of_item(&item) {
                    for b in chunk {
                        if block_keys(a, b).contains(&key) && !blocked.contains(b) {
                            blocked.push(b.clone());
                        }
                    }
                }
            }
        }
        Ok(blocked)
    }

    /// A fresh event id above every event of the conversation (ids from
    /// another instance may trail by its clock's skew: wait them out).
    pub(super) async fn event_id_above(&self, last: u64) -> Result<u64, ChatError> {
        for _ in 0..500 {
            let id = self.ids.next_event_id().await?;
            if id > last {
                return Ok(id);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err(ChatError::Ids(
            "the clock trails this conversation's last event by over half a second".into(),
        ))
    }

    /// Commits one change (see the module docs): answers the event's
    /// number, or the indexes of the change's own operations whose
    /// condition failed. A lost race for the meta re-reads it and calls
    /// `build` again.
    pub(super) async fn commit<F>(
        &self,
        cid: &str,
        mut meta: Meta,
        mut build: F,
    ) -> Result<Committed, ChatError>
    where
        F: FnMut(&Meta, u64, u64) -> Result<Change, ChatError>,
    {
        let mut attempt = 0;
        loop {
            let now = self.now_ms();
            let event_id = self.event_id_above(meta.last_event_id).await?;
            let n = meta.events + 1;
            let change = build(&meta, event_id, n)?;
            let own = change.ops.len();
            let change_creates = change.create;
            let members_version = meta.members_version + u64::from(change.members_changed);
            let payload = serde_json::to_string(&change.event)
                .map_err(|e| ChatError::Store(format!("event: {e}")))?;
            let also = serde_json::to_string(&change.also)
                .map_err(|e| ChatError::Store(format!("event: {e}")))?;
            let mut ops = change.ops;
            let mut event = event_key(cid, n).to_item();
            event.insert("n".into(), num(n));
            event.insert("eventId".into(), num(event_id));
            event.insert("membersVersion".into(), num(members_version));
            event.insert("payload".into(), s(payload));
            event.insert("also".into(), s(also));
            event.insert("createdAtMs".into(), num(now));
            ops.push(TxOp::Put {
                item: event,
                condition: Some(Condition::NotExists),
            });
            let mut update = Update::new()
                .set("events", num(n))
                .set("lastEventId", num(event_id))
                .set("lastActivityMs", num(now));
            if change.members_changed {
                update = update.set("membersVersion", num(members_version));
            }
            if change.new_message {
                update = update.set("messages", num(meta.messages + 1));
                if let Some(m) = &change.event.message {
                    let preview = serde_json::to_string(m)
                        .map_err(|e| ChatError::Store(format!("preview: {e}")))?;
                    update = update.set("lastMessage", s(preview));
                }
            } else if let Some(m) = &change.event.message
                && last_message_id(&meta) == Some(m.id)
            {
                let preview = serde_json::to_string(m)
                    .map_err(|e| ChatError::Store(format!("preview: {e}")))?;
                update = update.set("lastMessage", s(preview));
            }
            for (name, value) in change.meta_sets {
                update = update.set(&name, value);
            }
            let meta_index = ops.len();
            if change.create {
                let mut created = meta.clone();
                created.events = n;
                created.last_event_id = event_id;
                created.last_activity_ms = now;
                created.members_version = members_version;
                ops.push(TxOp::Put {
                    item: with_key(&meta_key(cid), &created)?,
                    condition: Some(Condition::NotExists),
                });
            } else {
                ops.push(TxOp::Update {
                    key: meta_key(cid),
                    update,
                    condition: Some(Condition::eq("events", num(meta.events))),
                });
            }
            let job = Job::Events {
                conversation_id: cid.to_owned(),
                up_to: n,
            };
            let mut out = outbox_key(cid, n).to_item();
            out.insert("job".into(), s(job.body()?));
            out.insert("createdAtMs".into(), num(now));
            ops.push(TxOp::Put {
                item: out,
                condition: None,
            });
            match self.transact(ops).await {
                Ok(()) => {
                    self.enqueue_events(cid, n).await;
                    return Ok(Ok((n, event_id)));
                }
                Err(TableError::TransactionCanceled { failed }) => {
                    let own_failed: Vec<usize> =
                        failed.iter().copied().filter(|&i| i < own).collect();
                    if !own_failed.is_empty() {
                        return Ok(Err(own_failed));
                    }
                    if change_creates && failed.contains(&meta_index) {
                        return Ok(Err(vec![EXISTS]));
                    }
                    if failed.contains(&meta_index) && attempt < COMMIT_RETRIES {
                        attempt += 1;
                        meta = self
                            .meta(cid)
                            .await?
                            .ok_or(ChatError::ConversationNotFound)?;
                        continue;
                    }
                    return Err(ChatError::Store(format!(
                        "the change was cancelled at {failed:?}"
                    )));
                }
                Err(TableError::Throttled) if attempt < COMMIT_RETRIES => {
                    attempt += 1;
                    backoff(attempt).await;
                    meta = self
                        .meta(cid)
                        .await?
                        .ok_or(ChatError::ConversationNotFound)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Queues the delivery of a conversation's events up to `n`; on
    /// success the outbox item goes, on failure the sweeper sends it.
    pub(super) async fn enqueue_events(&self, cid: &str, n: u64) {
        let job = Job::Events {
            conversation_id: cid.to_owned(),
            up_to: n,
        };
        match self.send_job(&job).await {
            Ok(()) => {
                if let Err(e) = self.table.delete(&outbox_key(cid, n), None).await {
                    tracing::warn!(error = %e, conversation = cid, "a sent outbox item stays; the sweeper sends it again (delivery is idempotent)");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, conversation = cid, "the delivery job is not queued yet; the sweeper will send it");
            }
        }
    }

    pub(super) async fn send_job(&self, job: &Job) -> Result<(), ChatError> {
        let (group, dedupe) = job.group_and_dedupe();
        self.queue
            .send(OutgoingMessage::new(job.body()?).group(group, dedupe))
            .await?;
        Ok(())
    }

    /// The send-rate rules (`@chat/send`, key: the sender).
    pub(super) async fn check_rate(&self, scope: &str, user: &str) -> Result<(), ChatError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let verdict = limiter.check_scope(scope, user).await;
        if let Some(refused) = verdict.violated().first() {
            return Err(ChatError::RateLimited(
                refused.decision.retry_after_ms.div_ceil(1000).max(1),
            ));
        }
        Ok(())
    }

    // Conversations.

    /// `POST /api/v1/me/conversations`: a 1:1 (one other member, no name;
    /// the same pair always gets the same one) or a group.
    pub async fn create_conversation(
        &self,
        caller: &str,
        request: CreateConversation,
    ) -> Result<(Conversation, bool), ChatError> {
        check_user(caller)?;
        let mut others = Vec::new();
        for m in &request.members {
            check_user(m)?;
            if m != caller && !others.contains(m) {
                others.push(m.clone());
            }
        }
        if others.is_empty() {
            return Err(ChatError::invalid(
                "invalid_members",
                "members must name at least one user other than you",
            ));
        }
        if let Some(name) = &request.name {
            check_name(name)?;
        }
        let direct = others.len() == 1 && request.name.is_none();
        if !direct && others.len() + 1 > self.config.max_members {
            return Err(ChatError::invalid(
                "too_many_members",
                format!(
                    "a group has at most {} members, you included",
                    self.config.max_members
                ),
            ));
        }
        let blocked = self.blocked_among(caller, &others).await?;
        if let Some(b) = blocked.first() {
            return Err(ChatError::Blocked(if direct {
                format!("you and {b} cannot message each other")
            } else {
                format!("you cannot add {b}: one of you has blocked the other")
            }));
        }
        self.check_capacity(std::iter::once(caller.to_owned()).chain(others.iter().cloned()))
            .await?;
        let now = self.now_ms();
        let cid = if direct {
            let cid = direct_id(caller, &others[0]);
            if let Some(meta) = self.meta(&cid).await? {
                return Ok((self.view(caller, &cid, &meta, true).await?, false));
            }
            cid
        } else {
            format!("g{}", self.ids.next_event_id().await?)
        };
        let mut members = vec![MemberEntry {
            user_id: caller.to_owned(),
            role: Role::Admin,
            joined_at_ms: now,
            muted: false,
        }];
        for o in &others {
            members.push(MemberEntry {
                user_id: o.clone(),
                // Both sides of a 1:1 are equals.
                role: if direct { Role::Admin } else { Role::Member },
                joined_at_ms: now,
                muted: false,
            });
        }
        let kind = if direct { Kind::Direct } else { Kind::Group };
        let meta = Meta {
            kind,
            name: request.name.clone(),
            created_by: caller.to_owned(),
            created_at_ms: now,
            members,
            members_version: 0,
            events: 0,
            messages: 0,
            last_event_id: 0,
            last_message: None,
            last_activity_ms: now,
        };
        let users = meta.member_ids();
        let creator = caller.to_owned();
        let outcome = self
            .commit(&cid, meta, |meta, _, _| {
                Ok(Change {
                    ops: mirror_join_ops(&creator, &cid),
                    event: ChatEvent {
                        kind: EventKind::Conversation,
                        conversation_id: cid.clone(),
                        message: None,
                        conversation: Some(change_of(&cid, meta, "created", users.clone())),
                    },
                    also: Vec::new(),
                    meta_sets: Vec::new(),
                    new_message: false,
                    members_changed: false,
                    create: true,
                })
            })
            .await?;
        let created = outcome.is_ok();
        let meta = self
            .meta(&cid)
            .await?
            .ok_or(ChatError::ConversationNotFound)?;
        if !created && meta.kind == Kind::Group {
            return Err(ChatError::Store("a new group's id was taken".into()));
        }
        Ok((self.view(caller, &cid, &meta, true).await?, created))
    }

    /// Refuses when one of `users` is in as many conversations as allowed.
    async fn check_capacity(&self, users: impl Iterator<Item = String>) -> Result<(), ChatError> {
        let keys: Vec<Key> = users.map(|u| user_count_key(&u)).collect();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            for item in self.table.batch_get(chunk).await? {
                let count = get_i64(&item, "conversations").unwrap_or(0);
                if count >= self.config.max_conversations as i64 {
                    let user = Key::of_item(&item)
                        .map(|k| k.pk.trim_start_matches("user#").to_owned())
                        .unwrap_or_default();
                    return Err(ChatError::ConversationLimit(format!(
                        "{user} is in {count} conversations, the most allowed"
                    )));
                }
            }
        }
        Ok(())
    }

    /// `GET /api/v1/conversations/{id}`: with members and their read markers.
    pub async fn get_conversation(
        &self,
        caller: &str,
        cid: &str,
    ) -> Result<Conversation, ChatError> {
        let meta = self.member_meta(caller, cid).await?;
        self.view(caller, cid, &meta, true).await
    }

    /// The conversation as `caller` sees it.
    pub(super) async fn view(
        &self,
        caller: &str,
        cid: &str,
        meta: &Meta,
        with_members: bool,
    ) -> Result<Conversation, ChatError> {
        let mirrors = if with_members {
            let keys: Vec<Key> = meta
                .members
                .iter()
                .map(|m| membership_key(&m.user_id, cid))
                .collect();
            self.mirrors(&keys).await?
        } else {
            let key = membership_key(caller, cid);
            self.mirrors(std::slice::from_ref(&key)).await?
        };
        let mine = mirrors.get(caller).cloned().unwrap_or_default();
        let members = with_members.then(|| {
            meta.members
                .iter()
                .map(|m| MemberView {
                    user_id: m.user_id.clone(),
                    role: m.role,
                    joined_at: format_instant(m.joined_at_ms),
                    read_up_to: mirrors.get(&m.user_id).and_then(|r| r.read_up_to),
                })
                .collect()
        });
        Ok(summary(caller, cid, meta, &mine, members))
    }

    async fn mirrors(&self, keys: &[Key]) -> Result<HashMap<String, Mirror>, ChatError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            for item in self.table.batch_get(chunk).await? {
                let user = Key::of_item(&item)
                    .map(|k| k.pk.trim_start_matches("user#").to_owned())
                    .unwrap_or_default();
                out.insert(user, from_item::<Mirror>(item)?);
            }
        }
        Ok(out)
    }

    /// `GET /api/v1/me/conversations`: newest activity first, cursor pages.
    /// One query of the caller's memberships, batch reads of their metas.
    pub async fn list_conversations(
        &self,
        caller: &str,
        query: ListQuery,
    ) -> Result<ConversationList, ChatError> {
        check_user(caller)?;
        let limit = parse_limit(query.limit.as_deref(), DEFAULT_LIST, MAX_LIST)?;
        let after = match query.cursor.as_deref() {
            None => None,
            Some(raw) => Some(parse_list_cursor(raw)?),
        };
        let mirrors = self.user_mirrors(caller).await?;
        let mut metas = Vec::new();
        let keys: Vec<Key> = mirrors.keys().map(|cid| meta_key(cid)).collect();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            for item in self.table.batch_get(chunk).await? {
                let Ok(key) = Key::of_item(&item) else {
                    continue;
                };
                let cid = key.pk.trim_start_matches("conv#").to_owned();
                let meta: Meta = from_item(item)?;
                if meta.member(caller).is_some() {
                    metas.push((cid, meta));
                }
            }
        }
        metas.sort_by(|(a, ma), (b, mb)| {
            (mb.last_activity_ms, b.as_str()).cmp(&(ma.last_activity_ms, a.as_str()))
        });
        let start = match &after {
            None => 0,
            Some((at, cid)) => metas
                .iter()
                .position(|(c, m)| (m.last_activity_ms, c.as_str()) < (*at, cid.as_str()))
                .unwrap_or(metas.len()),
        };
        let page: Vec<_> = metas.iter().skip(start).take(limit).collect();
        let next_cursor = (start + page.len() < metas.len())
            .then(|| {
                page.last()
                    .map(|(c, m)| format!("{}.{c}", m.last_activity_ms))
            })
            .flatten();
        let conversations = page
            .iter()
            .map(|(cid, meta)| {
                let mine = mirrors.get(cid).cloned().unwrap_or_default();
                summary(caller, cid, meta, &mine, None)
            })
            .collect();
        Ok(ConversationList {
            conversations,
            next_cursor,
        })
    }

    /// The caller's mirrors by conversation id (every page of the partition).
    pub(super) async fn user_mirrors(
        &self,
        user: &str,
    ) -> Result<HashMap<String, Mirror>, ChatError> {
        let mut out = HashMap::new();
        let mut cursor = None;
        loop {
            let page = self
                .table
                .query(
                    Query::partition(user_pk(user))
                        .sort(SortKey::BeginsWith(CONV_PREFIX.into()))
                        .after(cursor),
                )
                .await?;
            for item in page.items {
                let Ok(key) = Key::of_item(&item) else {
                    continue;
                };
                let cid = key.sk.trim_start_matches(CONV_PREFIX).to_owned();
                out.insert(cid, from_item::<Mirror>(item)?);
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// `PATCH /api/v1/conversations/{id}` `{"name"}`: group admins.
    pub async fn rename(
        &self,
        caller: &str,
        cid: &str,
        request: Rename,
    ) -> Result<Conversation, ChatError> {
        check_name(&request.name)?;
        let meta = self.member_meta(caller, cid).await?;
        if meta.kind == Kind::Direct {
            return Err(ChatError::invalid(
                "direct_conversation",
                "a 1:1 conversation has no name",
            ));
        }
        if !meta.is_admin(caller) {
            return Err(ChatError::NotAdmin);
        }
        let name = request.name.clone();
        let outcome = self
            .commit(cid, meta, |meta, _, _| {
                if !meta.is_admin(caller) {
                    return Err(ChatError::NotAdmin);
                }
                let mut after = meta.clone();
                after.name = Some(name.clone());
                Ok(Change {
                    ops: Vec::new(),
                    event: ChatEvent {
                        kind: EventKind::Conversation,
                        conversation_id: cid.to_owned(),
                        message: None,
                        conversation: Some(change_of(cid, &after, "renamed", Vec::new())),
                    },
                    also: Vec::new(),
                    meta_sets: vec![("name".into(), s(name.clone()))],
                    new_message: false,
                    members_changed: false,
                    create: false,
                })
            })
            .await?;
        outcome.map_err(|_| ChatError::Store("the rename was refused".into()))?;
        let meta = self.member_meta(caller, cid).await?;
        self.view(caller, cid, &meta, true).await
    }

    /// `POST /api/v1/conversations/{id}/members`: group admins add users.
    pub async fn add_members(
        &self,
        caller: &str,
        cid: &str,
        request: AddMembers,
    ) -> Result<Conversation, ChatError> {
        let meta = self.member_meta(caller, cid).await?;
        if meta.kind == Kind::Direct {
            return Err(ChatError::invalid(
                "direct_conversation",
                "a 1:1 conversation cannot take more members; start a group",
            ));
        }
        if !meta.is_admin(caller) {
            return Err(ChatError::NotAdmin);
        }
        let mut new = Vec::new();
        for m in &request.members {
            check_user(m)?;
            if meta.member(m).is_none() && !new.contains(m) {
                new.push(m.clone());
            }
        }
        if request.members.is_empty() {
            return Err(ChatError::invalid(
                "invalid_members",
                "members must name at least one user",
            ));
        }
        if new.is_empty() {
            return self.view(caller, cid, &meta, true).await;
        }
        if let Some(b) = self.blocked_among(caller, &new).await?.first() {
            return Err(ChatError::Blocked(format!(
                "you cannot add {b}: one of you has blocked the other"
            )));
        }
        self.check_capacity(new.iter().cloned()).await?;
        let max = self.config.max_members;
        let outcome = self
            .commit(cid, meta, |meta, _, _| {
                if !meta.is_admin(caller) {
                    return Err(ChatError::NotAdmin);
                }
                let mut after = meta.clone();
                let now = self.now_ms();
                let added: Vec<String> = new
                    .iter()
                    .filter(|u| meta.member(u).is_none())
                    .cloned()
                    .collect();
                for u in &added {
                    after.members.push(MemberEntry {
                        user_id: u.clone(),
                        role: Role::Member,
                        joined_at_ms: now,
                        muted: false,
                    });
                }
                if after.members.len() > max {
                    return Err(ChatError::invalid(
                        "too_many_members",
                        format!(
                            "a group has at most {max} members; it has {}",
                            meta.members.len()
                        ),
                    ));
                }
                Ok(Change {
                    ops: Vec::new(),
                    event: ChatEvent {
                        kind: EventKind::Conversation,
                        conversation_id: cid.to_owned(),
                        message: None,
                        conversation: Some(change_of(cid, &after, "members_added", added)),
                    },
                    also: Vec::new(),
                    meta_sets: vec![("members".into(), members_attr(&after.members)?)],
                    new_message: false,
                    members_changed: true,
                    create: false,
                })
            })
            .await?;
        outcome.map_err(|_| ChatError::Store("adding members was refused".into()))?;
        self.members.invalidate(cid);
        let meta = self.member_meta(caller, cid).await?;
        self.view(caller, cid, &meta, true).await
    }

    /// `DELETE /api/v1/conversations/{id}/members/{userId}`: an admin
    /// removes a member; anyone removes themself (leaves). When the last
    /// admin leaves, the longest-standing member becomes admin.
    pub async fn remove_member(
        &self,
        caller: &str,
        cid: &str,
        user: &str,
    ) -> Result<(), ChatError> {
        check_user(user)?;
        let meta = self.member_meta(caller, cid).await?;
        if meta.kind == Kind::Direct {
            return Err(ChatError::invalid(
                "direct_conversation",
                "nobody can leave a 1:1 conversation; block the other user instead",
            ));
        }
        if user != caller && !meta.is_admin(caller) {
            return Err(ChatError::NotAdmin);
        }
        if meta.member(user).is_none() {
            return Err(ChatError::invalid(
                "not_a_member",
                format!("{user} is not in this conversation"),
            ));
        }
        let outcome = self
            .commit(cid, meta, |meta, _, _| {
                if meta.member(user).is_none() {
                    return Err(ChatError::invalid(
                        "not_a_member",
                        format!("{user} is not in this conversation"),
                    ));
                }
                if user != caller && !meta.is_admin(caller) {
                    return Err(ChatError::NotAdmin);
                }
                let mut after = meta.clone();
                after.members.retain(|m| m.user_id != user);
                if !after.members.is_empty()
                    && !after.members.iter().any(|m| m.role == Role::Admin)
                    && let Some(first) = after.members.iter_mut().min_by_key(|m| m.joined_at_ms)
                {
                    first.role = Role::Admin;
                }
                Ok(Change {
                    ops: Vec::new(),
                    event: ChatEvent {
                        kind: EventKind::Conversation,
                        conversation_id: cid.to_owned(),
                        message: None,
                        conversation: Some(change_of(
                            cid,
                            &after,
                            "member_removed",
                            vec![user.to_owned()],
                        )),
                    },
                    also: vec![user.to_owned()],
                    meta_sets: vec![("members".into(), members_attr(&after.members)?)],
                    new_message: false,
                    members_changed: true,
                    create: false,
                })
            })
            .await?;
        self.members.invalidate(cid);
        outcome.map_err(|_| ChatError::Store("the removal was refused".into()))?;
        Ok(())
    }

    /// `PUT /api/v1/me/conversations/{id}/mute`.
    pub async fn mute(&self, caller: &str, cid: &str, muted: bool) -> Result<bool, ChatError> {
        let mut meta = self.member_meta(caller, cid).await?;
        for attempt in 0..COMMIT_RETRIES {
            let mut members = meta.members.clone();
            if let Some(m) = members.iter_mut().find(|m| m.user_id == caller) {
                if m.muted == muted {
                    return Ok(muted);
                }
                m.muted = muted;
            }
            let update = Update::new()
                .set("members", members_attr(&members)?)
                .set("membersVersion", num(meta.members_version + 1));
            match self
                .table
                .update(
                    &meta_key(cid),
                    update,
                    Some(Condition::eq("membersVersion", num(meta.members_version))),
                )
                .await
            {
                Ok(_) => {
                    self.members.invalidate(cid);
                    return Ok(muted);
                }
                Err(TableError::ConditionFailed { .. }) | Err(TableError::Throttled) => {
                    backoff(attempt).await;
                    meta = self.member_meta(caller, cid).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChatError::Throttled)
    }

    // Messages.

    /// Sends a message (`POST .../messages` and the socket's `send`). The
    /// same `clientMessageId` from the same user in the same conversation
    /// answers the first message, however often it is retried.
    pub async fn send(
        &self,
        caller: &str,
        cid: &str,
        request: SendMessage,
    ) -> Result<Sent, ChatError> {
        check_client_id(&request.client_message_id)?;
        check_text(&request.text)?;
        let meta = self.member_meta(caller, cid).await?;
        let idem = idem_key(cid, caller, &request.client_message_id);
        if let Some(sent) = self.idempotent(cid, &idem).await? {
            return Ok(sent);
        }
        self.check_rate("@chat/send", caller).await?;
        if meta.kind == Kind::Direct {
            let peers: Vec<String> = meta
                .members
                .iter()
                .filter(|m| m.user_id != caller)
                .map(|m| m.user_id.clone())
                .collect();
            if !self.blocked_among(caller, &peers).await?.is_empty() {
                return Err(ChatError::Blocked(
                    "you and this user cannot message each other".into(),
                ));
            }
        }
        let ttl = self.now_ms() / 1000 + self.config.idempotency_ttl.as_secs();
        let mut record = None;
        let outcome = self
            .commit(cid, meta, |meta, event_id, _| {
                if meta.member(caller).is_none() {
                    return Err(ChatError::ConversationNotFound);
                }
                let now = self.now_ms();
                let number = meta.messages + 1;
                let r = MessageRecord {
                    id: event_id,
                    conversation_id: cid.to_owned(),
                    sender_id: caller.to_owned(),
                    client_message_id: Some(request.client_message_id.clone()),
                    text: Some(request.text.clone()),
                    created_at_ms: now,
                    edited_at_ms: None,
                    deleted: false,
                    number,
                };
                let mut idem_item = idem.to_item();
                idem_item.insert("messageId".into(), num(event_id));
                idem_item.insert("ttl".into(), num(ttl));
                let ops = vec![
                    TxOp::Put {
                        item: idem_item,
                        condition: Some(Condition::absent_or_expired(now / 1000)),
                    },
                    TxOp::Put {
                        item: r.to_item(&message_key(cid, event_id))?,
                        condition: Some(Condition::NotExists),
                    },
                    // The sender has read what they sent.
                    TxOp::Update {
                        key: membership_key(caller, cid),
                        update: Update::new()
                            .set("readUpTo", num(event_id))
                            .set("readCount", num(number)),
                        condition: None,
                    },
                ];
                let event = ChatEvent {
                    kind: EventKind::Message,
                    conversation_id: cid.to_owned(),
                    message: Some(r.view()),
                    conversation: None,
                };
                record = Some(r);
                Ok(Change {
                    ops,
                    event,
                    also: Vec::new(),
                    meta_sets: Vec::new(),
                    new_message: true,
                    members_changed: false,
                    create: false,
                })
            })
            .await?;
        match outcome {
            Ok(_) => {
                let record =
                    record.ok_or_else(|| ChatError::Store("the message was not built".into()))?;
                crate::http::emf::Metrics::new()
                    .dimension("Subsystem", "chat")
                    .count("MessagesSent", 1)
                    .emit();
                Ok(Sent {
                    message: record.view(),
                    created: true,
                })
            }
            // A racing send with this clientMessageId won.
            Err(failed) if failed.contains(&0) => self
                .idempotent(cid, &idem)
                .await?
                .ok_or_else(|| ChatError::Store("the clientMessageId vanished".into())),
            Err(failed) => Err(ChatError::Store(format!(
                "the message was refused at {failed:?}"
            ))),
        }
    }

    async fn idempotent(&self, cid: &str, idem: &Key) -> Result<Option<Sent>, ChatError> {
        let Some(item) = self.table.get(idem, Consistency::Strong).await? else {
            return Ok(None);
        };
        let now_secs = self.now_ms() / 1000;
        if get_i64(&item, "ttl").is_some_and(|t| t <= now_secs as i64) {
            return Ok(None);
        }
        let Some(id) = get_i64(&item, "messageId") else {
            return Ok(None);
        };
        let record = self.message(cid, id as u64).await?;
        Ok(Some(Sent {
            message: record.view(),
            created: false,
        }))
    }

    pub(super) async fn message(&self, cid: &str, id: u64) -> Result<MessageRecord, ChatError> {
        let item = self
            .table
            .get(&message_key(cid, id), Consistency::Strong)
            .await?
            .ok_or(ChatError::MessageNotFound)?;
        from_item(item)
    }

    /// `PATCH .../messages/{id}`: the sender changes the text (marked edited).
    pub async fn edit(
        &self,
        caller: &str,
        cid: &str,
        message_id: &str,
        request: EditMessage,
    ) -> Result<Message, ChatError> {
        check_text(&request.text)?;
        self.change_message(caller, cid, message_id, Some(request.text))
            .await
    }

    /// `DELETE .../messages/{id}`: the sender replaces it with a tombstone.
    pub async fn delete(
        &self,
        caller: &str,
        cid: &str,
        message_id: &str,
    ) -> Result<Message, ChatError> {
        self.change_message(caller, cid, message_id, None).await
    }

    async fn change_message(
        &self,
        caller: &str,
        cid: &str,
        message_id: &str,
        text: Option<String>,
    ) -> Result<Message, ChatError> {
        let id = parse_id("messageId", message_id).map_err(|_| ChatError::MessageNotFound)?;
        let meta = self.member_meta(caller, cid).await?;
        let current = self.message(cid, id).await?;
        if current.sender_id != caller {
            return Err(ChatError::NotSender);
        }
        if current.deleted {
            if text.is_none() {
                return Ok(current.view());
            }
            return Err(ChatError::MessageDeleted);
        }
        let mut changed = None;
        let outcome = self
            .commit(cid, meta, |_, _, _| {
                let now = self.now_ms();
                let mut r = current.clone();
                let (update, kind) = match &text {
                    Some(t) => {
                        r.text = Some(t.clone());
                        r.edited_at_ms = Some(now);
                        (
                            Update::new()
                                .set("text", s(t.clone()))
                                .set("editedAtMs", num(now)),
                            EventKind::Edit,
                        )
                    }
                    None => {
                        r.text = None;
                        r.deleted = true;
                        (
                            Update::new()
                                .set("deleted", crate::ports::table::AttributeValue::Bool(true))
                                .remove("text"),
                            EventKind::Delete,
                        )
                    }
                };
                let view = r.view();
                changed = Some(view.clone());
                Ok(Change {
                    ops: vec![TxOp::Update {
                        key: message_key(cid, id),
                        update,
                        condition: Some(Condition::eq(
                            "deleted",
                            crate::ports::table::AttributeValue::Bool(false),
                        )),
                    }],
                    event: ChatEvent {
                        kind,
                        conversation_id: cid.to_owned(),
                        message: Some(view),
                        conversation: None,
                    },
                    also: Vec::new(),
                    meta_sets: Vec::new(),
                    new_message: false,
                    members_changed: false,
                    create: false,
                })
            })
            .await?;
        match outcome {
            Ok(_) => changed.ok_or_else(|| ChatError::Store("no change built".into())),
            // Deleted meanwhile.
            Err(_) if text.is_none() => Ok(self.message(cid, id).await?.view()),
            Err(_) => Err(ChatError::MessageDeleted),
        }
    }

    /// `GET .../messages?before=&limit=`: newest first.
    pub async fn history(
        &self,
        caller: &str,
        cid: &str,
        query: HistoryQuery,
    ) -> Result<History, ChatError> {
        let limit = parse_limit(query.limit.as_deref(), DEFAULT_HISTORY, MAX_HISTORY)?;
        let before = match query.before.as_deref() {
            None => None,
            Some(raw) => Some(parse_id("before", raw)?),
        };
        self.member_meta(caller, cid).await?;
        let hi = before.map_or(MAX_ID, |b| b.saturating_sub(1));
        if hi == 0 {
            return Ok(History {
                messages: Vec::new(),
                next_before: None,
            });
        }
        let page = self
            .table
            .query(
                Query::partition(super::keys::conv_pk(cid))
                    .sort(message_range(1, hi))
                    .backward()
                    .limit(limit as u32 + 1),
            )
            .await?;
        let mut messages = Vec::with_capacity(limit);
        let more = page.items.len() > limit;
        for item in page.items.into_iter().take(limit) {
            messages.push(from_item::<MessageRecord>(item)?.view());
        }
        let next_before = more.then(|| messages.last().map(|m| m.id)).flatten();
        Ok(History {
            messages,
            next_before,
        })
    }

    /// `read up to id` (HTTP and the socket's `read`): only moves forward;
    /// the other members' online devices are told.
    pub async fn mark_read(
        &self,
        caller: &str,
        cid: &str,
        message_id: &str,
    ) -> Result<ReadState, ChatError> {
        let id = parse_id("messageId", message_id)?;
        let meta = self.member_meta(caller, cid).await?;
        let message = self.message(cid, id).await?;
        let key = membership_key(caller, cid);
        let update = Update::new()
            .set("readUpTo", num(id))
            .set("readCount", num(message.number));
        let condition = Condition::Or(vec![
            Condition::AttrNotExists("readCount".into()),
            Condition::cmp(
                "readCount",
                crate::ports::table::CmpOp::Lt,
                num(message.number),
            ),
        ]);
        let moved = match self.table.update(&key, update, Some(condition)).await {
            Ok(_) => true,
            Err(TableError::ConditionFailed { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        let mirror: Mirror = match self.table.get(&key, Consistency::Strong).await? {
            Some(item) => from_item(item)?,
            None => Mirror::default(),
        };
        if moved {
            let job = Job::Read {
                conversation_id: cid.to_owned(),
                user_id: caller.to_owned(),
                message_id: id,
            };
            if let Err(e) = self.send_job(&job).await {
                tracing::warn!(error = %e, "the read marker is stored; its live notice was not queued");
            }
        }
        Ok(ReadState {
            conversation_id: cid.to_owned(),
            read_up_to: mirror.read_up_to,
            unread_count: meta.messages.saturating_sub(mirror.read_count),
        })
    }

    /// Delivery's watermark (for tests and the sweeper's report).
    pub async fn delivered_up_to(&self, cid: &str) -> Result<u64, ChatError> {
        Ok(self
            .table
            .get(&delivered_key(cid), Consistency::Strong)
            .await?
            .and_then(|i| get_i64(&i, "upTo"))
            .unwrap_or(0) as u64)
    }

    /// The users any of `user`'s conversations share with them (for
    /// presence pushes), with the conversations' ids.
    pub(super) async fn peers(&self, user: &str) -> Result<HashSet<String>, ChatError> {
        let mirrors = self.user_mirrors(user).await?;
        let mut peers = HashSet::new();
        for cid in mirrors.keys() {
            match self.member_list(cid, None).await {
                Ok(list) => {
                    if list.members.iter().any(|m| m.user_id == user) {
                        peers.extend(
                            list.members
                                .iter()
                                .filter(|m| m.user_id != user)
                                .map(|m| m.user_id.clone()),
                        );
                    }
                }
                Err(ChatError::ConversationNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(peers)
    }
}

fn last_message_id(meta: &Meta) -> Option<u64> {
    let m: Message = serde_json::from_str(meta.last_message.as_deref()?).ok()?;
    Some(m.id)
}

pub(super) fn members_attr(
    members: &[MemberEntry],
) -> Result<crate::ports::table::AttributeValue, ChatError> {
    serde_dynamo::to_attribute_value(members)
        .map_err(|e| ChatError::Store(format!("encoding members: {e}")))
}

/// The operations that put a conversation in a user's list (once: a repeat
/// fails its condition and changes nothing).
pub(super) fn mirror_join_ops(user: &str, cid: &str) -> Vec<TxOp> {
    vec![
        TxOp::Update {
            key: membership_key(user, cid),
            update: Update::new().set("member", crate::ports::table::AttributeValue::Bool(true)),
            condition: Some(Condition::Or(vec![
                Condition::AttrNotExists("member".into()),
                Condition::eq("member", crate::ports::table::AttributeValue::Bool(false)),
            ])),
        },
        TxOp::Update {
            key: user_count_key(user),
            update: Update::new().add("conversations", 1),
            condition: None,
        },
    ]
}

/// The operations that take a conversation out of a user's list.
pub(super) fn mirror_leave_ops(user: &str, cid: &str) -> Vec<TxOp> {
    vec![
        TxOp::Delete {
            key: membership_key(user, cid),
            condition: Some(Condition::eq(
                "member",
                crate::ports::table::AttributeValue::Bool(true),
            )),
        },
        TxOp::Update {
            key: user_count_key(user),
            update: Update::new().add("conversations", -1),
            condition: None,
        },
    ]
}

pub(super) fn change_of(
    cid: &str,
    meta: &Meta,
    change: &str,
    users: Vec<String>,
) -> ConversationChange {
    ConversationChange {
        id: cid.to_owned(),
        kind: meta.kind,
        name: meta.name.clone(),
        member_count: meta.members.len() as u64,
        change: change.to_owned(),
        users,
    }
}

fn summary(
    caller: &str,
    cid: &str,
    meta: &Meta,
    mine: &Mirror,
    members: Option<Vec<MemberView>>,
) -> Conversation {
    let peer_id = (meta.kind == Kind::Direct)
        .then(|| {
            meta.members
                .iter()
                .find(|m| m.user_id != caller)
                .map(|m| m.user_id.clone())
        })
        .flatten();
    Conversation {
        id: cid.to_owned(),
        kind: meta.kind,
        name: meta.name.clone(),
        created_by: meta.created_by.clone(),
        created_at: format_instant(meta.created_at_ms),
        member_count: meta.members.len() as u64,
        members,
        peer_id,
        last_message: meta
            .last_message
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        last_activity_at: format_instant(meta.last_activity_ms),
        unread_count: meta.messages.saturating_sub(mine.read_count),
        muted: meta.member(caller).is_some_and(|m| m.muted),
    }
}

fn parse_list_cursor(raw: &str) -> Result<(u64, String), ChatError> {
    let bad = || ChatError::invalid("invalid_cursor", "cursor is not one this API handed out");
    let (at, cid) = raw.split_once('.').ok_or_else(bad)?;
    let at = at.parse::<u64>().map_err(|_| bad())?;
    check_conversation_id(cid).map_err(|_| bad())?;
    Ok((at, cid.to_owned()))
}
