//! The rate-limit layer every HTTP function gets, and
//! `POST /api/v1/ratelimit/check` for other services (like envoy's
//! ShouldRateLimit), protected by a service key.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hanul_shared::http::service_keys::ServiceKeys;
use hanul_shared::http::{ApiError, json_rejection, ratelimit as layer};
use hanul_shared::platform::{ConfigError, Platform};
use hanul_shared::ratelimit::{RateLimiter, Source};
use serde::Deserialize;
use serde_json::json;

use crate::routes::{self, Auth, FUNCTIONS, Function};

/// Wraps a function's router in the rate-limit layer (both hosts call this
/// for every HTTP function). The rules' routes are checked against the
/// route table first: a rule for a route nobody serves stops the start. A
/// function no rule can apply to gets no layer, and pays nothing.
pub async fn rate_limited(
    function: &Function,
    router: Router,
    platform: &Platform,
) -> Result<Router, ConfigError> {
    let limiter = platform.rate_limiter().await?;
    let all: Vec<(http::Method, &str)> = FUNCTIONS
        .iter()
        .flat_map(|f| f.routes.iter().map(|r| (r.method.clone(), r.path)))
        .collect();
    limiter.rules().check_routes(&all).map_err(ConfigError)?;
    let own: Vec<(http::Method, &str)> = function
        .routes
        .iter()
        .map(|r| (r.method.clone(), r.path))
        .collect();
    if !limiter.rules().may_apply(&own) {
        return Ok(router);
    }
    Ok(router.layer(axum::middleware::from_fn_with_state(
        limiter,
        layer::rate_limit,
    )))
}

pub const RATELIMIT_CHECK: Function = Function {
    name: "ratelimit-check",
    routes: &[routes::post("/api/v1/ratelimit/check", Auth::None)],
    build: |platform| {
        Box::pin(async move {
            let state = CheckState {
                limiter: platform.rate_limiter().await?,
                keys: Arc::new(platform.service_keys()?),
            };
            Ok(Router::new()
                .route("/api/v1/ratelimit/check", post(check))
                .with_state(state))
        })
    },
};

#[derive(Clone)]
struct CheckState {
    limiter: Arc<RateLimiter>,
    keys: Arc<ServiceKeys>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    rule: String,
    key: String,
}

/// Spends one request of `rule` for `key` and says whether it was admitted.
async fn check(
    State(state): State<CheckState>,
    headers: HeaderMap,
    body: Result<Json<CheckRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    state.keys.require(&headers)?;
    let Json(request) = body.map_err(json_rejection)?;
    if request.key.is_empty() || request.key.len() > 512 {
        return Err(ApiError::bad_request(
            "invalid_key",
            "key must be 1 to 512 characters",
        ));
    }
    let rule = state.limiter.rules().get(&request.rule).ok_or_else(|| {
        ApiError::new(
            http::StatusCode::NOT_FOUND,
            "rule_not_found",
            format!("no rule named {:?}", request.rule),
        )
    })?;
    let outcome = state
        .limiter
        .check(&rule, &request.key)
        .await
        .map_err(|e| ApiError {
            code: "rate_limiter_unavailable",
            ..ApiError::unavailable(e.to_string(), 1)
        })?;
    let d = outcome.decision;
    let body = json!({
        "rule": rule.name,
        "allowed": d.allowed || rule.shadow,
        "shadow": rule.shadow,
        "limit": d.limit,
        "remaining": d.remaining,
        "retryAfterSeconds": d.retry_after_ms.div_ceil(1000),
        "resetSeconds": d.reset_ms.div_ceil(1000),
        "source": match outcome.source {
            Source::Store => "store",
            Source::Local => "local",
            Source::Fallback => "fallback",
        },
    });
    // The answer is the body; this response's own RateLimit fields describe
    // the calling service's quota on this route.
    Ok(Json(body).into_response())
}
