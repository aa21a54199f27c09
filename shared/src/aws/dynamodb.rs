//! `Table` on DynamoDB (aws-sdk-dynamodb); items convert with `serde_dynamo`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    self as ddb, AttributeValue as DdbValue, KeysAndAttributes, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};

use crate::ports::Clock;
use crate::ports::table::{
    self, AttributeValue, CmpOp, Condition, Consistency, Cursor, Item, Key, PK, Page, Query, SK,
    SortKey, TTL, Table, TableError, TableMetrics, TableStats, TxOp, Update, is_expired,
};

pub struct DynamoTable {
    client: Client,
    name: String,
    clock: Arc<dyn Clock>,
    metrics: TableMetrics,
}

impl DynamoTable {
    pub fn new(client: Client, name: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            name: name.into(),
            clock,
            metrics: TableMetrics::default(),
        }
    }
}

/// Builds expression strings with `#n`/`:v` placeholders.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, DdbValue>,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, a)| a.as_str() == attr) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    fn value(&mut self, v: &AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values
            .insert(placeholder.clone(), DdbValue::from(v.clone()));
        placeholder
    }

    fn condition(&mut self, c: &Condition) -> String {
        match c {
            Condition::Exists => format!("attribute_exists({})", self.name(PK)),
            Condition::NotExists => format!("attribute_not_exists({})", self.name(PK)),
            Condition::AttrExists(a) => format!("attribute_exists({})", self.name(a)),
            Condition::AttrNotExists(a) => format!("attribute_not_exists({})", self.name(a)),
            Condition::Cmp(a, op, v) => {
                let op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                format!("{} {op} {}", self.name(a), self.value(v))
            }
            Condition::And(all) => self.join(all, " AND ", true),
            Condition::Or(any) => self.join(any, " OR ", false),
            Condition::Not(c) => format!("NOT ({})", self.condition(c)),
        }
    }

    /// An empty AND is true and an empty OR is false, as in the evaluator.
    fn join(&mut self, parts: &[Condition], sep: &str, empty: bool) -> String {
        if parts.is_empty() {
            let pk = self.name(PK);
            let op = if empty { "OR" } else { "AND" };
            return format!("(attribute_exists({pk}) {op} attribute_not_exists({pk}))");
        }
        let rendered: Vec<String> = parts
            .iter()
            .map(|c| format!("({})", self.condition(c)))
            .collect();
        rendered.join(sep)
    }

    fn update(&mut self, u: &Update) -> String {
        let mut clauses = Vec::new();
        if !u.set.is_empty() {
            let parts: Vec<String> = u
                .set
                .iter()
                .map(|(a, v)| format!("{} = {}", self.name(a), self.value(v)))
                .collect();
            clauses.push(format!("SET {}", parts.join(", ")));
        }
        if !u.add.is_empty() {
            let parts: Vec<String> = u
                .add
                .iter()
                .map(|(a, d)| format!("{} {}", self.name(a), self.value(&table::num(d))))
                .collect();
            clauses.push(format!("ADD {}", parts.join(", ")));
        }
        if !u.remove.is_empty() {
            let parts: Vec<String> = u.remove.iter().map(|a| self.name(a)).collect();
            clauses.push(format!("REMOVE {}", parts.join(", ")));
        }
        clauses.join(" ")
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, DdbValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

fn key_map(key: &Key) -> HashMap<String, DdbValue> {
    HashMap::from([
        (PK.to_owned(), DdbValue::S(key.pk.clone())),
        (SK.to_owned(), DdbValue::S(key.sk.clone())),
    ])
}

fn to_ddb(item: Item) -> HashMap<String, DdbValue> {
    item.into()
}

fn from_ddb(map: HashMap<String, DdbValue>) -> Item {
    Item::from(map)
}

/// Maps an SDK failure that is not a condition failure.
fn sdk_error<E, R>(err: SdkError<E, R>) -> TableError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match err.code() {
        Some(
            "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "ThrottlingException"
            | "TransactionConflictException",
        ) => TableError::Throttled,
        Some("ValidationException") => {
            TableError::Invalid(err.message().unwrap_or("validation error").to_owned())
        }
        _ => TableError::Unavailable(DisplayErrorContext(&err).to_string()),
    }
}

fn condition_failed(item: Option<HashMap<String, DdbValue>>) -> TableError {
    TableError::ConditionFailed {
        current: item.map(|m| Box::new(from_ddb(m))),
    }
}

fn consistent(c: Consistency) -> bool {
    c == Consistency::Strong
}

const UNPROCESSED_RETRIES: u32 = 8;

async fn backoff(attempt: u32) {
    let ms = 25u64.saturating_mul(1 << attempt.min(6));
    tokio::time::sleep(Duration::from_millis(fastrand::u64(ms / 2..=ms))).await;
}

impl DynamoTable {
    fn count_failure<T>(&self, r: Result<T, TableError>) -> Result<T, TableError> {
        if matches!(
            r,
            Err(TableError::ConditionFailed { .. } | TableError::TransactionCanceled { .. })
        ) {
            TableMetrics::count(&self.metrics.condition_failures);
        }
        r
    }

    fn tx_item(&self, op: TxOp) -> Result<TransactWriteItem, TableError> {
        let mut expr = Expr::default();
        let built = match op {
            TxOp::Put { item, condition } => {
                let cond = condition.as_ref().map(|c| expr.condition(c));
                TransactWriteItem::builder().put(
                    ddb::Put::builder()
                        .table_name(&self.name)
                        .set_item(Some(to_ddb(item)))
                        .set_condition_expression(cond)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(|e| TableError::Invalid(e.to_string()))?,
                )
            }
            TxOp::Update {
                key,
                update,
                condition,
            } => {
                let update_expr = expr.update(&update);
                let cond = condition.as_ref().map(|c| expr.condition(c));
                TransactWriteItem::builder().update(
                    ddb::Update::builder()
                        .table_name(&self.name)
                        .set_key(Some(key_map(&key)))
                        .update_expression(update_expr)
                        .set_condition_expression(cond)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(|e| TableError::Invalid(e.to_string()))?,
                )
            }
            TxOp::Delete { key, condition } => {
                let cond = condition.as_ref().map(|c| expr.condition(c));
                TransactWriteItem::builder().delete(
                    ddb::Delete::builder()
                        .table_name(&self.name)
                        .set_key(Some(key_map(&key)))
                        .set_condition_expression(cond)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(|e| TableError::Invalid(e.to_string()))?,
                )
            }
            TxOp::Check { key, condition } => {
                let cond = expr.condition(&condition);
                TransactWriteItem::builder().condition_check(
                    ddb::ConditionCheck::builder()
                        .table_name(&self.name)
                        .set_key(Some(key_map(&key)))
                        .condition_expression(cond)
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .build()
                        .map_err(|e| TableError::Invalid(e.to_string()))?,
                )
            }
        };
        Ok(built.build())
    }
}

#[async_trait]
impl Table for DynamoTable {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &Key, consistency: Consistency) -> Result<Option<Item>, TableError> {
        key.validate()?;
        TableMetrics::count(&self.metrics.reads);
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key_map(key)))
            .consistent_read(consistent(consistency))
            .send()
            .await
            .map_err(sdk_error)?;
        let now = self.clock.now_secs();
        Ok(out.item.map(from_ddb).filter(|i| !is_expired(i, now)))
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> Result<(), TableError> {
        table::validate_item(&item)?;
        TableMetrics::count(&self.metrics.writes);
        let mut expr = Expr::default();
        let cond = condition.as_ref().map(|c| expr.condition(c));
        let r = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_ddb(item)))
            .set_condition_expression(cond)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let r = match r {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.into_service_error() {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                    condition_failed(c.item)
                }
                other => sdk_error(SdkError::<_, ()>::service_error(other, ())),
            }),
        };
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
        let mut expr = Expr::default();
        let update_expr = expr.update(&update);
        let cond = condition.as_ref().map(|c| expr.condition(c));
        let r = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key_map(key)))
            .update_expression(update_expr)
            .set_condition_expression(cond)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let r = match r {
            Ok(out) => Ok(from_ddb(out.attributes.unwrap_or_default())),
            Err(e) => Err(match e.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                    condition_failed(c.item)
                }
                other => sdk_error(SdkError::<_, ()>::service_error(other, ())),
            }),
        };
        self.count_failure(r)
    }

    async fn delete(
        &self,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>, TableError> {
        key.validate()?;
        TableMetrics::count(&self.metrics.writes);
        let mut expr = Expr::default();
        let cond = condition.as_ref().map(|c| expr.condition(c));
        let r = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key_map(key)))
            .set_condition_expression(cond)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let now = self.clock.now_secs();
        let r = match r {
            Ok(out) => Ok(out.attributes.map(from_ddb).filter(|i| !is_expired(i, now))),
            Err(e) => Err(match e.into_service_error() {
                aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => {
                    condition_failed(c.item)
                }
                other => sdk_error(SdkError::<_, ()>::service_error(other, ())),
            }),
        };
        self.count_failure(r)
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        let start = query.validate()?.as_ref().map(key_map);
        TableMetrics::count(&self.metrics.queries);
        let mut expr = Expr::default();
        let pk = expr.name(PK);
        let pk_value = expr.value(&table::s(&query.pk));
        let mut key_cond = format!("{pk} = {pk_value}");
        let sk_cond = match &query.sort {
            SortKey::All => None,
            SortKey::Eq(v) => Some(("=", v)),
            SortKey::Lt(v) => Some(("<", v)),
            SortKey::Le(v) => Some(("<=", v)),
            SortKey::Gt(v) => Some((">", v)),
            SortKey::Ge(v) => Some((">=", v)),
            SortKey::Between(a, b) => {
                let sk = expr.name(SK);
                let (a, b) = (expr.value(&table::s(a)), expr.value(&table::s(b)));
                key_cond.push_str(&format!(" AND {sk} BETWEEN {a} AND {b}"));
                None
            }
            SortKey::BeginsWith(p) => {
                let sk = expr.name(SK);
                let p = expr.value(&table::s(p));
                key_cond.push_str(&format!(" AND begins_with({sk}, {p})"));
                None
            }
        };
        if let Some((op, v)) = sk_cond {
            let sk = expr.name(SK);
            let v = expr.value(&table::s(v));
            key_cond.push_str(&format!(" AND {sk} {op} {v}"));
        }
        let now = self.clock.now_secs();
        let ttl = expr.name(TTL);
        let now_value = expr.value(&table::num(now));
        let filter = format!("attribute_not_exists({ttl}) OR {ttl} > {now_value}");
        // DynamoDB applies Limit before the TTL filter, so a page can come back
        // short or empty with a cursor; keep reading until the page is full or
        // the partition ends, as the embedded adapter does.
        let limit = query.limit.map(|l| l as usize);
        let mut items: Vec<Item> = Vec::new();
        let mut start = start;
        loop {
            let want = limit.map(|l| (l - items.len()).min(i32::MAX as usize) as i32);
            let out = self
                .client
                .query()
                .table_name(&self.name)
                .key_condition_expression(key_cond.clone())
                .filter_expression(filter.clone())
                .set_expression_attribute_names(expr.names())
                .set_expression_attribute_values(expr.values())
                .scan_index_forward(query.forward)
                .set_limit(want)
                .set_exclusive_start_key(start.take())
                .consistent_read(consistent(query.consistency))
                .send()
                .await
                .map_err(sdk_error)?;
            items.extend(
                out.items
                    .unwrap_or_default()
                    .into_iter()
                    .map(from_ddb)
                    .filter(|i| !is_expired(i, now)),
            );
            let full = limit.is_some_and(|l| items.len() >= l);
            match out.last_evaluated_key {
                Some(last) if !full => {
                    TableMetrics::count(&self.metrics.queries);
                    start = Some(last);
                }
                Some(_) => {
                    // The cursor is the last item handed out.
                    let next = match items.last() {
                        Some(item) => Some(Cursor::from_key(&Key::of_item(item)?)),
                        None => None,
                    };
                    return Ok(Page { items, next });
                }
                None => return Ok(Page { items, next: None }),
            }
        }
    }

    async fn batch_get(&self, keys: &[Key]) -> Result<Vec<Item>, TableError> {
        table::validate_batch_get(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys.iter().map(key_map).collect()))
            .consistent_read(true)
            .build()
            .map_err(|e| TableError::Invalid(e.to_string()))?;
        let mut found = Vec::with_capacity(keys.len());
        let now = self.clock.now_secs();
        for attempt in 0..=UNPROCESSED_RETRIES {
            TableMetrics::count(&self.metrics.reads);
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.name, pending)
                .send()
                .await
                .map_err(sdk_error)?;
            if let Some(mut responses) = out.responses
                && let Some(items) = responses.remove(&self.name)
            {
                found.extend(
                    items
                        .into_iter()
                        .map(from_ddb)
                        .filter(|i| !is_expired(i, now)),
                );
            }
            match out.unprocessed_keys.and_then(|mut u| u.remove(&self.name)) {
                Some(rest) if !rest.keys.is_empty() => {
                    pending = rest;
                    backoff(attempt).await;
                }
                _ => return Ok(found),
            }
        }
        Err(TableError::Throttled)
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<(), TableError> {
        table::validate_batch_put(&items)?;
        if items.is_empty() {
            return Ok(());
        }
        let mut pending = items
            .into_iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(to_ddb(item)))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| TableError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for attempt in 0..=UNPROCESSED_RETRIES {
            TableMetrics::count(&self.metrics.writes);
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.name, pending)
                .send()
                .await
                .map_err(sdk_error)?;
            match out.unprocessed_items.and_then(|mut u| u.remove(&self.name)) {
                Some(rest) if !rest.is_empty() => {
                    pending = rest;
                    backoff(attempt).await;
                }
                _ => return Ok(()),
            }
        }
        Err(TableError::Throttled)
    }

    async fn transact_write(&self, ops: Vec<TxOp>) -> Result<(), TableError> {
        table::validate_transaction(&ops)?;
        TableMetrics::count(&self.metrics.transactions);
        let items = ops
            .into_iter()
            .map(|op| self.tx_item(op))
            .collect::<Result<Vec<_>, _>>()?;
        let r = self
            .client
            .transact_write_items()
            // An SDK retry of a transaction that already committed is then a no-op.
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .set_transact_items(Some(items))
            .send()
            .await;
        let r = match r {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.into_service_error() {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                    let reasons = c.cancellation_reasons();
                    let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
                    let failed: Vec<usize> = (0..reasons.len())
                        .filter(|i| code(*i) == "ConditionalCheckFailed")
                        .collect();
                    let codes: Vec<&str> = (0..reasons.len()).map(code).collect();
                    if !failed.is_empty() {
                        TableError::TransactionCanceled { failed }
                    } else if codes.contains(&"ValidationError") {
                        TableError::Invalid(format!("transaction rejected: {codes:?}"))
                    } else if codes
                        .iter()
                        .any(|c| matches!(*c, "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"))
                    {
                        TableError::Throttled
                    } else {
                        TableError::Unavailable(format!("transaction cancelled: {codes:?}"))
                    }
                }
                other => sdk_error(SdkError::<_, ()>::service_error(other, ())),
            }),
        };
        self.count_failure(r)
    }

    fn metrics(&self) -> TableStats {
        self.metrics.snapshot()
    }
}
