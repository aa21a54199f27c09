//! HTTP glue shared by both hosts: JSON errors, body limit, request id,
//! caller claims, access logs, metrics.

pub mod auth;
pub mod emf;
mod error;
pub mod jwks;
pub mod ratelimit;
pub mod service_keys;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use lambda_http::request::RequestContext;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use auth::{Caller, MaybeCaller};
pub use error::{ApiError, json_errors, json_rejection, not_found, query_rejection};

pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
pub const REQUEST_ID: &str = "x-request-id";

/// The body limit from `HTTP_BODY_LIMIT_BYTES` (default 64 KiB).
pub fn body_limit_from_env() -> Result<usize, String> {
    match std::env::var("HTTP_BODY_LIMIT_BYTES") {
        Err(_) => Ok(DEFAULT_BODY_LIMIT),
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1024..=6 * 1024 * 1024).contains(n))
            .ok_or_else(|| format!("HTTP_BODY_LIMIT_BYTES must be 1024 to 6291456, got `{v}`")),
    }
}

/// Wraps a function's routes in the layers every function has, in both hosts.
pub fn api(router: Router, body_limit: usize) -> Router {
    api_without_fallback(router.fallback(not_found), body_limit)
}

/// The same layers for routes merged into an [`api`] router (which has the
/// one fallback), with their own body limit.
pub fn api_without_fallback(router: Router, body_limit: usize) -> Router {
    router
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::map_response(json_errors))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(middleware::from_fn(access_log))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(gateway_request_id))
}

/// On AWS the request id is API Gateway's, whatever the client sent;
/// elsewhere a client's `x-request-id` is kept, or a UUID made.
async fn gateway_request_id(mut request: Request, next: Next) -> Response {
    #[allow(irrefutable_let_patterns, unreachable_patterns)]
    let from_gateway = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    if let Some(value) = from_gateway.and_then(|id| HeaderValue::from_str(&id).ok()) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    next.run(request).await
}

/// One JSON log line per request.
async fn access_log(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let response = next.run(request).await;
    tracing::info!(
        target: "access",
        %method,
        route,
        status = response.status().as_u16(),
        latency_us = start.elapsed().as_micros() as u64,
        request_id,
    );
    response
}

/// JSON log lines on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .try_init();
}
