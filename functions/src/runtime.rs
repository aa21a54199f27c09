//! Runs one function on Lambda: read config once at cold start, build the
//! function's router with the shared layers, serve API Gateway events.

use std::sync::Arc;

use hanul_shared::http;
use hanul_shared::platform::Platform;

pub async fn run_http(name: &str) -> Result<(), lambda_http::Error> {
    http::init_tracing();
    let function = crate::routes::find(name).ok_or_else(|| format!("no function named {name}"))?;
    let body_limit = http::body_limit_from_env()?;
    let platform = Arc::new(Platform::aws_from_env().await);
    let router = (function.build)(platform).await?;
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
