//! The rate-limit layer end to end: exact limits under concurrency with every
//! header, per-user keys, shadow rules, a failing store, the check API and
//! a bad rules file.

use std::path::PathBuf;

use hanul_e2e::{Backend, LocalHost, client, error_code, header, start_fails, token};
use serde_json::{Value, json};

const SERVICE_KEY: &str = "e2e-service-key-0123456789abcdef";

fn rules_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(backend: Backend, rules: &str, extra: &[(&str, &str)]) -> (LocalHost, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = rules_file(&dir, rules);
    let path = path.to_str().unwrap().to_owned();
    let mut env = vec![
        ("RATE_LIMIT_RULES", path.as_str()),
        ("SERVICE_API_KEYS", "e2e:e2e-service-key-0123456789abcdef"),
        // Exact counts need every decision from the store: a busy test
        // machine must not push moto past the 50 ms default into fail-open.
        ("RATE_LIMIT_STORE_TIMEOUT_MS", "5000"),
    ];
    env.extend_from_slice(extra);
    (LocalHost::start_with(backend, &env), dir)
}

const FIFTY: &str = r#"
rules:
  - name: health-fifty
    match: { method: GET, route: /health }
    key: ip
    algorithm: token_bucket
    limit: 50
    unit: hour
"#;

async fn two_hundred_concurrent_requests_get_exactly_fifty_through(backend: Backend) {
    let (host, _dir) = start(backend, FIFTY, &[]);
    let c = client();
    let requests = (0..200).map(|_| {
        let c = c.clone();
        let url = host.url("/health");
        tokio::spawn(async move { c.get(url).send().await.unwrap() })
    });
    let mut ok = Vec::new();
    let mut limited = Vec::new();
    for r in requests {
        let r = r.await.unwrap();
        match r.status().as_u16() {
            200 => ok.push(r),
            429 => limited.push(r),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok.len(), limited.len()), (50, 150));

    for r in &ok {
        assert_eq!(header(r, "x-ratelimit-limit"), "50");
        let remaining: u64 = header(r, "x-ratelimit-remaining").parse().unwrap();
        assert!(remaining < 50);
        assert_eq!(
            header(r, "ratelimit-policy"),
            "\"health-fifty\";q=50;w=3600"
        );
        assert!(header(r, "ratelimit").starts_with("\"health-fifty\";r="));
    }
    let mut remaining: Vec<u64> = ok
        .iter()
        .map(|r| header(r, "x-ratelimit-remaining").parse().unwrap())
        .collect();
    remaining.sort();
    assert_eq!(
        remaining,
        (0..50).collect::<Vec<_>>(),
        "each admission spent one"
    );

    for r in limited {
        assert_eq!(header(&r, "content-type"), "application/problem+json");
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        // 50 per hour: the next token comes within 72 s.
        assert!((1..=72).contains(&retry), "retry-after {retry}");
        assert_eq!(header(&r, "x-ratelimit-retry-after"), retry.to_string());
        assert_eq!(header(&r, "x-ratelimit-limit"), "50");
        assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
        assert_eq!(
            header(&r, "ratelimit-policy"),
            "\"health-fifty\";q=50;w=3600"
        );
        assert!(header(&r, "ratelimit").starts_with("\"health-fifty\";r=0;t="));
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["type"],
            "https://iana.org/assignments/http-problem-types#quota-exceeded"
        );
        assert_eq!(body["status"], 429);
        assert_eq!(body["violated-policies"], json!(["health-fifty"]));
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    // Routes without a rule are not limited.
    let r = c.get(host.url("/api/v1/ids")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-ratelimit-limit").is_none());
}

async fn users_shadow_rules_and_the_strictest_answer(backend: Backend) {
    let rules = r#"
rules:
  - name: shorten-per-user
    match: { method: POST, route: /api/v1/shorten }
    key: user
    algorithm: fixed_window
    limit: 2
    unit: hour
  - name: shorten-per-ip
    match: { method: POST, route: /api/v1/shorten }
    key: ip
    algorithm: sliding_window
    limit: 6
    unit: hour
  - name: ids-watch
    match: { method: GET, route: /api/v1/ids }
    key: ip
    algorithm: sliding_log
    limit: 1
    unit: hour
    shadow: true
"#;
    let (host, _dir) = start(backend, rules, &[]);
    let c = client();
    let nina = token(&host, "nina").await;
    let shorten = |i: u32, bearer: Option<String>| {
        let mut r = c
            .post(host.url("/api/v1/shorten"))
            .json(&json!({"longUrl": format!("https://example.com/{i}")}));
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // Nina's two, then her third is refused by her own rule...
    for i in 0..2 {
        assert_eq!(shorten(i, Some(nina.clone())).await.unwrap().status(), 201);
    }
    let r = shorten(2, Some(nina.clone())).await.unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["violated-policies"], json!(["shorten-per-user"]));
    // ...while anonymous requests only count against the address: the per-IP
    // rule (6) now refuses after 3 more (3 admitted so far counted there too).
    let mut statuses = Vec::new();
    for i in 10..15 {
        statuses.push(shorten(i, None).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, vec![201, 201, 201, 429, 429]);
    // A shadow rule never refuses.
    for _ in 0..4 {
        let r = c.get(host.url("/api/v1/ids")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

async fn a_failing_store_fails_open_or_closed_as_each_rule_says(backend: Backend) {
    let rules = r#"
rules:
  - name: health-open
    match: { method: GET, route: /health }
    key: ip
    algorithm: token_bucket
    limit: 5
    unit: hour
    on_store_error: allow
  - name: ids-closed
    match: { method: GET, route: /api/v1/ids }
    key: ip
    algorithm: fixed_window
    limit: 100
    unit: hour
    on_store_error: deny
"#;
    for fault in ["down", "slow"] {
        let (host, _dir) = start(
            backend,
            rules,
            &[
                ("LOCAL_RATE_LIMIT_STORE", fault),
                ("HANUL_METRICS", "true"),
                ("RATE_LIMIT_STORE_TIMEOUT_MS", "50"),
            ],
        );
        let c = client();
        // Fail open, but the in-process fallback still keeps the limit of 5.
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(
                c.get(host.url("/health"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429], "{fault}");
        // Fail closed.
        let r = c.get(host.url("/api/v1/ids")).send().await.unwrap();
        assert_eq!(
            error_code(r, 503).await,
            "rate_limiter_unavailable",
            "{fault}"
        );
        // Every fail-open decision is counted.
        assert_eq!(host.metric_sum("RateLimitFailOpen"), 5.0, "{fault}");
    }
}

async fn other_services_check_limits_with_a_service_key(backend: Backend) {
    let rules = r#"
rules:
  - name: partner-calls
    key: header:x-partner
    match: { method: GET, route: /health }
    algorithm: leaky_bucket
    limit: 2
    unit: hour
    burst: 2
"#;
    let (host, _dir) = start(backend, rules, &[]);
    let c = client();
    let check = |body: Value, key: Option<&'static str>| {
        let mut r = c.post(host.url("/api/v1/ratelimit/check")).json(&body);
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send()
    };
    let body = json!({"rule": "partner-calls", "key": "acme"});
    let r = check(body.clone(), None).await.unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_api_key");
    let r = check(body.clone(), Some("wrong-key-0123456789abcdefgh"))
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_api_key");
    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = check(body.clone(), Some(SERVICE_KEY)).await.unwrap();
        assert_eq!(r.status(), 200);
        answers.push(r.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0]["allowed"], true);
    assert_eq!(answers[0]["remaining"], 1);
    assert_eq!(answers[1]["allowed"], true);
    assert_eq!(answers[2]["allowed"], false);
    assert!(answers[2]["retryAfterSeconds"].as_u64().unwrap() > 0);
    // The same counter limits the route for that header value.
    let r = c
        .get(host.url("/health"))
        .header("x-partner", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = c
        .get(host.url("/health"))
        .header("x-partner", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = check(json!({"rule": "nope", "key": "k"}), Some(SERVICE_KEY))
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "rule_not_found");
    let r = check(
        json!({"rule": "partner-calls", "key": ""}),
        Some(SERVICE_KEY),
    )
    .await
    .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_key");
    let r = check(json!({"rule": "partner-calls"}), Some(SERVICE_KEY))
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_body");
}

hanul_e2e::on_both_backends!(
    two_hundred_concurrent_requests_get_exactly_fifty_through,
    users_shadow_rules_and_the_strictest_answer,
    a_failing_store_fails_open_or_closed_as_each_rule_says,
    other_services_check_limits_with_a_service_key,
);

#[test]
fn a_bad_rules_file_stops_the_start_naming_the_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "rules:\n  - {name: r1, key: ip, algorithm: tokn_bucket, limit: 5, unit: minute}\n",
            "field `algorithm`",
        ),
        (
            "rules:\n  - {name: r1, key: ip, algorithm: fixed_window, limit: 5, unit: minute, match: {route: /no/such/route}}\n",
            "field `match.route`",
        ),
    ];
    for (text, expected) in cases {
        let path = rules_file(&dir, text);
        let stderr = start_fails(&[("RATE_LIMIT_RULES", path.to_str().unwrap())]);
        assert!(
            stderr.contains("rule") && stderr.contains("r1") && stderr.contains(expected),
            "{expected}: {stderr}"
        );
    }
    let stderr = start_fails(&[("RATE_LIMIT_RULES", "/no/such/file.yaml")]);
    assert!(stderr.contains("RATE_LIMIT_RULES"), "{stderr}");
}
