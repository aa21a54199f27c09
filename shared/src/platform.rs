//! Wires ports to adapters: the one place that knows which backend is in use.
//! Functions ask the platform for what they need at cold start, so a missing
//! setting stops the start with a clear message (DESIGN rule 7).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::aws::{DynamoTable, SqsQueue, bootstrap};
use crate::embedded::{EmbeddedQueue, EmbeddedStore, EmbeddedTable};
use crate::ids::{IdConfig, IdService};
use crate::ports::{Clock, Queue, QueueSpec, SystemClock, Table};

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The tables of the system, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableName {
    IdLeases,
}

impl TableName {
    pub const ALL: &'static [TableName] = &[TableName::IdLeases];

    /// The name used locally and as the suffix of bootstrapped tables.
    pub fn logical(self) -> &'static str {
        match self {
            TableName::IdLeases => "id-leases",
        }
    }

    /// The variable that carries the physical name on AWS (set by template.yaml).
    pub fn env_var(self) -> &'static str {
        match self {
            TableName::IdLeases => "ID_LEASES_TABLE",
        }
    }
}

/// The variable carrying a queue's URL on AWS: `notify-email` → `NOTIFY_EMAIL_QUEUE_URL`.
pub fn queue_url_var(logical: &str) -> String {
    let base = logical.trim_end_matches(".fifo");
    format!("{}_QUEUE_URL", base.replace(['-', '.'], "_").to_uppercase())
}

enum Backend {
    Embedded(Arc<EmbeddedStore>),
    Aws {
        dynamodb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        /// Local host against moto: physical names are `prefix + logical`,
        /// created on first use.
        bootstrap_prefix: Option<String>,
    },
}

pub struct Platform {
    backend: Backend,
    clock: Arc<dyn Clock>,
    tables: Mutex<HashMap<TableName, Arc<dyn Table>>>,
    queues: tokio::sync::Mutex<HashMap<String, Arc<dyn Queue>>>,
    ids: OnceLock<Arc<IdService>>,
}

impl Platform {
    /// The local host's default: everything in one SQLite file.
    pub fn embedded(store: Arc<EmbeddedStore>) -> Self {
        let clock = store.clock().clone();
        Self::with(Backend::Embedded(store), clock)
    }

    /// Lambda: AWS clients from the environment, resource names from the
    /// variables template.yaml sets.
    pub async fn aws_from_env() -> Self {
        let config = crate::aws::sdk_config().await;
        Self::aws(&config, None)
    }

    /// The AWS adapters on a given SDK configuration; with a prefix, tables and
    /// queues named `prefix + logical` are created when first used.
    pub fn aws(config: &aws_config::SdkConfig, bootstrap_prefix: Option<String>) -> Self {
        let backend = Backend::Aws {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            bootstrap_prefix,
        };
        Self::with(backend, Arc::new(SystemClock))
    }

    fn with(backend: Backend, clock: Arc<dyn Clock>) -> Self {
        Self {
            backend,
            clock,
            tables: Mutex::new(HashMap::new()),
            queues: tokio::sync::Mutex::new(HashMap::new()),
            ids: OnceLock::new(),
        }
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Embedded(_) => "embedded",
            Backend::Aws { .. } => "aws",
        }
    }

    fn physical_table_name(&self, table: TableName) -> Result<String, ConfigError> {
        match &self.backend {
            Backend::Embedded(_) => Ok(table.logical().to_owned()),
            Backend::Aws {
                bootstrap_prefix: Some(prefix),
                ..
            } => Ok(format!("{prefix}{}", table.logical())),
            Backend::Aws { .. } => std::env::var(table.env_var())
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "{} is not set: it names the {} table",
                        table.env_var(),
                        table.logical()
                    ))
                }),
        }
    }

    /// The table, created on first use when bootstrapping.
    pub async fn table(&self, table: TableName) -> Result<Arc<dyn Table>, ConfigError> {
        if let Some(t) = self.tables.lock().ok().and_then(|m| m.get(&table).cloned()) {
            return Ok(t);
        }
        let name = self.physical_table_name(table)?;
        let adapter: Arc<dyn Table> = match &self.backend {
            Backend::Embedded(store) => Arc::new(EmbeddedTable::new(store.clone(), name)),
            Backend::Aws {
                dynamodb,
                bootstrap_prefix,
                ..
            } => {
                if bootstrap_prefix.is_some() {
                    bootstrap::ensure_table(dynamodb, &name)
                        .await
                        .map_err(|e| ConfigError(e.to_string()))?;
                }
                Arc::new(DynamoTable::new(dynamodb.clone(), name, self.clock.clone()))
            }
        };
        if let Ok(mut tables) = self.tables.lock() {
            tables.entry(table).or_insert_with(|| adapter.clone());
        }
        Ok(adapter)
    }

    /// The queue for `spec`; its dead-letter queue is `dead_letter_queue(spec)`.
    pub async fn queue(&self, spec: &QueueSpec) -> Result<Arc<dyn Queue>, ConfigError> {
        let mut queues = self.queues.lock().await;
        if let Some(q) = queues.get(&spec.name) {
            return Ok(q.clone());
        }
        let adapter: Arc<dyn Queue> = match &self.backend {
            Backend::Embedded(store) => Arc::new(EmbeddedQueue::new(store.clone(), spec.clone())),
            Backend::Aws {
                sqs,
                bootstrap_prefix,
                ..
            } => {
                let url = match bootstrap_prefix {
                    Some(prefix) => {
                        let dlq_arn = match spec.dead_letter_spec() {
                            Some(dlq) => {
                                let physical = format!("{prefix}{}", dlq.name);
                                let url = bootstrap::ensure_queue(sqs, &dlq, &physical, None)
                                    .await
                                    .map_err(|e| ConfigError(e.to_string()))?;
                                let q = SqsQueue::connect(sqs.clone(), url, dlq.clone())
                                    .await
                                    .map_err(|e| ConfigError(e.to_string()))?;
                                let arn = q.arn();
                                queues.insert(dlq.name.clone(), Arc::new(q));
                                Some(arn)
                            }
                            None => None,
                        };
                        let physical = format!("{prefix}{}", spec.name);
                        bootstrap::ensure_queue(sqs, spec, &physical, dlq_arn.as_deref())
                            .await
                            .map_err(|e| ConfigError(e.to_string()))?
                    }
                    None => {
                        let var = queue_url_var(&spec.name);
                        std::env::var(&var)
                            .ok()
                            .filter(|v| !v.trim().is_empty())
                            .ok_or_else(|| {
                                ConfigError(format!(
                                    "{var} is not set: it is the URL of queue {}",
                                    spec.name
                                ))
                            })?
                    }
                };
                Arc::new(
                    SqsQueue::connect(sqs.clone(), url, spec.clone())
                        .await
                        .map_err(|e| ConfigError(format!("queue {}: {e}", spec.name)))?,
                )
            }
        };
        queues.insert(spec.name.clone(), adapter.clone());
        Ok(adapter)
    }

    /// The dead-letter queue of `spec`, if it has one.
    pub async fn dead_letter_queue(
        &self,
        spec: &QueueSpec,
    ) -> Result<Option<Arc<dyn Queue>>, ConfigError> {
        let Some(dlq) = spec.dead_letter_spec() else {
            return Ok(None);
        };
        // Creating the main queue creates (and registers) its DLQ when bootstrapping.
        self.queue(spec).await?;
        self.queue(&dlq).await.map(Some)
    }

    /// The instance's ID service (one lease per process).
    pub async fn ids(&self) -> Result<Arc<IdService>, ConfigError> {
        if let Some(ids) = self.ids.get() {
            return Ok(ids.clone());
        }
        let table = self.table(TableName::IdLeases).await?;
        let config = IdConfig::from_env().map_err(ConfigError)?;
        let service = Arc::new(
            IdService::new(table, self.clock.clone(), config)
                .map_err(|e| ConfigError(e.to_string()))?,
        );
        Ok(self.ids.get_or_init(|| service).clone())
    }

    /// Graceful shutdown: give back what this instance holds.
    pub async fn shutdown(&self) {
        if let Some(ids) = self.ids.get()
            && let Err(e) = ids.release().await
        {
            tracing::warn!(error = %e, "could not release the machine-id lease");
        }
    }
}
