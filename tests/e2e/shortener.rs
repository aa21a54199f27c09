//! The URL shortener end to end: create (anonymous, owned, batch), codes,
//! aliases, validation, redirects (301/302, HEAD, expiry, maxVisits under
//! concurrency), the owner API, QR codes and click analytics.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hanul_e2e::{Backend, LocalHost, client, error_code, header, rfc3339_in, token};
use serde_json::{Value, json};

async fn shorten(host: &LocalHost, body: Value, bearer: Option<&str>) -> reqwest::Response {
    let mut request = client().post(host.url("/api/v1/shorten")).json(&body);
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap()
}

async fn created(host: &LocalHost, body: Value, bearer: Option<&str>) -> Value {
    let r = shorten(host, body.clone(), bearer).await;
    assert_eq!(r.status(), 201, "{body}");
    r.json().await.unwrap()
}

async fn creates_links_and_reuses_them(backend: Backend) {
    let host = LocalHost::start(backend);
    let body = created(
        &host,
        json!({"longUrl": "https://example.com/articles/1?ref=a"}),
        None,
    )
    .await;
    let code = body["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(body["shortUrl"], host.url(&format!("/{code}")));
    assert_eq!(body["longUrl"], "https://example.com/articles/1?ref=a");
    assert_eq!(body["redirect"], 301);
    assert_eq!(body["expiresAt"], Value::Null);
    assert_eq!(body["maxVisits"], Value::Null);
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));

    // The same URL, also written differently: the same link, 200.
    for same in [
        "https://example.com/articles/1?ref=a",
        "HTTPS://EXAMPLE.com:443/articles/1?ref=a",
    ] {
        let r = shorten(&host, json!({"longUrl": same}), None).await;
        assert_eq!(r.status(), 200, "{same}");
        let again: Value = r.json().await.unwrap();
        assert_eq!(again["code"], code.as_str());
    }
    // Another redirect kind, an expiry or a cap: a new link.
    for other in [
        json!({"longUrl": "https://example.com/articles/1?ref=a", "redirect": 302}),
        json!({"longUrl": "https://example.com/articles/1?ref=a", "expiresAt": rfc3339_in(3600)}),
        json!({"longUrl": "https://example.com/articles/1?ref=a", "maxVisits": 10}),
    ] {
        let fresh = created(&host, other.clone(), None).await;
        assert_ne!(fresh["code"], code.as_str(), "{other}");
    }
    // With a token the link is the caller's own: not the anonymous one, and
    // the caller gets it back the second time.
    let nina = token(&host, "nina").await;
    let owned = created(
        &host,
        json!({"longUrl": "https://example.com/articles/1?ref=a"}),
        Some(&nina),
    )
    .await;
    assert_ne!(owned["code"], code.as_str());
    let r = shorten(
        &host,
        json!({"longUrl": "https://example.com/articles/1?ref=a"}),
        Some(&nina),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], owned["code"]);
    // A bad token is refused, not ignored.
    let r = shorten(
        &host,
        json!({"longUrl": "https://example.com/"}),
        Some("not.a.token"),
    )
    .await;
    assert_eq!(error_code(r, 401).await, "unauthorized");
}

async fn codes_are_unique_and_unguessable(backend: Backend) {
    let host = LocalHost::start(backend);
    let mut codes = Vec::new();
    for i in 0..30 {
        let body = created(
            &host,
            json!({"longUrl": format!("https://example.com/p/{i}")}),
            None,
        )
        .await;
        codes.push(body["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), codes.len());
    let mut sorted = codes.clone();
    sorted.sort();
    assert_ne!(
        sorted, codes,
        "consecutive creations must not give ordered codes"
    );
    let shared_prefix = codes.windows(2).filter(|w| w[0][..2] == w[1][..2]).count();
    assert!(shared_prefix <= 2, "{codes:?}");
}

async fn aliases_are_unique_and_checked(backend: Backend) {
    let host = LocalHost::start(backend);
    let body = created(
        &host,
        json!({"longUrl": "https://example.com/launch", "alias": "launch-2026"}),
        None,
    )
    .await;
    assert_eq!(body["code"], "launch-2026");
    assert_eq!(body["shortUrl"], host.url("/launch-2026"));
    let r = shorten(
        &host,
        json!({"longUrl": "https://example.com/other", "alias": "launch-2026"}),
        None,
    )
    .await;
    assert_eq!(error_code(r, 409).await, "alias_taken");
    for bad in ["ab", "has space", "slash/no", &"x".repeat(65), "한글별칭"] {
        let r = shorten(
            &host,
            json!({"longUrl": "https://example.com/", "alias": bad}),
            None,
        )
        .await;
        assert_eq!(error_code(r, 400).await, "invalid_alias", "{bad}");
    }
    for reserved in ["api", "health", "Local", "ws", "WS"] {
        let r = shorten(
            &host,
            json!({"longUrl": "https://example.com/", "alias": reserved}),
            None,
        )
        .await;
        assert_eq!(error_code(r, 400).await, "invalid_alias", "{reserved}");
    }
}

async fn bad_input_is_refused_and_writes_nothing(backend: Backend) {
    let host = LocalHost::start(backend);
    let long = format!("https://example.com/{}", "a".repeat(2100));
    let own = host.url("/abc");
    let label_too_long = format!("https://{}.example/", "a".repeat(64));
    let cases = [
        (json!({"longUrl": "ftp://example.com/x"}), "invalid_url"),
        (json!({"longUrl": "javascript:alert(1)"}), "invalid_url"),
        (json!({"longUrl": "example.com/no-scheme"}), "invalid_url"),
        (
            json!({"longUrl": "https://user:pw@example.com/"}),
            "invalid_url",
        ),
        (json!({"longUrl": long}), "invalid_url"),
        (json!({"longUrl": own}), "invalid_url"),
        (json!({"longUrl": ""}), "invalid_url"),
        (json!({"longUrl": "https://a..b.example/"}), "invalid_url"),
        (json!({"longUrl": label_too_long}), "invalid_url"),
        (
            json!({"longUrl": "https://example.com/", "expiresAt": "2001-01-01T00:00:00Z"}),
            "invalid_expires_at",
        ),
        (
            json!({"longUrl": "https://example.com/", "expiresAt": "next tuesday"}),
            "invalid_expires_at",
        ),
        (
            json!({"longUrl": "https://example.com/", "maxVisits": 0}),
            "invalid_max_visits",
        ),
        (
            json!({"longUrl": "https://example.com/", "redirect": 303}),
            "invalid_body",
        ),
        (
            json!({"longUrl": "https://example.com/", "redirect": 301, "maxVisits": 3}),
            "invalid_redirect",
        ),
        (
            json!({"longUrl": "https://example.com/", "colour": "blue"}),
            "invalid_body",
        ),
        (json!({"url": "https://example.com/"}), "invalid_body"),
        (json!({"longUrl": 5}), "invalid_body"),
    ];
    for (i, (body, code)) in cases.into_iter().enumerate() {
        // Each carries an alias: had anything been written, the alias
        // would now be taken.
        let mut body = body;
        body["alias"] = json!(format!("bad-{i}"));
        let r = shorten(&host, body.clone(), None).await;
        assert_eq!(error_code(r, 400).await, code, "{body}");
    }
    let r = client()
        .post(host.url("/api/v1/shorten"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_body");
    for i in 0..15 {
        created(
            &host,
            json!({"longUrl": "https://example.com/fine", "alias": format!("bad-{i}")}),
            None,
        )
        .await;
    }
}

async fn redirects_follow_the_link(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    let permanent = created(&host, json!({"longUrl": "https://example.com/perm"}), None).await;
    let code = permanent["code"].as_str().unwrap();
    for path in [format!("/{code}"), format!("/api/v1/{code}")] {
        let r = c.get(host.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 301, "{path}");
        assert_eq!(header(&r, "location"), "https://example.com/perm");
        assert_eq!(header(&r, "cache-control"), "public, max-age=3600");
        let r = c.head(host.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(header(&r, "location"), "https://example.com/perm");
    }
    let temporary = created(
        &host,
        json!({"longUrl": "https://example.com/temp", "redirect": 302}),
        None,
    )
    .await;
    let r = c
        .get(host.url(&format!("/{}", temporary["code"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(header(&r, "location"), "https://example.com/temp");
    assert_eq!(header(&r, "cache-control"), "private, no-store");

    // A 301 that expires soon is cached no longer than it lives.
    let soon = created(
        &host,
        json!({"longUrl": "https://example.com/soon", "expiresAt": rfc3339_in(6)}),
        None,
    )
    .await;
    let soon_path = format!("/{}", soon["code"].as_str().unwrap());
    let r = c.get(host.url(&soon_path)).send().await.unwrap();
    assert_eq!(r.status(), 301);
    let max_age: u64 = header(&r, "cache-control")
        .trim_start_matches("public, max-age=")
        .parse()
        .unwrap();
    assert!(max_age <= 6, "max-age {max_age}");

    for unknown in ["/zzzzzzz", "/api/v1/zzzzzzz", "/favicon.ico", "/no%20such"] {
        let r = c.get(host.url(unknown)).send().await.unwrap();
        assert_eq!(error_code(r, 404).await, "link_not_found", "{unknown}");
    }
    // Past its expiry (a few seconds of margin for a busy machine).
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let r = c.get(host.url(&soon_path)).send().await.unwrap();
    assert_eq!(error_code(r, 410).await, "link_expired");
}

async fn max_visits_hold_under_concurrency(backend: Backend) {
    let host = LocalHost::start(backend);
    let capped = created(
        &host,
        json!({"longUrl": "https://example.com/capped", "maxVisits": 5}),
        None,
    )
    .await;
    assert_eq!(capped["redirect"], 302, "a capped link defaults to 302");
    assert_eq!(capped["maxVisits"], 5);
    let path = format!("/{}", capped["code"].as_str().unwrap());
    // HEAD spends no visit.
    let r = client().head(host.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let c = client();
    let requests = (0..40).map(|_| {
        let c = c.clone();
        let url = host.url(&path);
        tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
    });
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 302).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 410).count(),
        35,
        "{statuses:?}"
    );
    let r = c.get(host.url(&path)).send().await.unwrap();
    assert_eq!(error_code(r, 410).await, "link_exhausted");
}

async fn details(host: &LocalHost, code: &str, bearer: &str) -> reqwest::Response {
    client()
        .get(host.url(&format!("/api/v1/urls/{code}")))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

async fn clicks_are_aggregated(backend: Backend) {
    let host = LocalHost::start(backend);
    let nina = token(&host, "nina").await;
    let link = created(
        &host,
        json!({"longUrl": "https://example.com/tracked", "redirect": 302}),
        Some(&nina),
    )
    .await;
    let code = link["code"].as_str().unwrap();
    let c = client();
    let phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
    let desktop = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36";
    for (referer, agent) in [
        (Some("https://news.example.org/today"), phone),
        (Some("https://news.example.org/other"), desktop),
        (None, desktop),
    ] {
        let mut r = c
            .get(host.url(&format!("/{code}")))
            .header("user-agent", agent);
        if let Some(referer) = referer {
            r = r.header("referer", referer);
        }
        assert_eq!(r.send().await.unwrap().status(), 302);
    }
    // HEAD is not a click.
    c.head(host.url(&format!("/{code}"))).send().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let r = details(&host, code, &nina).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        if body["stats"]["totalClicks"] == 3 || Instant::now() > deadline {
            break body["stats"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats["totalClicks"], 3, "{stats}");
    assert_eq!(stats["referrers"]["news.example.org"], 2);
    assert_eq!(stats["referrers"]["direct"], 1);
    assert_eq!(stats["devices"]["mobile"], 1);
    assert_eq!(stats["devices"]["desktop"], 2);
    let by_day = stats["clicksByDay"].as_object().unwrap();
    assert_eq!(by_day.values().filter_map(Value::as_u64).sum::<u64>(), 3);
    // Counted once: nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body: Value = details(&host, code, &nina).await.json().await.unwrap();
    assert_eq!(body["stats"]["totalClicks"], 3);
}

async fn owners_read_edit_and_delete(backend: Backend) {
    let host = LocalHost::start_with(
        backend,
        &[
            ("SHORTENER_DELETE_CONFIRM_VISITS", "2"),
            ("HANUL_METRICS", "true"),
        ],
    );
    let c = client();
    let nina = token(&host, "nina").await;
    let omar = token(&host, "omar").await;
    let link = created(
        &host,
        json!({"longUrl": "https://example.com/v1", "redirect": 302}),
        Some(&nina),
    )
    .await;
    let code = link["code"].as_str().unwrap().to_owned();
    let api = host.url(&format!("/api/v1/urls/{code}"));

    let r = details(&host, &code, &nina).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["longUrl"], "https://example.com/v1");
    assert_eq!(body["visits"], 0);
    // Someone else's link, or an anonymous one, is "not found"; no token is 401.
    assert_eq!(
        error_code(details(&host, &code, &omar).await, 404).await,
        "link_not_found"
    );
    let r = c.get(&api).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let anonymous = created(&host, json!({"longUrl": "https://example.com/anon"}), None).await;
    let r = details(&host, anonymous["code"].as_str().unwrap(), &nina).await;
    assert_eq!(error_code(r, 404).await, "link_not_found");

    // Warm the redirect cache, then edit: the next redirect follows the edit.
    let r = c.get(host.url(&format!("/{code}"))).send().await.unwrap();
    assert_eq!(header(&r, "location"), "https://example.com/v1");
    let r = c
        .patch(&api)
        .bearer_auth(&nina)
        .json(&json!({"longUrl": "https://example.com/v2", "expiresAt": rfc3339_in(7200)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let edited: Value = r.json().await.unwrap();
    assert_eq!(edited["longUrl"], "https://example.com/v2");
    assert!(edited["expiresAt"].is_string());
    assert_eq!(edited["cdn"], "queued");
    let r = c.get(host.url(&format!("/{code}"))).send().await.unwrap();
    assert_eq!(header(&r, "location"), "https://example.com/v2");
    // Clearing the expiry with null; bad edits change nothing.
    let r = c
        .patch(&api)
        .bearer_auth(&nina)
        .json(&json!({"expiresAt": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["expiresAt"], Value::Null);
    for (bad, code_) in [
        (json!({}), "invalid_request"),
        (json!({"longUrl": "ftp://x"}), "invalid_url"),
        (json!({"redirect": 301, "maxVisits": 2}), "invalid_redirect"),
        (
            json!({"expiresAt": "2000-01-01T00:00:00Z"}),
            "invalid_expires_at",
        ),
        (json!({"owner": "omar"}), "invalid_body"),
    ] {
        let r = c
            .patch(&api)
            .bearer_auth(&nina)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, code_, "{bad}");
    }
    let r = c
        .patch(&api)
        .bearer_auth(&omar)
        .json(&json!({"longUrl": "https://evil.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "link_not_found");
    let body: Value = details(&host, &code, &nina).await.json().await.unwrap();
    assert_eq!(body["longUrl"], "https://example.com/v2");

    // Three visits is over the threshold of two: deleting needs force.
    for _ in 0..2 {
        c.get(host.url(&format!("/{code}"))).send().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let body: Value = details(&host, &code, &nina).await.json().await.unwrap();
        if body["stats"]["totalClicks"].as_u64() >= Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.delete(&api).bearer_auth(&omar).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "link_not_found");
    let r = c.delete(&api).bearer_auth(&nina).send().await.unwrap();
    assert_eq!(error_code(r, 409).await, "confirmation_required");
    let r = c
        .delete(format!("{api}?force=maybe"))
        .bearer_auth(&nina)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_force");
    let r = c
        .delete(format!("{api}?force=true"))
        .bearer_auth(&nina)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["deleted"], true);
    assert_eq!(body["cdn"], "queued");
    let r = c.get(host.url(&format!("/{code}"))).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "link_not_found");
    assert_eq!(
        error_code(details(&host, &code, &nina).await, 404).await,
        "link_not_found"
    );
    let r = c.delete(&api).bearer_auth(&nina).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "link_not_found");

    // Three edits queued three invalidations; the cdn-invalidate worker sent
    // them to the CDN (CloudFront on moto, the local purge on embedded).
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.metric_sum("InvalidationsSent") < 3.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(host.metric_sum("InvalidationsSent"), 3.0);
    assert_eq!(host.metric_sum("InvalidationsFailed"), 0.0);
}

async fn qr_codes_and_batches(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    let link = created(&host, json!({"longUrl": "https://example.com/qr"}), None).await;
    let code = link["code"].as_str().unwrap();
    let r = c
        .get(host.url(&format!("/api/v1/urls/{code}/qr")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "image/svg+xml");
    assert!(r.text().await.unwrap().contains("<svg"));
    let r = c
        .get(host.url(&format!("/api/v1/urls/{code}/qr?format=png")))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), "image/png");
    assert_eq!(&r.bytes().await.unwrap()[..4], b"\x89PNG");
    let r = c
        .get(host.url(&format!("/api/v1/urls/{code}/qr?format=gif")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_format");
    let r = c
        .get(host.url("/api/v1/urls/zzzzzzz/qr"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "link_not_found");

    let nina = token(&host, "nina").await;
    let r = c
        .post(host.url("/api/v1/shorten/batch"))
        .bearer_auth(&nina)
        .json(&json!({"links": [
            {"longUrl": "https://example.com/b1"},
            {"longUrl": "ftp://example.com/b2"},
            {"longUrl": "https://example.com/b3", "alias": "batch-alias"},
            {"longUrl": "https://example.com/b4", "alias": "batch-alias"},
            {"longUrl": "https://example.com/b1"},
            {"nope": true},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    // The repeated URL is one link: one creation, one reuse, in either order.
    let mut repeated = vec![statuses[0], statuses[4]];
    repeated.sort();
    assert_eq!(repeated, vec![200, 201]);
    assert_eq!(results[1]["error"]["code"], "invalid_url");
    // The two writers of one alias race: one wins, the other gets 409.
    let mut alias_statuses = vec![statuses[2], statuses[3]];
    alias_statuses.sort();
    assert_eq!(alias_statuses, vec![201, 409]);
    assert_eq!(results[4]["link"]["code"], results[0]["link"]["code"]);
    assert_eq!(results[5]["error"]["code"], "invalid_body");
    let r = details(&host, results[0]["link"]["code"].as_str().unwrap(), &nina).await;
    assert_eq!(r.status(), 200, "batch links belong to the caller");
    for links in [
        json!([]),
        json!(vec![json!({"longUrl": "https://example.com/"}); 101]),
    ] {
        let r = c
            .post(host.url("/api/v1/shorten/batch"))
            .json(&json!({ "links": links }))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_batch");
    }
}

hanul_e2e::on_both_backends!(
    creates_links_and_reuses_them,
    codes_are_unique_and_unguessable,
    aliases_are_unique_and_checked,
    bad_input_is_refused_and_writes_nothing,
    redirects_follow_the_link,
    max_visits_hold_under_concurrency,
    clicks_are_aggregated,
    owners_read_edit_and_delete,
    qr_codes_and_batches,
);

/// The local CDN port end to end: a purge request on the invalidation queue,
/// and nothing else, drops the redirect cache's entry (edits also purge the
/// cache directly, so they could not show this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_purge_clears_the_local_redirect_cache() {
    use hanul_shared::platform::TableName;
    use hanul_shared::ports::table::{Update, s};
    use hanul_shared::shortener::ShortCode;

    let host = LocalHost::start(Backend::Embedded);
    let c = client();
    let link = created(
        &host,
        json!({"longUrl": "https://example.com/before"}),
        None,
    )
    .await;
    let code = link["code"].as_str().unwrap().to_owned();
    let location = || async {
        let r = c.get(host.url(&format!("/{code}"))).send().await.unwrap();
        header(&r, "location")
    };
    assert_eq!(location().await, "https://example.com/before");

    // The stored link changes behind the service's back: the cache still
    // answers with the old one.
    let platform = host.platform().await;
    let table = platform.table(TableName::Urls).await.unwrap();
    let key = hanul_shared::shortener::link::link_key(&ShortCode::parse(&code).unwrap());
    let after = Update::new().set("longUrl", s("https://example.com/after"));
    table.update(&key, after, None).await.unwrap();
    assert_eq!(location().await, "https://example.com/before");

    let purges = platform
        .queue(&hanul_shared::cdn::invalidation_queue())
        .await
        .unwrap();
    hanul_shared::cdn::request_invalidation(purges.as_ref(), vec![format!("/{code}")])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = location().await;
    while now != "https://example.com/after" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = location().await;
    }
    assert_eq!(now, "https://example.com/after");
}
