//! Each user's sync stream: every event of their conversations, in the
//! order it was appended, at positions that only grow. A device keeps the
//! highest position it has seen (its `cur_max_message_id`) and asks for
//! what is above it.
//!
//! An append is one transaction: a marker that this event is in the stream
//! (so a redelivered job never appends it twice), the stream's head moved
//! to the new position (conditional on the head it read, so positions are
//! handed out in commit order and no reader can pass over one still being
//! written), and the entry. The position is the event's own id when that is
//! above the head (the usual case: one conversation's events arrive in id
//! order), else the head plus one.

use super::ChatError;
use super::keys::{entry_range, stream_entry_key, stream_head_key, stream_pk, stream_seen_key};
use super::model::{
    ChatEvent, DEFAULT_SYNC, MAX_ID, MAX_SYNC, SyncEvent, SyncPage, SyncQuery, check_user,
    parse_limit,
};
use super::service::{ChatService, backoff};
use crate::ports::table::{
    CmpOp, Condition, Consistency, Query, TableError, TxOp, Update, get_i64, get_str, num, s,
};

const APPEND_RETRIES: u32 = 30;
/// How long the stream remembers which events it holds.
const SEEN_TTL_SECS: u64 = 30 * 86_400;

impl ChatService {
    /// Appends `event` (id `event_id`) to `user`'s stream once; answers its
    /// position there.
    pub(super) async fn append(
        &self,
        user: &str,
        event_id: u64,
        event: &ChatEvent,
    ) -> Result<u64, ChatError> {
        let payload =
            serde_json::to_string(event).map_err(|e| ChatError::Store(format!("event: {e}")))?;
        let ttl = self.now_ms() / 1000 + SEEN_TTL_SECS;
        // First try: the event's id as its position, above the head.
        let mut head: Option<u64> = None;
        for attempt in 0..APPEND_RETRIES {
            let (position, head_condition) = match head {
                None => (
                    event_id,
                    Condition::Or(vec![
                        Condition::AttrNotExists("head".into()),
                        Condition::cmp("head", CmpOp::Lt, num(event_id)),
                    ]),
                ),
                Some(h) if h < event_id => (event_id, Condition::eq("head", num(h))),
                Some(h) => (h + 1, Condition::eq("head", num(h))),
            };
            let head_condition = match head {
                Some(0) => Condition::Or(vec![
                    Condition::AttrNotExists("head".into()),
                    Condition::eq("head", num(0)),
                ]),
                _ => head_condition,
            };
            let mut seen = stream_seen_key(user, event_id).to_item();
            seen.insert("position".into(), num(position));
            seen.insert("ttl".into(), num(ttl));
            let mut entry = stream_entry_key(user, position).to_item();
            entry.insert("event".into(), s(&payload));
            entry.insert("eventId".into(), num(event_id));
            let ops = vec![
                TxOp::Put {
                    item: seen,
                    condition: Some(Condition::absent_or_expired(self.now_ms() / 1000)),
                },
                TxOp::Update {
                    key: stream_head_key(user),
                    update: Update::new().set("head", num(position)),
                    condition: Some(head_condition),
                },
                TxOp::Put {
                    item: entry,
                    condition: Some(Condition::NotExists),
                },
            ];
            match self.table.transact_write(ops).await {
                Ok(()) => return Ok(position),
                Err(TableError::TransactionCanceled { failed }) if failed.contains(&0) => {
                    let item = self
                        .table
                        .get(&stream_seen_key(user, event_id), Consistency::Strong)
                        .await?;
                    return Ok(item
                        .and_then(|i| get_i64(&i, "position"))
                        .unwrap_or_default() as u64);
                }
                Err(TableError::TransactionCanceled { .. }) | Err(TableError::Throttled) => {
                    if attempt > 0 {
                        backoff(attempt.min(4)).await;
                    }
                    let item = self
                        .table
                        .get(&stream_head_key(user), Consistency::Strong)
                        .await?;
                    head = Some(item.and_then(|i| get_i64(&i, "head")).unwrap_or_default() as u64);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChatError::Throttled)
    }

    /// `GET /api/v1/me/messages?since=&limit=` and the socket's `sync`:
    /// the caller's events above `since`, oldest first. `limited` says
    /// more follow: ask again from `nextSince`.
    pub async fn sync(&self, caller: &str, query: SyncQuery) -> Result<SyncPage, ChatError> {
        check_user(caller)?;
        let limit = parse_limit(query.limit.as_deref(), DEFAULT_SYNC, MAX_SYNC)?;
        let since = match query.since.as_deref() {
            None | Some("") => 0,
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|v| *v <= MAX_ID)
                .ok_or_else(|| {
                    ChatError::invalid("invalid_since", "since must be a position from 0 up")
                })?,
        };
        if since >= MAX_ID {
            return Ok(SyncPage {
                events: Vec::new(),
                next_since: since,
                limited: false,
            });
        }
        let page = self
            .table
            .query(
                Query::partition(stream_pk(caller))
                    .sort(entry_range(since + 1, MAX_ID))
                    .limit(limit as u32 + 1),
            )
            .await?;
        let limited = page.items.len() > limit;
        let mut events = Vec::with_capacity(limit.min(page.items.len()));
        for item in page.items.iter().take(limit) {
            let position = get_str(item, "sk")
                .and_then(|sk| sk.strip_prefix(super::keys::ENTRY_PREFIX))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| ChatError::Store("a stream entry without a position".into()))?;
            let event: ChatEvent = get_str(item, "event")
                .and_then(|e| serde_json::from_str(e).ok())
                .ok_or_else(|| ChatError::Store("a stream entry without its event".into()))?;
            events.push(SyncEvent { position, event });
        }
        let next_since = events.last().map_or(since, |e| e.position);
        Ok(SyncPage {
            events,
            next_since,
            limited,
        })
    }
}
