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
    let router = lambda_router(function, platform.clone()).await?;
    shut_down_on_sigterm(platform).await;
    lambda_http::run(http::api(router, body_limit)).await
}

/// Lambda sends SIGTERM (and waits 500 ms) before it reclaims an instance
/// only when an extension is registered: this registers one that takes no
/// events, and on SIGTERM runs the platform's shutdown (buffered clicks
/// sent, the ID lease released). Must run before the runtime starts. Without
/// the Extensions API (another host) it logs and carries on.
async fn shut_down_on_sigterm(platform: Arc<Platform>) {
    use tokio::signal::unix::{SignalKind, signal};
    let registered = lambda_extension::Extension::new()
        .with_events(&[])
        .with_extension_name("hanul-shutdown")
        .register()
        .await;
    let extension = match registered {
        Ok(extension) => extension,
        Err(e) => {
            tracing::warn!(error = %e, "no shutdown extension: work buffered at shutdown may be lost");
            return;
        }
    };
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(sigterm) => sigterm,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::spawn(async move {
        // Waits for events it never asks for: it only has to be registered.
        if let Err(e) = extension.run().await {
            tracing::warn!(error = %e, "the shutdown extension stopped");
        }
    });
    tokio::spawn(async move {
        if sigterm.recv().await.is_some() {
            if tokio::time::timeout(std::time::Duration::from_millis(450), platform.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("shutdown work did not finish in time");
            }
            std::process::exit(0);
        }
    });
}

/// Runs one queue worker on Lambda, fed by an SQS event source mapping.
pub async fn run_worker(name: &str) -> Result<(), lambda_runtime::Error> {
    http::init_tracing();
    let worker =
        crate::routes::find_worker(name).ok_or_else(|| format!("no worker named {name}"))?;
    let platform = Arc::new(Platform::aws_from_env().await);
    let handler = (worker.build)(platform.clone()).await?;
    shut_down_on_sigterm(platform).await;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| handler(event))).await
}

/// Runs one periodic function on Lambda, fed by an EventBridge schedule.
pub async fn run_periodic(name: &str) -> Result<(), lambda_runtime::Error> {
    http::init_tracing();
    let periodic = crate::routes::find_periodic(name)
        .ok_or_else(|| format!("no periodic function named {name}"))?;
    let platform = Arc::new(Platform::aws_from_env().await);
    let tick = (periodic.build)(platform.clone()).await?;
    shut_down_on_sigterm(platform).await;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let tick = tick.clone();
            async move { tick().await }
        },
    ))
    .await
}
