//! The rate-limit layer every HTTP function has, in both hosts: every rule
//! that matches the request is checked, the strictest answer wins. A refusal
//! is a 429 `application/problem+json` (the quota-exceeded problem type of
//! draft-ietf-httpapi-ratelimit-headers) with `Retry-After`,
//! `X-Ratelimit-*`, `RateLimit-Policy` and `RateLimit`; admitted responses
//! carry the limit and remaining fields too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ApiError;
use super::auth::Caller;
use crate::ratelimit::{Identity, Outcome, RateLimiter, Verdict};

pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RETRY_AFTER: HeaderName = HeaderName::from_static("x-ratelimit-retry-after");
const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The header CloudFront adds, when the origin request policy asks for it,
/// with the viewer's address and source port.
pub const VIEWER_ADDRESS: HeaderName = HeaderName::from_static("cloudfront-viewer-address");
/// The origin custom header CloudFront adds to every origin request, whose
/// value is the secret only the distribution and the functions know.
pub const ORIGIN_VERIFY: HeaderName = HeaderName::from_static("x-origin-verify");
/// The setting that carries that secret (template.yaml: `CdnOriginSecret`).
pub const CDN_ORIGIN_SECRET_VAR: &str = "CDN_ORIGIN_SECRET";
pub const MIN_ORIGIN_SECRET_LEN: usize = 32;

/// The secret by which a request proves it came through the CDN. Only its
/// digest is kept, and compared in constant time.
#[derive(Clone)]
pub struct OriginSecret([u8; 32]);

impl std::fmt::Debug for OriginSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginSecret(..)")
    }
}

impl OriginSecret {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() < MIN_ORIGIN_SECRET_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{CDN_ORIGIN_SECRET_VAR} must be at least {MIN_ORIGIN_SECRET_LEN} visible \
                 characters (the value CloudFront sends in {ORIGIN_VERIFY})"
            ));
        }
        Ok(Self(Sha256::digest(raw.as_bytes()).into()))
    }

    /// Whether the request carries one `x-origin-verify`, holding the secret.
    pub fn verifies(&self, headers: &HeaderMap) -> bool {
        let Some(value) = only(headers, &ORIGIN_VERIFY) else {
            return false;
        };
        let candidate: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let diff = self
            .0
            .iter()
            .zip(candidate.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// A header that appears exactly once (a repeated one proves nothing).
fn only<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// The address in a `CloudFront-Viewer-Address` value: `198.51.100.10:46532`,
/// or for IPv6 `2001:db8::1:443` (the port is what follows the last colon;
/// `[2001:db8::1]:443` is read too). Anything else is refused.
pub fn parse_viewer_address(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    if value.len() > 64 {
        return None;
    }
    let (host, port) = value.rsplit_once(':')?;
    let port_ok = (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok();
    if !port_ok {
        return None;
    }
    let ip = match host.strip_prefix('[') {
        Some(inner) => IpAddr::V6(inner.strip_suffix(']')?.parse().ok()?),
        None => host.parse().ok()?,
    };
    // An IPv4-mapped IPv6 address is the IPv4 client it maps.
    Some(ip.to_canonical())
}

/// The request's own client address: API Gateway's `sourceIp` on Lambda,
/// the socket peer in the local host.
fn own_ip<B>(request: &http::Request<B>) -> Option<String> {
    #[allow(irrefutable_let_patterns, unreachable_patterns)]
    let gateway_ip = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        _ => None,
    };
    gateway_ip.or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
    })
}

/// The client address `ip` rules count by. Behind CloudFront the request's
/// own address is an edge's, shared by everyone it serves, so the viewer's
/// address in `CloudFront-Viewer-Address` is used instead, but only when the
/// request carries `x-origin-verify` with the configured secret: a client
/// can write any header, only the distribution knows the secret. With no
/// secret configured, without the header or with a wrong one, or with a
/// viewer address that does not parse, it is the request's own address.
pub fn client_ip<B>(request: &http::Request<B>, cdn: Option<&OriginSecret>) -> Option<String> {
    let headers = request.headers();
    if cdn.is_some_and(|s| s.verifies(headers)) {
        let viewer = only(headers, &VIEWER_ADDRESS)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_viewer_address);
        match viewer {
            Some(ip) => return Some(ip.to_string()),
            None => tracing::debug!("a request through the CDN without a usable {VIEWER_ADDRESS}"),
        }
    }
    own_ip(request)
}

/// The caller as the rules see it: the client address (see [`client_ip`];
/// never a forwarded header a client can write), the verified user, the
/// API key.
pub fn identity(request: &Request, cdn: Option<&OriginSecret>) -> Identity {
    Identity {
        ip: client_ip(request, cdn),
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
    let identity = identity(&request, limiter.config().cdn_origin_secret.as_ref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::LimiterConfig;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-edge";
    /// A CloudFront edge: what `sourceIp` or the peer is behind the CDN.
    const EDGE: &str = "130.176.0.1";

    fn secret() -> OriginSecret {
        OriginSecret::parse(SECRET).unwrap()
    }

    /// The Lambda path: an API Gateway v2 event, through lambda_http's own
    /// conversion (headers as API Gateway delivers them).
    fn on_lambda(headers: &[(&str, &str)]) -> http::Request<lambda_http::Body> {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let event = json!({
            "version": "2.0",
            "routeKey": "GET /api/v1/ids",
            "rawPath": "/api/v1/ids",
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                "http": {
                    "method": "GET",
                    "path": "/api/v1/ids",
                    "protocol": "HTTP/1.1",
                    "sourceIp": EDGE,
                    "userAgent": "Amazon CloudFront"
                },
                "requestId": "r1",
                "routeKey": "GET /api/v1/ids",
                "stage": "$default",
                "time": "25/Nov/2026:10:00:00 +0000",
                "timeEpoch": 1795600800000u64
            },
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    /// The local host's path: the socket peer, and the request context the
    /// local gateway adds for a verified token (it has no `sourceIp`).
    fn local(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut request = http::Request::builder().uri("/api/v1/ids");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut request = request.body(()).unwrap();
        let peer: SocketAddr = format!("{EDGE}:50123").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let claims = [("sub".to_owned(), "nina".to_owned())].into();
        request
            .extensions_mut()
            .insert(crate::http::auth::jwt_context(claims));
        request
    }

    /// Every case on both paths: (headers, secret configured?, expected key).
    fn check_both(headers: &[(&str, &str)], configured: bool, expected: &str) {
        let secret = secret();
        let cdn = configured.then_some(&secret);
        assert_eq!(
            client_ip(&on_lambda(headers), cdn).as_deref(),
            Some(expected),
            "lambda, {headers:?}"
        );
        assert_eq!(
            client_ip(&local(headers), cdn).as_deref(),
            Some(expected),
            "local, {headers:?}"
        );
    }

    #[test]
    fn a_request_through_the_cdn_is_counted_by_its_viewer() {
        let v4 = [
            ("x-origin-verify", SECRET),
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
        ];
        check_both(&v4, true, "198.51.100.10");
        let v6 = [
            ("x-origin-verify", SECRET),
            ("cloudfront-viewer-address", "2001:db8::1:443"),
        ];
        check_both(&v6, true, "2001:db8::1");
        // Header names are case-insensitive on both paths.
        let cased = [
            ("X-Origin-Verify", SECRET),
            ("CloudFront-Viewer-Address", "[2001:db8::7]:8443"),
        ];
        check_both(&cased, true, "2001:db8::7");
    }

    #[test]
    fn a_forged_viewer_address_is_ignored() {
        let forged = [("cloudfront-viewer-address", "198.51.100.10:46532")];
        check_both(&forged, true, EDGE);
        let wrong = [
            ("x-origin-verify", "0123456789abcdef0123456789abcdef-edgE"),
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
        ];
        check_both(&wrong, true, EDGE);
        let prefix = [
            ("x-origin-verify", &SECRET[..32]),
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
        ];
        check_both(&prefix, true, EDGE);
        let empty = [
            ("x-origin-verify", ""),
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
        ];
        check_both(&empty, true, EDGE);
    }

    #[test]
    fn a_bad_viewer_address_falls_back_to_the_own_address() {
        for bad in ["garbage", "198.51.100.10", "198.51.100.10:99999", ""] {
            let headers = [
                ("x-origin-verify", SECRET),
                ("cloudfront-viewer-address", bad),
            ];
            check_both(&headers, true, EDGE);
        }
        check_both(&[("x-origin-verify", SECRET)], true, EDGE);
    }

    #[test]
    fn without_a_configured_secret_the_header_means_nothing() {
        let headers = [
            ("x-origin-verify", SECRET),
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
        ];
        check_both(&headers, false, EDGE);
        check_both(&[], false, EDGE);
        check_both(&[], true, EDGE);
    }

    #[test]
    fn a_repeated_header_proves_nothing() {
        // Locally a client can repeat headers (API Gateway joins repeats
        // with commas, which no longer parse or match).
        let secret = secret();
        let mut twice = local(&[
            ("x-origin-verify", SECRET),
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
        ]);
        twice
            .headers_mut()
            .append(VIEWER_ADDRESS, HeaderValue::from_static("192.0.2.1:1"));
        assert_eq!(client_ip(&twice, Some(&secret)).as_deref(), Some(EDGE));
        let mut twice = local(&[
            ("x-origin-verify", SECRET),
            ("cloudfront-viewer-address", "198.51.100.10:46532"),
        ]);
        twice
            .headers_mut()
            .append(ORIGIN_VERIFY, HeaderValue::from_static("another"));
        assert_eq!(client_ip(&twice, Some(&secret)).as_deref(), Some(EDGE));
        let joined = [
            ("x-origin-verify", SECRET),
            (
                "cloudfront-viewer-address",
                "192.0.2.1:1, 198.51.100.10:46532",
            ),
        ];
        check_both(&joined, true, EDGE);
    }

    #[test]
    fn viewer_addresses_parse_strictly() {
        let ok = [
            ("198.51.100.10:46532", "198.51.100.10"),
            ("2001:db8::1:443", "2001:db8::1"),
            (
                "2001:0db8:85a3:0000:0000:8a2e:0370:7334:46532",
                "2001:db8:85a3::8a2e:370:7334",
            ),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::1:0", "::1"),
            (" 198.51.100.10:1 ", "198.51.100.10"),
            // An IPv4-mapped address is its IPv4 client.
            ("::ffff:198.51.100.10:80", "198.51.100.10"),
        ];
        for (value, ip) in ok {
            assert_eq!(
                parse_viewer_address(value)
                    .map(|a| a.to_string())
                    .as_deref(),
                Some(ip),
                "{value}"
            );
        }
        for bad in [
            "",
            ":",
            ":443",
            "198.51.100.10",
            "198.51.100.10:",
            "198.51.100.10:65536",
            "198.51.100.10:-1",
            "198.51.100.10:+80",
            "198.51.100.10:0x50",
            "198.51.100.10:123456",
            "198.51.100:80",
            "host.example:443",
            "2001:db8::1",
            "::1",
            "[2001:db8::1:443",
            "[2001:db8::1]443",
            "[198.51.100.10]:80",
            "fe80::1%eth0:443",
            "192.0.2.1:1, 198.51.100.10:46532",
            "198.51.100.10 :80",
        ] {
            assert_eq!(parse_viewer_address(bad), None, "{bad:?}");
        }
        let long = format!("{}:1", "0".repeat(80));
        assert_eq!(parse_viewer_address(&long), None);
    }

    #[test]
    fn the_secret_is_read_once_into_the_limiter_config() {
        let config = |value: Option<&str>| {
            LimiterConfig::from_settings(|name| {
                (name == CDN_ORIGIN_SECRET_VAR)
                    .then(|| value.map(str::to_owned))
                    .flatten()
            })
        };
        let set = config(Some(SECRET)).unwrap();
        let headers = local(&[("x-origin-verify", SECRET)]);
        assert!(set.cdn_origin_secret.unwrap().verifies(headers.headers()));
        assert!(config(None).unwrap().cdn_origin_secret.is_none());
        for bad in [
            "too short",
            &format!("{} {}", "a".repeat(20), "b".repeat(20)),
        ] {
            let e = config(Some(bad)).unwrap_err();
            assert!(e.contains("CDN_ORIGIN_SECRET"), "{e}");
        }
        assert!(!format!("{:?}", secret()).contains("0123"));
    }
}
