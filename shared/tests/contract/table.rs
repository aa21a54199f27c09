use std::collections::HashMap;
use std::sync::Arc;

use hanul_shared::ports::table::{
    AttributeValue, CmpOp, Condition, Consistency, Item, Key, Query, SortKey, TTL, Table,
    TableError, TxOp, Update, get_i64, num, s,
};

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn item(pk: &str, sk: &str, attrs: &[(&str, AttributeValue)]) -> Item {
    let mut item = Key::new(pk, sk).to_item();
    for (k, v) in attrs {
        item.insert((*k).to_owned(), v.clone());
    }
    item
}

async fn get(t: &Arc<dyn Table>, pk: &str, sk: &str) -> Option<Item> {
    t.get(&Key::new(pk, sk), Consistency::Strong).await.unwrap()
}

async fn put_get_round_trips_every_type(t: Arc<dyn Table>) {
    let mut nested = HashMap::new();
    nested.insert("x".to_owned(), num(1));
    let original = item(
        "p",
        "s",
        &[
            ("str", s("héllo")),
            ("num", num("-12.5")),
            ("bool", AttributeValue::Bool(true)),
            ("bin", AttributeValue::B(vec![0, 1, 255])),
            ("map", AttributeValue::M(nested)),
            ("list", AttributeValue::L(vec![s("a"), num(2)])),
            ("set", AttributeValue::Ss(vec!["a".into(), "b".into()])),
        ],
    );
    t.put(original.clone(), None).await.unwrap();
    assert_eq!(get(&t, "p", "s").await, Some(original));
    assert_eq!(get(&t, "p", "other").await, None);
    assert_eq!(get(&t, "nobody", "s").await, None);
}

async fn conditional_put_writes_once_and_returns_the_current_item(t: Arc<dyn Table>) {
    let first = item("p", "s", &[("v", num(1))]);
    t.put(first.clone(), Some(Condition::NotExists))
        .await
        .unwrap();
    let second = item("p", "s", &[("v", num(2))]);
    match t.put(second.clone(), Some(Condition::NotExists)).await {
        Err(TableError::ConditionFailed { current }) => {
            assert_eq!(current.map(|b| *b), Some(first.clone()));
        }
        other => panic!("expected a condition failure, got {other:?}"),
    }
    assert_eq!(get(&t, "p", "s").await, Some(first));
    // Optimistic concurrency on a version attribute.
    t.put(second.clone(), Some(Condition::eq("v", num(1))))
        .await
        .unwrap();
    assert!(matches!(
        t.put(second.clone(), Some(Condition::eq("v", num(1))))
            .await,
        Err(TableError::ConditionFailed { .. })
    ));
    assert_eq!(get(&t, "p", "s").await, Some(second));
}

async fn update_sets_adds_removes_and_creates(t: Arc<dyn Table>) {
    let key = Key::new("p", "counter");
    let created = t
        .update(&key, Update::new().add("n", 5).set("name", s("c")), None)
        .await
        .unwrap();
    assert_eq!(get_i64(&created, "n"), Some(5));
    let updated = t
        .update(
            &key,
            Update::new().add("n", -2).remove("name"),
            Some(Condition::Exists),
        )
        .await
        .unwrap();
    assert_eq!(get_i64(&updated, "n"), Some(3));
    assert!(!updated.contains_key("name"));
    assert_eq!(
        t.get(&key, Consistency::Strong).await.unwrap(),
        Some(updated.clone())
    );
    match t
        .update(
            &key,
            Update::new().add("n", 1),
            Some(Condition::cmp("n", CmpOp::Gt, num(10))),
        )
        .await
    {
        Err(TableError::ConditionFailed { current }) => {
            assert_eq!(current.map(|b| *b), Some(updated));
        }
        other => panic!("expected a condition failure, got {other:?}"),
    }
    assert!(matches!(
        t.update(
            &Key::new("p", "absent"),
            Update::new().add("n", 1),
            Some(Condition::Exists)
        )
        .await,
        Err(TableError::ConditionFailed { current: None })
    ));
    assert!(matches!(
        t.update(&key, Update::new().set("pk", s("x")), None).await,
        Err(TableError::Invalid(_))
    ));
}

async fn concurrent_adds_are_atomic(t: Arc<dyn Table>) {
    let key = Key::new("p", "hits");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (t, key) = (t.clone(), key.clone());
            tokio::spawn(async move { t.update(&key, Update::new().add("n", 1), None).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stored = t.get(&key, Consistency::Strong).await.unwrap().unwrap();
    assert_eq!(get_i64(&stored, "n"), Some(20));
}

async fn conditional_adds_never_pass_the_limit(t: Arc<dyn Table>) {
    let key = Key::new("p", "quota");
    let limit = Condition::Or(vec![
        Condition::AttrNotExists("n".into()),
        Condition::cmp("n", CmpOp::Lt, num(5)),
    ]);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (t, key, limit) = (t.clone(), key.clone(), limit.clone());
            tokio::spawn(
                async move { t.update(&key, Update::new().add("n", 1), Some(limit)).await },
            )
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(TableError::ConditionFailed { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(admitted, 5);
    let stored = t.get(&key, Consistency::Strong).await.unwrap().unwrap();
    assert_eq!(get_i64(&stored, "n"), Some(5));
}

async fn delete_returns_the_old_item_and_honours_conditions(t: Arc<dyn Table>) {
    let it = item("p", "s", &[("owner", s("a"))]);
    t.put(it.clone(), None).await.unwrap();
    assert!(matches!(
        t.delete(&Key::new("p", "s"), Some(Condition::eq("owner", s("b"))))
            .await,
        Err(TableError::ConditionFailed { .. })
    ));
    assert!(get(&t, "p", "s").await.is_some());
    let old = t
        .delete(&Key::new("p", "s"), Some(Condition::eq("owner", s("a"))))
        .await
        .unwrap();
    assert_eq!(old, Some(it));
    assert_eq!(get(&t, "p", "s").await, None);
    assert_eq!(t.delete(&Key::new("p", "s"), None).await.unwrap(), None);
}

fn sks(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i.get("sk") {
            Some(AttributeValue::S(sk)) => sk.clone(),
            _ => String::new(),
        })
        .collect()
}

async fn query_pages_both_ways_and_filters_ranges(t: Arc<dyn Table>) {
    let items: Vec<Item> = (1..=12)
        .map(|i| item("feed", &format!("post#{i:04}"), &[("i", num(i))]))
        .chain([item("other", "post#0001", &[])])
        .chain([item("feed", "meta", &[])])
        .collect();
    for chunk in items.chunks(25) {
        t.batch_put(chunk.to_vec()).await.unwrap();
    }
    let expect: Vec<String> = (1..=12).map(|i| format!("post#{i:04}")).collect();
    for forward in [true, false] {
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..20 {
            let mut q = Query::partition("feed")
                .sort(SortKey::BeginsWith("post#".into()))
                .limit(5)
                .after(cursor.take());
            if !forward {
                q = q.backward();
            }
            let page = t.query(q).await.unwrap();
            assert!(page.items.len() <= 5);
            seen.extend(sks(&page.items));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut want = expect.clone();
        if !forward {
            want.reverse();
        }
        assert_eq!(seen, want, "forward = {forward}");
    }
    let between = t
        .query(
            Query::partition("feed").sort(SortKey::Between("post#0003".into(), "post#0005".into())),
        )
        .await
        .unwrap();
    assert_eq!(sks(&between.items), ["post#0003", "post#0004", "post#0005"]);
    let below = t
        .query(Query::partition("feed").sort(SortKey::Lt("post#0003".into())))
        .await
        .unwrap();
    assert_eq!(sks(&below.items), ["meta", "post#0001", "post#0002"]);
    let newest = t
        .query(
            Query::partition("feed")
                .sort(SortKey::Gt("post#0010".into()))
                .backward(),
        )
        .await
        .unwrap();
    assert_eq!(sks(&newest.items), ["post#0012", "post#0011"]);
    let exact = t
        .query(Query::partition("feed").sort(SortKey::Eq("meta".into())))
        .await
        .unwrap();
    assert_eq!(sks(&exact.items), ["meta"]);
    let none = t.query(Query::partition("nobody")).await.unwrap();
    assert!(none.items.is_empty() && none.next.is_none());
}

async fn expired_items_are_absent_on_every_read(t: Arc<dyn Table>) {
    let past = now_secs() - 60;
    let future = now_secs() + 3600;
    let expired = item("p", "old", &[(TTL, num(past))]);
    let live = item("p", "new", &[(TTL, num(future))]);
    t.batch_put(vec![expired.clone(), live.clone()])
        .await
        .unwrap();
    assert_eq!(get(&t, "p", "old").await, None);
    assert_eq!(get(&t, "p", "new").await, Some(live.clone()));
    let page = t.query(Query::partition("p")).await.unwrap();
    assert_eq!(sks(&page.items), ["new"]);
    let batch = t
        .batch_get(&[Key::new("p", "old"), Key::new("p", "new")])
        .await
        .unwrap();
    assert_eq!(batch, vec![live]);
    // An expired item may still be stored, so "absent" conditions must say
    // "or expired", as the idempotency pattern does.
    let fresh = item("p", "old", &[(TTL, num(future))]);
    t.put(
        fresh.clone(),
        Some(Condition::absent_or_expired(now_secs())),
    )
    .await
    .unwrap();
    assert_eq!(get(&t, "p", "old").await, Some(fresh));
    assert!(matches!(
        t.put(
            item("p", "new", &[]),
            Some(Condition::absent_or_expired(now_secs()))
        )
        .await,
        Err(TableError::ConditionFailed { .. })
    ));
}

async fn batches_respect_dynamodb_limits(t: Arc<dyn Table>) {
    let items: Vec<Item> = (0..25)
        .map(|i| item("b", &format!("{i:03}"), &[]))
        .collect();
    t.batch_put(items).await.unwrap();
    let keys: Vec<Key> = (0..30).map(|i| Key::new("b", format!("{i:03}"))).collect();
    let found = t.batch_get(&keys).await.unwrap();
    assert_eq!(found.len(), 25);
    let too_many: Vec<Item> = (0..26)
        .map(|i| item("b", &format!("x{i:03}"), &[]))
        .collect();
    assert!(matches!(
        t.batch_put(too_many).await,
        Err(TableError::Invalid(_))
    ));
    assert!(
        get(&t, "b", "x000").await.is_none(),
        "a rejected batch writes nothing"
    );
    let keys: Vec<Key> = (0..101).map(|i| Key::new("b", format!("{i:03}"))).collect();
    assert!(matches!(
        t.batch_get(&keys).await,
        Err(TableError::Invalid(_))
    ));
}

async fn transactions_are_all_or_nothing(t: Arc<dyn Table>) {
    t.put(item("acct", "a", &[("balance", num(10))]), None)
        .await
        .unwrap();
    let transfer = |amount: i64| {
        vec![
            TxOp::Update {
                key: Key::new("acct", "a"),
                update: Update::new().add("balance", -amount),
                condition: Some(Condition::cmp("balance", CmpOp::Ge, num(amount))),
            },
            TxOp::Update {
                key: Key::new("acct", "b"),
                update: Update::new().add("balance", amount),
                condition: None,
            },
            TxOp::Put {
                item: item("log", &format!("t{amount}"), &[]),
                condition: Some(Condition::NotExists),
            },
        ]
    };
    t.transact_write(transfer(4)).await.unwrap();
    let balance = |pk: &'static str, sk: &'static str| {
        let t = t.clone();
        async move { get(&t, pk, sk).await.and_then(|i| get_i64(&i, "balance")) }
    };
    assert_eq!(balance("acct", "a").await, Some(6));
    assert_eq!(balance("acct", "b").await, Some(4));
    match t.transact_write(transfer(7)).await {
        Err(TableError::TransactionCanceled { failed }) => assert_eq!(failed, vec![0]),
        other => panic!("expected a cancelled transaction, got {other:?}"),
    }
    assert_eq!(balance("acct", "a").await, Some(6));
    assert_eq!(balance("acct", "b").await, Some(4));
    assert!(get(&t, "log", "t7").await.is_none());
    // The same key twice, and an empty transaction, are refused up front.
    let twice = vec![
        TxOp::Delete {
            key: Key::new("acct", "a"),
            condition: None,
        },
        TxOp::Check {
            key: Key::new("acct", "a"),
            condition: Condition::Exists,
        },
    ];
    assert!(matches!(
        t.transact_write(twice).await,
        Err(TableError::Invalid(_))
    ));
    assert!(matches!(
        t.transact_write(vec![]).await,
        Err(TableError::Invalid(_))
    ));
    // A failed condition check cancels the writes beside it.
    let checked = vec![
        TxOp::Check {
            key: Key::new("acct", "zzz"),
            condition: Condition::Exists,
        },
        TxOp::Delete {
            key: Key::new("acct", "a"),
            condition: None,
        },
    ];
    assert!(matches!(
        t.transact_write(checked).await,
        Err(TableError::TransactionCanceled { failed }) if failed == vec![0]
    ));
    assert!(get(&t, "acct", "a").await.is_some());
}

async fn invalid_items_are_refused(t: Arc<dyn Table>) {
    let mut no_sk = Item::default();
    no_sk.insert("pk".into(), s("p"));
    assert!(matches!(
        t.put(no_sk, None).await,
        Err(TableError::Invalid(_))
    ));
    let huge = item("p", "big", &[("blob", s("x".repeat(401 * 1024)))]);
    assert!(matches!(
        t.put(huge, None).await,
        Err(TableError::Invalid(_))
    ));
    let empty_key = item("", "s", &[]);
    assert!(matches!(
        t.put(empty_key, None).await,
        Err(TableError::Invalid(_))
    ));
    let bad_ttl = item("p", "s", &[(TTL, s("tomorrow"))]);
    assert!(matches!(
        t.put(bad_ttl, None).await,
        Err(TableError::Invalid(_))
    ));
    assert!(matches!(
        t.query(Query::partition("p").limit(0)).await,
        Err(TableError::Invalid(_))
    ));
    let foreign = hanul_shared::ports::Cursor::from_key(&Key::new("other", "x"));
    assert!(matches!(
        t.query(Query::partition("p").after(Some(foreign))).await,
        Err(TableError::Invalid(_))
    ));
    assert!(get(&t, "p", "big").await.is_none());
}

async fn conditions_agree_on_missing_attributes_empty_groups_and_sets(t: Arc<dyn Table>) {
    let ne = || Some(Condition::cmp("v", CmpOp::Ne, num(5)));
    // `<>` holds when the attribute, or the whole item, is absent.
    t.put(item("p", "new", &[]), ne()).await.unwrap();
    t.put(item("p", "new", &[("v", num(1))]), ne())
        .await
        .unwrap();
    t.put(item("p", "new", &[("v", num(5))]), ne())
        .await
        .unwrap();
    assert!(matches!(
        t.put(item("p", "new", &[]), ne()).await,
        Err(TableError::ConditionFailed { .. })
    ));
    // An empty AND always holds and an empty OR never does, item or not.
    for sk in ["new", "absent"] {
        t.put(item("p", sk, &[]), Some(Condition::And(vec![])))
            .await
            .unwrap();
        assert!(matches!(
            t.put(item("p", "absent-2", &[]), Some(Condition::Or(vec![])))
                .await,
            Err(TableError::ConditionFailed { .. })
        ));
    }
    // Sets compare without regard to order.
    let tags = |v: &[&str]| AttributeValue::Ss(v.iter().map(|s| (*s).to_owned()).collect());
    t.put(item("p", "set", &[("tags", tags(&["a", "b"]))]), None)
        .await
        .unwrap();
    t.put(
        item("p", "set", &[("tags", tags(&["c"]))]),
        Some(Condition::eq("tags", tags(&["b", "a"]))),
    )
    .await
    .unwrap();
}

async fn metrics_count_requests(t: Arc<dyn Table>) {
    let before = t.metrics();
    t.put(item("m", "1", &[]), None).await.unwrap();
    get(&t, "m", "1").await;
    let _ = t.put(item("m", "1", &[]), Some(Condition::NotExists)).await;
    t.query(Query::partition("m")).await.unwrap();
    let after = t.metrics();
    assert_eq!(after.writes - before.writes, 2);
    assert_eq!(after.reads - before.reads, 1);
    assert_eq!(after.queries - before.queries, 1);
    assert_eq!(after.condition_failures - before.condition_failures, 1);
}

crate::on_both_tables!(
    put_get_round_trips_every_type,
    conditional_put_writes_once_and_returns_the_current_item,
    update_sets_adds_removes_and_creates,
    concurrent_adds_are_atomic,
    conditional_adds_never_pass_the_limit,
    delete_returns_the_old_item_and_honours_conditions,
    query_pages_both_ways_and_filters_ranges,
    expired_items_are_absent_on_every_read,
    batches_respect_dynamodb_limits,
    transactions_are_all_or_nothing,
    invalid_items_are_refused,
    conditions_agree_on_missing_attributes_empty_groups_and_sets,
    metrics_count_requests,
);
