//! The URL shortener: create links (generated codes or aliases), redirect with
//! a read-through cache, owner edits and deletes with CDN invalidation, click
//! analytics through a queue.

pub mod cache;
pub mod clicks;
pub mod code;
mod error;
pub mod link;
pub mod qr;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub use cache::{CachedLink, LinkCache};
pub use clicks::{ClickAggregator, ClickEvent, ClickSink, click_queue};
pub use code::{CodePermutation, ShortCode};
pub use error::ShortenerError;
pub use link::{Link, LinkStats, RedirectKind};

use crate::ports::table::{
    Condition, Consistency, Cursor, Key, Query, SortKey, Table, TableError, TxOp, Update, get_i64,
    get_str, num, s,
};
use crate::ports::{Clock, Queue};
use link::{INDEX_SK, UrlPolicy, format_instant, index_pk, link_key, parse_instant};

/// Largest `maxVisits`.
pub const MAX_VISITS: u64 = 1_000_000_000;
/// Links per batch request.
pub const MAX_BATCH: usize = 100;

/// The shortener's settings, read once at start (DESIGN rule 7).
#[derive(Debug, Clone)]
pub struct ShortenerConfig {
    /// `SHORT_BASE_URL`: the short domain, e.g. `https://hnl.example`.
    pub base_url: Url,
    /// `SHORTENER_LOOP_HOSTS`: other hosts that serve the redirects
    /// (comma-separated), refused as long URLs like the short domain.
    pub extra_loop_hosts: Option<String>,
    /// `SHORTENER_CODE_KEY`: the permutation key (at least 32 characters);
    /// only the functions that create links have it.
    pub code_key: Option<Vec<u8>>,
    /// `SHORTENER_CODE_BLOCK`: numbers an instance takes from the counter at once.
    pub code_block: u64,
    /// `SHORTENER_MAX_URL_LENGTH`.
    pub max_url_length: usize,
    /// `SHORTENER_CACHE_CAPACITY`: entries in the redirect cache.
    pub cache_capacity: u64,
    /// `SHORTENER_CACHE_TTL_SECONDS`: how long a found link is cached.
    pub cache_ttl: Duration,
    /// `SHORTENER_NEGATIVE_CACHE_TTL_SECONDS`: how long an unknown code is.
    pub negative_ttl: Duration,
    /// `SHORTENER_REDIRECT_MAX_AGE_SECONDS`: `max-age` of a 301.
    pub redirect_max_age: u64,
    /// `SHORTENER_DELETE_CONFIRM_VISITS`: deleting a link with more visits
    /// needs `?force=true`.
    pub delete_threshold: u64,
}

impl ShortenerConfig {
    /// Reads the settings through `get` (the environment, or the host's
    /// defaults behind it).
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let base = get("SHORT_BASE_URL")
            .ok_or("SHORT_BASE_URL is not set: it is the short domain, e.g. https://hnl.example")?;
        let base_url = Url::parse(base.trim())
            .map_err(|e| format!("SHORT_BASE_URL {base:?} is not a URL: {e}"))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
            return Err(format!(
                "SHORT_BASE_URL {base:?} must be an http(s) URL with a host"
            ));
        }
        let code_key = get("SHORTENER_CODE_KEY");
        if code_key.as_ref().is_some_and(|k| k.trim().len() < 32) {
            return Err("SHORTENER_CODE_KEY must be at least 32 characters".into());
        }
        let number = |name: &str, default: u64, min: u64, max: u64| {
            crate::settings::bounded(&get, name, default, min, max, "a whole number")
        };
        Ok(Self {
            base_url,
            extra_loop_hosts: get("SHORTENER_LOOP_HOSTS"),
            code_key: code_key.map(|k| k.trim().as_bytes().to_vec()),
            code_block: number("SHORTENER_CODE_BLOCK", 1000, 1, 1_000_000)?,
            max_url_length: number("SHORTENER_MAX_URL_LENGTH", 2048, 64, 32_768)? as usize,
            cache_capacity: number("SHORTENER_CACHE_CAPACITY", 100_000, 0, 100_000_000)?,
            cache_ttl: Duration::from_secs(number("SHORTENER_CACHE_TTL_SECONDS", 60, 0, 86_400)?),
            negative_ttl: Duration::from_secs(number(
                "SHORTENER_NEGATIVE_CACHE_TTL_SECONDS",
                5,
                0,
                3600,
            )?),
            redirect_max_age: number("SHORTENER_REDIRECT_MAX_AGE_SECONDS", 3600, 0, 31_536_000)?,
            delete_threshold: number("SHORTENER_DELETE_CONFIRM_VISITS", 1000, 0, u64::MAX)?,
        })
    }

    /// The short URL of a code.
    pub fn short_url(&self, code: &ShortCode) -> String {
        format!("{}/{code}", self.base_url.as_str().trim_end_matches('/'))
    }

    fn loop_hosts(&self) -> Vec<String> {
        link::loop_hosts(
            self.base_url.host_str().unwrap_or_default(),
            self.extra_loop_hosts.as_deref(),
        )
    }
}

/// A create request, as users send it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateLink {
    pub long_url: String,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub max_visits: Option<u64>,
    #[serde(default)]
    pub redirect: Option<RedirectKind>,
}

fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An owner's edit; `null` clears `expiresAt` or `maxVisits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchLink {
    #[serde(default)]
    pub long_url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_visits: Option<Option<u64>>,
    #[serde(default)]
    pub redirect: Option<RedirectKind>,
}

/// The outcome of a create: a new link, or the caller's existing link for the
/// same URL.
#[derive(Debug, Clone)]
pub struct Created {
    pub link: Link,
    pub created: bool,
}

/// What a redirect answers.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub location: String,
    pub kind: RedirectKind,
    pub cache_control: String,
    pub link_id: String,
    pub code: ShortCode,
}

/// What became of the CDN invalidation after an edit or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CdnOutcome {
    /// On the invalidation queue; the worker retries it until the CDN takes it.
    Queued,
    /// Not even queued: the edge keeps its copy until its `max-age` runs out.
    Failed,
}

/// Hands out numbers for codes: blocks of `block` from one atomic counter
/// item, so the table sees one write per block, not per link.
struct CodeAllocator {
    table: Arc<dyn Table>,
    block: u64,
    next: tokio::sync::Mutex<(u64, u64)>,
}

fn counter_key() -> Key {
    Key::new("counter#codes", "counter")
}

impl CodeAllocator {
    async fn next(&self) -> Result<u64, ShortenerError> {
        let mut range = self.next.lock().await;
        if range.0 >= range.1 {
            let item = self
                .table
                .update(
                    &counter_key(),
                    Update::new().add("next", self.block as i64),
                    None,
                )
                .await?;
            let end = get_i64(&item, "next")
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| ShortenerError::Store("the code counter is not a number".into()))?;
            *range = (end.saturating_sub(self.block), end);
        }
        let n = range.0;
        range.0 += 1;
        Ok(n)
    }
}

pub struct ShortenerService {
    table: Arc<dyn Table>,
    clock: Arc<dyn Clock>,
    config: ShortenerConfig,
    policy: UrlPolicy,
    permutation: Option<CodePermutation>,
    allocator: CodeAllocator,
    cache: LinkCache,
}

impl std::fmt::Debug for ShortenerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShortenerService")
            .field("table", &self.table.name())
            .field("config", &self.config.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Attempts before giving up on codes that aliases already took (each one
/// needs a user to have picked exactly that 7-character alias).
const CODE_ATTEMPTS: usize = 8;

impl ShortenerService {
    pub fn new(table: Arc<dyn Table>, clock: Arc<dyn Clock>, config: ShortenerConfig) -> Self {
        let policy = UrlPolicy {
            max_length: config.max_url_length,
            loop_hosts: config.loop_hosts(),
        };
        Self {
            permutation: config.code_key.as_deref().map(CodePermutation::new),
            allocator: CodeAllocator {
                table: table.clone(),
                block: config.code_block,
                next: tokio::sync::Mutex::new((0, 0)),
            },
            cache: LinkCache::new(config.cache_capacity, config.cache_ttl, config.negative_ttl),
            table,
            clock,
            policy,
            config,
        }
    }

    /// Whether this instance has the code key, which creating links needs.
    pub fn can_create(&self) -> bool {
        self.permutation.is_some()
    }

    pub fn config(&self) -> &ShortenerConfig {
        &self.config
    }

    pub fn cache(&self) -> &LinkCache {
        &self.cache
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn future_instant(&self, raw: &str) -> Result<u64, ShortenerError> {
        let at = parse_instant("expiresAt", raw)?;
        if at <= self.clock.now_ms() {
            return Err(ShortenerError::Invalid(
                "invalid_expires_at",
                "expiresAt must be in the future".into(),
            ));
        }
        Ok(at)
    }

    fn check_redirect(kind: RedirectKind, max_visits: Option<u64>) -> Result<(), ShortenerError> {
        if kind == RedirectKind::Permanent && max_visits.is_some() {
            return Err(ShortenerError::Invalid(
                "invalid_redirect",
                "a 301 is cached by browsers, so maxVisits cannot be enforced: use redirect 302"
                    .into(),
            ));
        }
        Ok(())
    }

    fn check_max_visits(max_visits: Option<u64>) -> Result<(), ShortenerError> {
        if max_visits.is_some_and(|m| m == 0 || m > MAX_VISITS) {
            return Err(ShortenerError::Invalid(
                "invalid_max_visits",
                format!("maxVisits must be from 1 to {MAX_VISITS}"),
            ));
        }
        Ok(())
    }

    /// Creates a link, or finds the caller's existing plain link for the same
    /// URL. Every check runs before anything is written.
    pub async fn create(
        &self,
        request: CreateLink,
        owner: Option<&str>,
    ) -> Result<Created, ShortenerError> {
        let long_url = self.policy.normalize(&request.long_url)?;
        let alias = request
            .alias
            .as_deref()
            .map(code::validate_alias)
            .transpose()?;
        let expires_at_ms = request
            .expires_at
            .as_deref()
            .map(|e| self.future_instant(e))
            .transpose()?;
        Self::check_max_visits(request.max_visits)?;
        let redirect = request.redirect.unwrap_or(if request.max_visits.is_some() {
            RedirectKind::Temporary
        } else {
            RedirectKind::Permanent
        });
        Self::check_redirect(redirect, request.max_visits)?;

        let plain = alias.is_none() && expires_at_ms.is_none() && request.max_visits.is_none();
        let mut link = Link {
            code: ShortCode::from_trusted(String::new()),
            link_id: uuid::Uuid::new_v4().simple().to_string(),
            long_url,
            redirect,
            owner: owner.map(str::to_owned),
            created_at_ms: self.clock.now_ms(),
            expires_at_ms,
            max_visits: request.max_visits,
            visits: 0,
            index_pk: None,
        };
        if let Some(alias) = alias {
            link.code = alias;
            let now = self.clock.now_secs();
            self.put_owned_entry(&link).await?;
            return match self
                .table
                .put(link.to_item(), Some(Condition::absent_or_expired(now)))
                .await
            {
                Ok(()) => Ok(Created {
                    link,
                    created: true,
                }),
                Err(TableError::ConditionFailed { .. }) => {
                    self.drop_owned_entry(&link).await;
                    Err(ShortenerError::AliasTaken(link.code.to_string()))
                }
                Err(e) => Err(e.into()),
            };
        }
        if plain {
            link.index_pk = Some(index_pk(owner, &link.long_url, redirect));
        }
        let permutation = self.permutation.as_ref().ok_or_else(|| {
            ShortenerError::Store("SHORTENER_CODE_KEY is not set in this function".into())
        })?;
        for _ in 0..CODE_ATTEMPTS {
            link.code = permutation.code(self.allocator.next().await?);
            self.put_owned_entry(&link).await?;
            let written = self.write_new(&link).await;
            if written.is_err() {
                self.drop_owned_entry(&link).await;
            }
            match written {
                Ok(()) => {
                    return Ok(Created {
                        link,
                        created: true,
                    });
                }
                Err(WriteNew::Existing(existing)) => {
                    return Ok(Created {
                        link: existing,
                        created: false,
                    });
                }
                Err(WriteNew::CodeTaken) => {
                    tracing::warn!(code = %link.code, "an alias holds a generated code; skipping it");
                }
                Err(WriteNew::Failed(e)) => return Err(e),
            }
        }
        Err(ShortenerError::Store(
            "could not find a free code; the counter may be misconfigured".into(),
        ))
    }

    /// One write: a plain link and its index item in one transaction, any
    /// other link with a conditional put.
    async fn write_new(&self, link: &Link) -> Result<(), WriteNew> {
        let Some(ipk) = &link.index_pk else {
            return match self
                .table
                .put(link.to_item(), Some(Condition::NotExists))
                .await
            {
                Ok(()) => Ok(()),
                Err(TableError::ConditionFailed { .. }) => Err(WriteNew::CodeTaken),
                Err(e) => Err(WriteNew::Failed(e.into())),
            };
        };
        let mut index = Key::new(ipk.clone(), INDEX_SK).to_item();
        index.insert("code".into(), s(link.code.as_str()));
        let ops = vec![
            TxOp::Put {
                item: link.to_item(),
                condition: Some(Condition::NotExists),
            },
            TxOp::Put {
                item: index,
                condition: Some(Condition::NotExists),
            },
        ];
        match self.table.transact_write(ops).await {
            Ok(()) => Ok(()),
            Err(TableError::TransactionCanceled { failed }) if failed.contains(&1) => {
                match self.existing(ipk).await {
                    Ok(Some(existing)) => Err(WriteNew::Existing(existing)),
                    // The index outlived its link (cannot happen through the
                    // API, which removes both together): a fresh code.
                    Ok(None) => Err(WriteNew::CodeTaken),
                    Err(e) => Err(WriteNew::Failed(e)),
                }
            }
            Err(TableError::TransactionCanceled { .. }) => Err(WriteNew::CodeTaken),
            Err(e) => Err(WriteNew::Failed(e.into())),
        }
    }

    /// The owner's list entry goes in before the link: a crash in between
    /// leaves an entry naming a link id that never was, which the list
    /// skips and removes, never a link missing from its owner's list.
    async fn put_owned_entry(&self, link: &Link) -> Result<(), ShortenerError> {
        if let Some(item) = link.owned_item() {
            self.table.put(item, None).await?;
        }
        Ok(())
    }

    /// Removes the entry of a link that was not written (or is deleted);
    /// best effort, as the list drops entries whose link is gone.
    async fn drop_owned_entry(&self, link: &Link) {
        let Some(key) = link.owned_key() else {
            return;
        };
        let still = Condition::eq("linkId", s(&link.link_id));
        match self.table.delete(&key, Some(still)).await {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "a link list entry was not removed"),
        }
    }

    /// The link an index item points to; a dangling index item is removed.
    async fn existing(&self, ipk: &str) -> Result<Option<Link>, ShortenerError> {
        let index_key = Key::new(ipk, INDEX_SK);
        let Some(index) = self.table.get(&index_key, Consistency::Strong).await? else {
            return Ok(None);
        };
        let Some(code) = get_str(&index, "code").and_then(ShortCode::parse) else {
            return Ok(None);
        };
        match self
            .table
            .get(&link_key(&code), Consistency::Strong)
            .await?
        {
            Some(item) => Ok(Some(Link::from_item(&item)?)),
            None => {
                let still = Condition::eq("code", s(code.as_str()));
                match self.table.delete(&index_key, Some(still)).await {
                    Ok(_) | Err(TableError::ConditionFailed { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// The link behind a code, through the cache.
    async fn lookup(&self, code: &ShortCode) -> Result<CachedLink, ShortenerError> {
        if let Some(hit) = self.cache.get(code.as_str()) {
            return Ok(hit);
        }
        let entry = match self
            .table
            .get(&link_key(code), Consistency::Eventual)
            .await?
        {
            Some(item) => CachedLink::Found(Arc::new(Link::from_item(&item)?)),
            None => CachedLink::Missing,
        };
        self.cache.insert(code.as_str(), entry.clone());
        Ok(entry)
    }

    /// Resolves a code for a redirect. With `visit`, a link with `maxVisits`
    /// spends one visit (an atomic conditional add); a HEAD does not.
    pub async fn resolve(&self, raw: &str, visit: bool) -> Result<Redirect, ShortenerError> {
        let code = ShortCode::parse(raw).ok_or(ShortenerError::NotFound)?;
        let mut link = match self.lookup(&code).await? {
            CachedLink::Found(link) => link,
            CachedLink::Missing => return Err(ShortenerError::NotFound),
            CachedLink::Exhausted => return Err(ShortenerError::Exhausted),
        };
        let now = self.clock.now_ms();
        if link.is_expired(now) {
            return Err(ShortenerError::Expired);
        }
        if link.max_visits.is_some() {
            if visit {
                link = Arc::new(self.spend_visit(&link).await?);
            } else if link.is_exhausted() {
                return Err(ShortenerError::Exhausted);
            }
        }
        let cache_control = match link.redirect {
            RedirectKind::Temporary => "private, no-store".to_owned(),
            RedirectKind::Permanent => {
                let until_expiry = link
                    .expires_at_ms
                    .map(|e| e.saturating_sub(now) / 1000)
                    .unwrap_or(u64::MAX);
                format!(
                    "public, max-age={}",
                    self.config.redirect_max_age.min(until_expiry)
                )
            }
        };
        Ok(Redirect {
            location: link.long_url.clone(),
            kind: link.redirect,
            cache_control,
            link_id: link.link_id.clone(),
            code,
        })
    }

    /// `visits + 1` if below `maxVisits`, on this very link (not a newer one
    /// under the same alias) and under the cap this instance knows (not one
    /// an edit has changed since it was cached).
    async fn spend_visit(&self, link: &Link) -> Result<Link, ShortenerError> {
        let max = link.max_visits.unwrap_or(u64::MAX);
        let condition = Condition::Exists
            .and(Condition::eq("linkId", s(&link.link_id)))
            .and(Condition::eq("maxVisits", num(max)))
            .and(Condition::cmp(
                "visits",
                crate::ports::table::CmpOp::Lt,
                num(max),
            ));
        match self
            .table
            .update(&link.key(), Update::new().add("visits", 1), Some(condition))
            .await
        {
            Ok(item) => Ok(Link::from_item(&item)?),
            Err(TableError::ConditionFailed { current }) => {
                let code = link.code.as_str();
                match current.map(|item| Link::from_item(&item)).transpose()? {
                    None => {
                        self.cache.insert(code, CachedLink::Missing);
                        Err(ShortenerError::NotFound)
                    }
                    Some(now)
                        if now.link_id == link.link_id && now.max_visits == link.max_visits =>
                    {
                        self.cache.insert(code, CachedLink::Exhausted);
                        Err(ShortenerError::Exhausted)
                    }
                    Some(edited) if edited.link_id == link.link_id => {
                        // An edit changed or removed the cap: go by the new one.
                        let edited = Arc::new(edited);
                        self.cache.insert(code, CachedLink::Found(edited.clone()));
                        match edited.max_visits {
                            Some(_) => Box::pin(self.spend_visit(&edited)).await,
                            None => Ok(Arc::unwrap_or_clone(edited)),
                        }
                    }
                    Some(newer) => {
                        // The alias was deleted and taken again since we cached it.
                        self.cache.invalidate(code);
                        if newer.max_visits.is_some() {
                            Box::pin(self.spend_visit(&newer)).await
                        } else {
                            Ok(newer)
                        }
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The caller's own link; anyone else's is "not found".
    async fn owned(&self, raw: &str, caller: &str) -> Result<Link, ShortenerError> {
        let code = ShortCode::parse(raw).ok_or(ShortenerError::NotFound)?;
        let item = self
            .table
            .get(&link_key(&code), Consistency::Strong)
            .await?
            .ok_or(ShortenerError::NotFound)?;
        let link = Link::from_item(&item)?;
        if link.owner.as_deref() != Some(caller) {
            return Err(ShortenerError::NotFound);
        }
        Ok(link)
    }

    /// A link of the caller's and its statistics.
    pub async fn details(
        &self,
        raw: &str,
        caller: &str,
    ) -> Result<(Link, LinkStats), ShortenerError> {
        let link = self.owned(raw, caller).await?;
        let mut stats = LinkStats {
            visits: link.visits,
            ..LinkStats::default()
        };
        let mut cursor = None;
        // Ten pages of counters: years of days and thousands of referrers.
        for _ in 0..10 {
            let page = self
                .table
                .query(
                    Query::partition(clicks::stats_pk(&link.link_id))
                        .limit(1000)
                        .after(cursor),
                )
                .await?;
            clicks::fold_stats(&page.items, &mut stats);
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        Ok((link, stats))
    }

    /// Applies an owner's edit. The link leaves the dedupe index (it is no
    /// longer what its index item says) and the edge is purged.
    pub async fn update(
        &self,
        raw: &str,
        caller: &str,
        patch: PatchLink,
        purges: &dyn Queue,
    ) -> Result<(Link, CdnOutcome), ShortenerError> {
        if patch.long_url.is_none()
            && patch.expires_at.is_none()
            && patch.max_visits.is_none()
            && patch.redirect.is_none()
        {
            return Err(ShortenerError::Invalid(
                "invalid_request",
                "nothing to change: send longUrl, expiresAt, maxVisits or redirect".into(),
            ));
        }
        let long_url = patch
            .long_url
            .as_deref()
            .map(|u| self.policy.normalize(u))
            .transpose()?;
        let expires_at = match &patch.expires_at {
            Some(Some(raw)) => Some(Some(self.future_instant(raw)?)),
            Some(None) => Some(None),
            None => None,
        };
        if let Some(Some(m)) = patch.max_visits {
            Self::check_max_visits(Some(m))?;
        }
        let current = self.owned(raw, caller).await?;
        let mut next = current.clone();
        if let Some(u) = long_url {
            next.long_url = u;
        }
        if let Some(e) = expires_at {
            next.expires_at_ms = e;
        }
        if let Some(m) = patch.max_visits {
            next.max_visits = m;
        }
        if let Some(r) = patch.redirect {
            next.redirect = r;
        }
        Self::check_redirect(next.redirect, next.max_visits)?;
        next.index_pk = None;

        let mut update = Update::new()
            .set("longUrl", s(&next.long_url))
            .set("redirect", num(next.redirect.status()))
            .remove("indexPk");
        update = match next.expires_at_ms {
            Some(e) => update
                .set("expiresAt", num(e))
                .set("ttl", num(e / 1000 + link::EXPIRED_RETENTION_SECS)),
            None => update.remove("expiresAt").remove("ttl"),
        };
        update = match next.max_visits {
            Some(m) => update.set("maxVisits", num(m)),
            None => update.remove("maxVisits"),
        };
        let mine =
            Condition::eq("owner", s(caller)).and(Condition::eq("linkId", s(&current.link_id)));
        let written = match &current.index_pk {
            Some(ipk) => {
                self.table
                    .transact_write(vec![
                        TxOp::Update {
                            key: current.key(),
                            update,
                            condition: Some(mine),
                        },
                        TxOp::Delete {
                            key: Key::new(ipk.clone(), INDEX_SK),
                            condition: Some(Condition::Or(vec![
                                Condition::NotExists,
                                Condition::eq("code", s(current.code.as_str())),
                            ])),
                        },
                    ])
                    .await
            }
            None => self
                .table
                .update(&current.key(), update, Some(mine))
                .await
                .map(|_| ()),
        };
        match written {
            Ok(()) => {}
            Err(TableError::ConditionFailed { .. } | TableError::TransactionCanceled { .. }) => {
                return Err(ShortenerError::NotFound);
            }
            Err(e) => return Err(e.into()),
        }
        let outcome = self.purge(&next.code, purges).await;
        Ok((next, outcome))
    }

    /// Deletes an owner's link, its index item and its counters.
    pub async fn delete(
        &self,
        raw: &str,
        caller: &str,
        force: bool,
        purges: &dyn Queue,
    ) -> Result<CdnOutcome, ShortenerError> {
        let link = self.owned(raw, caller).await?;
        let total = self
            .table
            .get(
                &Key::new(clicks::stats_pk(&link.link_id), "total"),
                Consistency::Strong,
            )
            .await?
            .and_then(|item| get_i64(&item, "clicks"))
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0);
        let visits = total.max(link.visits);
        if visits > self.config.delete_threshold && !force {
            return Err(ShortenerError::ConfirmationRequired {
                visits,
                threshold: self.config.delete_threshold,
            });
        }
        let mine = Condition::eq("owner", s(caller)).and(Condition::eq("linkId", s(&link.link_id)));
        let deleted = match &link.index_pk {
            Some(ipk) => {
                self.table
                    .transact_write(vec![
                        TxOp::Delete {
                            key: link.key(),
                            condition: Some(mine),
                        },
                        TxOp::Delete {
                            key: Key::new(ipk.clone(), INDEX_SK),
                            condition: Some(Condition::Or(vec![
                                Condition::NotExists,
                                Condition::eq("code", s(link.code.as_str())),
                            ])),
                        },
                    ])
                    .await
            }
            None => self.table.delete(&link.key(), Some(mine)).await.map(|_| ()),
        };
        match deleted {
            Ok(()) => {}
            Err(TableError::ConditionFailed { .. } | TableError::TransactionCanceled { .. }) => {
                return Err(ShortenerError::NotFound);
            }
            Err(e) => return Err(e.into()),
        }
        self.cache.insert(link.code.as_str(), CachedLink::Missing);
        self.drop_owned_entry(&link).await;
        self.drop_stats(&link.link_id).await;
        Ok(self.purge(&link.code, purges).await)
    }

    /// Removes a deleted link's counters. Best effort: they are keyed by the
    /// link's own id, so leftovers are never read again.
    async fn drop_stats(&self, link_id: &str) {
        let mut cursor = None;
        loop {
            let page = match self
                .table
                .query(
                    Query::partition(clicks::stats_pk(link_id))
                        .sort(SortKey::All)
                        .limit(100)
                        .after(cursor),
                )
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, link_id, "could not list the counters of a deleted link");
                    return;
                }
            };
            for item in &page.items {
                if let Ok(key) = Key::of_item(item)
                    && let Err(e) = self.table.delete(&key, None).await
                {
                    tracing::warn!(error = %e, link_id, "could not delete a counter of a deleted link");
                }
            }
            cursor = page.next;
            if cursor.is_none() {
                return;
            }
        }
    }

    /// Drops the code from this instance's cache and queues the edge
    /// invalidation of its redirect paths (a QR code encodes only the short
    /// URL, so it never needs one). If even the queue fails, the edge stays
    /// stale for at most `SHORTENER_REDIRECT_MAX_AGE_SECONDS`.
    async fn purge(&self, code: &ShortCode, purges: &dyn Queue) -> CdnOutcome {
        self.cache.invalidate(code.as_str());
        let paths = vec![format!("/{code}"), format!("/api/v1/{code}")];
        match crate::cdn::request_invalidation(purges, paths).await {
            Ok(()) => CdnOutcome::Queued,
            Err(e) => {
                tracing::error!(error = %e, %code, "could not queue the CDN invalidation");
                CdnOutcome::Failed
            }
        }
    }

    /// `GET /api/v1/me/urls`: the caller's links, newest first, each with
    /// its click total. One query and one batch read per page.
    pub async fn list_owned(
        &self,
        caller: &str,
        query: OwnedQuery,
    ) -> Result<OwnedPage, ShortenerError> {
        let limit = match query.limit.as_deref() {
            None => DEFAULT_OWNED_PAGE,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_OWNED_PAGE).contains(n))
                .ok_or_else(|| {
                    ShortenerError::Invalid(
                        "invalid_limit",
                        format!("limit must be 1 to {MAX_OWNED_PAGE}"),
                    )
                })?,
        };
        let pk = link::owned_pk(caller);
        let bad_cursor = || {
            ShortenerError::Invalid(
                "invalid_cursor",
                "cursor is not one this list returned".into(),
            )
        };
        let cursor = match query.cursor.as_deref() {
            None => None,
            Some(raw) => {
                let cursor = Cursor::parse(raw).map_err(|_| bad_cursor())?;
                match cursor.to_key() {
                    Ok(key) if key.pk == pk => Some(cursor),
                    _ => return Err(bad_cursor()),
                }
            }
        };
        let page = self
            .table
            .query(Query::partition(pk).backward().limit(limit).after(cursor))
            .await?;
        let entries: Vec<(Key, ShortCode, String)> = page
            .items
            .iter()
            .filter_map(|item| {
                let key = Key::of_item(item).ok()?;
                let code = ShortCode::parse(get_str(item, "code")?)?;
                Some((key, code, get_str(item, "linkId")?.to_owned()))
            })
            .collect();
        let mut keys = Vec::with_capacity(entries.len() * 2);
        for (_, code, link_id) in &entries {
            keys.push(link_key(code));
            keys.push(Key::new(clicks::stats_pk(link_id), "total"));
        }
        let found = if keys.is_empty() {
            Vec::new()
        } else {
            self.table.batch_get(&keys).await?
        };
        let mut links = std::collections::HashMap::new();
        let mut totals = std::collections::HashMap::new();
        for item in &found {
            match (get_str(item, "pk"), get_i64(item, "clicks")) {
                (Some(pk), Some(clicks)) if pk.starts_with("stats#") => {
                    totals.insert(pk.to_owned(), u64::try_from(clicks).unwrap_or(0));
                }
                _ => {
                    if let Ok(link) = Link::from_item(item) {
                        links.insert(link.link_id.clone(), link);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(entries.len());
        for (key, _, link_id) in entries {
            match links.remove(&link_id) {
                Some(link) if link.owner.as_deref() == Some(caller) => {
                    let clicks = totals
                        .get(&clicks::stats_pk(&link_id))
                        .copied()
                        .unwrap_or(0);
                    out.push(OwnedLink { link, clicks });
                }
                // The link is gone (deleted by the table after expiry, or an
                // expired alias taken over): drop the entry. Best effort.
                _ => {
                    let still = Condition::eq("linkId", s(&link_id));
                    if let Err(e) = self.table.delete(&key, Some(still)).await
                        && !matches!(e, TableError::ConditionFailed { .. })
                    {
                        tracing::warn!(error = %e, "a dangling link list entry was not removed");
                    }
                }
            }
        }
        Ok(OwnedPage {
            links: out,
            next_cursor: page.next.map(|c| c.as_str().to_owned()),
        })
    }

    /// A link's public view.
    pub fn view(&self, link: &Link) -> serde_json::Value {
        serde_json::json!({
            "code": link.code.as_str(),
            "shortUrl": self.config.short_url(&link.code),
            "longUrl": link.long_url,
            "redirect": link.redirect.status(),
            "expiresAt": link.expires_at_ms.map(format_instant),
            "maxVisits": link.max_visits,
            "createdAt": format_instant(link.created_at_ms),
        })
    }

    /// The QR code of a live link's short URL.
    pub async fn qr(&self, raw: &str, format: qr::QrFormat) -> Result<Vec<u8>, ShortenerError> {
        let redirect = self.resolve(raw, false).await?;
        qr::render(&self.config.short_url(&redirect.code), format)
    }
}

/// `GET /api/v1/me/urls?limit=&cursor=`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnedQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

pub const DEFAULT_OWNED_PAGE: u32 = 20;
pub const MAX_OWNED_PAGE: u32 = 50;

/// One of the caller's links and how often it was followed.
#[derive(Debug, Clone)]
pub struct OwnedLink {
    pub link: Link,
    pub clicks: u64,
}

#[derive(Debug, Clone)]
pub struct OwnedPage {
    pub links: Vec<OwnedLink>,
    pub next_cursor: Option<String>,
}

enum WriteNew {
    Existing(Link),
    CodeTaken,
    Failed(ShortenerError),
}
