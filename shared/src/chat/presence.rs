//! Connections and presence. A user is online while one of their devices
//! holds a connection and heartbeats. Each user's presence item lists their
//! connections (so one batch read finds every member's sockets, never a
//! scan); each heartbeat also files the connection in the bucket of its
//! interval, and the sweeper reads only buckets two intervals old: a
//! connection found there whose last heartbeat is that old missed two, and
//! is removed (DynamoDB's TTL deletes days late, so it only collects
//! garbage). Status pushes go out only when the status changes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ChatError;
use super::deliver::Job;
use super::keys::{
    OUTBOX_SHARDS, bucket_key, bucket_pk, connection_key, membership_key, outbox_pk, presence_key,
    sweep_key,
};
use super::model::{Presence, PresenceStatus, check_user, from_item, with_key};
use super::service::{ChatService, backoff};
use crate::ports::table::{
    Condition, Consistency, Key, MAX_BATCH_GET, Query, TableError, Update, get_i64, get_str, num, s,
};
use crate::shortener::link::format_instant;

const PRESENCE_RETRIES: u32 = 20;
/// A connection item outlives API Gateway's 2-hour connection limit.
const CONNECTION_TTL_SECS: u64 = 3 * 3600;
/// Buckets the sweeper walks back on its first run.
const FIRST_SWEEP_BUCKETS: u64 = 120;

/// `presence#{user}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PresenceRecord {
    #[serde(default)]
    pub connections: Vec<String>,
    #[serde(default)]
    pub last_active_ms: u64,
    #[serde(default)]
    pub version: u64,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub buckets: u64,
    pub stale: usize,
    pub offline: usize,
    pub outbox: usize,
}

impl ChatService {
    fn bucket(&self, now_ms: u64) -> u64 {
        now_ms / (self.config.heartbeat.as_millis() as u64).max(1)
    }

    /// The user of a connection: the host may know it; else the
    /// connection's item (cached: it never changes).
    pub async fn connection_user(&self, connection_id: &str) -> Result<Option<String>, ChatError> {
        if let Some(user) = self.connection_users.get(connection_id) {
            return Ok(Some(user));
        }
        let item = self
            .presence_table
            .get(&connection_key(connection_id), Consistency::Strong)
            .await?;
        let user = item
            .as_ref()
            .and_then(|i| get_str(i, "userId"))
            .map(str::to_owned);
        if let Some(u) = &user {
            self.connection_users
                .insert(connection_id.to_owned(), u.clone());
        }
        Ok(user)
    }

    async fn presence_record(&self, user: &str) -> Result<Option<PresenceRecord>, ChatError> {
        match self
            .presence_table
            .get(&presence_key(user), Consistency::Strong)
            .await?
        {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    /// Changes a user's connection list; answers the record written and
    /// whether the status flipped.
    async fn change_connections(
        &self,
        user: &str,
        change: impl Fn(&mut Vec<String>),
    ) -> Result<(PresenceRecord, bool), ChatError> {
        for attempt in 0..PRESENCE_RETRIES {
            let current = self.presence_record(user).await?;
            let mut record = current.clone().unwrap_or_default();
            let was_online = !record.connections.is_empty();
            change(&mut record.connections);
            if current.is_some()
                && record.connections
                    == current
                        .as_ref()
                        .map(|c| c.connections.clone())
                        .unwrap_or_default()
            {
                return Ok((record, false));
            }
            record.version += 1;
            record.last_active_ms = self.now_ms();
            let condition = match &current {
                None => Condition::NotExists,
                Some(c) => Condition::eq("version", num(c.version)),
            };
            let item = with_key(&presence_key(user), &record)?;
            match self.presence_table.put(item, Some(condition)).await {
                Ok(()) => {
                    let online = !record.connections.is_empty();
                    let flipped = was_online != online;
                    return Ok((record, flipped));
                }
                Err(TableError::ConditionFailed { .. }) | Err(TableError::Throttled) => {
                    backoff(attempt.min(5)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChatError::Throttled)
    }

    async fn announce(&self, user: &str, record: &PresenceRecord) {
        let job = Job::Presence {
            user_id: user.to_owned(),
            online: !record.connections.is_empty(),
            last_active_ms: record.last_active_ms,
            version: record.version,
        };
        if let Err(e) = self.send_job(&job).await {
            tracing::warn!(error = %e, user, "a presence change was not announced");
        }
    }

    /// `$connect` once the token is verified: the connection is recorded,
    /// the user's presence lists it, a greeting is queued.
    pub async fn connect(&self, user: &str, connection_id: &str) -> Result<(), ChatError> {
        check_user(user)?;
        self.check_rate("@chat/connect", user).await?;
        let now = self.now_ms();
        let mut item = connection_key(connection_id).to_item();
        item.insert("userId".into(), s(user));
        item.insert("connectedAtMs".into(), num(now));
        item.insert("lastSeenMs".into(), num(now));
        item.insert("ttl".into(), num(now / 1000 + CONNECTION_TTL_SECS));
        self.presence_table.put(item, None).await?;
        self.file_heartbeat(user, connection_id, now).await?;
        self.connection_users
            .insert(connection_id.to_owned(), user.to_owned());
        let id = connection_id.to_owned();
        let (record, flipped) = self
            .change_connections(user, |c| {
                if !c.contains(&id) {
                    c.push(id.clone());
                }
            })
            .await?;
        let hello = Job::Hello {
            connection_id: connection_id.to_owned(),
            user_id: user.to_owned(),
        };
        if let Err(e) = self.send_job(&hello).await {
            tracing::warn!(error = %e, "the greeting was not queued");
        }
        if flipped {
            self.announce(user, &record).await;
        }
        Ok(())
    }

    async fn file_heartbeat(
        &self,
        user: &str,
        connection_id: &str,
        now: u64,
    ) -> Result<(), ChatError> {
        let mut item = bucket_key(self.bucket(now), connection_id).to_item();
        item.insert("userId".into(), s(user));
        item.insert("ttl".into(), num(now / 1000 + 86_400));
        self.presence_table.put(item, None).await?;
        Ok(())
    }

    /// `heartbeat`: the connection and the user are active now. A
    /// connection the sweeper already removed (its heartbeats were late)
    /// is recorded again.
    pub async fn heartbeat(&self, user: &str, connection_id: &str) -> Result<(), ChatError> {
        let now = self.now_ms();
        let seen = self
            .presence_table
            .update(
                &connection_key(connection_id),
                Update::new()
                    .set("lastSeenMs", num(now))
                    .set("ttl", num(now / 1000 + CONNECTION_TTL_SECS)),
                Some(Condition::Exists),
            )
            .await;
        match seen {
            Ok(_) => {}
            Err(TableError::ConditionFailed { .. }) => {
                return self.connect(user, connection_id).await;
            }
            Err(e) => return Err(e.into()),
        }
        self.file_heartbeat(user, connection_id, now).await?;
        self.presence_table
            .update(
                &presence_key(user),
                Update::new().set("lastActiveMs", num(now)),
                Some(Condition::Exists),
            )
            .await
            .or_else(|e| match e {
                TableError::ConditionFailed { .. } => Ok(Default::default()),
                e => Err(e),
            })?;
        Ok(())
    }

    /// `$disconnect` (best effort on AWS; the sweeper catches the rest).
    pub async fn disconnect(
        &self,
        user: Option<&str>,
        connection_id: &str,
    ) -> Result<(), ChatError> {
        let removed = self
            .presence_table
            .delete(&connection_key(connection_id), None)
            .await?;
        let user = match user {
            Some(u) => Some(u.to_owned()),
            None => removed
                .as_ref()
                .and_then(|i| get_str(i, "userId"))
                .map(str::to_owned),
        };
        self.connection_users.invalidate(connection_id);
        if let Some(user) = user {
            self.drop_from_presence(&user, connection_id).await?;
        }
        Ok(())
    }

    async fn drop_from_presence(&self, user: &str, connection_id: &str) -> Result<bool, ChatError> {
        let id = connection_id.to_owned();
        let (record, flipped) = self
            .change_connections(user, |c| c.retain(|x| *x != id))
            .await?;
        if flipped {
            self.announce(user, &record).await;
        }
        Ok(flipped)
    }

    /// A connection the service was told is gone: removed, exactly it.
    pub(super) async fn drop_connection(
        &self,
        user: &str,
        connection_id: &str,
    ) -> Result<(), ChatError> {
        self.presence_table
            .delete(&connection_key(connection_id), None)
            .await?;
        self.connection_users.invalidate(connection_id);
        self.drop_from_presence(user, connection_id).await?;
        Ok(())
    }

    /// Every connection of `users` (who have any), one batch read per 100.
    pub(super) async fn connections_of(
        &self,
        users: &[String],
    ) -> Result<HashMap<String, Vec<String>>, ChatError> {
        let mut out = HashMap::new();
        let keys: Vec<Key> = users.iter().map(|u| presence_key(u)).collect();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            for item in self.presence_table.batch_get(chunk).await? {
                let Ok(key) = Key::of_item(&item) else {
                    continue;
                };
                let user = key.pk.trim_start_matches("presence#").to_owned();
                let record: PresenceRecord = from_item(item)?;
                if !record.connections.is_empty() {
                    out.insert(user, record.connections);
                }
            }
        }
        Ok(out)
    }

    /// `GET /api/v1/users/{id}/presence`: for the user and the people who
    /// share a conversation with them. The status is computed from the
    /// last activity, so a sweep running late never shows a gone device.
    pub async fn presence(&self, caller: &str, user: &str) -> Result<Presence, ChatError> {
        check_user(caller)?;
        check_user(user)?;
        if caller != user && !self.share_a_conversation(caller, user).await? {
            return Err(ChatError::PresenceNotVisible);
        }
        let record = self.presence_record(user).await?;
        let now = self.now_ms();
        let window = self.config.heartbeat.as_millis() as u64 * 3;
        let status = match &record {
            Some(r)
                if !r.connections.is_empty() && now.saturating_sub(r.last_active_ms) <= window =>
            {
                PresenceStatus::Online
            }
            _ => PresenceStatus::Offline,
        };
        Ok(Presence {
            user_id: user.to_owned(),
            status,
            last_active_at: record
                .filter(|r| r.last_active_ms > 0)
                .map(|r| format_instant(r.last_active_ms)),
        })
    }

    async fn share_a_conversation(&self, a: &str, b: &str) -> Result<bool, ChatError> {
        let mine = self.user_mirrors(a).await?;
        let keys: Vec<Key> = mine.keys().map(|cid| membership_key(b, cid)).collect();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            for item in self.table.batch_get(chunk).await? {
                if item
                    .get("member")
                    .is_some_and(|v| matches!(v, crate::ports::table::AttributeValue::Bool(true)))
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// `typing`: to the other members' online devices, never stored. The
    /// membership is read fresh (a member removed through another instance
    /// is refused at once).
    pub async fn typing(&self, user: &str, cid: &str) -> Result<usize, ChatError> {
        let meta = self.member_meta(user, cid).await?;
        self.check_rate("@chat/typing", user).await?;
        let others: Vec<String> = meta
            .members
            .iter()
            .filter(|m| m.user_id != user)
            .map(|m| m.user_id.clone())
            .collect();
        let frame = serde_json::json!({"type": "typing", "conversationId": cid, "userId": user})
            .to_string();
        let (posted, _, _) = self.post_to_users(&others, |_| Some(frame.clone())).await?;
        Ok(posted)
    }

    /// The periodic sweep: outbox items the publish could not queue, then
    /// connections that missed two heartbeats.
    pub async fn sweep(&self) -> Result<Swept, ChatError> {
        let mut swept = Swept {
            outbox: self.sweep_outbox().await?,
            ..Swept::default()
        };
        let now = self.now_ms();
        let interval = self.config.heartbeat.as_millis() as u64;
        // A connection filed in bucket b heartbeated during it; if its last
        // heartbeat is still that old two intervals after b ended, it missed two.
        let last = self.bucket(now).saturating_sub(3);
        let watermark = self
            .presence_table
            .get(&sweep_key(), Consistency::Strong)
            .await?
            .and_then(|i| get_i64(&i, "bucket"))
            .map(|b| b as u64)
            .unwrap_or_else(|| last.saturating_sub(FIRST_SWEEP_BUCKETS));
        let mut bucket = watermark + 1;
        while bucket <= last {
            let (stale, offline) = self.sweep_bucket(bucket, now, interval).await?;
            swept.stale += stale;
            swept.offline += offline;
            swept.buckets += 1;
            self.presence_table
                .put(
                    {
                        let mut item = sweep_key().to_item();
                        item.insert("bucket".into(), num(bucket));
                        item
                    },
                    None,
                )
                .await?;
            bucket += 1;
        }
        Ok(swept)
    }

    async fn sweep_bucket(
        &self,
        bucket: u64,
        now: u64,
        interval: u64,
    ) -> Result<(usize, usize), ChatError> {
        let (mut stale, mut offline) = (0, 0);
        let mut cursor = None;
        loop {
            let page = self
                .presence_table
                .query(Query::partition(bucket_pk(bucket)).after(cursor))
                .await?;
            let keys: Vec<Key> = page
                .items
                .iter()
                .filter_map(|i| get_str(i, "sk"))
                .map(connection_key)
                .collect();
            for chunk in keys.chunks(MAX_BATCH_GET) {
                for item in self.presence_table.batch_get(chunk).await? {
                    let seen = get_i64(&item, "lastSeenMs").unwrap_or(0) as u64;
                    if now.saturating_sub(seen) <= 2 * interval {
                        continue;
                    }
                    let (Some(user), Ok(key)) = (get_str(&item, "userId"), Key::of_item(&item))
                    else {
                        continue;
                    };
                    let connection = key.pk.trim_start_matches("conn#").to_owned();
                    // Only if no heartbeat landed meanwhile.
                    match self
                        .presence_table
                        .delete(&key, Some(Condition::eq("lastSeenMs", num(seen))))
                        .await
                    {
                        Ok(_) => {}
                        Err(TableError::ConditionFailed { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                    stale += 1;
                    self.connection_users.invalidate(&connection);
                    if self.drop_from_presence(user, &connection).await? {
                        offline += 1;
                    }
                    if let Err(e) = self.connections.close(&connection).await {
                        tracing::warn!(error = %e, connection, "a stale connection could not be closed");
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok((stale, offline)),
            }
        }
    }

    /// Resends delivery jobs whose commit could not queue them.
    pub async fn sweep_outbox(&self) -> Result<usize, ChatError> {
        let now = self.now_ms();
        let grace = self.config.outbox_grace.as_millis() as u64;
        let mut sent = 0;
        for shard in 0..OUTBOX_SHARDS {
            let page = self
                .table
                .query(Query::partition(outbox_pk(shard)).limit(100))
                .await?;
            for item in page.items {
                let created = get_i64(&item, "createdAtMs").unwrap_or(0) as u64;
                if now.saturating_sub(created) < grace {
                    continue;
                }
                let (Some(body), Ok(key)) = (get_str(&item, "job"), Key::of_item(&item)) else {
                    continue;
                };
                let job = Job::parse(body)?;
                self.send_job(&job).await?;
                self.table.delete(&key, None).await?;
                sent += 1;
            }
        }
        Ok(sent)
    }
}
