//! A table that hands each call to a real one once its gate lets it through:
//! an outage, a conflict, or another writer winning a race, staged inside a
//! test (an in-memory fault, never a shipped backend).

use std::sync::Arc;

use async_trait::async_trait;
use hanul_shared::ports::Table;
use hanul_shared::ports::table::{
    Condition, Consistency, Item, Key, Page, Query, TableError, TableStats, TxOp, Update,
};

/// The kind of call a gate is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Read,
    Write,
    Transaction,
}

/// Decides, before each call reaches the real table, whether it fails.
#[async_trait]
pub trait Gate: Send + Sync {
    async fn admit(&self, call: Call) -> Result<(), TableError>;
}

pub struct Gated<G> {
    pub inner: Arc<dyn Table>,
    pub gate: G,
}

#[async_trait]
impl<G: Gate + 'static> Table for Gated<G> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get(&self, k: &Key, c: Consistency) -> Result<Option<Item>, TableError> {
        self.gate.admit(Call::Read).await?;
        self.inner.get(k, c).await
    }
    async fn put(&self, i: Item, c: Option<Condition>) -> Result<(), TableError> {
        self.gate.admit(Call::Write).await?;
        self.inner.put(i, c).await
    }
    async fn update(&self, k: &Key, u: Update, c: Option<Condition>) -> Result<Item, TableError> {
        self.gate.admit(Call::Write).await?;
        self.inner.update(k, u, c).await
    }
    async fn delete(&self, k: &Key, c: Option<Condition>) -> Result<Option<Item>, TableError> {
        self.gate.admit(Call::Write).await?;
        self.inner.delete(k, c).await
    }
    async fn query(&self, q: Query) -> Result<Page, TableError> {
        self.gate.admit(Call::Read).await?;
        self.inner.query(q).await
    }
    async fn batch_get(&self, k: &[Key]) -> Result<Vec<Item>, TableError> {
        self.gate.admit(Call::Read).await?;
        self.inner.batch_get(k).await
    }
    async fn batch_put(&self, i: Vec<Item>) -> Result<(), TableError> {
        self.gate.admit(Call::Write).await?;
        self.inner.batch_put(i).await
    }
    async fn transact_write(&self, ops: Vec<TxOp>) -> Result<(), TableError> {
        self.gate.admit(Call::Transaction).await?;
        self.inner.transact_write(ops).await
    }
    fn metrics(&self) -> TableStats {
        self.inner.metrics()
    }
}
