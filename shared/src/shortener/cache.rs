//! The redirect function's read-through cache: found links for
//! `SHORTENER_CACHE_TTL_SECONDS`, unknown codes for a few seconds (so a scan
//! of random codes reads the table once per code per few seconds, not once
//! per request), bounded in entries.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::link::Link;

#[derive(Debug, Clone)]
pub enum CachedLink {
    Found(Arc<Link>),
    /// No such code (negative entry).
    Missing,
    /// Visits used up, as far as this instance knows: an edit may raise the
    /// cap, so it is kept only as long as a negative entry.
    Exhausted,
}

/// Found links in one cache, negative entries in a smaller one of their own,
/// so a scan of random codes cannot push the hot links out.
#[derive(Clone)]
pub struct LinkCache {
    found: Cache<String, Arc<Link>>,
    absent: Cache<String, CachedLink>,
}

impl std::fmt::Debug for LinkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCache")
            .field("found", &self.found.entry_count())
            .field("absent", &self.absent.entry_count())
            .finish()
    }
}

impl LinkCache {
    /// `capacity` found links for `ttl`; a quarter as many (at least 1,024,
    /// at most `capacity`) negative entries for `negative_ttl`.
    pub fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            found: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            absent: Cache::builder()
                .max_capacity(capacity.min((capacity / 4).max(1024)))
                .time_to_live(negative_ttl)
                .build(),
        }
    }

    pub fn get(&self, code: &str) -> Option<CachedLink> {
        match self.found.get(code) {
            Some(link) => Some(CachedLink::Found(link)),
            None => self.absent.get(code),
        }
    }

    pub fn insert(&self, code: &str, value: CachedLink) {
        match value {
            CachedLink::Found(link) => {
                self.absent.invalidate(code);
                self.found.insert(code.to_owned(), link);
            }
            negative => {
                self.found.invalidate(code);
                self.absent.insert(code.to_owned(), negative);
            }
        }
    }

    pub fn invalidate(&self, code: &str) {
        self.found.invalidate(code);
        self.absent.invalidate(code);
    }

    /// Drops the entries named by CDN redirect paths (`/abc`,
    /// `/api/v1/abc`); other paths (QR codes) name no cached link.
    pub fn purge_paths(&self, paths: &[String]) {
        for path in paths {
            let code = path.strip_prefix("/api/v1/").or(path.strip_prefix('/'));
            if let Some(code) = code.filter(|c| !c.is_empty() && !c.contains(['/', '*'])) {
                self.invalidate(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shortener::code::ShortCode;
    use crate::shortener::link::RedirectKind;

    fn link(code: &str) -> Link {
        Link {
            code: ShortCode::parse(code).unwrap(),
            link_id: code.into(),
            long_url: "https://example.com/".into(),
            redirect: RedirectKind::Permanent,
            owner: None,
            created_at_ms: 0,
            expires_at_ms: None,
            max_visits: None,
            visits: 0,
            index_pk: None,
        }
    }

    #[test]
    fn negative_entries_expire_sooner_than_found_ones() {
        let cache = LinkCache::new(100, Duration::from_secs(60), Duration::from_millis(50));
        cache.insert("gone", CachedLink::Missing);
        cache.insert("exh", CachedLink::Exhausted);
        cache.insert("hot", CachedLink::Found(Arc::new(link("hot"))));
        assert!(matches!(cache.get("gone"), Some(CachedLink::Missing)));
        assert!(matches!(cache.get("exh"), Some(CachedLink::Exhausted)));
        std::thread::sleep(Duration::from_millis(120));
        assert!(cache.get("gone").is_none());
        assert!(cache.get("exh").is_none(), "an edit may raise the cap");
        assert!(matches!(cache.get("hot"), Some(CachedLink::Found(_))));
        cache.purge_paths(&["/api/v1/hot".into()]);
        assert!(cache.get("hot").is_none());
    }

    #[test]
    fn a_scan_of_unknown_codes_does_not_evict_found_links() {
        let cache = LinkCache::new(100, Duration::from_secs(60), Duration::from_secs(60));
        for i in 0..50 {
            let code = format!("hot{i}");
            cache.insert(&code, CachedLink::Found(Arc::new(link(&code))));
        }
        for i in 0..100_000 {
            cache.insert(&format!("scan{i}"), CachedLink::Missing);
        }
        cache.found.run_pending_tasks();
        cache.absent.run_pending_tasks();
        let hits = (0..50)
            .filter(|i| matches!(cache.get(&format!("hot{i}")), Some(CachedLink::Found(_))))
            .count();
        assert_eq!(hits, 50);
        assert!(cache.absent.entry_count() <= 1024);
        // A code that now exists replaces its negative entry.
        cache.insert("scan99999", CachedLink::Found(Arc::new(link("scan99999"))));
        assert!(matches!(cache.get("scan99999"), Some(CachedLink::Found(_))));
    }
}
