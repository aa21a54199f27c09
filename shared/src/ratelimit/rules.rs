//! Rules from YAML (`RATE_LIMIT_RULES`, else the default file that ships).
//! Each rule is checked on its own so a mistake names the rule and field.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::algorithm::{Algorithm, Limit};

/// The rules that ship: `shared/src/ratelimit/default-rules.yaml`.
pub const DEFAULT_RULES: &str = include_str!("default-rules.yaml");

/// The same rules as JSON, which a cold start parses several times faster
/// than YAML (a test keeps the two equal; regenerate with
/// `python3 -c 'import json,yaml; print(json.dumps(yaml.safe_load(open("default-rules.yaml")), indent=1))' > default-rules.json`).
pub const DEFAULT_RULES_JSON: &str = include_str!("default-rules.json");

/// Where a rule takes the key it counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Ip,
    /// The verified token's `sub`.
    User,
    /// The `x-api-key` header (stored hashed).
    ApiKey,
    /// Any request header (stored hashed), lower-case name.
    Header(String),
    /// One counter for everyone, sharded over `shards` items.
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Fail open: admit (within the in-process fallback limiter) and log.
    Allow,
    /// Fail closed: 503.
    Deny,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub method: Option<http::Method>,
    pub route: Option<String>,
    pub key: KeySource,
    pub algorithm: Algorithm,
    pub limit: u64,
    pub window_ms: u64,
    pub burst: u64,
    pub on_store_error: OnStoreError,
    pub shadow: bool,
    pub overrides: HashMap<String, u64>,
    /// Items a `global` counter is spread over (1 for other keys).
    pub shards: u64,
}

impl Rule {
    /// The limit for a key, after overrides (burst scales with it).
    pub fn limit_for(&self, key: &str) -> Limit {
        match self.overrides.get(key) {
            Some(&limit) => Limit {
                limit,
                window_ms: self.window_ms,
                burst: if self.burst == self.limit {
                    limit
                } else {
                    self.burst.max(1)
                },
            },
            None => Limit {
                limit: self.limit,
                window_ms: self.window_ms,
                burst: self.burst,
            },
        }
    }

    pub fn window_secs(&self) -> u64 {
        (self.window_ms / 1000).max(1)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    by_route: HashMap<(http::Method, String), Vec<Arc<Rule>>>,
    /// Rules that name no route, or only a method.
    general: Vec<Arc<Rule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rules: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    method: Option<String>,
    route: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(rename = "match")]
    matcher: Option<RawMatch>,
    key: String,
    algorithm: String,
    limit: u64,
    unit: String,
    burst: Option<u64>,
    on_store_error: Option<String>,
    shadow: Option<bool>,
    overrides: Option<BTreeMap<String, u64>>,
    shards: Option<u64>,
}

pub const MAX_LIMIT: u64 = 1_000_000_000;
/// A sliding log keeps one timestamp per admitted request in the state item.
pub const MAX_SLIDING_LOG: u64 = 1000;

fn unit_ms(unit: &str) -> Option<u64> {
    Some(match unit {
        "second" => 1000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        _ => return None,
    })
}

impl RuleSet {
    /// Parses and checks a rules file; the error names the rule and field.
    pub fn parse(text: &str) -> Result<RuleSet, String> {
        let file: RawFile = serde_yaml_ng::from_str(text)
            .map_err(|e| format!("rate-limit rules: not a rules file: {e}"))?;
        Self::from_raw(file)
    }

    /// The built-in rules ([`DEFAULT_RULES`], from their JSON form).
    pub fn defaults() -> Result<RuleSet, String> {
        let file: RawFile = serde_json::from_str(DEFAULT_RULES_JSON)
            .map_err(|e| format!("rate-limit rules: the built-in rules: {e}"))?;
        Self::from_raw(file)
    }

    fn from_raw(file: RawFile) -> Result<RuleSet, String> {
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (i, raw) in file.rules.into_iter().enumerate() {
            let label = raw
                .get("name")
                .and_then(Value::as_str)
                .map(|n| format!("rule {} ({n})", i + 1))
                .unwrap_or_else(|| format!("rule {}", i + 1));
            let raw: RawRule = serde_yaml_ng::from_value(raw)
                .map_err(|e| format!("rate-limit rules: {label}: {e}"))?;
            let rule = Self::check(raw).map_err(|(field, message)| {
                format!("rate-limit rules: {label}: field `{field}`: {message}")
            })?;
            if !names.insert(rule.name.clone()) {
                return Err(format!(
                    "rate-limit rules: {label}: field `name`: {:?} is used twice",
                    rule.name
                ));
            }
            rules.push(Arc::new(rule));
        }
        Ok(Self::index(rules))
    }

    fn index(rules: Vec<Arc<Rule>>) -> RuleSet {
        let mut by_route: HashMap<(http::Method, String), Vec<Arc<Rule>>> = HashMap::new();
        let mut general = Vec::new();
        for rule in &rules {
            match (&rule.method, &rule.route) {
                (Some(m), Some(r)) => by_route
                    .entry((m.clone(), r.clone()))
                    .or_default()
                    .push(rule.clone()),
                _ => general.push(rule.clone()),
            }
        }
        RuleSet {
            rules,
            by_route,
            general,
        }
    }

    fn check(raw: RawRule) -> Result<Rule, (&'static str, String)> {
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err((
                "name",
                "1 to 64 letters, digits, `-`, `_` or `.` (it names the policy in headers)".into(),
            ));
        }
        let (method, route) = match raw.matcher {
            None => (None, None),
            Some(m) => {
                let method = m
                    .method
                    .map(|s| {
                        http::Method::from_bytes(s.to_ascii_uppercase().as_bytes())
                            .ok()
                            .filter(|m| {
                                ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                                    .contains(&m.as_str())
                            })
                            .ok_or(("match.method", format!("{s:?} is not an HTTP method")))
                    })
                    .transpose()?;
                if let Some(r) = &m.route
                    && !r.starts_with('/')
                    && !(r.starts_with('@') && r.len() > 1)
                {
                    return Err((
                        "match.route",
                        format!(
                            "{r:?} must be a route of the route table, such as /api/v1/shorten, or an internal scope such as @notify/sms"
                        ),
                    ));
                }
                (method, m.route)
            }
        };
        let key = match raw.key.as_str() {
            "ip" => KeySource::Ip,
            "user" => KeySource::User,
            "api_key" => KeySource::ApiKey,
            "global" => KeySource::Global,
            other => match other.strip_prefix("header:") {
                Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                    KeySource::Header(h.to_ascii_lowercase())
                }
                _ => {
                    return Err((
                        "key",
                        format!("{other:?}: expected ip, user, api_key, header:<name> or global"),
                    ));
                }
            },
        };
        let algorithm = match raw.algorithm.as_str() {
            "token_bucket" => Algorithm::TokenBucket,
            "leaky_bucket" => Algorithm::LeakyBucket,
            "fixed_window" => Algorithm::FixedWindow,
            "sliding_log" => Algorithm::SlidingLog,
            "sliding_window" => Algorithm::SlidingWindow,
            other => {
                return Err((
                    "algorithm",
                    format!(
                        "{other:?}: expected token_bucket, leaky_bucket, fixed_window, sliding_log or sliding_window"
                    ),
                ));
            }
        };
        let max = if algorithm == Algorithm::SlidingLog {
            MAX_SLIDING_LOG
        } else {
            MAX_LIMIT
        };
        if !(1..=max).contains(&raw.limit) {
            return Err(("limit", format!("{} is not from 1 to {max}", raw.limit)));
        }
        let window_ms = unit_ms(&raw.unit).ok_or((
            "unit",
            format!("{:?}: expected second, minute, hour or day", raw.unit),
        ))?;
        let bucket = matches!(algorithm, Algorithm::TokenBucket | Algorithm::LeakyBucket);
        let burst = match raw.burst {
            Some(_) if !bucket => {
                return Err((
                    "burst",
                    format!(
                        "only bucket algorithms take a burst, not {}",
                        algorithm.name()
                    ),
                ));
            }
            Some(b) if !(1..=MAX_LIMIT).contains(&b) => {
                return Err(("burst", format!("{b} is not from 1 to {MAX_LIMIT}")));
            }
            Some(b) => b,
            // A token bucket holds a window's worth; a leaky bucket lets
            // requests through evenly, one at a time.
            None if algorithm == Algorithm::TokenBucket => raw.limit,
            None if algorithm == Algorithm::LeakyBucket => 1,
            None => raw.limit,
        };
        let on_store_error = match raw.on_store_error.as_deref() {
            None | Some("allow") => OnStoreError::Allow,
            Some("deny") => OnStoreError::Deny,
            Some(other) => {
                return Err((
                    "on_store_error",
                    format!("{other:?}: expected allow or deny"),
                ));
            }
        };
        let overrides: HashMap<String, u64> =
            raw.overrides.unwrap_or_default().into_iter().collect();
        if let Some((k, v)) = overrides.iter().find(|(_, v)| !(1..=max).contains(*v)) {
            return Err(("overrides", format!("{k:?}: {v} is not from 1 to {max}")));
        }
        // Each shard admits at least one request, so there can be no more
        // shards than the smallest limit or burst the rule may have.
        let most = overrides
            .values()
            .fold(raw.limit.min(burst).min(100), |m, v| m.min(*v));
        let shards = match (raw.shards, &key) {
            (Some(_), k) if *k != KeySource::Global => {
                return Err(("shards", "only a global key is sharded".into()));
            }
            (Some(s), _) if !(1..=most).contains(&s) => {
                return Err((
                    "shards",
                    format!(
                        "{s} is not from 1 to {most} (100 at most, and no more than the limit, the burst or any override)"
                    ),
                ));
            }
            (Some(s), _) => s,
            (None, KeySource::Global) => 10.min(most),
            (None, _) => 1,
        };
        Ok(Rule {
            name: raw.name,
            method,
            route,
            key,
            algorithm,
            limit: raw.limit,
            window_ms,
            burst,
            on_store_error,
            shadow: raw.shadow.unwrap_or(false),
            overrides,
            shards,
        })
    }

    /// Every route a rule names must be one the system serves: a typo would
    /// otherwise never match and never say so.
    pub fn check_routes(&self, known: &[(http::Method, &str)]) -> Result<(), String> {
        for rule in &self.rules {
            let Some(route) = rule.route.as_ref().filter(|r| !r.starts_with('@')) else {
                continue;
            };
            let served = known
                .iter()
                .any(|(m, r)| r == route && rule.method.as_ref().is_none_or(|rm| rm == m));
            if !served {
                let method = rule
                    .method
                    .as_ref()
                    .map_or("any method".into(), ToString::to_string);
                return Err(format!(
                    "rate-limit rules: rule {}: field `match.route`: no function serves {method} {route}",
                    rule.name
                ));
            }
        }
        Ok(())
    }

    /// The rules that apply to a request on `route` (as in the route table).
    /// A HEAD request is a GET without the body: GET rules apply to it too.
    pub fn matching(&self, method: &http::Method, route: Option<&str>) -> Vec<Arc<Rule>> {
        let mut out: Vec<Arc<Rule>> = Vec::new();
        if let Some(route) = route {
            for m in methods_of(method) {
                if let Some(rules) = self.by_route.get(&(m.clone(), route.to_owned())) {
                    out.extend(rules.iter().cloned());
                }
            }
        }
        out.extend(
            self.general
                .iter()
                .filter(|r| r.method.as_ref().is_none_or(|m| serves(m, method)))
                .filter(|r| r.route.as_deref().is_none_or(|rr| Some(rr) == route))
                .cloned(),
        );
        out
    }

    /// Whether any rule applies to requests on this route (no allocation:
    /// the check every request makes).
    pub fn applies(&self, method: &http::Method, route: Option<&str>) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        if let Some(route) = route
            && self
                .by_route
                .keys()
                .any(|(m, r)| serves(m, method) && r == route)
        {
            return true;
        }
        self.general.iter().any(|r| {
            r.method.as_ref().is_none_or(|m| serves(m, method))
                && r.route.as_deref().is_none_or(|rr| Some(rr) == route)
        })
    }

    /// Whether any rule can ever apply to one of these routes: a function
    /// none can apply to needs no rate-limit layer at all.
    pub fn may_apply(&self, routes: &[(http::Method, &str)]) -> bool {
        self.rules.iter().any(|rule| {
            routes.iter().any(|(method, route)| {
                rule.method
                    .as_ref()
                    .is_none_or(|m| serves(m, method) || *m == http::Method::HEAD)
                    && rule.route.as_deref().is_none_or(|r| r == *route)
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules of an internal scope (`@notify/sms`): checked by a service
    /// for a key it names, never matched by an HTTP request.
    pub fn in_scope(&self, scope: &str) -> Vec<Arc<Rule>> {
        self.rules
            .iter()
            .filter(|r| r.route.as_deref() == Some(scope))
            .cloned()
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Rule>> {
        self.rules.iter().find(|r| r.name == name).cloned()
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }
}

/// Whether a rule for `rule` requests covers a `request` request: the same
/// method, or a GET rule and a HEAD request (axum serves HEAD with GET).
fn serves(rule: &http::Method, request: &http::Method) -> bool {
    rule == request || (*rule == http::Method::GET && *request == http::Method::HEAD)
}

/// The rule methods that cover a request's method.
fn methods_of(request: &http::Method) -> impl Iterator<Item = &http::Method> {
    let get = (*request == http::Method::HEAD).then_some(&http::Method::GET);
    std::iter::once(request).chain(get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_parse() {
        let rules = RuleSet::parse(DEFAULT_RULES).unwrap();
        assert_eq!(
            RuleSet::defaults().unwrap().rules().len(),
            rules.rules().len()
        );
        assert!(!rules.is_empty());
    }

    #[test]
    fn the_issue_example_parses() {
        let text = r#"
rules:
  - name: shorten-per-ip
    match: { method: POST, route: /api/v1/shorten }
    key: ip
    algorithm: token_bucket
    limit: 20
    unit: minute
    burst: 20
    on_store_error: allow
    shadow: false
    overrides: { "203.0.113.7": 1000 }
"#;
        let rules = RuleSet::parse(text).unwrap();
        let rule = rules.get("shorten-per-ip").unwrap();
        assert_eq!(rule.limit_for("203.0.113.7").limit, 1000);
        assert_eq!(rule.limit_for("198.51.100.1").limit, 20);
        assert_eq!(rule.window_ms, 60_000);
        assert_eq!(
            rules
                .matching(&http::Method::POST, Some("/api/v1/shorten"))
                .len(),
            1
        );
        assert!(
            rules
                .matching(&http::Method::GET, Some("/api/v1/shorten"))
                .is_empty()
        );
        assert!(
            rules
                .check_routes(&[(http::Method::POST, "/api/v1/shorten")])
                .is_ok()
        );
        let err = rules
            .check_routes(&[(http::Method::GET, "/health")])
            .unwrap_err();
        assert!(
            err.contains("shorten-per-ip") && err.contains("match.route"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_name_the_rule_and_field() {
        let base = "  - name: r1\n    key: ip\n    algorithm: fixed_window\n    limit: 5\n    unit: minute\n";
        let cases = [
            (base.replace("fixed_window", "tokn_bucket"), "`algorithm`"),
            (base.replace("key: ip", "key: cookie"), "`key`"),
            (base.replace("unit: minute", "unit: fortnight"), "`unit`"),
            (base.replace("limit: 5", "limit: 0"), "`limit`"),
            (format!("{base}    burst: 3\n"), "`burst`"),
            (
                format!("{base}    on_store_error: maybe\n"),
                "`on_store_error`",
            ),
            (format!("{base}    shards: 2\n"), "`shards`"),
            (
                format!("{base}    match: {{ route: api/v1/x }}\n"),
                "`match.route`",
            ),
            (
                format!("{base}    match: {{ method: FETCH }}\n"),
                "`match.method`",
            ),
            (base.replace("name: r1", "name: \"has space\""), "`name`"),
            (format!("{base}    colour: blue\n"), "unknown field"),
            (base.replace("limit: 5", "limit: lots"), "limit"),
        ];
        for (rule, expected) in cases {
            let text = format!("rules:\n{rule}");
            let err = RuleSet::parse(&text).unwrap_err();
            assert!(
                err.contains("rule 1") && err.contains(expected),
                "{expected}: {err}"
            );
        }
        let twice = format!("rules:\n{base}{base}");
        assert!(RuleSet::parse(&twice).unwrap_err().contains("used twice"));
        assert!(RuleSet::parse("nonsense").is_err());
    }

    #[test]
    fn defaults_depend_on_the_algorithm() {
        let text = "rules:\n  - {name: a, key: ip, algorithm: token_bucket, limit: 9, unit: second}\n  - {name: b, key: ip, algorithm: leaky_bucket, limit: 9, unit: second}\n  - {name: c, key: global, algorithm: fixed_window, limit: 100, unit: hour}\n";
        let rules = RuleSet::parse(text).unwrap();
        assert_eq!(rules.get("a").unwrap().burst, 9);
        assert_eq!(rules.get("b").unwrap().burst, 1);
        assert_eq!(rules.get("c").unwrap().shards, 10);
        assert_eq!(rules.get("a").unwrap().on_store_error, OnStoreError::Allow);
        // A rule with no route applies everywhere.
        assert_eq!(rules.matching(&http::Method::DELETE, Some("/x")).len(), 3);
    }

    #[test]
    fn head_requests_count_under_get_rules() {
        let text = "rules:\n  - {name: ids, key: ip, algorithm: fixed_window, limit: 9, unit: second, match: {method: GET, route: /api/v1/ids}}\n  - {name: gets, key: ip, algorithm: fixed_window, limit: 9, unit: second, match: {method: GET}}\n";
        let rules = RuleSet::parse(text).unwrap();
        let names = |m: http::Method| {
            let mut n: Vec<String> = rules
                .matching(&m, Some("/api/v1/ids"))
                .iter()
                .map(|r| r.name.clone())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(http::Method::HEAD), ["gets", "ids"]);
        assert_eq!(names(http::Method::GET), ["gets", "ids"]);
        assert!(names(http::Method::POST).is_empty());
        assert!(rules.applies(&http::Method::HEAD, Some("/api/v1/ids")));
        assert!(!rules.applies(&http::Method::POST, Some("/api/v1/ids")));
    }

    #[test]
    fn a_global_rule_has_no_more_shards_than_its_smallest_allowance() {
        let rule = |extra: &str| {
            format!(
                "rules:\n  - {{name: g, key: global, algorithm: token_bucket, limit: 100, unit: second{extra}}}\n"
            )
        };
        // Each shard admits at least one: five shards of a burst of three
        // would admit five at once.
        for extra in [
            ", burst: 3, shards: 5",
            ", shards: 5, overrides: {\"*\": 4}",
        ] {
            let err = RuleSet::parse(&rule(extra)).unwrap_err();
            assert!(err.contains("(g)") && err.contains("`shards`"), "{err}");
        }
        let leaky = "rules:\n  - {name: g, key: global, algorithm: leaky_bucket, limit: 100, unit: second}\n";
        assert_eq!(RuleSet::parse(leaky).unwrap().get("g").unwrap().shards, 1);
        let small = RuleSet::parse(&rule(", burst: 4")).unwrap();
        assert_eq!(small.get("g").unwrap().shards, 4);
    }

    #[test]
    fn a_function_no_rule_names_needs_no_layer() {
        let text = "rules:\n  - {name: a, key: ip, algorithm: fixed_window, limit: 9, unit: second, match: {method: POST, route: /api/v1/shorten}}\n";
        let rules = RuleSet::parse(text).unwrap();
        assert!(rules.may_apply(&[(http::Method::POST, "/api/v1/shorten")]));
        assert!(!rules.may_apply(&[
            (http::Method::GET, "/{code}"),
            (http::Method::HEAD, "/{code}")
        ]));
        assert!(!rules.applies(&http::Method::GET, Some("/api/v1/shorten")));
        let everywhere = RuleSet::parse(
            "rules:\n  - {name: b, key: ip, algorithm: fixed_window, limit: 9, unit: second}\n",
        )
        .unwrap();
        assert!(everywhere.may_apply(&[(http::Method::GET, "/{code}")]));
    }

    #[test]
    fn the_json_defaults_are_the_yaml_defaults() {
        let yaml: serde_json::Value = serde_yaml_ng::from_str(DEFAULT_RULES).unwrap();
        let json: serde_json::Value = serde_json::from_str(DEFAULT_RULES_JSON).unwrap();
        assert!(
            yaml == json,
            "default-rules.json differs from default-rules.yaml; regenerate it:\n{}",
            serde_json::to_string_pretty(&yaml).unwrap_or_default()
        );
    }
}
