//! Decisions with their state in the `Table` port: one conditional write per
//! admitted request (optimistic concurrency on a version number, retried on
//! conflict with the state the failed write hands back), none for a refusal.
//! A circuit breaker stops calling a failing store; meanwhile `governor`
//! keeps approximate limits in the process.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

use super::algorithm::{self, Decision, Limit, State};
use super::rules::{KeySource, OnStoreError, Rule, RuleSet};
use crate::http::emf::Metrics;
use crate::http::ratelimit::{CDN_ORIGIN_SECRET_VAR, OriginSecret};
use crate::ports::Clock;
use crate::ports::table::{Condition, Item, Key, Table, TableError, get_i64, get_str, num, s};

#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// `RATE_LIMIT_STORE_TIMEOUT_MS`: one store call's budget.
    pub store_timeout: Duration,
    /// `RATE_LIMIT_BREAKER_FAILURES`: consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// `RATE_LIMIT_BREAKER_COOLDOWN_SECONDS`: how long it stays open.
    pub breaker_cooldown: Duration,
    /// Conditional-write attempts per decision before giving up on contention.
    pub max_attempts: u32,
    /// `CDN_ORIGIN_SECRET`: with it, requests that prove they came through
    /// the CDN are counted by the viewer's address (see
    /// [`crate::http::ratelimit::client_ip`]).
    pub cdn_origin_secret: Option<OriginSecret>,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            store_timeout: Duration::from_millis(50),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_attempts: 8,
            cdn_origin_secret: None,
        }
    }
}

impl LimiterConfig {
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str, default: u64, min: u64, max: u64| {
            crate::settings::bounded(&get, name, default, min, max, "a whole number")
        };
        Ok(Self {
            store_timeout: Duration::from_millis(number(
                "RATE_LIMIT_STORE_TIMEOUT_MS",
                50,
                1,
                10_000,
            )?),
            breaker_failures: number("RATE_LIMIT_BREAKER_FAILURES", 5, 1, 1000)? as u32,
            breaker_cooldown: Duration::from_secs(number(
                "RATE_LIMIT_BREAKER_COOLDOWN_SECONDS",
                30,
                1,
                3600,
            )?),
            max_attempts: 8,
            cdn_origin_secret: get(CDN_ORIGIN_SECRET_VAR)
                .map(|raw| OriginSecret::parse(&raw))
                .transpose()?,
        })
    }
}

/// Who is asking, as far as rules care.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub ip: Option<String>,
    pub user: Option<String>,
    pub api_key: Option<String>,
    pub headers: http::HeaderMap,
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A conditional write to the store.
    Store,
    /// A refusal from this instance's copy of the state: no store call.
    Local,
    /// The store failed: the in-process fallback limiter decided.
    Fallback,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub rule: Arc<Rule>,
    pub decision: Decision,
    pub source: Source,
}

/// The store failed for a rule that fails closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limiting is unavailable for rule {rule}: {reason}")]
pub struct Unavailable {
    pub rule: String,
    pub reason: String,
}

/// Every matching rule's answer for one request.
#[derive(Debug, Default)]
pub struct Verdict {
    pub outcomes: Vec<Outcome>,
    pub unavailable: Vec<Unavailable>,
}

impl Verdict {
    /// The enforced refusals (shadow rules only log).
    pub fn violated(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| !o.decision.allowed && !o.rule.shadow)
            .collect()
    }

    /// The enforced outcomes, for the headers.
    pub fn enforced(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| !o.rule.shadow)
    }
}

#[derive(Debug)]
enum StoreFailure {
    Timeout,
    Contention,
    Table(TableError),
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreFailure::Timeout => f.write_str("the store did not answer in time"),
            StoreFailure::Contention => f.write_str("too many conflicting writes"),
            StoreFailure::Table(e) => write!(f, "{e}"),
        }
    }
}

/// Opens after `threshold` consecutive failures and stays open for
/// `cooldown`; then calls go through again, and one more failure reopens it.
#[derive(Debug)]
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    threshold: u32,
    cooldown_ms: u64,
}

impl Breaker {
    fn is_open(&self, now_ms: u64) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) > now_ms
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    fn failed(&self, now_ms: u64) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.threshold {
            self.open_until_ms
                .store(now_ms + self.cooldown_ms, Ordering::Relaxed);
        }
    }
}

/// This instance's last known state of a key, with its version.
#[derive(Debug, Clone)]
struct Known {
    version: i64,
    state: State,
}

const LOCK_STRIPES: usize = 64;
const STATE_SK: &str = "s";

pub struct RateLimiter {
    rules: RuleSet,
    table: Arc<dyn Table>,
    clock: Arc<dyn Clock>,
    config: LimiterConfig,
    known: moka::sync::Cache<String, Known>,
    /// One writer per key per instance: requests of this instance never
    /// conflict with each other, only with other instances.
    locks: Vec<tokio::sync::Mutex<()>>,
    breaker: Breaker,
    fallback: HashMap<String, DefaultKeyedRateLimiter<String>>,
    fallback_calls: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rules", &self.rules.rules().len())
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

fn hashed(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The fallback's quota: the most the rule admits in any window, so that
/// while the store is down no instance refuses what the rule would admit.
fn fallback_quota(rule: &Rule) -> Quota {
    let limit = rule.limit_for("");
    let period =
        Duration::from_millis(rule.window_ms) / (rule.limit.min(u32::MAX as u64) as u32).max(1);
    let burst = match rule.algorithm {
        algorithm::Algorithm::TokenBucket | algorithm::Algorithm::LeakyBucket => limit.burst,
        _ => rule.algorithm.worst_case_per_window(&limit),
    };
    let burst = NonZeroU32::new(burst.min(u32::MAX as u64) as u32).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

impl RateLimiter {
    pub fn new(
        rules: RuleSet,
        table: Arc<dyn Table>,
        clock: Arc<dyn Clock>,
        config: LimiterConfig,
    ) -> Self {
        let fallback = rules
            .rules()
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    DefaultKeyedRateLimiter::keyed(fallback_quota(r)),
                )
            })
            .collect();
        Self {
            breaker: Breaker {
                failures: AtomicU32::new(0),
                open_until_ms: AtomicU64::new(0),
                threshold: config.breaker_failures,
                cooldown_ms: config.breaker_cooldown.as_millis() as u64,
            },
            known: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            fallback,
            fallback_calls: AtomicU64::new(0),
            rules,
            table,
            clock,
            config,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// The key a rule counts this request by, if the request has one (a
    /// `user` rule does not apply to anonymous requests). Secrets are hashed
    /// before they reach the store.
    pub fn key_for(rule: &Rule, identity: &Identity) -> Option<(String, String)> {
        let raw = match &rule.key {
            KeySource::Ip => identity.ip.clone()?,
            KeySource::User => identity.user.clone()?,
            KeySource::ApiKey => identity.api_key.clone()?,
            KeySource::Header(name) => identity
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())?
                .to_owned(),
            KeySource::Global => "*".to_owned(),
        };
        let stored = match &rule.key {
            KeySource::ApiKey | KeySource::Header(_) => hashed(&raw),
            _ => raw.clone(),
        };
        Some((raw, stored))
    }

    /// Checks every rule matching the request; the strictest answer wins.
    pub async fn check_request(
        &self,
        method: &http::Method,
        route: Option<&str>,
        identity: &Identity,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        for rule in self.rules.matching(method, route) {
            let Some((raw, stored)) = Self::key_for(&rule, identity) else {
                continue;
            };
            match self.decide(&rule, &raw, &stored).await {
                Ok(outcome) => verdict.outcomes.push(outcome),
                Err(e) => verdict.unavailable.push(e),
            }
        }
        verdict
    }

    /// Every rule of an internal scope (`@notify/push`) for a key the caller
    /// names, such as the recipient of a notification.
    pub async fn check_scope(&self, scope: &str, key: &str) -> Verdict {
        let mut verdict = Verdict::default();
        for rule in self.rules.in_scope(scope) {
            match self.check(&rule, key).await {
                Ok(outcome) => verdict.outcomes.push(outcome),
                Err(e) => verdict.unavailable.push(e),
            }
        }
        verdict
    }

    /// One rule for an explicit key (the check API).
    pub async fn check(&self, rule: &Arc<Rule>, key: &str) -> Result<Outcome, Unavailable> {
        let key = if rule.key == KeySource::Global {
            "*"
        } else {
            key
        };
        let stored = match &rule.key {
            KeySource::ApiKey | KeySource::Header(_) => hashed(key),
            _ => key.to_owned(),
        };
        self.decide(rule, key, &stored).await
    }

    async fn decide(
        &self,
        rule: &Arc<Rule>,
        raw: &str,
        stored: &str,
    ) -> Result<Outcome, Unavailable> {
        let mut limit = rule.limit_for(raw);
        let mut pk = format!("rl#{}#{stored}", rule.name);
        if rule.shards > 1 {
            // Spread a global counter: each shard holds its share of the limit.
            let shard = fastrand::u64(0..rule.shards);
            let share = |total: u64| total / rule.shards + u64::from(shard < total % rule.shards);
            limit = Limit {
                limit: share(limit.limit).max(1),
                burst: share(limit.burst).max(1),
                ..limit
            };
            pk = format!("{pk}#{shard}");
        }
        let now = self.clock.now_ms();
        let outcome = if self.breaker.is_open(now) {
            Err("the circuit breaker is open".to_owned())
        } else {
            match self.decide_in_store(rule, &pk, &limit, now).await {
                Ok((decision, source)) => {
                    // Only an answer from the store shows the store is up; a
                    // refusal from the local copy called nothing.
                    if source == Source::Store {
                        self.breaker.succeeded();
                    }
                    Ok((decision, source))
                }
                Err(StoreFailure::Contention) => Err(StoreFailure::Contention.to_string()),
                Err(e) => {
                    self.breaker.failed(self.clock.now_ms());
                    Err(e.to_string())
                }
            }
        };
        let (decision, source) = match outcome {
            Ok(found) => found,
            Err(reason) => match rule.on_store_error {
                // A shadow rule never blocks, not even by failing closed.
                OnStoreError::Deny if !rule.shadow => {
                    tracing::error!(rule = %rule.name, %reason, "rate-limit store failed; failing closed");
                    Metrics::new()
                        .dimension("Rule", &rule.name)
                        .count("RateLimitFailClosed", 1)
                        .emit();
                    return Err(Unavailable {
                        rule: rule.name.clone(),
                        reason,
                    });
                }
                OnStoreError::Deny | OnStoreError::Allow => (
                    self.fallback_decision(rule, &pk, &limit, &reason),
                    Source::Fallback,
                ),
            },
        };
        self.observe(rule, &decision);
        Ok(Outcome {
            rule: rule.clone(),
            decision,
            source,
        })
    }

    fn fallback_decision(&self, rule: &Rule, pk: &str, limit: &Limit, reason: &str) -> Decision {
        if self.fallback_calls.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            for limiter in self.fallback.values() {
                limiter.retain_recent();
            }
        }
        let checked = self
            .fallback
            .get(&rule.name)
            .map(|l| (l, l.check_key(&pk.to_owned())));
        match checked {
            Some((limiter, Err(not_until))) => {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(limiter.clock().now());
                Decision {
                    allowed: false,
                    limit: limit.limit,
                    remaining: 0,
                    retry_after_ms: (wait.as_millis() as u64).max(1),
                    reset_ms: (wait.as_millis() as u64).max(1),
                }
            }
            _ => {
                tracing::warn!(rule = %rule.name, %reason, "rate-limit store failed; failing open");
                Metrics::new()
                    .dimension("Rule", &rule.name)
                    .count("RateLimitFailOpen", 1)
                    .emit();
                Decision {
                    allowed: true,
                    limit: limit.limit,
                    remaining: limit.limit.saturating_sub(1),
                    retry_after_ms: 0,
                    reset_ms: limit.window_ms,
                }
            }
        }
    }

    fn observe(&self, rule: &Rule, decision: &Decision) {
        let metric = if !decision.allowed {
            Some(if rule.shadow {
                "RateLimitShadowDenied"
            } else {
                "RateLimitDenied"
            })
        } else if decision.remaining * 5 <= decision.limit {
            Some("RateLimitNearLimit")
        } else {
            None
        };
        if let Some(metric) = metric {
            if metric == "RateLimitShadowDenied" {
                tracing::info!(rule = %rule.name, "shadow rule would have refused a request");
            }
            Metrics::new()
                .dimension("Rule", &rule.name)
                .count(metric, 1)
                .emit();
        }
    }

    async fn decide_in_store(
        &self,
        rule: &Rule,
        pk: &str,
        limit: &Limit,
        now: u64,
    ) -> Result<(Decision, Source), StoreFailure> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        pk.hash(&mut hasher);
        let _guard = self.locks[hasher.finish() as usize % LOCK_STRIPES]
            .lock()
            .await;
        let mut known = self.known.get(pk);
        // Whether the store answered (a failed condition is an answer).
        let mut asked = false;
        for _ in 0..self.config.max_attempts {
            let (decision, next) =
                algorithm::decide(rule.algorithm, known.as_ref().map(|k| &k.state), now, limit);
            let Some(next) = next else {
                // A refusal changes nothing; another instance's newer state
                // could only refuse too.
                let source = if asked { Source::Store } else { Source::Local };
                return Ok((decision, source));
            };
            // A random version, not a counter: after a state expires and
            // starts over, an old copy elsewhere must not match the new one.
            let version = loop {
                let v = fastrand::i64(1..i64::MAX);
                if known.as_ref().is_none_or(|k| k.version != v) {
                    break v;
                }
            };
            let item = state_item(pk, version, &next, limit);
            let condition = match &known {
                None => Condition::absent_or_expired(now / 1000),
                Some(k) => Condition::eq("v", num(k.version)),
            };
            match tokio::time::timeout(
                self.config.store_timeout,
                self.table.put(item, Some(condition)),
            )
            .await
            {
                Ok(Ok(())) => {
                    self.known.insert(
                        pk.to_owned(),
                        Known {
                            version,
                            state: next,
                        },
                    );
                    return Ok((decision, Source::Store));
                }
                Ok(Err(TableError::ConditionFailed { current })) => {
                    asked = true;
                    known = current.and_then(|item| parse_state(&item, now));
                    match &known {
                        Some(k) => self.known.insert(pk.to_owned(), k.clone()),
                        None => self.known.invalidate(pk),
                    }
                }
                Ok(Err(e)) => {
                    self.known.invalidate(pk);
                    return Err(StoreFailure::Table(e));
                }
                Err(_) => {
                    // The write may or may not have happened.
                    self.known.invalidate(pk);
                    return Err(StoreFailure::Timeout);
                }
            }
        }
        Err(StoreFailure::Contention)
    }
}

fn state_item(pk: &str, version: i64, state: &State, limit: &Limit) -> Item {
    let mut item = Key::new(pk, STATE_SK).to_item();
    item.insert("v".into(), num(version));
    item.insert(
        "st".into(),
        s(serde_json::to_string(state).unwrap_or_default()),
    );
    let until = algorithm::relevant_until_ms(state, limit);
    item.insert("ttl".into(), num(until / 1000 + 1));
    item
}

/// A stored state, unless it has expired (then it is as good as none).
fn parse_state(item: &Item, now_ms: u64) -> Option<Known> {
    if get_i64(item, "ttl").is_some_and(|t| t >= 0 && (t as u64) * 1000 <= now_ms) {
        return None;
    }
    let version = get_i64(item, "v")?;
    let state = serde_json::from_str(get_str(item, "st")?).ok()?;
    Some(Known { version, state })
}
