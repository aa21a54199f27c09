//! The rate limiter on both table adapters: store requests per decision,
//! exact limits under concurrency and across instances, and what happens
//! when the store fails (fallback, fail closed, circuit breaker).

#[path = "common/gated.rs"]
mod gated;
#[allow(dead_code)]
#[path = "contract/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use gated::{Call, Gate, Gated};
use hanul_shared::ports::table::{
    Condition, Consistency, Item, Key, Page, Query, TableError, TableStats, TxOp, Update,
};
use hanul_shared::ports::{Clock, ManualClock, SystemClock, Table};
use hanul_shared::ratelimit::{Identity, LimiterConfig, RateLimiter, RuleSet, Source};

const RULES: &str = r#"
rules:
  - name: fifty
    key: ip
    algorithm: token_bucket
    limit: 50
    unit: hour
  - name: windowed
    key: user
    algorithm: fixed_window
    limit: 5
    unit: hour
    overrides: { "vip": 8 }
  - name: everyone
    key: global
    algorithm: sliding_log
    limit: 40
    unit: hour
    shards: 4
  - name: strict
    key: api_key
    algorithm: leaky_bucket
    limit: 10
    unit: second
    burst: 3
    on_store_error: deny
"#;

fn limiter(table: &Arc<dyn Table>, clock: Arc<dyn Clock>) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(
        RuleSet::parse(RULES).unwrap(),
        table.clone(),
        clock,
        LimiterConfig {
            store_timeout: Duration::from_secs(2),
            ..LimiterConfig::default()
        },
    ))
}

fn from_ip(ip: &str) -> Identity {
    Identity {
        ip: Some(ip.into()),
        ..Identity::default()
    }
}

async fn admitted(limiter: &RateLimiter, rule: &str, key: &str) -> bool {
    let rule = limiter.rules().get(rule).unwrap();
    limiter.check(&rule, key).await.unwrap().decision.allowed
}

async fn an_admission_is_one_conditional_write_and_a_refusal_is_free(table: Arc<dyn Table>) {
    let l = limiter(&table, Arc::new(SystemClock));
    let rule = l.rules().get("windowed").unwrap();
    let before = table.metrics();
    for i in 0..5 {
        let o = l.check(&rule, "nina").await.unwrap();
        assert!(o.decision.allowed);
        assert_eq!(o.decision.remaining, 4 - i);
        assert_eq!(o.source, Source::Store);
    }
    let after = table.metrics();
    assert_eq!(after.writes - before.writes, 5, "one write per admission");
    assert_eq!(after.reads - before.reads, 0, "no read");
    assert_eq!(after.condition_failures - before.condition_failures, 0);
    for _ in 0..10 {
        let o = l.check(&rule, "nina").await.unwrap();
        assert!(!o.decision.allowed);
        assert_eq!(o.source, Source::Local);
        assert!(o.decision.retry_after_ms > 0);
    }
    assert_eq!(
        table.metrics().writes,
        after.writes,
        "refusals write nothing"
    );
    // Overrides raise one key's limit.
    for _ in 0..8 {
        assert!(admitted(&l, "windowed", "vip").await);
    }
    assert!(!admitted(&l, "windowed", "vip").await);
}

async fn two_hundred_concurrent_requests_against_fifty(table: Arc<dyn Table>) {
    let l = limiter(&table, Arc::new(SystemClock));
    let tasks = (0..200).map(|_| {
        let l = l.clone();
        tokio::spawn(async move {
            let verdict = l
                .check_request(
                    &http::Method::GET,
                    Some("/anything"),
                    &from_ip("203.0.113.9"),
                )
                .await;
            verdict
                .outcomes
                .iter()
                .find(|o| o.rule.name == "fifty")
                .map(|o| o.decision.allowed)
        })
    });
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() == Some(true) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50);
}

async fn instances_share_one_limit_and_conflicts_are_retried(table: Arc<dyn Table>) {
    // Two instances (two limiters, two caches) on one table.
    let a = limiter(&table, Arc::new(SystemClock));
    let b = limiter(&table, Arc::new(SystemClock));
    let before = table.metrics();
    let mut decisions = 0u64;
    let mut allowed = 0;
    for i in 0..30 {
        let l = if i % 2 == 0 { &a } else { &b };
        decisions += 1;
        if admitted(l, "windowed", "shared-user").await {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5, "the limit holds across instances");
    let after = table.metrics();
    let writes = after.writes - before.writes;
    let conflicts = after.condition_failures - before.condition_failures;
    assert_eq!(after.reads - before.reads, 0, "conflicts need no read");
    assert!(conflicts >= 1, "alternating instances conflict");
    println!(
        "contention: {decisions} decisions, {allowed} admitted, {writes} writes ({conflicts} conflicts), 0 reads"
    );
    // An instance that learns of the spent window from a failed write got
    // its answer from the store; the next refusal needs no store at all.
    let c = limiter(&table, Arc::new(SystemClock));
    let rule = c.rules().get("windowed").unwrap();
    let first = c.check(&rule, "shared-user").await.unwrap();
    assert_eq!(
        (first.decision.allowed, first.source),
        (false, Source::Store)
    );
    let again = c.check(&rule, "shared-user").await.unwrap();
    assert_eq!(
        (again.decision.allowed, again.source),
        (false, Source::Local)
    );
}

async fn a_global_rule_is_sharded_and_still_bounded(table: Arc<dyn Table>) {
    let l = limiter(&table, Arc::new(SystemClock));
    let mut allowed = 0;
    for _ in 0..100 {
        if admitted(&l, "everyone", "*").await {
            allowed += 1;
        }
    }
    assert!(allowed <= 40, "{allowed} admitted against a limit of 40");
    assert!(
        allowed >= 30,
        "random shards should admit most of the limit: {allowed}"
    );
}

async fn an_expired_state_started_over_is_not_overwritten_by_an_old_copy(table: Arc<dyn Table>) {
    // Instance A remembers key k's state from long ago; instance B starts k
    // over after it expired. A's stale copy must not match B's new state.
    let clock = ManualClock::new(1_800_000_000_000);
    let a = limiter(&table, clock.clone());
    let b = limiter(&table, clock.clone());
    assert!(admitted(&a, "windowed", "k").await);
    clock.advance(3 * 3_600_000);
    // B starts the key over (its first version), then both keep going: had
    // A's old copy matched B's new state, B's count would be lost and more
    // than 5 would get through in this window.
    let mut through = 0;
    for i in 0..20 {
        let l = if i % 2 == 0 { &b } else { &a };
        if admitted(l, "windowed", "k").await {
            through += 1;
        }
    }
    assert_eq!(through, 5, "the window holds 5, whoever asks");
}

async fn instances_racing_concurrently_admit_exactly_the_limit(table: Arc<dyn Table>) {
    // Three instances, each with requests in flight at once: the writes race
    // in the store itself, not only on one instance's lock.
    let instances: Vec<_> = (0..3)
        .map(|_| limiter(&table, Arc::new(SystemClock)))
        .collect();
    let before = table.metrics();
    let tasks = (0..150).map(|i| {
        let l = instances[i % 3].clone();
        tokio::spawn(async move {
            let rule = l.rules().get("fifty").unwrap();
            let o = l.check(&rule, "198.51.100.77").await.unwrap();
            (o.decision.allowed, o.source)
        })
    });
    let mut allowed = 0;
    for t in tasks {
        let (ok, source) = t.await.unwrap();
        assert_ne!(
            source,
            Source::Fallback,
            "contention is retried, not guessed"
        );
        allowed += usize::from(ok);
    }
    assert_eq!(allowed, 50);
    let conflicts = table.metrics().condition_failures - before.condition_failures;
    assert!(conflicts >= 1, "the instances' writes conflicted");
}

on_both_tables!(
    instances_racing_concurrently_admit_exactly_the_limit,
    an_expired_state_started_over_is_not_overwritten_by_an_old_copy,
    an_admission_is_one_conditional_write_and_a_refusal_is_free,
    two_hundred_concurrent_requests_against_fifty,
    instances_share_one_limit_and_conflicts_are_retried,
    a_global_rule_is_sharded_and_still_bounded,
);

/// A store that fails every call and counts them (an in-memory fake is
/// fine inside a test).
#[derive(Default)]
struct Failing {
    calls: AtomicU64,
}

#[async_trait]
impl Table for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    async fn get(&self, _: &Key, _: Consistency) -> Result<Option<Item>, TableError> {
        self.fail()
    }
    async fn put(&self, _: Item, _: Option<Condition>) -> Result<(), TableError> {
        self.fail()
    }
    async fn update(&self, _: &Key, _: Update, _: Option<Condition>) -> Result<Item, TableError> {
        self.fail()
    }
    async fn delete(&self, _: &Key, _: Option<Condition>) -> Result<Option<Item>, TableError> {
        self.fail()
    }
    async fn query(&self, _: Query) -> Result<Page, TableError> {
        self.fail()
    }
    async fn batch_get(&self, _: &[Key]) -> Result<Vec<Item>, TableError> {
        self.fail()
    }
    async fn batch_put(&self, _: Vec<Item>) -> Result<(), TableError> {
        self.fail()
    }
    async fn transact_write(&self, _: Vec<TxOp>) -> Result<(), TableError> {
        self.fail()
    }
    fn metrics(&self) -> TableStats {
        TableStats::default()
    }
}

impl Failing {
    fn fail<T>(&self) -> Result<T, TableError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(TableError::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn a_failing_store_fails_open_within_the_fallback_or_closed_and_trips_the_breaker() {
    let failing = Arc::new(Failing::default());
    let table: Arc<dyn Table> = failing.clone();
    let clock = ManualClock::new(1_800_000_000_000);
    let l = limiter(&table, clock.clone());

    // `allow` rules pass, counted by the in-process limiter: the token
    // bucket's fallback admits its burst (50), then refuses.
    let fifty = l.rules().get("fifty").unwrap();
    let mut allowed = 0;
    for _ in 0..60 {
        let o = l.check(&fifty, "198.51.100.1").await.unwrap();
        assert_eq!(o.source, Source::Fallback);
        if o.decision.allowed {
            allowed += 1;
        } else {
            assert!(o.decision.retry_after_ms > 0);
        }
    }
    assert_eq!(allowed, 50);
    // The breaker opened after five failures: the store was called five times.
    assert_eq!(failing.calls.load(Ordering::Relaxed), 5);

    // `deny` rules fail closed.
    let strict = l.rules().get("strict").unwrap();
    assert!(l.check(&strict, "key-1").await.is_err());
    assert_eq!(
        failing.calls.load(Ordering::Relaxed),
        5,
        "the breaker is open"
    );

    // After the cooldown the store is tried again; one more failure reopens.
    clock.advance(31_000);
    assert!(l.check(&strict, "key-1").await.is_err());
    assert_eq!(failing.calls.load(Ordering::Relaxed), 6);
    assert!(l.check(&strict, "key-1").await.is_err());
    assert_eq!(failing.calls.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn a_shadow_rule_never_blocks_even_when_it_would_fail_closed() {
    let table: Arc<dyn Table> = Arc::new(Failing::default());
    let rules = "rules:\n  - {name: watch, key: ip, algorithm: fixed_window, limit: 1, unit: hour, on_store_error: deny, shadow: true}\n";
    let l = RateLimiter::new(
        RuleSet::parse(rules).unwrap(),
        table,
        Arc::new(SystemClock),
        LimiterConfig::default(),
    );
    let rule = l.rules().get("watch").unwrap();
    for _ in 0..3 {
        let o = l.check(&rule, "198.51.100.2").await.expect("not a 503");
        assert_eq!(o.source, Source::Fallback);
    }
    let verdict = l
        .check_request(&http::Method::GET, Some("/x"), &from_ip("198.51.100.2"))
        .await;
    assert!(verdict.unavailable.is_empty(), "no 503 from a shadow rule");
    assert!(verdict.violated().is_empty(), "shadow rules never block");
}

/// A store that works until it is switched off, then fails and counts.
#[derive(Default)]
struct Switch {
    down: std::sync::atomic::AtomicBool,
    failing: Failing,
}

#[async_trait]
impl Gate for Switch {
    async fn admit(&self, _: Call) -> Result<(), TableError> {
        if self.down.load(Ordering::Relaxed) {
            self.failing.fail()
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn refusals_from_the_local_copy_do_not_hold_the_breaker_closed() {
    let (inner, _guard) = support::embedded_table().await;
    let switched = Arc::new(Gated {
        inner,
        gate: Switch::default(),
    });
    let switch = &switched.gate;
    let table: Arc<dyn Table> = switched.clone();
    let l = limiter(&table, Arc::new(SystemClock));
    // A limited caller, refused from the instance's own copy from now on.
    for _ in 0..5 {
        assert!(admitted(&l, "windowed", "limited").await);
    }
    switch.down.store(true, Ordering::Relaxed);
    // The store is down: other callers' checks fail, while the limited
    // caller keeps being refused locally in between.
    for i in 0..10 {
        let rule = l.rules().get("windowed").unwrap();
        let o = l.check(&rule, &format!("caller-{i}")).await.unwrap();
        assert_eq!(o.source, Source::Fallback);
        let refused = l.check(&rule, "limited").await.unwrap();
        if i < 4 {
            // (From the fifth failure on, the open breaker answers first.)
            assert_eq!(refused.source, Source::Local);
        }
    }
    assert_eq!(
        switch.failing.calls.load(Ordering::Relaxed),
        5,
        "the breaker opened after five failures"
    );
}

/// A store that answers too late: the decision does not wait for it.
struct Slow;

#[async_trait]
impl Table for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    async fn get(&self, _: &Key, _: Consistency) -> Result<Option<Item>, TableError> {
        Ok(None)
    }
    async fn put(&self, _: Item, _: Option<Condition>) -> Result<(), TableError> {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(())
    }
    async fn update(&self, _: &Key, _: Update, _: Option<Condition>) -> Result<Item, TableError> {
        Err(TableError::Unavailable("n/a".into()))
    }
    async fn delete(&self, _: &Key, _: Option<Condition>) -> Result<Option<Item>, TableError> {
        Ok(None)
    }
    async fn query(&self, _: Query) -> Result<Page, TableError> {
        Ok(Page::default())
    }
    async fn batch_get(&self, _: &[Key]) -> Result<Vec<Item>, TableError> {
        Ok(Vec::new())
    }
    async fn batch_put(&self, _: Vec<Item>) -> Result<(), TableError> {
        Ok(())
    }
    async fn transact_write(&self, _: Vec<TxOp>) -> Result<(), TableError> {
        Ok(())
    }
    fn metrics(&self) -> TableStats {
        TableStats::default()
    }
}

#[tokio::test]
async fn a_slow_store_times_out_and_the_rule_decides() {
    let table: Arc<dyn Table> = Arc::new(Slow);
    let l = RateLimiter::new(
        RuleSet::parse(RULES).unwrap(),
        table,
        Arc::new(SystemClock),
        LimiterConfig {
            store_timeout: Duration::from_millis(50),
            ..LimiterConfig::default()
        },
    );
    let started = std::time::Instant::now();
    let fifty = l.rules().get("fifty").unwrap();
    let o = l.check(&fifty, "1.2.3.4").await.unwrap();
    assert!(o.decision.allowed);
    assert_eq!(o.source, Source::Fallback);
    let strict = l.rules().get("strict").unwrap();
    assert!(l.check(&strict, "k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the slow store"
    );
}

const PER_IP: &str = r#"
rules:
  - name: one-per-ip
    match: { method: GET, route: /api/v1/ids }
    key: ip
    algorithm: fixed_window
    limit: 1
    unit: hour
"#;
const SECRET: &str = "cdn-origin-secret-0123456789abcdef";
/// A CloudFront edge: the request's own address behind the CDN.
const EDGE: &str = "130.176.0.1";

/// One function behind the rate-limit layer, as both hosts build it.
async fn behind_the_layer(secret: Option<&str>) -> (axum::Router, support::Guard) {
    use hanul_shared::http::ratelimit::{OriginSecret, rate_limit};
    let (table, guard) = support::embedded_table().await;
    let limiter = Arc::new(RateLimiter::new(
        RuleSet::parse(PER_IP).unwrap(),
        table,
        Arc::new(SystemClock),
        LimiterConfig {
            cdn_origin_secret: secret.map(|s| OriginSecret::parse(s).unwrap()),
            ..LimiterConfig::default()
        },
    ));
    let app = axum::Router::new()
        .route("/api/v1/ids", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(limiter, rate_limit));
    (app, guard)
}

/// A request as the local host serves it (the socket peer is the edge).
fn local_request(headers: &[(&str, &str)]) -> axum::extract::Request {
    let mut request = http::Request::builder().uri("/api/v1/ids");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut request = request.body(axum::body::Body::empty()).unwrap();
    let peer: std::net::SocketAddr = format!("{EDGE}:50123").parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    request
}

/// A request as Lambda delivers it (API Gateway's `sourceIp` is the edge).
fn lambda_request(headers: &[(&str, &str)]) -> axum::extract::Request {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
        .collect();
    let event = serde_json::json!({
        "version": "2.0",
        "routeKey": "GET /api/v1/ids",
        "rawPath": "/api/v1/ids",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "http": {"method": "GET", "path": "/api/v1/ids", "protocol": "HTTP/1.1", "sourceIp": EDGE},
            "requestId": "r1",
            "routeKey": "GET /api/v1/ids",
            "stage": "$default",
            "timeEpoch": 1795600800000u64
        },
        "isBase64Encoded": false
    });
    lambda_http::request::from_str(&event.to_string())
        .unwrap()
        .map(|_| axum::body::Body::empty())
}

/// A request's builder, by host.
type BuildRequest = fn(&[(&str, &str)]) -> axum::extract::Request;
const HOSTS: [(&str, BuildRequest); 2] = [("local", local_request), ("lambda", lambda_request)];

async fn status(app: &axum::Router, request: axum::extract::Request) -> u16 {
    use tower::ServiceExt;
    app.clone()
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_the_cdn_each_viewer_has_its_own_quota_on_both_hosts() {
    for (path, request) in HOSTS {
        let (app, _guard) = behind_the_layer(Some(SECRET)).await;
        let via_cdn = |viewer: &'static str| {
            request(&[
                ("x-origin-verify", SECRET),
                ("cloudfront-viewer-address", viewer),
            ])
        };
        // Two viewers of one edge: one request each.
        assert_eq!(
            status(&app, via_cdn("198.51.100.10:40001")).await,
            200,
            "{path}"
        );
        assert_eq!(
            status(&app, via_cdn("2001:db8::1:443")).await,
            200,
            "{path}"
        );
        assert_eq!(
            status(&app, via_cdn("198.51.100.10:40002")).await,
            429,
            "{path}"
        );
        assert_eq!(
            status(&app, via_cdn("2001:db8::1:8443")).await,
            429,
            "{path}"
        );
        // Forged viewer addresses (no secret, a wrong one, or an unusable
        // address) all count as the edge itself: one request in all.
        let forged = [
            request(&[("cloudfront-viewer-address", "192.0.2.1:1")]),
            request(&[
                ("x-origin-verify", "cdn-origin-secret-0123456789abcdeF"),
                ("cloudfront-viewer-address", "192.0.2.2:1"),
            ]),
            request(&[
                ("x-origin-verify", SECRET),
                ("cloudfront-viewer-address", "192.0.2.3"),
            ]),
        ];
        let mut codes = Vec::new();
        for r in forged {
            codes.push(status(&app, r).await);
        }
        assert_eq!(codes, [200, 429, 429], "{path}");
    }
}

#[tokio::test]
async fn without_a_secret_the_viewer_header_is_ignored_on_both_hosts() {
    for (path, request) in HOSTS {
        let (app, _guard) = behind_the_layer(None).await;
        let mut codes = Vec::new();
        for viewer in ["198.51.100.10:1", "198.51.100.11:1"] {
            let r = request(&[
                ("x-origin-verify", SECRET),
                ("cloudfront-viewer-address", viewer),
            ]);
            codes.push(status(&app, r).await);
        }
        assert_eq!(codes, [200, 429], "{path}");
    }
}
