//! The local host: every function on the routes of template.yaml, the local
//! JWT check in the gateway's place, the queue workers, a durable store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clap::{Parser, ValueEnum};
use hanul_functions::{Auth, FUNCTIONS};
use hanul_shared::embedded::EmbeddedStore;
use hanul_shared::embedded::Outbox;
use hanul_shared::http::auth::{LocalTokens, TokenError, bearer, jwt_context};

use crate::accounts::{Accounts, TrustedProxies};
use hanul_shared::http::{self, ApiError};
use hanul_shared::notify::Senders;
use hanul_shared::platform::{Platform, TableName};

use crate::outbox::{Failing, Recorded};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// A SQLite database in the data directory.
    Embedded,
    /// The AWS adapters, against `AWS_ENDPOINT_URL` (e.g. a moto server) or AWS.
    Aws,
}

/// Runs every hanul function in one process.
#[derive(Debug, Clone, Parser)]
#[command(name = "hanul-local", version, about)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "HANUL_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Where the embedded store and the local signing key live.
    #[arg(long, env = "HANUL_DATA_DIR", default_value = "./.hanul")]
    pub data_dir: PathBuf,
    /// Which adapters to use.
    #[arg(long, env = "HANUL_BACKEND", value_enum, default_value = "embedded")]
    pub backend: BackendKind,
    /// With `--backend aws`: name tables and queues `<prefix><name>` and create
    /// them when missing (for a moto server). Without it, names come from the
    /// same variables the Lambda functions read (ID_LEASES_TABLE, ...).
    #[arg(long, env = "HANUL_AWS_PREFIX")]
    pub aws_prefix: Option<String>,
    /// Print CloudWatch EMF metric lines on stdout.
    #[arg(long, env = "HANUL_METRICS", default_value_t = false)]
    pub metrics: bool,
    /// Serve the development endpoints (`/local/v1/token` mints a token for
    /// any user, `/local/v1/outbox` lists every message sent) on a
    /// non-loopback address too. On a loopback address they are always on.
    #[arg(long, env = "HANUL_DEV_ENDPOINTS", default_value_t = false)]
    pub dev_endpoints: bool,
    /// A PEM certificate chain: serve HTTPS (and WSS) with it.
    #[arg(long, env = "HANUL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "HANUL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL people reach this host at (`https://hanul.home.example`,
    /// `http://192.168.1.20:3000`): short URLs, media URLs and the web
    /// client use it. Default: this host's own address (127.0.0.1 for an
    /// unspecified one, so set it when serving other machines).
    #[arg(long, env = "HANUL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Reverse proxies (comma-separated IP addresses) whose
    /// `X-Forwarded-For` and `X-Forwarded-Proto` headers are believed: TLS
    /// ends there.
    #[arg(long, env = "HANUL_TRUSTED_PROXY", default_value = "")]
    pub trusted_proxy: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve every function (the default).
    Serve,
    /// Move the messages of a queue's dead-letter queue back to the queue,
    /// e.g. `hanul-local redrive notify-email`.
    Redrive {
        /// The queue (its DLQ is `<queue>-dlq`).
        queue: String,
        /// Move at most this many.
        #[arg(long, default_value_t = 10_000)]
        max: usize,
    },
    /// Runs the Lambda artifact as Lambda does, without Docker.
    #[command(subcommand)]
    Lambda(crate::lambda::cli::LambdaCommand),
    /// The web client for AWS: written to a folder, or uploaded to the
    /// stack's web bucket.
    #[command(subcommand)]
    Web(crate::web::publish::WebCommand),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] hanul_shared::embedded::StoreError),
    #[error(transparent)]
    Config(#[from] hanul_shared::platform::ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot serve on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The HS256 key: `HANUL_JWT_SECRET`, or one made once and kept in the data
/// directory so tokens outlive a restart.
fn signing_secret(data_dir: &Path) -> Result<Vec<u8>, StartError> {
    if let Ok(secret) = std::env::var("HANUL_JWT_SECRET") {
        if secret.len() < 16 {
            return Err(StartError::Invalid(
                "HANUL_JWT_SECRET must be at least 16 characters".into(),
            ));
        }
        return Ok(secret.into_bytes());
    }
    Ok(kept_secret(data_dir, "jwt-secret")?.into_bytes())
}

/// A random secret made on first start and kept, private, in the data
/// directory: the local default for keys that must not change between runs.
fn kept_secret(data_dir: &Path, file: &str) -> Result<String, StartError> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => Ok(s.trim().to_owned()),
        _ => {
            hanul_shared::embedded::private_dir(data_dir)
                .map_err(|e| StartError::Io(format!("creating {}", data_dir.display()), e))?;
            let secret = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            write_private(&path, &secret)
                .map_err(|e| StartError::Io(format!("writing {}", path.display()), e))?;
            Ok(secret)
        }
    }
}

/// Where people reach this host: `--public-url` (checked: an http(s)
/// origin, nothing after it), else this server's own address.
fn public_url(args: &Args, tls: bool) -> Result<String, StartError> {
    if let Some(raw) = &args.public_url {
        let bad = |why: &str| StartError::Invalid(format!("--public-url {raw:?}: {why}"));
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("must be an http:// or https:// URL with a host"));
        }
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return Err(bad(
                "must be only scheme, host and port, like https://hanul.example",
            ));
        }
        return Ok(url.origin().ascii_serialization());
    }
    let ip = if args.addr.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        args.addr.ip()
    };
    let scheme = if tls { "https" } else { "http" };
    Ok(format!(
        "{scheme}://{}",
        SocketAddr::new(ip, args.addr.port())
    ))
}

/// A public URL naming another machine: the host is reached through a
/// proxy even when it listens on loopback.
fn public_elsewhere(public: &str) -> bool {
    match url::Url::parse(public)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        Some(url::Host::Domain(name)) => name != "localhost",
        None => false,
    }
}

/// The web client's settings: same-origin everything, the socket on the
/// public origin, media wherever `MEDIA_BASE_URL` points.
fn web_settings(
    public: &str,
    media_base: Option<&str>,
    upload_origin: Option<&str>,
    canonical: bool,
    client: Arc<crate::web::WebClient>,
) -> crate::web::WebSettings {
    let origin_of = |u: &str| {
        url::Url::parse(u)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    };
    let socket = public
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let mut connect = vec![socket];
    let mut media = Vec::new();
    if let Some(m) = media_base.and_then(origin_of).filter(|m| m != public) {
        connect.push(m.clone());
        media.push(m);
    }
    // With `--backend aws` uploads go to that S3 (moto's, say).
    if let Some(s3) = upload_origin.and_then(origin_of) {
        connect.push(s3);
    }
    crate::web::WebSettings {
        canonical: canonical.then(|| public.to_owned()),
        csp: crate::web::content_security_policy(&connect, &media),
        config_json: crate::web::local_config(&client.version),
        client,
    }
}

/// Writes a file only its owner can read: the key mints tokens for anyone.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// Shared by every request (an `Arc`: the keys are not cloned per request).
#[derive(Clone)]
struct Gateway(Arc<GatewayInner>);

struct GatewayInner {
    accounts: Arc<Accounts>,
    /// Route path → the auth of each method on it.
    auth: HashMap<&'static str, Vec<(Method, Auth)>>,
}

/// What API Gateway does before a function runs: on a JWT route, reject a
/// missing or bad token with 401 and pass the verified claims on; on a public
/// route, pass no claims at all; where a token is optional, check it only
/// when one is sent (what the function itself does on AWS).
async fn gateway(State(gw): State<Gateway>, mut request: Request, next: Next) -> Response {
    request
        .extensions_mut()
        .remove::<lambda_http::request::RequestContext>();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let method = request.method();
    // A route missing from the table fails closed. A known path with another
    // method passes on without claims (the router answers 405).
    let auth = match route.and_then(|r| gw.0.auth.get(r)) {
        Some(methods) => methods
            .iter()
            .find(|(m, _)| m == method || (method == Method::HEAD && m == Method::GET))
            .map_or(Auth::None, |(_, auth)| *auth),
        None => Auth::Jwt,
    };
    if auth != Auth::None {
        let (mut parts, body) = request.into_parts();
        let verified = match bearer(&parts) {
            Some(token) => Some(gw.0.accounts.verify(token).await),
            None => None,
        };
        match (verified, auth) {
            (Some(Ok(claims)), _) => {
                parts.extensions.insert(jwt_context(claims));
            }
            (Some(Err(TokenError::Unavailable(e))), _) => {
                return ApiError::unavailable(e, 1).into_response();
            }
            (Some(Err(e)), _) => return ApiError::unauthorized(e.to_string()).into_response(),
            (None, Auth::Optional) => {}
            (None, _) => {
                return ApiError::unauthorized("a bearer token is required").into_response();
            }
        }
        request = Request::from_parts(parts, body);
    }
    next.run(request).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    user_id: String,
}

async fn issue_token(
    State(gw): State<Gateway>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(http::json_rejection)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let token =
        gw.0.accounts
            .tokens()
            .issue(&req.user_id, now)
            .map_err(|e| ApiError::bad_request("invalid_user_id", e.to_string()))?;
    Ok(Json(
        json!({ "token": token, "tokenType": "Bearer", "userId": req.user_id }),
    ))
}

/// Whether `/local/v1/token` and `/local/v1/outbox` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevEndpoints {
    Off,
    /// On a loopback host: to requests no proxy forwarded.
    Loopback,
    /// Turned on by the operator (`--dev-endpoints`): to anyone.
    On,
}

/// A development endpoint on a loopback host answers only what no proxy
/// forwarded: a reverse proxy on the same machine (nginx, Caddy) would
/// otherwise hand them to the whole network. Such requests get the 404 of
/// an unknown path.
async fn not_forwarded(request: Request, next: Next) -> Response {
    let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|h| request.headers().contains_key(*h));
    if forwarded {
        return hanul_shared::http::not_found().await.into_response();
    }
    next.run(request).await
}

/// What the host serves besides the functions.
pub struct HostRoutes {
    pub accounts: Arc<Accounts>,
    pub outbox: Arc<Outbox>,
    pub dev_endpoints: DevEndpoints,
    pub proxies: Arc<TrustedProxies>,
    /// Reached beyond loopback with no TLS of its own: watch for requests
    /// that did not come through a trusted proxy's HTTPS.
    pub plain_exposed: bool,
    /// The web client at `/`.
    pub web: crate::web::WebSettings,
}

/// Warns once when a request reached an exposed plain-HTTP host other than
/// through a trusted proxy that says it took HTTPS (`X-Forwarded-Proto`).
async fn plain_http_watch(
    State((proxies, warned)): State<(Arc<TrustedProxies>, Arc<std::sync::atomic::AtomicBool>)>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let via_https_proxy = peer.is_some_and(|p| proxies.trusts(p.ip()))
        && request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let from_loopback = peer.is_some_and(|p| p.ip().is_loopback());
    if !via_https_proxy
        && !from_loopback
        && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            peer = ?peer,
            "a request arrived over plain HTTP from another machine: its password or token crossed the network readable. Use --tls-cert/--tls-key, or a TLS proxy named by --trusted-proxy that sets X-Forwarded-Proto."
        );
    }
    next.run(request).await
}

/// The whole local API: every function's router, the gateway check, the
/// local-only routes, and the layers every function has.
pub async fn app(platform: Arc<Platform>, host: HostRoutes) -> Result<Router, StartError> {
    let HostRoutes {
        accounts,
        outbox,
        dev_endpoints,
        proxies,
        plain_exposed,
        web,
    } = host;
    // Before any function is built: chat posts to these sockets and checks
    // `$connect` tokens (and their sessions) as the gateway does.
    platform.set_token_verifier(accounts.clone())?;
    let sockets = crate::sockets::router(&platform, Some(accounts.clone())).await?;
    let media = crate::media::router(&platform).await?;
    let mut functions = Router::new();
    let mut auth: HashMap<&'static str, Vec<(Method, Auth)>> = HashMap::new();
    for function in FUNCTIONS {
        let router = (function.build)(platform.clone()).await?;
        let router = hanul_functions::ratelimit::rate_limited(function, router, &platform).await?;
        functions = functions.merge(router);
        for route in function.routes {
            auth.entry(route.path)
                .or_default()
                .push((route.method.clone(), route.auth));
        }
    }
    let gw = Gateway(Arc::new(GatewayInner {
        accounts: accounts.clone(),
        auth,
    }));
    let functions = functions.route_layer(middleware::from_fn_with_state(gw.clone(), gateway));
    let mut local = crate::accounts::router(accounts, proxies.clone());
    // Off, these paths are simply unknown: 404 like any other.
    if dev_endpoints != DevEndpoints::Off {
        let dev = Router::new()
            .route("/local/v1/token", post(issue_token).with_state(gw))
            .route(
                "/local/v1/outbox",
                axum::routing::get(list_outbox).with_state(outbox),
            );
        let dev = if dev_endpoints == DevEndpoints::Loopback {
            dev.route_layer(middleware::from_fn(not_forwarded))
        } else {
            dev
        };
        local = local.merge(dev);
    }
    let body_limit = http::body_limit_from_env().map_err(StartError::Invalid)?;
    let mut all = functions.merge(local).merge(sockets);
    if plain_exposed {
        let warned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        all = all.layer(middleware::from_fn_with_state(
            (proxies, warned),
            plain_http_watch,
        ));
    }
    let client = crate::web::router(web);
    Ok(http::api(all, body_limit).merge(media).merge(client))
}

/// Every push, SMS and email that left, in send order; `?count=true` gives
/// only how many.
async fn list_outbox(
    State(outbox): State<Arc<Outbox>>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = outbox
        .list()
        .await
        .map_err(|e| ApiError::unavailable(format!("the outbox cannot be read: {e}"), 1))?;
    if query.get("count").is_some_and(|v| v == "true") {
        return Ok(Json(json!({ "count": items.len() })));
    }
    Ok(Json(json!({ "items": items })))
}

/// The platform of `args`: the embedded store, or the AWS adapters.
async fn open_platform(args: &Args) -> Result<(Platform, Option<Arc<EmbeddedStore>>), StartError> {
    Ok(match args.backend {
        BackendKind::Embedded => {
            let store = EmbeddedStore::open(&args.data_dir)?;
            (Platform::embedded(store.clone()), Some(store))
        }
        BackendKind::Aws => {
            let config = hanul_shared::aws::sdk_config().await;
            (Platform::aws(&config, args.aws_prefix.clone()), None)
        }
    })
}

/// `hanul-local redrive <queue>`: the DLQ's messages back to the queue.
pub async fn redrive(args: &Args, queue: &str, max: usize) -> Result<usize, StartError> {
    let (platform, _) = open_platform(args).await?;
    let mut specs = Vec::new();
    for worker in hanul_functions::WORKERS {
        specs.push((worker.queue)(&platform)?);
    }
    let Some(spec) = specs.iter().find(|spec| spec.name == queue).cloned() else {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        return Err(StartError::Invalid(format!(
            "no queue {queue:?}; the queues are {}",
            names.join(", ")
        )));
    };
    let target = platform.queue(&spec).await?;
    let dlq = platform
        .dead_letter_queue(&spec)
        .await?
        .ok_or_else(|| StartError::Invalid(format!("{queue} has no dead-letter queue")))?;
    hanul_shared::ports::queue::redrive(dlq.as_ref(), target.as_ref(), max)
        .await
        .map_err(|e| StartError::Invalid(format!("redrive failed: {e}")))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Starts everything and serves until SIGTERM or Ctrl-C.
pub async fn serve(args: Args) -> Result<(), StartError> {
    http::emf::set_enabled(args.metrics);
    let public = public_url(&args, args.tls_cert.is_some())?;
    let (platform, store) = open_platform(&args).await?;
    let platform = platform
        .with_default("SHORT_BASE_URL", public.clone())
        .with_default(
            "SHORTENER_CODE_KEY",
            kept_secret(&args.data_dir, "shortener-code-key")?,
        )
        .with_default(hanul_shared::media::MEDIA_BASE_URL_VAR, public.clone())
        .with_default(
            hanul_shared::platform::MEDIA_UPLOAD_KEY_VAR,
            kept_secret(&args.data_dir, "media-upload-key")?,
        )
        .with_default(
            "SERVICE_API_KEYS",
            format!("local:{}", kept_secret(&args.data_dir, "service-api-key")?),
        );
    let platform =
        Arc::new(crate::faults::rate_limit_store(platform).map_err(StartError::Invalid)?);
    let tokens = LocalTokens::new(
        &signing_secret(&args.data_dir)?,
        Duration::from_secs(24 * 3600),
    );
    let proxies =
        Arc::new(TrustedProxies::parse(&args.trusted_proxy).map_err(StartError::Invalid)?);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::acceptor(cert, key).map_err(StartError::Invalid)?)
        }
        _ => None,
    };
    let loopback = args.addr.ip().is_loopback();
    // Behind a reverse proxy a loopback host is reached from anywhere.
    let dev_endpoints = if args.dev_endpoints {
        DevEndpoints::On
    } else if loopback && proxies.0.is_empty() && !public_elsewhere(&public) {
        DevEndpoints::Loopback
    } else {
        DevEndpoints::Off
    };
    if args.dev_endpoints && !loopback {
        tracing::warn!(
            addr = %args.addr,
            "DEVELOPMENT ENDPOINTS ARE ON on a non-loopback address: anyone who reaches {} can mint a token for any user (/local/v1/token) and read every message sent (/local/v1/outbox). Turn them off unless this network is yours alone.",
            args.addr
        );
    }
    if !loopback && args.public_url.is_none() {
        tracing::warn!(
            addr = %args.addr,
            public = %public,
            "no --public-url: short links, media and the web client will name {public}, which other machines cannot reach. Set --public-url to the address people use (e.g. http://192.168.1.20:{})",
            args.addr.port()
        );
    }
    if !loopback && tls.is_none() && proxies.0.is_empty() {
        tracing::warn!(
            addr = %args.addr,
            "serving plain HTTP on a non-loopback address: passwords and tokens cross the network readable. Give --tls-cert/--tls-key, or put a TLS reverse proxy in front and name it with --trusted-proxy."
        );
    }
    let accounts = Arc::new(
        Accounts::new(
            platform.table(TableName::Accounts).await?,
            tokens,
            platform.clock(),
            Some(platform.rate_limiter().await?),
        )
        .await
        .map_err(|e| StartError::Invalid(e.to_string()))?,
    );
    let outbox = Arc::new(Outbox::new(
        platform.table(TableName::Outbox).await?,
        platform.clock(),
    ));
    let providers = match args.backend {
        BackendKind::Embedded => Senders::all(outbox.clone()),
        BackendKind::Aws => Recorded::senders(platform.all_senders().await?, outbox.clone()),
    };
    let failures = Failing::parse(&std::env::var("LOCAL_SENDER_FAILURES").unwrap_or_default())
        .map_err(StartError::Invalid)?;
    platform.set_senders(Failing::senders(providers, failures))?;
    let client = Arc::new(crate::web::WebClient::new());
    let app = app(
        platform.clone(),
        HostRoutes {
            accounts,
            outbox,
            dev_endpoints,
            plain_exposed: !loopback && tls.is_none(),
            proxies,
            web: web_settings(
                &public,
                platform
                    .setting(hanul_shared::media::MEDIA_BASE_URL_VAR)
                    .as_deref(),
                match args.backend {
                    BackendKind::Aws => std::env::var("AWS_ENDPOINT_URL").ok(),
                    BackendKind::Embedded => None,
                }
                .as_deref(),
                loopback || args.public_url.is_some(),
                client.clone(),
            ),
        },
    )
    .await?;

    let (stop, stopped) = watch::channel(false);
    let mut background = Vec::new();
    background.push(platform.ids().await?.spawn_renewal());
    if let Some(store) = store {
        let mut stopped = stopped.clone();
        let files = platform.file_media_store()?;
        background.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = stopped.changed() => return,
                }
                if let Err(e) = store.sweep_expired().await {
                    tracing::warn!(error = %e, "TTL sweep failed");
                }
                // Abandoned uploads, after a day (as the bucket's lifecycle).
                if let Some(files) = &files
                    && let Err(e) = files.sweep_incoming(Duration::from_secs(86_400)).await
                {
                    tracing::warn!(error = %e, "sweeping abandoned uploads failed");
                }
            }
        }));
    }
    let poller_config = crate::poller::PollerConfig::from_env().map_err(StartError::Invalid)?;
    let mut workers = Vec::new();
    for worker in hanul_functions::WORKERS {
        let spec = (worker.queue)(&platform)?;
        let queue = platform.queue(&spec).await?;
        let handler = (worker.build)(platform.clone()).await?;
        workers.push(tokio::spawn(crate::poller::run(
            queue,
            handler,
            poller_config.clone(),
            stopped.clone(),
        )));
    }

    for periodic in hanul_functions::PERIODIC {
        let tick = (periodic.build)(platform.clone()).await?;
        let every = match std::env::var(periodic.local_every_var) {
            Ok(ms) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| (10..=3_600_000).contains(ms))
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    StartError::Invalid(format!(
                        "{}={ms:?}: expected milliseconds from 10 to 3600000",
                        periodic.local_every_var
                    ))
                })?,
            // Locally a few seconds, so scheduled work shows up quickly.
            Err(_) => periodic.every.min(Duration::from_secs(2)),
        };
        let mut stopped = stopped.clone();
        let name = periodic.name;
        background.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => return,
                }
                if let Err(e) = tick().await {
                    tracing::warn!(function = name, error = %e, "periodic run failed");
                }
            }
        }));
    }

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| StartError::Bind(args.addr, e))?;
    let local = listener.local_addr().unwrap_or(args.addr);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        addr = %local,
        backend = platform.backend_name(),
        data_dir = %args.data_dir.display(),
        dev_endpoints = ?dev_endpoints,
        "hanul-local listening on {scheme}://{local}"
    );
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(acceptor) => axum::serve(crate::tls::TlsListener::new(listener, acceptor), service)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| StartError::Io("serving".into(), e))?,
        None => axum::serve(listener, service)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| StartError::Io("serving".into(), e))?,
    }

    let _ = stop.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    for task in background {
        task.abort();
    }
    platform.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}
