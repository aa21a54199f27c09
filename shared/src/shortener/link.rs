//! A link: what it points to, how it redirects, when it stops. Validation of
//! what users send, and the mapping to table items.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::{Host, Url};

use super::code::ShortCode;
use super::error::ShortenerError;
use crate::ports::table::{Item, Key, get_i64, get_str, num, s};

/// 301 (browsers and the CDN cache it) or 302 (every click reaches us).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub enum RedirectKind {
    Permanent,
    Temporary,
}

impl RedirectKind {
    pub fn status(self) -> u16 {
        match self {
            RedirectKind::Permanent => 301,
            RedirectKind::Temporary => 302,
        }
    }
}

impl TryFrom<u16> for RedirectKind {
    type Error = String;
    fn try_from(v: u16) -> Result<Self, String> {
        match v {
            301 => Ok(RedirectKind::Permanent),
            302 => Ok(RedirectKind::Temporary),
            other => Err(format!("redirect must be 301 or 302, not {other}")),
        }
    }
}

impl From<RedirectKind> for u16 {
    fn from(k: RedirectKind) -> u16 {
        k.status()
    }
}

/// A stored link.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub code: ShortCode,
    /// Unique per creation, so the stats of a deleted alias never carry over
    /// to a new link that takes the same alias.
    pub link_id: String,
    pub long_url: String,
    pub redirect: RedirectKind,
    pub owner: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub max_visits: Option<u64>,
    /// Counted only for links with `max_visits`, by an atomic conditional add.
    pub visits: u64,
    /// The dedupe index item that points here, for plain links.
    pub index_pk: Option<String>,
}

pub const LINK_SK: &str = "link";
pub const INDEX_SK: &str = "index";
/// Expired links stay this long (answering 410) before the table drops them.
pub const EXPIRED_RETENTION_SECS: u64 = 30 * 24 * 3600;

pub fn link_key(code: &ShortCode) -> Key {
    Key::new(format!("link#{code}"), LINK_SK)
}

/// The partition listing an owner's links (`GET /api/v1/me/urls`).
pub fn owned_pk(owner: &str) -> String {
    format!("owner#{owner}")
}

/// An owner's list entry, sorted by creation time (then code).
pub fn owned_key(owner: &str, created_at_ms: u64, code: &ShortCode) -> Key {
    Key::new(owned_pk(owner), format!("{created_at_ms:013}#{code}"))
}

impl Link {
    pub fn key(&self) -> Key {
        link_key(&self.code)
    }

    /// The owner's list entry for this link (none for anonymous links). It
    /// names the link's id, so an entry left by a link that is gone (an
    /// expired alias taken by someone else) is recognised and skipped.
    pub fn owned_item(&self) -> Option<Item> {
        let owner = self.owner.as_deref()?;
        let mut item = owned_key(owner, self.created_at_ms, &self.code).to_item();
        item.insert("code".into(), s(self.code.as_str()));
        item.insert("linkId".into(), s(&self.link_id));
        Some(item)
    }

    pub fn owned_key(&self) -> Option<Key> {
        let owner = self.owner.as_deref()?;
        Some(owned_key(owner, self.created_at_ms, &self.code))
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|e| now_ms >= e)
    }

    pub fn is_exhausted(&self) -> bool {
        self.max_visits.is_some_and(|m| self.visits >= m)
    }

    pub fn to_item(&self) -> Item {
        let mut item = self.key().to_item();
        item.insert("code".into(), s(self.code.as_str()));
        item.insert("linkId".into(), s(&self.link_id));
        item.insert("longUrl".into(), s(&self.long_url));
        item.insert("redirect".into(), num(self.redirect.status()));
        item.insert("createdAt".into(), num(self.created_at_ms));
        item.insert("visits".into(), num(self.visits));
        if let Some(owner) = &self.owner {
            item.insert("owner".into(), s(owner));
        }
        if let Some(e) = self.expires_at_ms {
            item.insert("expiresAt".into(), num(e));
            item.insert("ttl".into(), num(e / 1000 + EXPIRED_RETENTION_SECS));
        }
        if let Some(m) = self.max_visits {
            item.insert("maxVisits".into(), num(m));
        }
        if let Some(pk) = &self.index_pk {
            item.insert("indexPk".into(), s(pk));
        }
        item
    }

    pub fn from_item(item: &Item) -> Result<Link, ShortenerError> {
        let corrupt = |field: &str| ShortenerError::Store(format!("link item without {field}"));
        let code = get_str(item, "code").ok_or_else(|| corrupt("code"))?;
        let redirect = get_i64(item, "redirect")
            .and_then(|r| u16::try_from(r).ok())
            .and_then(|r| RedirectKind::try_from(r).ok())
            .ok_or_else(|| corrupt("redirect"))?;
        let unsigned = |attr: &str| get_i64(item, attr).and_then(|v| u64::try_from(v).ok());
        Ok(Link {
            code: ShortCode::from_trusted(code.to_owned()),
            link_id: get_str(item, "linkId")
                .ok_or_else(|| corrupt("linkId"))?
                .to_owned(),
            long_url: get_str(item, "longUrl")
                .ok_or_else(|| corrupt("longUrl"))?
                .to_owned(),
            redirect,
            owner: get_str(item, "owner").map(str::to_owned),
            created_at_ms: unsigned("createdAt").unwrap_or(0),
            expires_at_ms: unsigned("expiresAt"),
            max_visits: unsigned("maxVisits"),
            visits: unsigned("visits").unwrap_or(0),
            index_pk: get_str(item, "indexPk").map(str::to_owned),
        })
    }
}

/// The dedupe index item's partition: the owner (or `-` for anonymous links),
/// the normalized URL's SHA-256 and the redirect kind.
pub fn index_pk(owner: Option<&str>, normalized_url: &str, redirect: RedirectKind) -> String {
    let digest = Sha256::digest(normalized_url.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "longurl#{}#{hex}#{}",
        owner.unwrap_or("-"),
        redirect.status()
    )
}

/// The hosts a long URL must not point at: the short domain, the extra
/// ones listed (comma-separated: the API's own domain, the CDN's), and, when
/// the short domain is this machine, every name of this machine.
pub fn loop_hosts(short_host: &str, extra: Option<&str>) -> Vec<String> {
    let clean = |h: &str| h.trim().trim_end_matches('.').to_ascii_lowercase();
    let mut hosts = vec![clean(short_host)];
    hosts.extend(
        extra
            .unwrap_or_default()
            .split(',')
            .map(clean)
            .filter(|h| !h.is_empty()),
    );
    const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];
    if hosts.iter().any(|h| LOOPBACK.contains(&h.as_str())) {
        hosts.extend(LOOPBACK.map(String::from));
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Rules for long URLs.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    pub max_length: usize,
    /// Hosts that serve these redirects (the short domain, and any in
    /// `SHORTENER_LOOP_HOSTS`): a link to one would redirect to itself.
    pub loop_hosts: Vec<String>,
}

impl UrlPolicy {
    /// Parses and normalizes (`url` serializes scheme and host in lower case,
    /// drops default ports, percent-encodes) a user's long URL.
    pub fn normalize(&self, raw: &str) -> Result<String, ShortenerError> {
        let bad = |m: String| ShortenerError::InvalidUrl(m);
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(bad("longUrl is empty".into()));
        }
        if raw.len() > self.max_length {
            return Err(bad(format!(
                "longUrl is {} characters; the limit is {}",
                raw.len(),
                self.max_length
            )));
        }
        let url = Url::parse(raw).map_err(|e| bad(format!("longUrl is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "longUrl must be http or https, not {}",
                url.scheme()
            )));
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(bad("longUrl has no host".into()));
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("longUrl must not carry a user name or password".into()));
        }
        // `url` leaves DNS lengths and empty labels alone (WHATWG parsing);
        // IDN hosts reach this in their ASCII (punycode) form.
        if let Some(Host::Domain(domain)) = url.host() {
            dns_name(domain).map_err(|why| bad(format!("longUrl's host cannot exist: {why}")))?;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.loop_hosts.contains(&host) {
            return Err(bad(
                "longUrl points at the short domain itself and would redirect in a loop".into(),
            ));
        }
        let normalized = url.to_string();
        if normalized.len() > self.max_length {
            return Err(bad(format!(
                "longUrl is {} characters once normalized; the limit is {}",
                normalized.len(),
                self.max_length
            )));
        }
        Ok(normalized)
    }
}

/// The longest DNS label and the longest name (RFC 1035 2.3.4; the name
/// without its trailing dot).
const MAX_DNS_LABEL: usize = 63;
const MAX_DNS_NAME: usize = 253;

/// Whether a host name (ASCII form) could exist in DNS: no empty label, no
/// label over 63 characters, at most 253 in all. One trailing dot (the root)
/// is allowed and not counted.
fn dns_name(domain: &str) -> Result<(), String> {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.len() > MAX_DNS_NAME {
        return Err(format!(
            "its name is {} characters; DNS allows {MAX_DNS_NAME}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("its name has an empty label".into());
        }
        if label.len() > MAX_DNS_LABEL {
            return Err(format!(
                "it has a label of {} characters; DNS allows {MAX_DNS_LABEL}",
                label.len()
            ));
        }
    }
    Ok(())
}

/// `expiresAt` as users write it: RFC 3339.
pub fn parse_instant(field: &str, raw: &str) -> Result<u64, ShortenerError> {
    let t = humantime::parse_rfc3339_weak(raw).map_err(|e| {
        ShortenerError::Invalid(
            field_name(field),
            format!("{field} must be an RFC 3339 time such as 2030-01-31T12:00:00Z: {e}"),
        )
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| ShortenerError::Invalid(field_name(field), format!("{field} is before 1970")))
}

fn field_name(field: &str) -> &'static str {
    match field {
        "expiresAt" => "invalid_expires_at",
        _ => "invalid_request",
    }
}

pub fn format_instant(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Per-link statistics, aggregated by the click worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStats {
    pub total_clicks: u64,
    pub visits: u64,
    pub clicks_by_day: std::collections::BTreeMap<String, u64>,
    pub referrers: HashMap<String, u64>,
    pub devices: HashMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UrlPolicy {
        UrlPolicy {
            max_length: 2048,
            loop_hosts: loop_hosts(
                "hnl.example",
                Some("api.hnl.example, D1234.cloudfront.net."),
            ),
        }
    }

    #[test]
    fn urls_are_normalized() {
        let p = policy();
        assert_eq!(
            p.normalize("HTTPS://Example.COM:443/a b?q=1").unwrap(),
            "https://example.com/a%20b?q=1"
        );
        assert_eq!(
            p.normalize("http://example.com").unwrap(),
            "http://example.com/"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        let p = policy();
        for bad in [
            "",
            "example.com/x",
            "ftp://example.com/",
            "javascript:alert(1)",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "https://hnl.example/abc",
            "https://HNL.example./abc",
            "https://api.hnl.example/api/v1/abc",
            "https://d1234.cloudfront.net/abc",
            "http://",
            "not a url",
        ] {
            assert!(p.normalize(bad).is_err(), "{bad} passed");
        }
        let long = format!("https://example.com/{}", "a".repeat(2040));
        assert!(p.normalize(&long).is_err());
    }

    #[test]
    fn hosts_that_cannot_exist_in_dns_are_refused() {
        let p = policy();
        let (a61, a62, a63, a64) = (
            "a".repeat(61),
            "a".repeat(62),
            "a".repeat(63),
            "a".repeat(64),
        );
        let name253 = format!("{a63}.{a63}.{a63}.{a61}");
        let name254 = format!("{a63}.{a63}.{a63}.{a62}");
        assert_eq!((name253.len(), name254.len()), (253, 254));
        // What `url` hands on: it parses every one of these, unchanged.
        for (raw, host) in [
            (format!("https://{a64}.com/"), format!("{a64}.com")),
            ("https://a..b.com/".to_owned(), "a..b.com".to_owned()),
            ("https://.a.com/".to_owned(), ".a.com".to_owned()),
            (format!("https://{name254}/"), name254.clone()),
        ] {
            assert_eq!(Url::parse(&raw).unwrap().host_str(), Some(host.as_str()));
        }
        // IDN hosts are checked in their ASCII form: 60 characters of
        // Unicode, more than 63 of punycode.
        let idn = "ü".repeat(60);
        let ascii = Url::parse(&format!("https://{idn}.de/")).unwrap();
        assert!(ascii.host_str().unwrap().starts_with("xn--"));
        assert!(ascii.host_str().unwrap().len() > 63 + ".de".len());

        for bad in [
            format!("https://{a64}.com/"),
            format!("https://www.{a64}/x"),
            format!("https://{name254}/"),
            format!("https://{name254}./"),
            format!("https://{idn}.de/"),
            "https://a..b.com/".into(),
            "https://.a.com/".into(),
            "https://a.com../".into(),
            "https://a%2E%2Eb.com/".into(),
            "https://./".into(),
        ] {
            let e = p.normalize(&bad).unwrap_err();
            assert!(matches!(e, ShortenerError::InvalidUrl(_)), "{bad}: {e:?}");
        }
        for good in [
            format!("https://{a63}.com/"),
            format!("https://{name253}/"),
            // The root's dot does not count.
            format!("https://{name253}./"),
            "https://a.com./".into(),
            "https://localhost:8080/".into(),
            // 30 Hangul syllables are 90 bytes of UTF-8, far fewer of punycode.
            format!("https://{}.kr/", "가".repeat(30)),
            // IP literals are not DNS names.
            "https://192.0.2.1/".into(),
            "https://[2001:db8::1]/".into(),
        ] {
            assert!(p.normalize(&good).is_ok(), "{good} refused");
        }
        let e = p.normalize(&format!("https://{a64}.com/")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "longUrl's host cannot exist: it has a label of 64 characters; DNS allows 63"
        );
    }

    #[test]
    fn a_local_short_domain_refuses_every_name_of_this_machine() {
        let local = UrlPolicy {
            max_length: 2048,
            loop_hosts: loop_hosts("127.0.0.1", None),
        };
        for bad in [
            "http://localhost:3000/abc",
            "http://127.0.0.1:3000/abc",
            "http://[::1]:3000/abc",
        ] {
            assert!(local.normalize(bad).is_err(), "{bad} passed");
        }
        assert!(local.normalize("https://example.com/").is_ok());
        assert_eq!(loop_hosts("hnl.example", Some(" , ")), ["hnl.example"]);
    }

    #[test]
    fn a_link_survives_its_item() {
        let link = Link {
            code: ShortCode::from_trusted("abc1234".into()),
            link_id: "l1".into(),
            long_url: "https://example.com/".into(),
            redirect: RedirectKind::Temporary,
            owner: Some("nina".into()),
            created_at_ms: 1,
            expires_at_ms: Some(2_000),
            max_visits: Some(3),
            visits: 1,
            index_pk: None,
        };
        let item = link.to_item();
        assert_eq!(Link::from_item(&item).unwrap(), link);
        assert_eq!(
            get_i64(&item, "ttl"),
            Some(2 + EXPIRED_RETENTION_SECS as i64)
        );
    }

    #[test]
    fn instants_parse_as_rfc3339() {
        assert_eq!(
            parse_instant("expiresAt", "1970-01-01T00:00:01Z").unwrap(),
            1000
        );
        assert!(parse_instant("expiresAt", "tomorrow").is_err());
        assert_eq!(format_instant(1000), "1970-01-01T00:00:01.000Z");
    }
}
