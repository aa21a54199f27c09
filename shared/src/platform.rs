//! Wires ports to adapters: the one place that knows which backend is in use.
//! Functions ask the platform for what they need at cold start, so a missing
//! setting stops the start with a clear message (DESIGN rule 7).

mod media;

pub use media::{MEDIA_DLQ, MEDIA_QUEUE, MEDIA_UPLOAD_KEY_VAR};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::aws::{
    CloudFrontCdn, DynamoTable, ManagementApiConnections, SesEmail, SnsPush, SnsSms, SqsQueue,
    bootstrap,
};
use crate::chat::{ChatConfig, ChatDeps, ChatService, deliver_queue_spec};
use crate::embedded::{EmbeddedQueue, EmbeddedStore, EmbeddedTable, LocalEdge, Outbox};
use crate::feed::{FeedConfig, FeedService, fanout_queue_spec};
use crate::http::auth::TokenVerifier;
use crate::http::service_keys::ServiceKeys;
use crate::ids::{IdConfig, IdService};
use crate::notify::{DeliveryQueue, DeliveryWorker, NotifyService, Senders, WorkerConfig};
use crate::ports::{Cdn, Clock, Connections, Queue, QueueSpec, SystemClock, Table};
use crate::ratelimit::{LimiterConfig, RateLimiter, RuleSet};
use crate::shortener::{ShortenerConfig, ShortenerService};

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The tables of the system, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableName {
    IdLeases,
    /// Links, their dedupe index, the code counter and click counters.
    Urls,
    /// Rate-limit state, one item per rule and key (per shard).
    RateLimits,
    /// Devices, settings, notifications, deliveries, due items, attempts.
    Notify,
    /// The local host's outbox of sent notifications.
    Outbox,
    /// Follows, blocks, profiles, posts, timelines, feeds, fan-out state.
    Feed,
    /// Conversations, members, messages, event logs, sync streams.
    Chat,
    /// WebSocket connections, presence, heartbeat buckets.
    Connections,
    /// The local host's accounts and sessions (Cognito's job on AWS).
    Accounts,
}

impl TableName {
    pub const ALL: &'static [TableName] = &[
        TableName::IdLeases,
        TableName::Urls,
        TableName::RateLimits,
        TableName::Notify,
        TableName::Outbox,
        TableName::Feed,
        TableName::Chat,
        TableName::Connections,
        TableName::Accounts,
    ];

    /// The name used locally and as the suffix of bootstrapped tables.
    pub fn logical(self) -> &'static str {
        match self {
            TableName::IdLeases => "id-leases",
            TableName::Urls => "urls",
            TableName::RateLimits => "rate-limits",
            TableName::Notify => "notify",
            TableName::Outbox => "outbox",
            TableName::Feed => "feed",
            TableName::Chat => "chat",
            TableName::Connections => "connections",
            TableName::Accounts => "accounts",
        }
    }

    /// The variable that carries the physical name on AWS (set by template.yaml).
    pub fn env_var(self) -> &'static str {
        match self {
            TableName::IdLeases => "ID_LEASES_TABLE",
            TableName::Urls => "URLS_TABLE",
            TableName::RateLimits => "RATE_LIMITS_TABLE",
            TableName::Notify => "NOTIFY_TABLE",
            TableName::Outbox => "OUTBOX_TABLE",
            TableName::Feed => "FEED_TABLE",
            TableName::Chat => "CHAT_TABLE",
            TableName::Connections => "CONNECTIONS_TABLE",
            TableName::Accounts => "ACCOUNTS_TABLE",
        }
    }
}

/// The variable naming the CloudFront distribution in front of the redirects.
pub const CDN_DISTRIBUTION_VAR: &str = "CDN_DISTRIBUTION_ID";

/// The variable naming the WebSocket API stage's management endpoint,
/// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`.
pub const CHAT_SOCKET_ENDPOINT_VAR: &str = "CHAT_SOCKET_ENDPOINT";

/// The variable carrying a queue's URL on AWS: `notify-email` → `NOTIFY_EMAIL_QUEUE_URL`.
pub fn queue_url_var(logical: &str) -> String {
    let base = logical.trim_end_matches(".fifo");
    format!("{}_QUEUE_URL", base.replace(['-', '.'], "_").to_uppercase())
}

enum Backend {
    Embedded {
        store: Arc<EmbeddedStore>,
        edge: Arc<LocalEdge>,
    },
    Aws {
        clients: Box<AwsClients>,
        /// Local host against moto: physical names are `prefix + logical`,
        /// created on first use.
        bootstrap_prefix: Option<String>,
    },
}

/// The SDK clients, each made when first asked for: a function builds
/// only the clients of the services it uses (most use one or two).
struct AwsClients {
    config: aws_config::SdkConfig,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    cloudfront: OnceLock<aws_sdk_cloudfront::Client>,
    sns: OnceLock<aws_sdk_sns::Client>,
    sesv2: OnceLock<aws_sdk_sesv2::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    management: OnceLock<aws_sdk_apigatewaymanagement::Client>,
}

impl AwsClients {
    fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            config: config.clone(),
            dynamodb: OnceLock::new(),
            sqs: OnceLock::new(),
            cloudfront: OnceLock::new(),
            sns: OnceLock::new(),
            sesv2: OnceLock::new(),
            s3: OnceLock::new(),
            management: OnceLock::new(),
        }
    }

    /// The WebSocket API's management client, on the stage's endpoint.
    fn management(&self, endpoint: &str) -> &aws_sdk_apigatewaymanagement::Client {
        self.management.get_or_init(|| {
            let config = aws_sdk_apigatewaymanagement::config::Builder::from(&self.config)
                .endpoint_url(endpoint)
                .build();
            aws_sdk_apigatewaymanagement::Client::from_conf(config)
        })
    }

    fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        self.dynamodb
            .get_or_init(|| aws_sdk_dynamodb::Client::new(&self.config))
    }

    fn sqs(&self) -> &aws_sdk_sqs::Client {
        self.sqs
            .get_or_init(|| aws_sdk_sqs::Client::new(&self.config))
    }

    fn cloudfront(&self) -> &aws_sdk_cloudfront::Client {
        self.cloudfront
            .get_or_init(|| aws_sdk_cloudfront::Client::new(&self.config))
    }

    fn sns(&self) -> &aws_sdk_sns::Client {
        self.sns
            .get_or_init(|| aws_sdk_sns::Client::new(&self.config))
    }

    /// Path-style, as the media store's own client (moto needs it).
    fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(|| {
            let conf = aws_sdk_s3::config::Builder::from(&self.config)
                .force_path_style(true)
                .build();
            aws_sdk_s3::Client::from_conf(conf)
        })
    }

    fn config(&self) -> &aws_config::SdkConfig {
        &self.config
    }

    fn sesv2(&self) -> &aws_sdk_sesv2::Client {
        self.sesv2
            .get_or_init(|| aws_sdk_sesv2::Client::new(&self.config))
    }
}

pub struct Platform {
    backend: Backend,
    clock: Arc<dyn Clock>,
    tables: Mutex<HashMap<TableName, Arc<dyn Table>>>,
    queues: tokio::sync::Mutex<HashMap<String, Arc<dyn Queue>>>,
    ids: OnceLock<Arc<IdService>>,
    shortener: OnceLock<Arc<ShortenerService>>,
    rate_limiter: tokio::sync::OnceCell<Arc<RateLimiter>>,
    notify: tokio::sync::OnceCell<Arc<NotifyService>>,
    feed: tokio::sync::OnceCell<Arc<FeedService>>,
    senders: tokio::sync::OnceCell<Senders>,
    cdn: tokio::sync::OnceCell<Arc<dyn Cdn>>,
    chat: tokio::sync::OnceCell<Arc<ChatService>>,
    media: tokio::sync::OnceCell<Arc<crate::media::MediaService>>,
    media_store: tokio::sync::OnceCell<Arc<dyn crate::ports::media::MediaStore>>,
    file_media: OnceLock<Arc<crate::embedded::FileMediaStore>>,
    connections: OnceLock<Arc<dyn Connections>>,
    tokens: OnceLock<Arc<dyn TokenVerifier>>,
    /// Values the host supplies for settings the environment leaves unset
    /// (the local host's short domain and generated keys).
    defaults: HashMap<String, String>,
    /// Work to finish before the process exits (see `on_shutdown`).
    shutdown_hooks: Mutex<Vec<ShutdownHook>>,
}

/// A piece of work a function leaves for its host's shutdown.
pub type ShutdownHook =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

impl Platform {
    /// The local host's default: everything in one SQLite file.
    pub fn embedded(store: Arc<EmbeddedStore>) -> Self {
        let clock = store.clock().clone();
        let edge = Arc::new(LocalEdge::new());
        Self::with(Backend::Embedded { store, edge }, clock)
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
            clients: Box::new(AwsClients::new(config)),
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
            shortener: OnceLock::new(),
            rate_limiter: tokio::sync::OnceCell::new(),
            notify: tokio::sync::OnceCell::new(),
            feed: tokio::sync::OnceCell::new(),
            senders: tokio::sync::OnceCell::new(),
            cdn: tokio::sync::OnceCell::new(),
            chat: tokio::sync::OnceCell::new(),
            media: tokio::sync::OnceCell::new(),
            media_store: tokio::sync::OnceCell::new(),
            file_media: OnceLock::new(),
            connections: OnceLock::new(),
            tokens: OnceLock::new(),
            defaults: HashMap::new(),
            shutdown_hooks: Mutex::new(Vec::new()),
        }
    }

    /// Supplies `value` for setting `name` when the environment has none.
    pub fn with_default(mut self, name: &str, value: impl Into<String>) -> Self {
        self.defaults.insert(name.to_owned(), value.into());
        self
    }

    /// Uses `table` for `name` instead of the backend's (the local host's
    /// fault injection wraps a real adapter this way).
    pub fn with_table(self, name: TableName, table: Arc<dyn Table>) -> Self {
        if let Ok(mut tables) = self.tables.lock() {
            tables.insert(name, table);
        }
        self
    }

    /// Uses these providers instead of the backend's (the local host records
    /// what leaves, and can be told to fail). Only before any worker starts.
    pub fn set_senders(&self, senders: Senders) -> Result<(), ConfigError> {
        self.senders
            .set(senders)
            .map_err(|_| ConfigError("the notification providers are already in use".into()))
    }

    /// A setting: the environment variable, else the host's default.
    pub fn setting(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.defaults.get(name).cloned())
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Embedded { .. } => "embedded",
            Backend::Aws { .. } => "aws",
        }
    }

    fn physical_table_name(&self, table: TableName) -> Result<String, ConfigError> {
        match &self.backend {
            Backend::Embedded { .. } => Ok(table.logical().to_owned()),
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
            Backend::Embedded { store, .. } => Arc::new(EmbeddedTable::new(store.clone(), name)),
            Backend::Aws {
                clients,
                bootstrap_prefix,
            } => {
                let dynamodb = clients.dynamodb();
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
            Backend::Embedded { store, .. } => {
                Arc::new(EmbeddedQueue::new(store.clone(), spec.clone()))
            }
            Backend::Aws {
                clients,
                bootstrap_prefix,
            } => {
                let sqs = clients.sqs();
                let url = match bootstrap_prefix {
                    None => {
                        let var = queue_url_var(&spec.name);
                        let url = self.setting(&var).ok_or_else(|| {
                            ConfigError(format!(
                                "{var} is not set: it is the URL of queue {}",
                                spec.name
                            ))
                        })?;
                        let adapter: Arc<dyn Queue> =
                            Arc::new(SqsQueue::from_url(sqs.clone(), url, spec.clone()));
                        queues.insert(spec.name.clone(), adapter.clone());
                        return Ok(adapter);
                    }
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

    /// The edge cache in front of the redirects: CloudFront on AWS (the
    /// distribution named by `CDN_DISTRIBUTION_ID`; bootstrapped on moto), the
    /// in-process caches locally.
    pub async fn cdn(&self) -> Result<Arc<dyn Cdn>, ConfigError> {
        self.cdn
            .get_or_try_init(|| async {
                let cdn: Arc<dyn Cdn> = match &self.backend {
                    Backend::Embedded { edge, .. } => edge.clone(),
                    Backend::Aws {
                        clients,
                        bootstrap_prefix,
                    } => {
                        let cloudfront = clients.cloudfront();
                        let id = match (self.setting(CDN_DISTRIBUTION_VAR), bootstrap_prefix) {
                            (Some(id), _) => id,
                            (None, Some(prefix)) => {
                                bootstrap::ensure_distribution(cloudfront, &format!("{prefix}redirects"))
                                    .await
                                    .map_err(|e| ConfigError(e.to_string()))?
                            }
                            (None, None) => {
                                return Err(ConfigError(format!(
                                    "{CDN_DISTRIBUTION_VAR} is not set: it names the CloudFront distribution to invalidate"
                                )));
                            }
                        };
                        Arc::new(CloudFrontCdn::new(cloudfront.clone(), id))
                    }
                };
                Ok(cdn)
            })
            .await
            .cloned()
    }

    /// The instance's shortener (one code block and one redirect cache per
    /// process). Locally, CDN invalidations purge its cache.
    pub async fn shortener(&self) -> Result<Arc<ShortenerService>, ConfigError> {
        if let Some(s) = self.shortener.get() {
            return Ok(s.clone());
        }
        let table = self.table(TableName::Urls).await?;
        let config =
            ShortenerConfig::from_settings(|name| self.setting(name)).map_err(ConfigError)?;
        let service = Arc::new(ShortenerService::new(table, self.clock.clone(), config));
        let service = self.shortener.get_or_init(|| service).clone();
        if let Backend::Embedded { edge, .. } = &self.backend {
            let cache = service.cache().clone();
            edge.subscribe(Arc::new(move |paths: &[String]| {
                cache.purge_paths(paths);
            }));
        }
        Ok(service)
    }

    /// The instance's rate limiter: rules from the file named by
    /// `RATE_LIMIT_RULES` (else the defaults that ship), state in the
    /// rate-limits table.
    pub async fn rate_limiter(&self) -> Result<Arc<RateLimiter>, ConfigError> {
        self.rate_limiter
            .get_or_try_init(|| async {
                let rules = match self.setting("RATE_LIMIT_RULES") {
                    Some(path) => {
                        let text = std::fs::read_to_string(&path).map_err(|e| {
                            ConfigError(format!("RATE_LIMIT_RULES={path}: cannot read it: {e}"))
                        })?;
                        RuleSet::parse(&text)
                            .map_err(|e| ConfigError(format!("{e} (in {path})")))?
                    }
                    None => RuleSet::defaults().map_err(ConfigError)?,
                };
                let config =
                    LimiterConfig::from_settings(|n| self.setting(n)).map_err(ConfigError)?;
                let table = self.table(TableName::RateLimits).await?;
                Ok(Arc::new(RateLimiter::new(
                    rules,
                    table,
                    self.clock.clone(),
                    config,
                )))
            })
            .await
            .cloned()
    }

    /// The keys other services call internal routes with (`SERVICE_API_KEYS`).
    pub fn service_keys(&self) -> Result<ServiceKeys, ConfigError> {
        let raw = self.setting("SERVICE_API_KEYS").ok_or_else(|| {
            ConfigError(
                "SERVICE_API_KEYS is not set: it lists the service keys, `name:key,...`".into(),
            )
        })?;
        ServiceKeys::parse(&raw).map_err(ConfigError)
    }

    /// A delivery queue as the settings shape it: its `maxReceiveCount` is
    /// `NOTIFY_MAX_ATTEMPTS`.
    pub fn delivery_queue_spec(&self, queue: DeliveryQueue) -> Result<QueueSpec, ConfigError> {
        let max_attempts = crate::notify::max_attempts(|n| self.setting(n)).map_err(ConfigError)?;
        Ok(queue.spec(max_attempts))
    }

    /// The notification service (queues for every channel).
    pub async fn notify(&self) -> Result<Arc<NotifyService>, ConfigError> {
        self.notify
            .get_or_try_init(|| async {
                let table = self.table(TableName::Notify).await?;
                let mut queues = std::collections::HashMap::new();
                for q in DeliveryQueue::ALL {
                    queues.insert(q, self.queue(&self.delivery_queue_spec(q)?).await?);
                }
                let limiter = self.rate_limiter().await?;
                Ok(Arc::new(NotifyService::new(
                    table,
                    self.clock.clone(),
                    queues,
                    Some(limiter),
                )))
            })
            .await
            .cloned()
    }

    /// The fan-out queue as the settings shape it: its `maxReceiveCount` is
    /// `FEED_FANOUT_MAX_ATTEMPTS` (default 5, as in template.yaml).
    pub fn feed_queue_spec(&self) -> Result<QueueSpec, ConfigError> {
        let attempts = crate::settings::bounded(
            &|n: &str| self.setting(n),
            "FEED_FANOUT_MAX_ATTEMPTS",
            5,
            1,
            100,
            "a whole number",
        )
        .map_err(ConfigError)?;
        Ok(fanout_queue_spec(attempts as u32))
    }

    /// The news feed (one per instance: its caches of posts, profiles and
    /// readers' state live here). Post ids come from the instance's ID lease.
    pub async fn feed(&self) -> Result<Arc<FeedService>, ConfigError> {
        self.feed
            .get_or_try_init(|| async {
                let table = self.table(TableName::Feed).await?;
                let queue = self.queue(&self.feed_queue_spec()?).await?;
                let ids = self.ids().await?;
                let config = FeedConfig::from_settings(|n| self.setting(n)).map_err(ConfigError)?;
                let service = FeedService::new(table, queue, ids, self.clock.clone(), config);
                // Without a CDN URL (a deployment with no media) posts carry
                // no media and profiles no avatar; the rest works.
                Ok(Arc::new(
                    match self.setting(crate::media::MEDIA_BASE_URL_VAR) {
                        Some(_) => service.with_media(self.media_library().await?),
                        None => service,
                    },
                ))
            })
            .await
            .cloned()
    }

    /// Uses these connections instead of the backend's: the local host
    /// always serves its own sockets, whatever holds its tables.
    pub fn set_connections(&self, connections: Arc<dyn Connections>) -> Result<(), ConfigError> {
        self.connections
            .set(connections)
            .map_err(|_| ConfigError("the connections are already in use".into()))
    }

    /// The WebSocket connections: the API Gateway management API of the
    /// stage named by `CHAT_SOCKET_ENDPOINT` on AWS, the host's sockets
    /// locally.
    pub fn connections(&self) -> Result<Arc<dyn Connections>, ConfigError> {
        if let Some(c) = self.connections.get() {
            return Ok(c.clone());
        }
        match &self.backend {
            Backend::Embedded { .. } => {
                let local: Arc<dyn Connections> = crate::embedded::LocalSockets::new();
                Ok(self.connections.get_or_init(|| local).clone())
            }
            Backend::Aws { clients, .. } => {
                let endpoint = self.setting(CHAT_SOCKET_ENDPOINT_VAR).ok_or_else(|| {
                    ConfigError(format!(
                        "{CHAT_SOCKET_ENDPOINT_VAR} is not set: it is the WebSocket API stage's management endpoint"
                    ))
                })?;
                let adapter: Arc<dyn Connections> = Arc::new(ManagementApiConnections::new(
                    clients.management(&endpoint).clone(),
                ));
                Ok(self.connections.get_or_init(|| adapter).clone())
            }
        }
    }

    /// Uses this token check for WebSocket connections (the local host's
    /// own tokens).
    pub fn set_token_verifier(&self, verifier: Arc<dyn TokenVerifier>) -> Result<(), ConfigError> {
        self.tokens
            .set(verifier)
            .map_err(|_| ConfigError("the token verifier is already in use".into()))
    }

    /// How `$connect` checks the token from its query string: the host's,
    /// else the Cognito user pool named by `JWT_ISSUER` and `JWT_AUDIENCE`.
    pub fn token_verifier(&self) -> Result<Arc<dyn TokenVerifier>, ConfigError> {
        if let Some(v) = self.tokens.get() {
            return Ok(v.clone());
        }
        let setting = |name: &str| {
            self.setting(name).ok_or_else(|| {
                ConfigError(format!(
                    "{name} is not set: $connect verifies tokens itself"
                ))
            })
        };
        let verifier: Arc<dyn TokenVerifier> = Arc::new(
            crate::http::jwks::JwksVerifier::new(
                &setting("JWT_ISSUER")?,
                &setting("JWT_AUDIENCE")?,
            )
            .map_err(ConfigError)?,
        );
        Ok(self.tokens.get_or_init(|| verifier).clone())
    }

    /// The delivery queue as the settings shape it: its `maxReceiveCount`
    /// is `CHAT_DELIVER_MAX_ATTEMPTS` (default 5, as in template.yaml).
    pub fn chat_queue_spec(&self) -> Result<QueueSpec, ConfigError> {
        let attempts = crate::settings::bounded(
            &|n: &str| self.setting(n),
            "CHAT_DELIVER_MAX_ATTEMPTS",
            5,
            1,
            100,
            "a whole number",
        )
        .map_err(ConfigError)?;
        Ok(deliver_queue_spec(attempts as u32))
    }

    /// Chat (one per instance: its member-list cache lives here). Event
    /// ids come from the instance's ID lease.
    pub async fn chat(&self) -> Result<Arc<ChatService>, ConfigError> {
        self.chat
            .get_or_try_init(|| async {
                let deps = ChatDeps {
                    table: self.table(TableName::Chat).await?,
                    presence_table: self.table(TableName::Connections).await?,
                    // Only the functions that check blocks are given the feed table.
                    blocks: self.table(TableName::Feed).await.ok(),
                    queue: self.queue(&self.chat_queue_spec()?).await?,
                    connections: self.connections()?,
                    ids: self.ids().await?,
                    clock: self.clock.clone(),
                    limiter: Some(self.rate_limiter().await?),
                };
                let config = ChatConfig::from_settings(|n| self.setting(n)).map_err(ConfigError)?;
                Ok(Arc::new(ChatService::new(deps, config)))
            })
            .await
            .cloned()
    }

    /// Chat with pushes to offline members (the delivery worker).
    pub async fn chat_with_push(&self) -> Result<Arc<ChatService>, ConfigError> {
        let notify = self.notify().await?;
        let chat = self.chat().await?;
        chat.set_push(notify);
        Ok(chat)
    }

    /// The notification service for functions that never queue a delivery
    /// (devices, settings, status): the table alone, so they need none of the
    /// delivery queues' settings or permissions.
    pub async fn notify_records(&self) -> Result<Arc<NotifyService>, ConfigError> {
        if let Some(service) = self.notify.get() {
            return Ok(service.clone());
        }
        let table = self.table(TableName::Notify).await?;
        Ok(Arc::new(NotifyService::new(
            table,
            self.clock.clone(),
            std::collections::HashMap::new(),
            None,
        )))
    }

    /// The providers: SNS and SES on AWS (push needs
    /// `NOTIFY_APNS_APPLICATION_ARN` and `NOTIFY_FCM_APPLICATION_ARN`, email
    /// `NOTIFY_EMAIL_FROM`; created on moto when bootstrapping), the outbox
    /// locally. A worker asks only for its own channel's, so the SMS worker
    /// needs no push settings.
    pub async fn senders(&self, queue: DeliveryQueue) -> Result<Senders, ConfigError> {
        if let Some(senders) = self.senders.get() {
            return Ok(senders.clone());
        }
        match &self.backend {
            Backend::Embedded { .. } => {
                let outbox = Arc::new(Outbox::new(
                    self.table(TableName::Outbox).await?,
                    self.clock.clone(),
                ));
                let senders = Senders::all(outbox);
                Ok(self.senders.get_or_init(|| async { senders }).await.clone())
            }
            Backend::Aws {
                clients,
                bootstrap_prefix,
            } => {
                let (sns, sesv2) = (clients.sns(), clients.sesv2());
                let unconfigured = Arc::new(crate::notify::worker::Unconfigured);
                let mut senders = Senders::all(unconfigured);
                let need = |name: &str| {
                    self.setting(name).ok_or_else(|| {
                        ConfigError(format!(
                            "{name} is not set: the {} worker needs it",
                            queue.name()
                        ))
                    })
                };
                match queue {
                    DeliveryQueue::PushIos | DeliveryQueue::PushAndroid => {
                        let (apns, fcm) = match bootstrap_prefix {
                            Some(prefix) => {
                                let make = |name: String, kind: &'static str| async move {
                                    bootstrap::ensure_platform_application(sns, &name, kind)
                                        .await
                                        .map_err(|e| ConfigError(e.to_string()))
                                };
                                (
                                    make(format!("{prefix}apns"), "APNS").await?,
                                    make(format!("{prefix}fcm"), "GCM").await?,
                                )
                            }
                            None => (
                                need("NOTIFY_APNS_APPLICATION_ARN")?,
                                need("NOTIFY_FCM_APPLICATION_ARN")?,
                            ),
                        };
                        senders.push = Arc::new(SnsPush::new(sns.clone(), apns, fcm));
                    }
                    DeliveryQueue::Sms => senders.sms = Arc::new(SnsSms::new(sns.clone())),
                    DeliveryQueue::Email => {
                        let from = match (self.setting("NOTIFY_EMAIL_FROM"), bootstrap_prefix) {
                            (Some(from), _) => from,
                            (None, Some(_)) => "noreply@hanul.example".to_owned(),
                            (None, None) => need("NOTIFY_EMAIL_FROM")?,
                        };
                        if bootstrap_prefix.is_some() {
                            bootstrap::ensure_email_identity(sesv2, &from)
                                .await
                                .map_err(|e| ConfigError(e.to_string()))?;
                        }
                        senders.email = Arc::new(SesEmail::new(sesv2.clone(), from));
                    }
                }
                Ok(senders)
            }
        }
    }

    /// The delivery worker for one queue.
    pub async fn delivery_worker(
        &self,
        queue: DeliveryQueue,
    ) -> Result<DeliveryWorker, ConfigError> {
        let config = WorkerConfig::from_settings(|n| self.setting(n)).map_err(ConfigError)?;
        Ok(DeliveryWorker::new(
            self.table(TableName::Notify).await?,
            self.clock.clone(),
            self.senders(queue).await?,
            config,
        ))
    }

    /// Every provider of the backend, for a host that wraps them (the local
    /// host's outbox recording and failure injection).
    pub async fn all_senders(&self) -> Result<Senders, ConfigError> {
        let push = self.senders(DeliveryQueue::PushIos).await?.push;
        let sms = self.senders(DeliveryQueue::Sms).await?.sms;
        let email = self.senders(DeliveryQueue::Email).await?.email;
        Ok(Senders { push, sms, email })
    }

    /// Graceful shutdown: give back what this instance holds.
    /// Runs `hook` when the host shuts down (the local host on SIGTERM or
    /// Ctrl-C, a Lambda instance on the SIGTERM before it is reclaimed),
    /// before the ID lease is released: say, to send buffered clicks.
    pub fn on_shutdown(&self, hook: ShutdownHook) {
        self.shutdown_hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(hook);
    }

    pub async fn shutdown(&self) {
        let hooks = std::mem::take(
            &mut *self
                .shutdown_hooks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        futures::future::join_all(hooks.into_iter().map(|hook| hook())).await;
        if let Some(ids) = self.ids.get()
            && let Err(e) = ids.release().await
        {
            tracing::warn!(error = %e, "could not release the machine-id lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn shutdown_runs_each_hook_once() {
        let dir = tempfile::tempdir().unwrap();
        let platform = Platform::embedded(EmbeddedStore::open(dir.path()).unwrap());
        let runs = Arc::new(AtomicU32::new(0));
        for _ in 0..2 {
            let runs = runs.clone();
            platform.on_shutdown(Box::new(move || {
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                })
            }));
        }
        platform.shutdown().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        platform.shutdown().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "hooks are taken, not kept");
    }
}
