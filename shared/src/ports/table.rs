//! `Table`: the part of DynamoDB the domain uses (DESIGN rule 5).
//!
//! Every table has a string partition key `pk`, a string sort key `sk` and an
//! optional numeric `ttl` (epoch seconds). Items are `serde_dynamo::Item`s, so
//! domain structs go in and out with `serde_dynamo::{to_item, from_item}`.
//! An item whose `ttl` is at or before now is absent on every read path, in
//! both adapters, because DynamoDB deletes expired items only lazily.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};
pub use serde_dynamo::{AttributeValue, Item};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL: &str = "ttl";

/// DynamoDB's own limits, enforced by both adapters (moto is looser).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
pub const MAX_BATCH_GET: usize = 100;
pub const MAX_BATCH_PUT: usize = 25;
pub const MAX_TRANSACTION_OPS: usize = 100;
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    /// The key as the two attributes an item carries.
    pub fn to_item(&self) -> Item {
        let mut item = Item::default();
        item.insert(PK.into(), AttributeValue::S(self.pk.clone()));
        item.insert(SK.into(), AttributeValue::S(self.sk.clone()));
        item
    }

    pub fn of_item(item: &Item) -> Result<Key, TableError> {
        match (item.get(PK), item.get(SK)) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Ok(Key::new(pk, sk)),
            _ => Err(TableError::Invalid(
                "an item needs string attributes `pk` and `sk`".into(),
            )),
        }
    }

    pub fn validate(&self) -> Result<(), TableError> {
        for (name, v) in [(PK, &self.pk), (SK, &self.sk)] {
            if v.is_empty() {
                return Err(TableError::Invalid(format!(
                    "key attribute `{name}` is empty"
                )));
            }
            if v.len() > MAX_KEY_BYTES {
                return Err(TableError::Invalid(format!(
                    "key attribute `{name}` is longer than {MAX_KEY_BYTES} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// Comparison operators of a condition expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition on the item as stored (expired or not), as DynamoDB evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The item exists (`attribute_exists(pk)`).
    Exists,
    /// No item with this key (`attribute_not_exists(pk)`).
    NotExists,
    AttrExists(String),
    AttrNotExists(String),
    Cmp(String, CmpOp, AttributeValue),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    pub fn eq(attr: &str, value: AttributeValue) -> Self {
        Condition::Cmp(attr.into(), CmpOp::Eq, value)
    }

    pub fn cmp(attr: &str, op: CmpOp, value: AttributeValue) -> Self {
        Condition::Cmp(attr.into(), op, value)
    }

    /// No live item: absent, or present but past its TTL. Use this rather than
    /// `NotExists` wherever an item carries a `ttl`, since DynamoDB conditions
    /// still see expired items until they are swept.
    pub fn absent_or_expired(now_secs: u64) -> Self {
        Condition::Or(vec![
            Condition::NotExists,
            Condition::Cmp(TTL.into(), CmpOp::Le, num(now_secs)),
        ])
    }

    pub fn and(self, other: Condition) -> Self {
        match self {
            Condition::And(mut all) => {
                all.push(other);
                Condition::And(all)
            }
            first => Condition::And(vec![first, other]),
        }
    }
}

/// An update expression: `SET`, `ADD` (numbers) and `REMOVE`. Updating an
/// absent item creates it, as DynamoDB's UpdateItem does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub set: Vec<(String, AttributeValue)>,
    pub add: Vec<(String, i64)>,
    pub remove: Vec<String>,
}

impl Update {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, attr: &str, value: AttributeValue) -> Self {
        self.set.push((attr.into(), value));
        self
    }

    pub fn add(mut self, attr: &str, delta: i64) -> Self {
        self.add.push((attr.into(), delta));
        self
    }

    pub fn remove(mut self, attr: &str) -> Self {
        self.remove.push(attr.into());
        self
    }

    pub fn validate(&self) -> Result<(), TableError> {
        let names = self
            .set
            .iter()
            .map(|(n, _)| n)
            .chain(self.add.iter().map(|(n, _)| n))
            .chain(self.remove.iter());
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if name == PK || name == SK {
                return Err(TableError::Invalid(format!(
                    "an update cannot change the key attribute `{name}`"
                )));
            }
            if name.is_empty() {
                return Err(TableError::Invalid("empty attribute name in update".into()));
            }
            if !seen.insert(name.as_str()) {
                return Err(TableError::Invalid(format!(
                    "attribute `{name}` appears twice in one update"
                )));
            }
        }
        if seen.is_empty() {
            return Err(TableError::Invalid("an update changes nothing".into()));
        }
        Ok(())
    }
}

/// The sort-key part of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    All,
    Eq(String),
    Lt(String),
    Le(String),
    Gt(String),
    Ge(String),
    Between(String, String),
    BeginsWith(String),
}

impl SortKey {
    pub fn matches(&self, sk: &str) -> bool {
        match self {
            SortKey::All => true,
            SortKey::Eq(v) => sk == v,
            SortKey::Lt(v) => sk < v.as_str(),
            SortKey::Le(v) => sk <= v.as_str(),
            SortKey::Gt(v) => sk > v.as_str(),
            SortKey::Ge(v) => sk >= v.as_str(),
            SortKey::Between(a, b) => sk >= a.as_str() && sk <= b.as_str(),
            SortKey::BeginsWith(p) => sk.starts_with(p.as_str()),
        }
    }
}

/// Reads are strongly consistent unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Strong,
    Eventual,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub pk: String,
    pub sort: SortKey,
    /// `true`: ascending sort key; `false`: descending (newest first).
    pub forward: bool,
    pub limit: Option<u32>,
    pub cursor: Option<Cursor>,
    pub consistency: Consistency,
}

impl Query {
    pub fn partition(pk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sort: SortKey::All,
            forward: true,
            limit: None,
            cursor: None,
            consistency: Consistency::Strong,
        }
    }

    pub fn sort(mut self, sort: SortKey) -> Self {
        self.sort = sort;
        self
    }

    pub fn backward(mut self) -> Self {
        self.forward = false;
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Checks the query and returns the key its cursor points at, if any.
    pub fn validate(&self) -> Result<Option<Key>, TableError> {
        if self.pk.is_empty() {
            return Err(TableError::Invalid("a query needs a partition key".into()));
        }
        if self.limit == Some(0) {
            return Err(TableError::Invalid(
                "a query limit must be at least 1".into(),
            ));
        }
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        let key = cursor.to_key()?;
        if key.pk != self.pk {
            return Err(TableError::Invalid(
                "the cursor belongs to another partition".into(),
            ));
        }
        Ok(Some(key))
    }
}

/// An opaque page cursor: the last key a page returned. The same encoding on
/// both adapters, so a cursor is safe to hand to API clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    pub fn from_key(key: &Key) -> Self {
        let json = serde_json::to_vec(key).unwrap_or_default();
        Cursor(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    pub fn to_key(&self) -> Result<Key, TableError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(self.0.as_bytes())
            .map_err(|_| TableError::Invalid("malformed cursor".into()))?;
        serde_json::from_slice(&bytes).map_err(|_| TableError::Invalid("malformed cursor".into()))
    }

    /// Parses a cursor handed back by a client.
    pub fn parse(s: &str) -> Result<Self, TableError> {
        let cursor = Cursor(s.to_owned());
        cursor.to_key()?;
        Ok(cursor)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub items: Vec<Item>,
    /// Present when more items may follow.
    pub next: Option<Cursor>,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum TxOp {
    Put {
        item: Item,
        condition: Option<Condition>,
    },
    Update {
        key: Key,
        update: Update,
        condition: Option<Condition>,
    },
    Delete {
        key: Key,
        condition: Option<Condition>,
    },
    Check {
        key: Key,
        condition: Condition,
    },
}

impl TxOp {
    pub fn key(&self) -> Result<Key, TableError> {
        match self {
            TxOp::Put { item, .. } => Key::of_item(item),
            TxOp::Update { key, .. } | TxOp::Delete { key, .. } | TxOp::Check { key, .. } => {
                Ok(key.clone())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The condition did not hold; `current` is the stored item, if any
    /// (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), so a caller can
    /// retry without another read.
    #[error("the condition on the item did not hold")]
    ConditionFailed { current: Option<Box<Item>> },
    /// A transaction was cancelled; `failed` lists the operations (by index)
    /// whose condition did not hold. Nothing was written.
    #[error("the transaction was cancelled (conditions failed at {failed:?})")]
    TransactionCanceled { failed: Vec<usize> },
    #[error("invalid table request: {0}")]
    Invalid(String),
    #[error("the table is throttling requests")]
    Throttled,
    #[error("the table is unavailable: {0}")]
    Unavailable(String),
}

/// How many requests an adapter has made, by kind. Used to prove per-operation
/// costs (a cache hit costs no read) in tests.
#[derive(Debug, Default)]
pub struct TableMetrics {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub queries: AtomicU64,
    pub transactions: AtomicU64,
    pub condition_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub reads: u64,
    pub writes: u64,
    pub queries: u64,
    pub transactions: u64,
    pub condition_failures: u64,
}

impl TableMetrics {
    pub fn snapshot(&self) -> TableStats {
        TableStats {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            condition_failures: self.condition_failures.load(Ordering::Relaxed),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
pub trait Table: Send + Sync + 'static {
    fn name(&self) -> &str;

    async fn get(&self, key: &Key, consistency: Consistency) -> Result<Option<Item>, TableError>;

    /// Writes the whole item, if `condition` holds on the stored one.
    async fn put(&self, item: Item, condition: Option<Condition>) -> Result<(), TableError>;

    /// Applies `update` if `condition` holds; returns the item as written.
    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> Result<Item, TableError>;

    /// Deletes the item if `condition` holds; returns what was deleted.
    async fn delete(
        &self,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>, TableError>;

    async fn query(&self, query: Query) -> Result<Page, TableError>;

    /// Up to 100 keys; absent and expired items are left out.
    async fn batch_get(&self, keys: &[Key]) -> Result<Vec<Item>, TableError>;

    /// Up to 25 unconditional puts, each atomic on its own.
    async fn batch_put(&self, items: Vec<Item>) -> Result<(), TableError>;

    /// Up to 100 operations on distinct keys, all or nothing.
    async fn transact_write(&self, ops: Vec<TxOp>) -> Result<(), TableError>;

    fn metrics(&self) -> TableStats;
}

/// A number attribute.
pub fn num(n: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// Reads an integer attribute.
pub fn get_i64(item: &Item, attr: &str) -> Option<i64> {
    match item.get(attr) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// Reads a string attribute.
pub fn get_str<'a>(item: &'a Item, attr: &str) -> Option<&'a str> {
    match item.get(attr) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

/// Whether an item is past its TTL at `now_secs`.
pub fn is_expired(item: &Item, now_secs: u64) -> bool {
    match item.get(TTL) {
        Some(AttributeValue::N(n)) => match n.parse::<f64>() {
            Ok(ttl) => ttl <= now_secs as f64,
            Err(_) => false,
        },
        _ => false,
    }
}

/// Checks the rules DynamoDB enforces on a written item: string key
/// attributes, a numeric `ttl`, and the 400 KB item size.
pub fn validate_item(item: &Item) -> Result<Key, TableError> {
    let key = Key::of_item(item)?;
    key.validate()?;
    if let Some(v) = item.get(TTL)
        && !matches!(v, AttributeValue::N(_))
    {
        return Err(TableError::Invalid(
            "attribute `ttl` must be a number".into(),
        ));
    }
    let size: usize = item.iter().map(|(k, v)| k.len() + value_size(v)).sum();
    if size > MAX_ITEM_BYTES {
        return Err(TableError::Invalid(format!(
            "item size {size} bytes exceeds the {MAX_ITEM_BYTES} byte limit"
        )));
    }
    Ok(key)
}

/// An approximation of DynamoDB's item size accounting.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
        AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
    }
}

/// Checks the shape of a batch or transaction before either adapter runs it.
pub fn validate_transaction(ops: &[TxOp]) -> Result<(), TableError> {
    if ops.is_empty() {
        return Err(TableError::Invalid(
            "a transaction needs at least one operation".into(),
        ));
    }
    if ops.len() > MAX_TRANSACTION_OPS {
        return Err(TableError::Invalid(format!(
            "a transaction takes at most {MAX_TRANSACTION_OPS} operations, got {}",
            ops.len()
        )));
    }
    let mut keys = std::collections::HashSet::new();
    for op in ops {
        let key = match op {
            TxOp::Put { item, .. } => validate_item(item)?,
            TxOp::Update { key, update, .. } => {
                update.validate()?;
                key.validate()?;
                key.clone()
            }
            TxOp::Delete { key, .. } | TxOp::Check { key, .. } => {
                key.validate()?;
                key.clone()
            }
        };
        if !keys.insert(key.clone()) {
            return Err(TableError::Invalid(format!(
                "a transaction touches item ({}, {}) twice",
                key.pk, key.sk
            )));
        }
    }
    Ok(())
}

pub fn validate_batch_get(keys: &[Key]) -> Result<(), TableError> {
    if keys.len() > MAX_BATCH_GET {
        return Err(TableError::Invalid(format!(
            "a batch get takes at most {MAX_BATCH_GET} keys, got {}",
            keys.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        key.validate()?;
        if !seen.insert(key) {
            return Err(TableError::Invalid(
                "a batch get names one key twice".into(),
            ));
        }
    }
    Ok(())
}

pub fn validate_batch_put(items: &[Item]) -> Result<(), TableError> {
    if items.len() > MAX_BATCH_PUT {
        return Err(TableError::Invalid(format!(
            "a batch put takes at most {MAX_BATCH_PUT} items, got {}",
            items.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let key = validate_item(item)?;
        if !seen.insert(key) {
            return Err(TableError::Invalid(
                "a batch put names one key twice".into(),
            ));
        }
    }
    Ok(())
}
