//! Faults the local host can be told to have, so that failure handling can
//! be seen (and tested) without breaking a real store:
//! `LOCAL_RATE_LIMIT_STORE=down` makes every rate-limit store call fail at
//! once, `=slow` makes every call outlast any sane timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hanul_shared::platform::{Platform, TableName};
use hanul_shared::ports::table::{
    Condition, Consistency, Item, Key, Page, Query, Table, TableError, TableStats, TxOp, Update,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Down,
    Slow,
}

/// A table that fails every call, the way an unreachable one does.
pub struct FailingTable {
    name: String,
    fault: Fault,
}

impl FailingTable {
    pub fn new(name: impl Into<String>, fault: Fault) -> Self {
        Self {
            name: name.into(),
            fault,
        }
    }

    async fn fail<T>(&self) -> Result<T, TableError> {
        if self.fault == Fault::Slow {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Err(TableError::Unavailable(format!(
            "{} is unreachable (LOCAL_RATE_LIMIT_STORE)",
            self.name
        )))
    }
}

#[async_trait]
impl Table for FailingTable {
    fn name(&self) -> &str {
        &self.name
    }
    async fn get(&self, _: &Key, _: Consistency) -> Result<Option<Item>, TableError> {
        self.fail().await
    }
    async fn put(&self, _: Item, _: Option<Condition>) -> Result<(), TableError> {
        self.fail().await
    }
    async fn update(&self, _: &Key, _: Update, _: Option<Condition>) -> Result<Item, TableError> {
        self.fail().await
    }
    async fn delete(&self, _: &Key, _: Option<Condition>) -> Result<Option<Item>, TableError> {
        self.fail().await
    }
    async fn query(&self, _: Query) -> Result<Page, TableError> {
        self.fail().await
    }
    async fn batch_get(&self, _: &[Key]) -> Result<Vec<Item>, TableError> {
        self.fail().await
    }
    async fn batch_put(&self, _: Vec<Item>) -> Result<(), TableError> {
        self.fail().await
    }
    async fn transact_write(&self, _: Vec<TxOp>) -> Result<(), TableError> {
        self.fail().await
    }
    fn metrics(&self) -> TableStats {
        TableStats::default()
    }
}

/// Applies `LOCAL_RATE_LIMIT_STORE` to the platform.
pub fn rate_limit_store(platform: Platform) -> Result<Platform, String> {
    let fault = match std::env::var("LOCAL_RATE_LIMIT_STORE").ok().as_deref() {
        None | Some("") | Some("up") => return Ok(platform),
        Some("down") => Fault::Down,
        Some("slow") => Fault::Slow,
        Some(other) => {
            return Err(format!(
                "LOCAL_RATE_LIMIT_STORE={other:?}: expected up, down or slow"
            ));
        }
    };
    tracing::warn!(
        ?fault,
        "the rate-limit store is made to fail (LOCAL_RATE_LIMIT_STORE)"
    );
    Ok(platform.with_table(
        TableName::RateLimits,
        Arc::new(FailingTable::new("rate-limits", fault)),
    ))
}
