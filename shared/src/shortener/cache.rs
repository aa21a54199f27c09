//! The redirect function's read-through cache: found links for
//! `SHORTENER_CACHE_TTL_SECONDS`, unknown codes for a few seconds (so a scan
//! of random codes reads the table once per code per few seconds, not once
//! per request), bounded in entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use super::link::Link;

#[derive(Debug, Clone)]
pub enum CachedLink {
    Found(Arc<Link>),
    /// No such code (negative entry).
    Missing,
    /// Visits used up; it cannot come back except by an edit, which purges.
    Exhausted,
}

struct PerKind {
    found: Duration,
    missing: Duration,
}

impl Expiry<String, CachedLink> for PerKind {
    fn expire_after_create(&self, _: &String, value: &CachedLink, _: Instant) -> Option<Duration> {
        Some(match value {
            CachedLink::Missing => self.missing,
            CachedLink::Found(_) | CachedLink::Exhausted => self.found,
        })
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &CachedLink,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

#[derive(Clone)]
pub struct LinkCache {
    inner: Cache<String, CachedLink>,
}

impl std::fmt::Debug for LinkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl LinkCache {
    pub fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        let inner = Cache::builder()
            .max_capacity(capacity)
            .expire_after(PerKind {
                found: ttl,
                missing: negative_ttl,
            })
            .build();
        Self { inner }
    }

    pub fn get(&self, code: &str) -> Option<CachedLink> {
        self.inner.get(code)
    }

    pub fn insert(&self, code: &str, value: CachedLink) {
        self.inner.insert(code.to_owned(), value);
    }

    pub fn invalidate(&self, code: &str) {
        self.inner.invalidate(code);
    }

    /// Drops the entries named by CDN paths (`/abc`, `/api/v1/abc`).
    pub fn purge_paths(&self, paths: &[String]) {
        for path in paths {
            if let Some(code) = path.rsplit('/').next().filter(|c| !c.is_empty()) {
                self.inner.invalidate(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_entries_expire_sooner_than_found_ones() {
        let cache = LinkCache::new(100, Duration::from_secs(60), Duration::from_millis(50));
        cache.insert("gone", CachedLink::Missing);
        cache.insert("exh", CachedLink::Exhausted);
        assert!(matches!(cache.get("gone"), Some(CachedLink::Missing)));
        std::thread::sleep(Duration::from_millis(120));
        assert!(cache.get("gone").is_none());
        assert!(matches!(cache.get("exh"), Some(CachedLink::Exhausted)));
        cache.purge_paths(&["/api/v1/exh".into()]);
        assert!(cache.get("exh").is_none());
    }
}
