//! The shortener service on both table adapters: what each operation costs in
//! table requests (read through the adapter's metrics), `maxVisits` under
//! concurrency, and click counting that ignores redelivery.

#[allow(dead_code)]
#[path = "contract/support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use hanul_shared::ports::table::TableStats;
use hanul_shared::ports::{SystemClock, Table};
use hanul_shared::shortener::{
    ClickAggregator, ClickEvent, CreateLink, PatchLink, RedirectKind, ShortenerConfig,
    ShortenerError, ShortenerService,
};

fn config() -> ShortenerConfig {
    ShortenerConfig::from_settings(|name| match name {
        "SHORT_BASE_URL" => Some("https://hnl.example".into()),
        "SHORTENER_CODE_KEY" => Some("a test key that is at least 32 characters".into()),
        "SHORTENER_NEGATIVE_CACHE_TTL_SECONDS" => Some("60".into()),
        _ => None,
    })
    .unwrap()
}

fn service(table: &Arc<dyn Table>) -> ShortenerService {
    ShortenerService::new(table.clone(), Arc::new(SystemClock), config())
}

fn link(url: &str) -> CreateLink {
    CreateLink {
        long_url: url.into(),
        ..CreateLink::default()
    }
}

fn delta(before: TableStats, after: TableStats) -> TableStats {
    TableStats {
        reads: after.reads - before.reads,
        writes: after.writes - before.writes,
        queries: after.queries - before.queries,
        transactions: after.transactions - before.transactions,
        condition_failures: after.condition_failures - before.condition_failures,
    }
}

const NOTHING: TableStats = TableStats {
    reads: 0,
    writes: 0,
    queries: 0,
    transactions: 0,
    condition_failures: 0,
};

async fn each_operation_costs_what_it_should(table: Arc<dyn Table>) {
    let s = service(&table);
    // The first create also takes a block of numbers from the counter.
    s.create(link("https://example.com/warm-up"), None)
        .await
        .unwrap();

    let before = table.metrics();
    let created = s.create(link("https://example.com/a"), None).await.unwrap();
    assert!(created.created);
    assert_eq!(
        delta(before, table.metrics()),
        TableStats {
            transactions: 1,
            ..NOTHING
        },
        "a create is one transactional write"
    );

    let code = created.link.code.to_string();
    let before = table.metrics();
    s.resolve(&code, true).await.unwrap();
    assert_eq!(
        delta(before, table.metrics()),
        TableStats {
            reads: 1,
            ..NOTHING
        },
        "a cache miss is one read"
    );
    let before = table.metrics();
    for _ in 0..10 {
        s.resolve(&code, true).await.unwrap();
    }
    assert_eq!(
        delta(before, table.metrics()),
        NOTHING,
        "cache hits read nothing"
    );

    let before = table.metrics();
    for _ in 0..10 {
        assert!(matches!(
            s.resolve("zzzzzzz", true).await,
            Err(ShortenerError::NotFound)
        ));
    }
    assert_eq!(
        delta(before, table.metrics()),
        TableStats {
            reads: 1,
            ..NOTHING
        },
        "an unknown code is read once, then negatively cached"
    );

    let capped = s
        .create(
            CreateLink {
                max_visits: Some(3),
                ..link("https://example.com/capped")
            },
            None,
        )
        .await
        .unwrap();
    let code = capped.link.code.to_string();
    s.resolve(&code, true).await.unwrap();
    let before = table.metrics();
    s.resolve(&code, true).await.unwrap();
    assert_eq!(
        delta(before, table.metrics()),
        TableStats {
            writes: 1,
            ..NOTHING
        },
        "a capped link's visit is one conditional add and no read"
    );
}

async fn max_visits_admits_exactly_n_under_concurrency(table: Arc<dyn Table>) {
    let s = Arc::new(service(&table));
    let capped = s
        .create(
            CreateLink {
                max_visits: Some(7),
                ..link("https://example.com/limited")
            },
            None,
        )
        .await
        .unwrap();
    let code = capped.link.code.to_string();
    let visits = (0..40).map(|_| {
        let s = s.clone();
        let code = code.clone();
        tokio::spawn(async move { s.resolve(&code, true).await })
    });
    let mut ok = 0;
    for v in visits {
        match v.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ShortenerError::Exhausted) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 7);
    // A HEAD (no visit) of an exhausted link is gone too.
    assert!(matches!(
        s.resolve(&code, false).await,
        Err(ShortenerError::Exhausted)
    ));
}

async fn an_instance_that_cached_a_cap_obeys_an_edit_of_it(table: Arc<dyn Table>) {
    // Two instances on one table: one redirects (and caches the link), the
    // other takes the owner's edits.
    let redirector = ShortenerService::new(
        table.clone(),
        Arc::new(SystemClock),
        ShortenerConfig::from_settings(|name| match name {
            "SHORT_BASE_URL" => Some("https://hnl.example".into()),
            "SHORTENER_CODE_KEY" => Some("a test key that is at least 32 characters".into()),
            "SHORTENER_NEGATIVE_CACHE_TTL_SECONDS" => Some("1".into()),
            _ => None,
        })
        .unwrap(),
    );
    let editor = service(&table);
    let dir = tempfile::tempdir().unwrap();
    let store = hanul_shared::embedded::EmbeddedStore::open(dir.path()).unwrap();
    let purges =
        hanul_shared::embedded::EmbeddedQueue::new(store, hanul_shared::cdn::invalidation_queue());
    let capped = editor
        .create(
            CreateLink {
                max_visits: Some(3),
                ..link("https://example.com/edited-cap")
            },
            Some("ann"),
        )
        .await
        .unwrap();
    let code = capped.link.code.to_string();
    let cap = |max: Option<u64>| PatchLink {
        max_visits: Some(max),
        ..PatchLink::default()
    };
    let visit = || redirector.resolve(&code, true);
    visit().await.unwrap();

    // Lowered to 1 (already spent) while the redirector caches 3.
    editor
        .update(&code, "ann", cap(Some(1)), &purges)
        .await
        .unwrap();
    assert!(matches!(visit().await, Err(ShortenerError::Exhausted)));

    // Raised to 3: seen once the short-lived "exhausted" entry lapses.
    editor
        .update(&code, "ann", cap(Some(3)), &purges)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    visit().await.unwrap();

    // Removed: the redirector's cached cap no longer counts visits.
    editor
        .update(&code, "ann", cap(None), &purges)
        .await
        .unwrap();
    for _ in 0..5 {
        visit().await.unwrap();
    }
    let (stored, _) = editor.details(&code, "ann").await.unwrap();
    assert_eq!(stored.max_visits, None);
}

async fn clicks_are_counted_once_per_event(table: Arc<dyn Table>) {
    let s = service(&table);
    let created = s
        .create(
            CreateLink {
                redirect: Some(RedirectKind::Temporary),
                ..link("https://example.com/tracked")
            },
            Some("nina"),
        )
        .await
        .unwrap();
    let l = &created.link;
    let aggregator = ClickAggregator::new(table.clone(), Arc::new(SystemClock));
    let phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
    let first = ClickEvent::new(
        &l.link_id,
        l.code.as_str(),
        0,
        Some("https://news.example.org/x"),
        Some(phone),
    );
    let second = ClickEvent::new(
        &l.link_id,
        l.code.as_str(),
        86_400_000,
        None,
        Some("Googlebot/2.1"),
    );
    assert!(aggregator.record(&first).await.unwrap());
    assert!(
        !aggregator.record(&first).await.unwrap(),
        "a redelivery is not counted"
    );
    assert!(aggregator.record(&second).await.unwrap());

    let (_, stats) = s.details(l.code.as_str(), "nina").await.unwrap();
    assert_eq!(stats.total_clicks, 2);
    assert_eq!(stats.clicks_by_day.get("1970-01-01"), Some(&1));
    assert_eq!(stats.clicks_by_day.get("1970-01-02"), Some(&1));
    assert_eq!(stats.referrers.get("news.example.org"), Some(&1));
    assert_eq!(stats.referrers.get("direct"), Some(&1));
    assert_eq!(stats.devices.get("mobile"), Some(&1));
    assert_eq!(stats.devices.get("bot"), Some(&1));
    assert!(matches!(
        s.details(l.code.as_str(), "someone-else").await,
        Err(ShortenerError::NotFound)
    ));

    // A delivery of 25: one event twice in it, one counted before, and 22
    // new ones over three transactions (ten events each at most).
    let fresh: Vec<ClickEvent> = (0..22)
        .map(|_| ClickEvent::new(&l.link_id, l.code.as_str(), 86_400_000, None, Some(phone)))
        .collect();
    let mut batch = vec![first.clone()];
    batch.extend(fresh.iter().cloned());
    batch.push(fresh[3].clone());
    batch.push(second.clone());
    let before = table.metrics();
    let counted = aggregator.record_batch(&batch).await.unwrap();
    let mut expected = vec![false];
    expected.extend([true; 22]);
    expected.extend([false, false]);
    assert_eq!(counted, expected);
    let transactions = table.metrics().transactions - before.transactions;
    // Three chunks, two of them tried again without their counted event.
    assert!(
        (3..=5).contains(&transactions),
        "{transactions} transactions"
    );
    let (_, stats) = s.details(l.code.as_str(), "nina").await.unwrap();
    assert_eq!(stats.total_clicks, 24);
    assert_eq!(stats.clicks_by_day.get("1970-01-02"), Some(&23));
    assert_eq!(stats.devices.get("mobile"), Some(&23));
}

async fn a_retaken_alias_starts_with_fresh_stats(table: Arc<dyn Table>) {
    let s = service(&table);
    let queue_dir = tempfile::tempdir().unwrap();
    let store = hanul_shared::embedded::EmbeddedStore::open(queue_dir.path()).unwrap();
    let purges =
        hanul_shared::embedded::EmbeddedQueue::new(store, hanul_shared::cdn::invalidation_queue());
    let aliased = CreateLink {
        alias: Some("launch".into()),
        redirect: Some(RedirectKind::Temporary),
        ..link("https://example.com/launch")
    };
    let first = s.create(aliased.clone(), Some("nina")).await.unwrap().link;
    let aggregator = ClickAggregator::new(table.clone(), Arc::new(SystemClock));
    aggregator
        .record(&ClickEvent::new(&first.link_id, "launch", 0, None, None))
        .await
        .unwrap();
    assert!(matches!(
        s.create(aliased.clone(), Some("omar")).await,
        Err(ShortenerError::AliasTaken(_))
    ));
    s.delete("launch", "nina", false, &purges).await.unwrap();
    let second = s.create(aliased, Some("omar")).await.unwrap().link;
    assert_ne!(second.link_id, first.link_id);
    let (_, stats) = s.details("launch", "omar").await.unwrap();
    assert_eq!(stats.total_clicks, 0);
    // The edit queued the edge invalidation.
    use hanul_shared::ports::Queue;
    let queued = purges.receive(10, Duration::ZERO, None).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert!(queued[0].body.contains("/api/v1/launch"));
}

/// Hosts that DNS cannot hold are refused by create and by an edit, before
/// the table is asked anything; names at the limits pass.
async fn urls_whose_host_cannot_exist_are_refused(table: Arc<dyn Table>) {
    let s = service(&table);
    let queue_dir = tempfile::tempdir().unwrap();
    let store = hanul_shared::embedded::EmbeddedStore::open(queue_dir.path()).unwrap();
    let purges =
        hanul_shared::embedded::EmbeddedQueue::new(store, hanul_shared::cdn::invalidation_queue());
    let mine = s
        .create(link("https://example.com/mine"), Some("nina"))
        .await
        .unwrap()
        .link;
    let a63 = "a".repeat(63);
    let bad = [
        format!("https://{}.example/", "a".repeat(64)),
        format!("https://{a63}.{a63}.{a63}.{}.x/", "a".repeat(61)),
        "https://a..b.example/".to_owned(),
        "https://.a.example/".to_owned(),
        format!("https://{}.de/", "ü".repeat(60)),
    ];
    for url in &bad {
        let before = table.metrics();
        let e = s.create(link(url), Some("nina")).await.unwrap_err();
        assert!(matches!(e, ShortenerError::InvalidUrl(_)), "{url}: {e:?}");
        let patch = PatchLink {
            long_url: Some(url.clone()),
            ..PatchLink::default()
        };
        let e = s
            .update(mine.code.as_str(), "nina", patch, &purges)
            .await
            .unwrap_err();
        assert!(matches!(e, ShortenerError::InvalidUrl(_)), "{url}: {e:?}");
        assert_eq!(delta(before, table.metrics()), NOTHING, "{url}");
    }
    for url in [
        format!("https://{a63}.example/"),
        format!("https://{a63}.{a63}.{a63}.{}./", "a".repeat(61)),
        "https://[2001:db8::1]/".to_owned(),
    ] {
        let created = s.create(link(&url), None).await;
        assert!(created.is_ok(), "{url}: {created:?}");
    }
}

/// `GET /api/v1/me/urls`: the owner's links newest first in cursor pages,
/// with click totals; a repeated create adds no entry, a delete removes
/// its entry, an entry whose link is gone is skipped and dropped.
async fn an_owners_links_are_listed_newest_first_with_clicks(table: Arc<dyn Table>) {
    use hanul_shared::shortener::OwnedQuery;
    let s = service(&table);
    let queue_dir = tempfile::tempdir().unwrap();
    let store = hanul_shared::embedded::EmbeddedStore::open(queue_dir.path()).unwrap();
    let purges =
        hanul_shared::embedded::EmbeddedQueue::new(store, hanul_shared::cdn::invalidation_queue());
    let mut made = Vec::new();
    for (url, alias) in [("a", None), ("b", None), ("c", Some("nina-c")), ("d", None)] {
        let create = CreateLink {
            alias: alias.map(str::to_owned),
            ..link(&format!("https://example.com/{url}"))
        };
        made.push(s.create(create, Some("nina")).await.unwrap().link);
        // Distinct creation times, so the order is the creation order.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let again = s
        .create(link("https://example.com/a"), Some("nina"))
        .await
        .unwrap();
    assert!(!again.created, "the same URL again is the same link");
    s.create(link("https://example.com/omar"), Some("omar"))
        .await
        .unwrap();
    s.create(link("https://example.com/anon"), None)
        .await
        .unwrap();
    let aggregator = ClickAggregator::new(table.clone(), Arc::new(SystemClock));
    for n in 0..2 {
        aggregator
            .record(&ClickEvent::new(
                &made[1].link_id,
                made[1].code.as_str(),
                n,
                None,
                None,
            ))
            .await
            .unwrap();
    }

    let page = |limit: &str, cursor: Option<String>| OwnedQuery {
        limit: Some(limit.into()),
        cursor,
    };
    let first = s.list_owned("nina", page("3", None)).await.unwrap();
    let codes = |p: &hanul_shared::shortener::OwnedPage| -> Vec<String> {
        p.links.iter().map(|l| l.link.code.to_string()).collect()
    };
    let code = |i: usize| made[i].code.to_string();
    assert_eq!(codes(&first), [code(3), code(2), code(1)]);
    assert_eq!(first.links[2].clicks, 2);
    let second = s
        .list_owned("nina", page("3", first.next_cursor.clone()))
        .await
        .unwrap();
    assert_eq!(codes(&second), [code(0)]);
    // A last full page may still say "more"; the page after it is empty.
    if let Some(cursor) = second.next_cursor {
        let third = s.list_owned("nina", page("3", Some(cursor))).await.unwrap();
        assert!(third.links.is_empty());
    }

    // A deleted link leaves the list; so does one the table dropped.
    s.delete(&code(1), "nina", true, &purges).await.unwrap();
    table
        .delete(
            &hanul_shared::shortener::link::link_key(&made[3].code),
            None,
        )
        .await
        .unwrap();
    let all = s.list_owned("nina", OwnedQuery::default()).await.unwrap();
    assert_eq!(codes(&all), [code(2), code(0)]);
    let entries = table
        .query(hanul_shared::ports::table::Query::partition("owner#nina"))
        .await
        .unwrap();
    assert_eq!(entries.items.len(), 2, "the dangling entry was dropped");

    // Others' cursors and bad limits are refused.
    let omars = s.list_owned("omar", page("1", None)).await.unwrap();
    assert_eq!(omars.links.len(), 1);
    for query in [
        page("0", None),
        page("51", None),
        page("x", None),
        page("5", Some("not a cursor".into())),
        page("5", omars.next_cursor.clone().or(Some("e30".into()))),
    ] {
        assert!(
            matches!(
                s.list_owned("nina", query.clone()).await,
                Err(ShortenerError::Invalid(..))
            ),
            "{query:?}"
        );
    }
}

on_both_tables!(
    an_owners_links_are_listed_newest_first_with_clicks,
    urls_whose_host_cannot_exist_are_refused,
    an_instance_that_cached_a_cap_obeys_an_edit_of_it,
    each_operation_costs_what_it_should,
    max_visits_admits_exactly_n_under_concurrency,
    clicks_are_counted_once_per_event,
    a_retaken_alias_starts_with_fresh_stats,
);
