//! Runs one function on Lambda: read config once at cold start, build the
//! function's router with the shared layers, serve API Gateway events.

use std::sync::Arc;

use axum::Router;
use hanul_shared::http;
use hanul_shared::http::jwks::{JwksVerifier, optional_token};
use hanul_shared::platform::{ConfigError, Platform};

use crate::routes::{Auth, Function};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};

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

/// Which function this instance runs: `HANUL_FUNCTION` if set, else
/// `_HANDLER`, which Lambda sets to the function's `Handler` in template.yaml.
pub fn function_name() -> Result<String, ConfigError> {
    ["HANUL_FUNCTION", "_HANDLER"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .ok_or_else(|| {
            ConfigError(
                "_HANDLER is not set: the function's Handler in template.yaml names the hanul function to run (or set HANUL_FUNCTION)".into(),
            )
        })
}

/// What a function serves once its cold start is done.
enum Started {
    Http(axum::Router),
    Worker(crate::routes::SqsHandler),
    Periodic(crate::routes::Tick),
    Socket(crate::routes::SocketHandler),
}

/// The cold start: settings read, clients and services built. No request
/// is served before this returns.
async fn start(name: &str) -> Result<(Started, Arc<Platform>), ConfigError> {
    let platform = Arc::new(Platform::aws_from_env().await);
    let started = if let Some(function) = crate::routes::find(name) {
        let body_limit = http::body_limit_from_env().map_err(|e| ConfigError(e.to_string()))?;
        let router = lambda_router(function, platform.clone()).await?;
        Started::Http(http::api(router, body_limit))
    } else if let Some(worker) = crate::routes::find_worker(name) {
        Started::Worker((worker.build)(platform.clone()).await?)
    } else if let Some(periodic) = crate::routes::find_periodic(name) {
        Started::Periodic((periodic.build)(platform.clone()).await?)
    } else if let Some(socket) = crate::routes::find_socket(name) {
        Started::Socket((socket.build)(platform.clone()).await?)
    } else {
        return Err(ConfigError(format!(
            "no hanul function is named {name:?} (the Handler in template.yaml)"
        )));
    };
    Ok((started, platform))
}

/// Runs the function named by the environment on Lambda: an HTTP function
/// behind API Gateway, a queue worker fed by an SQS event source mapping, or
/// a periodic function fed by an EventBridge schedule. A cold start that
/// fails is reported to the Runtime API's `/init/error`, as Lambda expects,
/// so the reason shows as the function's init error.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    http::init_tracing();
    // Registration is a round trip to the Extensions API: it runs while the
    // function is built, and must be done before the first `/next`.
    let extension = register_shutdown_extension();
    let started = match function_name() {
        Ok(name) => start(&name).await,
        Err(e) => Err(e),
    };
    let (started, platform) = match started {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "cold start failed");
            report_init_error(&e).await;
            return Err(e.into());
        }
    };
    if extension.await.unwrap_or(false) {
        shut_down_on_sigterm(platform);
    }
    match started {
        Started::Http(router) => lambda_http::run(router).await,
        Started::Worker(handler) => {
            lambda_runtime::run(lambda_runtime::service_fn(move |event| handler(event))).await
        }
        Started::Periodic(tick) => {
            lambda_runtime::run(lambda_runtime::service_fn(
                move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
                    let tick = tick.clone();
                    async move { tick().await }
                },
            ))
            .await
        }
        Started::Socket(handler) => {
            lambda_runtime::run(lambda_runtime::service_fn(
                move |event: lambda_runtime::LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
                    let handler = handler.clone();
                    async move {
                        let reply = handler(socket_request(event.payload)).await;
                        Ok::<_, lambda_runtime::Error>(socket_response(reply))
                    }
                },
            ))
            .await
        }
    }
}

/// API Gateway's WebSocket event as a route function takes it.
pub fn socket_request(event: ApiGatewayWebsocketProxyRequest) -> crate::routes::SocketRequest {
    let context = event.request_context;
    crate::routes::SocketRequest {
        route_key: context.route_key.unwrap_or_default(),
        connection_id: context.connection_id.unwrap_or_default(),
        body: event.body,
        token: event
            .query_string_parameters
            .first("token")
            .map(str::to_owned),
        user_id: None,
    }
}

/// A route function's answer as API Gateway takes it.
pub fn socket_response(reply: crate::routes::SocketReply) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(reply.status);
    response.body = reply.body.map(aws_lambda_events::encodings::Body::Text);
    response
}

/// `POST /2018-06-01/runtime/init/error`: Lambda records the message as the
/// init error and ends the instance.
async fn report_init_error(error: &ConfigError) {
    let body = serde_json::json!({
        "errorType": "Runtime.ConfigError",
        "errorMessage": error.to_string(),
        "stackTrace": [],
    });
    let request = lambda_runtime_api_client::build_request()
        .method(axum::http::Method::POST)
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.ConfigError")
        .header("content-type", "application/json")
        .body(lambda_runtime_api_client::body::Body::from(
            body.to_string(),
        ));
    let sent = match request {
        Ok(request) => lambda_runtime_api_client::Client::builder()
            .build()
            .map_err(|e| e.to_string())
            .map(|client| client.call(request)),
        Err(e) => Err(e.to_string()),
    };
    let outcome = match sent {
        Ok(call) => call.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not report the init error to the Runtime API");
    }
}

/// Lambda sends SIGTERM (and waits 500 ms) before it reclaims an instance
/// only when an extension is registered: this registers one that takes no
/// events, in the background while the cold start builds the function.
/// Answers whether it registered; without the Extensions API (another host)
/// it logs and carries on.
fn register_shutdown_extension() -> tokio::sync::oneshot::Receiver<bool> {
    let (registered, answer) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let extension = lambda_extension::Extension::new()
            .with_events(&[])
            .with_extension_name("hanul-shutdown")
            .register()
            .await;
        match extension {
            Ok(extension) => {
                let _ = registered.send(true);
                // Waits for events it never asks for: it only has to be registered.
                if let Err(e) = extension.run().await {
                    tracing::warn!(error = %e, "the shutdown extension stopped");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no shutdown extension: work buffered at shutdown may be lost");
                let _ = registered.send(false);
            }
        }
    });
    answer
}

/// On SIGTERM, runs the platform's shutdown (buffered clicks sent, the ID
/// lease released) within 450 ms, then exits.
fn shut_down_on_sigterm(platform: Arc<Platform>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(sigterm) => sigterm,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
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
