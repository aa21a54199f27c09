//! The rate-limit layer every HTTP function has, in both hosts: every rule
//! that matches the request is checked, the strictest answer wins. A refusal
//! is a 429 `application/problem+json` (the quota-exceeded problem type of
//! draft-ietf-httpapi-ratelimit-headers) with `Retry-After`,
//! `X-Ratelimit-*`, `RateLimit-Policy` and `RateLimit`; admitted responses
//! carry the limit and remaining fields too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use serde_json::json;

use super::ApiError;
use super::auth::Caller;
use crate::ratelimit::{Identity, Outcome, RateLimiter, Verdict};

pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RETRY_AFTER: HeaderName = HeaderName::from_static("x-ratelimit-retry-after");
const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The caller as the rules see it: the client address (API Gateway's
/// `sourceIp`, else the socket peer; never a forwarded header a client can
/// write), the verified user, the API key.
pub fn identity(request: &Request) -> Identity {
    #[allow(irrefutable_let_patterns, unreachable_patterns)]
    let gateway_ip = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        _ => None,
    };
    let ip = gateway_ip.or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
    });
    Identity {
        ip,
        user: Caller::from_extensions(request.extensions()).map(|c| c.user_id),
        api_key: request
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers: request.headers().clone(),
    }
}

fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

/// `RateLimit-Policy` and `RateLimit`, one list member per enforced rule.
fn structured_fields(headers: &mut HeaderMap, outcomes: &[&Outcome]) {
    if outcomes.is_empty() {
        return;
    }
    let policy = outcomes
        .iter()
        .map(|o| {
            format!(
                "\"{}\";q={};w={}",
                o.rule.name,
                o.rule.limit,
                o.rule.window_secs()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let state = outcomes
        .iter()
        .map(|o| {
            format!(
                "\"{}\";r={};t={}",
                o.rule.name,
                o.decision.remaining,
                secs(o.decision.reset_ms)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    set(headers, POLICY, policy);
    set(headers, RATELIMIT, state);
}

/// The 429 for a verdict with refusals.
pub fn limited_response(verdict: &Verdict) -> Response {
    let violated = verdict.violated();
    let Some(strictest) = violated.iter().max_by_key(|o| o.decision.retry_after_ms) else {
        return ApiError::internal().into_response();
    };
    let wait = secs(strictest.decision.retry_after_ms).max(1);
    let names: Vec<&str> = violated.iter().map(|o| o.rule.name.as_str()).collect();
    let detail = format!(
        "rule {} allows {} requests per {} s; retry in {wait} s",
        strictest.rule.name,
        strictest.rule.limit,
        strictest.rule.window_secs()
    );
    let body = json!({
        "type": QUOTA_EXCEEDED,
        "title": "Request cannot be satisfied as assigned quota has been exceeded",
        "status": 429,
        "detail": detail,
        "violated-policies": names,
        "error": {"code": "rate_limited", "message": detail},
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    set(headers, header::RETRY_AFTER, wait.to_string());
    set(headers, X_RETRY_AFTER, wait.to_string());
    set(headers, X_LIMIT, strictest.decision.limit.to_string());
    set(headers, X_REMAINING, "0".into());
    let enforced: Vec<&Outcome> = verdict.enforced().collect();
    structured_fields(headers, &enforced);
    response
}

/// The limit and remaining fields of an admitted request: those of the rule
/// closest to refusing.
pub fn add_allowed_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    let enforced: Vec<&Outcome> = verdict.enforced().collect();
    let Some(tightest) = enforced.iter().min_by_key(|o| o.decision.remaining) else {
        return;
    };
    set(headers, X_LIMIT, tightest.decision.limit.to_string());
    set(
        headers,
        X_REMAINING,
        tightest.decision.remaining.to_string(),
    );
    structured_fields(headers, &enforced);
}

/// The middleware: `axum::middleware::from_fn_with_state(limiter, rate_limit)`.
pub async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if !limiter.rules().applies(request.method(), route) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let route = route.map(str::to_owned);
    let identity = identity(&request);
    let verdict = limiter
        .check_request(&method, route.as_deref(), &identity)
        .await;
    if let Some(down) = verdict.unavailable.first() {
        return ApiError {
            code: "rate_limiter_unavailable",
            ..ApiError::unavailable(down.to_string(), 1)
        }
        .into_response();
    }
    if !verdict.violated().is_empty() {
        return limited_response(&verdict);
    }
    let mut response = next.run(request).await;
    add_allowed_headers(response.headers_mut(), &verdict);
    response
}
