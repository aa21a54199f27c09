//! `Table` on the embedded store. Conditions are evaluated inside the write
//! transaction, so a conditional write is atomic exactly as in DynamoDB.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};

use super::codec::{decode_item, encode_item};
use super::expr::{apply, holds};
use super::store::{EmbeddedStore, Unavailable};
use crate::ports::table::{
    self, Condition, Consistency, Cursor, Item, Key, Page, Query, SortKey, Table, TableError,
    TableMetrics, TableStats, TxOp, Update, is_expired,
};

pub struct EmbeddedTable {
    store: Arc<EmbeddedStore>,
    name: String,
    metrics: TableMetrics,
}

impl EmbeddedTable {
    pub fn new(store: Arc<EmbeddedStore>, name: impl Into<String>) -> Self {
        Self {
            store,
            name: name.into(),
            metrics: TableMetrics::default(),
        }
    }

    fn now_secs(&self) -> u64 {
        self.store.clock.now_secs()
    }
}

impl From<rusqlite::Error> for TableError {
    fn from(e: rusqlite::Error) -> Self {
        TableError::Unavailable(format!("sqlite: {e}"))
    }
}

impl From<Unavailable> for TableError {
    fn from(e: Unavailable) -> Self {
        TableError::Unavailable(e.0)
    }
}

fn ttl_column(item: &Item) -> Option<i64> {
    match item.get(table::TTL) {
        // Rounded up: a live item's column stays above now (`is_expired` is `ttl <= now`).
        Some(table::AttributeValue::N(n)) => n.parse::<f64>().ok().map(|f| f.ceil() as i64),
        _ => None,
    }
}

/// The stored item, expired or not (conditions see it either way).
fn load(tx: &rusqlite::Connection, tbl: &str, key: &Key) -> Result<Option<Item>, TableError> {
    let text: Option<String> = tx
        .query_row(
            "SELECT data FROM items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3",
            params![tbl, key.pk, key.sk],
            |row| row.get(0),
        )
        .optional()?;
    text.map(|t| decode_item(&t)).transpose()
}

fn store_item(tx: &Transaction<'_>, tbl: &str, key: &Key, item: &Item) -> Result<(), TableError> {
    tx.execute(
        "INSERT OR REPLACE INTO items (tbl, pk, sk, ttl, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![tbl, key.pk, key.sk, ttl_column(item), encode_item(item)],
    )?;
    Ok(())
}

fn remove_item(tx: &Transaction<'_>, tbl: &str, key: &Key) -> Result<(), TableError> {
    tx.execute(
        "DELETE FROM items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3",
        params![tbl, key.pk, key.sk],
    )?;
    Ok(())
}

fn check(condition: Option<&Condition>, current: Option<&Item>) -> Result<(), TableError> {
    match condition {
        Some(c) if !holds(c, current) => Err(TableError::ConditionFailed {
            current: current.cloned().map(Box::new),
        }),
        _ => Ok(()),
    }
}

fn live(item: Option<Item>, now: u64) -> Option<Item> {
    item.filter(|i| !is_expired(i, now))
}

impl EmbeddedTable {
    fn count_failure<T>(&self, r: Result<T, TableError>) -> Result<T, TableError> {
        if matches!(
            r,
            Err(TableError::ConditionFailed { .. } | TableError::TransactionCanceled { .. })
        ) {
            TableMetrics::count(&self.metrics.condition_failures);
        }
        r
    }
}

#[async_trait]
impl Table for EmbeddedTable {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &Key, _consistency: Consistency) -> Result<Option<Item>, TableError> {
        key.validate()?;
        TableMetrics::count(&self.metrics.reads);
        let (tbl, key) = (self.name.clone(), key.clone());
        let now = self.now_secs();
        self.store
            .read(move |conn| Ok(live(load(conn, &tbl, &key)?, now)))
            .await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> Result<(), TableError> {
        let key = table::validate_item(&item)?;
        TableMetrics::count(&self.metrics.writes);
        let tbl = self.name.clone();
        let r = self
            .store
            .write(move |tx| {
                let current = load(tx, &tbl, &key)?;
                check(condition.as_ref(), current.as_ref())?;
                store_item(tx, &tbl, &key, &item)
            })
            .await;
        self.count_failure(r)
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> Result<Item, TableError> {
        key.validate()?;
        update.validate()?;
        TableMetrics::count(&self.metrics.writes);
        let (tbl, key) = (self.name.clone(), key.clone());
        let r = self
            .store
            .write(move |tx| {
                let current = load(tx, &tbl, &key)?;
                check(condition.as_ref(), current.as_ref())?;
                let item = apply(&update, current, key.to_item())?;
                table::validate_item(&item)?;
                store_item(tx, &tbl, &key, &item)?;
                Ok(item)
            })
            .await;
        self.count_failure(r)
    }

    async fn delete(
        &self,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>, TableError> {
        key.validate()?;
        TableMetrics::count(&self.metrics.writes);
        let (tbl, key) = (self.name.clone(), key.clone());
        let now = self.now_secs();
        let r = self
            .store
            .write(move |tx| {
                let current = load(tx, &tbl, &key)?;
                check(condition.as_ref(), current.as_ref())?;
                if current.is_some() {
                    remove_item(tx, &tbl, &key)?;
                }
                Ok(live(current, now))
            })
            .await;
        self.count_failure(r)
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        let after = query.validate()?.map(|key| key.sk);
        TableMetrics::count(&self.metrics.queries);
        let tbl = self.name.clone();
        let now = self.now_secs() as i64;
        self.store
            .read(move |conn| run_query(conn, &tbl, &query, after, now))
            .await
    }

    async fn batch_get(&self, keys: &[Key]) -> Result<Vec<Item>, TableError> {
        table::validate_batch_get(keys)?;
        TableMetrics::count(&self.metrics.reads);
        let (tbl, keys) = (self.name.clone(), keys.to_vec());
        let now = self.now_secs();
        self.store
            .read(move |conn| {
                let mut out = Vec::with_capacity(keys.len());
                for key in &keys {
                    if let Some(item) = live(load(conn, &tbl, key)?, now) {
                        out.push(item);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<(), TableError> {
        table::validate_batch_put(&items)?;
        if items.is_empty() {
            return Ok(());
        }
        TableMetrics::count(&self.metrics.writes);
        let tbl = self.name.clone();
        self.store
            .write(move |tx| {
                for item in &items {
                    let key = Key::of_item(item)?;
                    store_item(tx, &tbl, &key, item)?;
                }
                Ok(())
            })
            .await
    }

    async fn transact_write(&self, ops: Vec<TxOp>) -> Result<(), TableError> {
        table::validate_transaction(&ops)?;
        TableMetrics::count(&self.metrics.transactions);
        let tbl = self.name.clone();
        let r = self
            .store
            .write(move |tx| {
                let mut staged = Vec::with_capacity(ops.len());
                let mut failed = Vec::new();
                for (i, op) in ops.into_iter().enumerate() {
                    let key = op.key()?;
                    let current = load(tx, &tbl, &key)?;
                    let condition = match &op {
                        TxOp::Put { condition, .. }
                        | TxOp::Update { condition, .. }
                        | TxOp::Delete { condition, .. } => condition.as_ref(),
                        TxOp::Check { condition, .. } => Some(condition),
                    };
                    if check(condition, current.as_ref()).is_err() {
                        failed.push(i);
                    }
                    staged.push((key, op, current));
                }
                if !failed.is_empty() {
                    // Returning an error drops the transaction: nothing is written.
                    return Err(TableError::TransactionCanceled { failed });
                }
                for (key, op, current) in staged {
                    match op {
                        TxOp::Put { item, .. } => store_item(tx, &tbl, &key, &item)?,
                        TxOp::Update { update, .. } => {
                            let item = apply(&update, current, key.to_item())?;
                            table::validate_item(&item)?;
                            store_item(tx, &tbl, &key, &item)?;
                        }
                        TxOp::Delete { .. } => remove_item(tx, &tbl, &key)?,
                        TxOp::Check { .. } => {}
                    }
                }
                Ok(())
            })
            .await;
        self.count_failure(r)
    }

    fn metrics(&self) -> TableStats {
        self.metrics.snapshot()
    }
}

fn run_query(
    conn: &rusqlite::Connection,
    tbl: &str,
    query: &Query,
    after: Option<String>,
    now: i64,
) -> Result<Page, TableError> {
    let mut sql = String::from(
        "SELECT sk, data FROM items WHERE tbl = ?1 AND pk = ?2 AND (ttl IS NULL OR ttl > ?3)",
    );
    let mut args: Vec<rusqlite::types::Value> =
        vec![tbl.to_owned().into(), query.pk.clone().into(), now.into()];
    let mut bound = |op: &str, v: &str, args: &mut Vec<rusqlite::types::Value>| {
        args.push(v.to_owned().into());
        sql.push_str(&format!(" AND sk {op} ?{}", args.len()));
    };
    match &query.sort {
        SortKey::All => {}
        SortKey::Eq(v) => bound("=", v, &mut args),
        SortKey::Lt(v) => bound("<", v, &mut args),
        SortKey::Le(v) => bound("<=", v, &mut args),
        SortKey::Gt(v) => bound(">", v, &mut args),
        SortKey::Ge(v) => bound(">=", v, &mut args),
        SortKey::Between(a, b) => {
            bound(">=", a, &mut args);
            bound("<=", b, &mut args);
        }
        SortKey::BeginsWith(p) => bound(">=", p, &mut args),
    }
    if let Some(after) = &after {
        bound(if query.forward { ">" } else { "<" }, after, &mut args);
    }
    sql.push_str(if query.forward {
        " ORDER BY sk ASC"
    } else {
        " ORDER BY sk DESC"
    });
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let limit = query.limit.map(|l| l as usize).unwrap_or(usize::MAX);
    let mut page = Page::default();
    let mut last_sk = None;
    while let Some(row) = rows.next()? {
        let sk: String = row.get(0)?;
        if !query.sort.matches(&sk) {
            if query.forward && matches!(query.sort, SortKey::BeginsWith(_)) {
                break;
            }
            continue;
        }
        if page.items.len() == limit {
            page.next = last_sk.map(|sk: String| Cursor::from_key(&Key::new(&query.pk, sk)));
            break;
        }
        let data: String = row.get(1)?;
        page.items.push(decode_item(&data)?);
        last_sk = Some(sk);
    }
    Ok(page)
}
