//! The route table, once (DESIGN rule 4). template.yaml declares the same
//! functions and routes; `tests/route_parity.rs` proves the two agree.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use axum::Router;
use axum::http::Method;
use hanul_shared::platform::{ConfigError, Platform};
use hanul_shared::ports::QueueSpec;
use lambda_runtime::LambdaEvent;

/// Whether API Gateway's JWT authorizer guards the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Public: the gateway checks no token and the handler sees no caller.
    None,
    /// A valid token is required; the handler reads the caller's claims.
    Jwt,
    /// Public, but a token, when sent, must be valid and names the caller.
    /// API Gateway cannot make its authorizer optional, so on AWS the route
    /// is public and the function verifies the token itself.
    Optional,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// In API Gateway's syntax, which axum shares: `/api/v1/ids/{id}`.
    pub path: &'static str,
    pub auth: Auth,
}

pub type BuildFuture = Pin<Box<dyn Future<Output = Result<Router, ConfigError>> + Send>>;

/// One Lambda function: its binary name, its routes and how to build it.
pub struct Function {
    /// The binary (`functions/src/bin/<name>.rs`) and `BuildProperties.Binary`.
    pub name: &'static str,
    pub routes: &'static [Route],
    pub build: fn(Arc<Platform>) -> BuildFuture,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .finish()
    }
}

/// A function of one route whose handler takes the service the platform
/// builds with `$service` (`chat`, `feed`, `notify_records`) as its state.
macro_rules! service_function {
    ($service:ident, $name:literal, $route:expr, $path:literal, $method:ident, $handler:ident) => {
        $crate::routes::Function {
            name: $name,
            routes: &[$route],
            build: |platform| {
                Box::pin(async move {
                    let service = platform.$service().await?;
                    Ok(axum::Router::new()
                        .route($path, axum::routing::$method($handler))
                        .with_state(service))
                })
            },
        }
    };
}
pub(crate) use service_function;

pub const fn get(path: &'static str, auth: Auth) -> Route {
    Route {
        method: Method::GET,
        path,
        auth,
    }
}

pub const fn post(path: &'static str, auth: Auth) -> Route {
    Route {
        method: Method::POST,
        path,
        auth,
    }
}

pub const fn patch(path: &'static str, auth: Auth) -> Route {
    Route {
        method: Method::PATCH,
        path,
        auth,
    }
}

pub const fn delete(path: &'static str, auth: Auth) -> Route {
    Route {
        method: Method::DELETE,
        path,
        auth,
    }
}

/// API Gateway routes HEAD on its own; axum's `get` answers it too.
pub const fn put(path: &'static str, auth: Auth) -> Route {
    Route {
        method: Method::PUT,
        path,
        auth,
    }
}

pub const fn head(path: &'static str, auth: Auth) -> Route {
    Route {
        method: Method::HEAD,
        path,
        auth,
    }
}

pub static FUNCTIONS: &[Function] = &[
    crate::health::HEALTH,
    crate::ids::IDS_GENERATE,
    crate::ids::IDS_DECODE,
    crate::shortener::SHORTEN,
    crate::shortener::SHORTEN_BATCH,
    crate::shortener::REDIRECT,
    crate::shortener::URLS_GET,
    crate::shortener::URLS_LIST,
    crate::shortener::URLS_UPDATE,
    crate::shortener::URLS_DELETE,
    crate::shortener::URLS_QR,
    crate::ratelimit::RATELIMIT_CHECK,
    crate::notify::DEVICES_PUT,
    crate::notify::DEVICES_LIST,
    crate::notify::DEVICES_DELETE,
    crate::notify::SETTINGS_GET,
    crate::notify::SETTINGS_PUT,
    crate::notify::NOTIFICATIONS_SEND,
    crate::notify::NOTIFICATIONS_STATUS,
    crate::feed::FOLLOW_PUT,
    crate::feed::FOLLOW_DELETE,
    crate::feed::FOLLOWING_LIST,
    crate::feed::FOLLOWERS_LIST,
    crate::feed::FRIENDS_LIST,
    crate::feed::PROFILE_GET,
    crate::feed::PROFILE_PUT,
    crate::feed::USERS_GET,
    crate::feed::POSTS_CREATE,
    crate::feed::POSTS_GET,
    crate::feed::POSTS_DELETE,
    crate::feed::USER_POSTS,
    crate::feed::BLOCKS_PUT,
    crate::feed::BLOCKS_DELETE,
    crate::feed::FEED_READ,
    crate::chat::CONVERSATIONS_CREATE,
    crate::chat::CONVERSATIONS_LIST,
    crate::chat::CONVERSATION_GET,
    crate::chat::CONVERSATION_UPDATE,
    crate::chat::MEMBERS_ADD,
    crate::chat::MEMBERS_REMOVE,
    crate::chat::MESSAGES_LIST,
    crate::chat::MESSAGES_SEND,
    crate::chat::MESSAGES_EDIT,
    crate::chat::MESSAGES_DELETE,
    crate::chat::READ_PUT,
    crate::chat::MUTE_PUT,
    crate::chat::SYNC_READ,
    crate::chat::PRESENCE_GET,
    crate::media::MEDIA_CREATE,
    crate::media::MEDIA_GET,
    crate::media::MEDIA_COMPLETE,
];

pub fn find(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

pub type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>> + Send>>;

/// A queue worker with the Lambda signature, in both hosts.
pub type SqsHandler = Arc<dyn Fn(LambdaEvent<SqsEvent>) -> HandlerFuture + Send + Sync>;

pub type WorkerBuildFuture = Pin<Box<dyn Future<Output = Result<SqsHandler, ConfigError>> + Send>>;

/// One queue-consuming function: on AWS an SQS event source mapping feeds it,
/// locally the host's poller does.
pub struct Worker {
    pub name: &'static str,
    /// The queue it drains, as its settings shape it.
    pub queue: fn(&Platform) -> Result<QueueSpec, ConfigError>,
    pub build: fn(Arc<Platform>) -> WorkerBuildFuture,
}

/// Queue workers; the subsystems that send through queues add theirs here.
pub static WORKERS: &[Worker] = &[
    crate::shortener::CLICKS_WORKER,
    crate::shortener::CDN_INVALIDATE_WORKER,
    crate::notify::PUSH_IOS_WORKER,
    crate::notify::PUSH_ANDROID_WORKER,
    crate::notify::SMS_WORKER,
    crate::notify::EMAIL_WORKER,
    crate::feed::FANOUT_WORKER,
    crate::chat::DELIVER_WORKER,
    crate::media::PROCESS_WORKER,
];

pub fn find_worker(name: &str) -> Option<&'static Worker> {
    WORKERS.iter().find(|w| w.name == name)
}

pub type TickFuture = Pin<Box<dyn Future<Output = Result<(), lambda_runtime::Error>> + Send>>;

/// One run of a periodic job.
pub type Tick = Arc<dyn Fn() -> TickFuture + Send + Sync>;

pub type TickBuildFuture = Pin<Box<dyn Future<Output = Result<Tick, ConfigError>> + Send>>;

/// A function that runs on a schedule: an EventBridge rule on AWS
/// (`rate(...)` in template.yaml), a timer in the local host.
pub struct Periodic {
    pub name: &'static str,
    /// The AWS schedule's period; the local host's default period.
    pub every: std::time::Duration,
    /// Overrides the local period (for tests and demos), in milliseconds.
    pub local_every_var: &'static str,
    pub build: fn(Arc<Platform>) -> TickBuildFuture,
}

pub static PERIODIC: &[Periodic] = &[
    crate::notify::NOTIFY_SCHEDULER,
    crate::feed::OUTBOX_SWEEPER,
    crate::chat::SWEEPER,
];

pub fn find_periodic(name: &str) -> Option<&'static Periodic> {
    PERIODIC.iter().find(|p| p.name == name)
}

/// One WebSocket frame (or connect/disconnect) as a route function sees it:
/// API Gateway's WebSocket event on Lambda, the local host's socket locally.
#[derive(Debug, Clone, Default)]
pub struct SocketRequest {
    pub route_key: String,
    pub connection_id: String,
    pub body: Option<String>,
    /// `$connect`'s `?token=`.
    pub token: Option<String>,
    /// The connection's user when the host already knows it (the local
    /// host verified the token itself); else the function looks it up.
    pub user_id: Option<String>,
}

/// A route function's answer: for `$connect`, a status other than 200
/// refuses the connection (with `body` as the HTTP answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketReply {
    pub status: u16,
    pub body: Option<String>,
    /// `$connect`: the user the token named.
    pub user_id: Option<String>,
}

impl SocketReply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: None,
            user_id: None,
        }
    }

    pub fn refused(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            body: Some(
                serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
            ),
            user_id: None,
        }
    }
}

pub type SocketFuture = Pin<Box<dyn Future<Output = SocketReply> + Send>>;

pub type SocketHandler = Arc<dyn Fn(SocketRequest) -> SocketFuture + Send + Sync>;

pub type SocketBuildFuture =
    Pin<Box<dyn Future<Output = Result<SocketHandler, ConfigError>> + Send>>;

/// One WebSocket API route and its function.
pub struct SocketRoute {
    pub name: &'static str,
    /// API Gateway's route key: `$connect`, `$disconnect`, `$default` or an action.
    pub route_key: &'static str,
    pub build: fn(Arc<Platform>) -> SocketBuildFuture,
}

pub static SOCKETS: &[SocketRoute] = &[
    crate::chat::SOCKET_CONNECT,
    crate::chat::SOCKET_DISCONNECT,
    crate::chat::SOCKET_DEFAULT,
    crate::chat::SOCKET_SEND,
    crate::chat::SOCKET_SYNC,
    crate::chat::SOCKET_HEARTBEAT,
    crate::chat::SOCKET_TYPING,
    crate::chat::SOCKET_READ,
];

pub fn find_socket(name: &str) -> Option<&'static SocketRoute> {
    SOCKETS.iter().find(|s| s.name == name)
}
