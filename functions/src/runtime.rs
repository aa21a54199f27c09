//! Runs one function on Lambda: read config once at cold start, build the
//! function's router with the shared layers, serve API Gateway events.

use std::sync::Arc;

use axum::Router;
use hanul_shared::http;
use hanul_shared::http::jwks::{JwksVerifier, optional_token};
use hanul_shared::platform::{ConfigError, Platform};

use crate::routes::{Auth, Function};

/// The function's router as Lambda runs it, behind the rate-limit layer.
/// Where a route takes an optional
/// token, API Gateway lets every request through, so the function verifies
/// tokens itself against the user pool named by `JWT_ISSUER` and
/// `JWT_AUDIENCE`.
pub async fn lambda_router(
    function: &Function,
    platform: Arc<Platform>,
) -> Result<Router, ConfigError> {
    let optional = function.routes.iter().any(|r| r.auth == Auth::Optional);
    let verifier = if optional {
        let setting = |name: &str| {
            platform.setting(name).ok_or_else(|| {
                ConfigError(format!(
                    "{name} is not set: {} verifies optional tokens itself",
                    function.name
                ))
            })
        };
        let verifier = JwksVerifier::new(&setting("JWT_ISSUER")?, &setting("JWT_AUDIENCE")?)
            .map_err(ConfigError)?;
        Some(Arc::new(verifier))
    } else {
        None
    };
    let router = (function.build)(platform.clone()).await?;
    let router = crate::ratelimit::rate_limited(function, router, &platform).await?;
    Ok(match verifier {
        Some(v) => router.layer(axum::middleware::from_fn_with_state(v, optional_token)),
        None => router,
    })
}

pub async fn run_http(name: &str) -> Result<(), lambda_http::Error> {
    http::init_tracing();
    let function = crate::routes::find(name).ok_or_else(|| format!("no function named {name}"))?;
    let body_limit = http::body_limit_from_env()?;
    let platform = Arc::new(Platform::aws_from_env().await);
    let router = lambda_router(function, platform).await?;
    lambda_http::run(http::api(router, body_limit)).await
}

/// Runs one queue worker on Lambda, fed by an SQS event source mapping.
pub async fn run_worker(name: &str) -> Result<(), lambda_runtime::Error> {
    http::init_tracing();
    let worker =
        crate::routes::find_worker(name).ok_or_else(|| format!("no worker named {name}"))?;
    let platform = Arc::new(Platform::aws_from_env().await);
    let handler = (worker.build)(platform).await?;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| handler(event))).await
}

/// Runs one periodic function on Lambda, fed by an EventBridge schedule.
pub async fn run_periodic(name: &str) -> Result<(), lambda_runtime::Error> {
    http::init_tracing();
    let periodic = crate::routes::find_periodic(name)
        .ok_or_else(|| format!("no periodic function named {name}"))?;
    let platform = Arc::new(Platform::aws_from_env().await);
    let tick = (periodic.build)(platform).await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let tick = tick.clone();
            async move { tick().await }
        },
    ))
    .await
}
