//! The part of Lambda a function's process talks to: the Runtime API
//! (`/2018-06-01/runtime/...`) and the Extensions API registration
//! (`/2020-01-01/extension/...`), served on loopback. A process started with
//! `AWS_LAMBDA_RUNTIME_API` pointing here runs exactly as on Lambda: it
//! registers its extension, asks for the next invocation, and posts the
//! response, an invocation error or an init error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, mpsc, oneshot};

/// What the function answered for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `/response`: the payload it returned.
    Response(Bytes),
    /// `/error`: the error type and message it reported.
    Error { error_type: String, message: String },
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub outcome: Outcome,
    /// From handing out the event to the answer.
    pub duration: Duration,
}

/// Why the function never became ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InitFailure {
    #[error("init error {error_type}: {message}")]
    Reported { error_type: String, message: String },
    #[error("the function did not ask for an invocation within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the runtime API stopped")]
    Stopped,
}

struct Pending {
    id: String,
    event: Bytes,
    deadline: Duration,
    answer: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Progress {
    /// When the function first asked for an invocation (init done).
    first_next: Option<Instant>,
    init_error: Option<(String, String)>,
    extensions: Vec<String>,
    /// When each handed-out invocation left.
    started: HashMap<String, Instant>,
}

struct Shared {
    function_name: String,
    handler: String,
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    answers: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    progress: Mutex<Progress>,
    changed: Notify,
}

impl Shared {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One emulated Lambda execution environment's API, for one process.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    send: mpsc::Sender<Pending>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serves on a free loopback port.
    pub async fn start(function_name: &str, handler: &str) -> std::io::Result<Self> {
        let (send, receive) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            function_name: function_name.to_owned(),
            handler: handler.to_owned(),
            queue: tokio::sync::Mutex::new(receive),
            answers: Mutex::new(HashMap::new()),
            progress: Mutex::new(Progress::default()),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/2020-01-01/extension/register", post(register))
            .route("/2020-01-01/extension/event/next", get(extension_next))
            .route("/2020-01-01/extension/init/error", post(init_error))
            .route("/2020-01-01/extension/exit/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the runtime API server stopped");
            }
        });
        Ok(Self {
            addr,
            shared,
            send,
            server,
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for the function's process.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Waits until the function asks for its first invocation, and returns
    /// how long after `since` that was (the init duration).
    pub async fn wait_ready(
        &self,
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration, InitFailure> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            {
                let progress = self.shared.progress();
                if let Some((error_type, message)) = &progress.init_error {
                    return Err(InitFailure::Reported {
                        error_type: error_type.clone(),
                        message: message.clone(),
                    });
                }
                if let Some(at) = progress.first_next {
                    return Ok(at.saturating_duration_since(since));
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(InitFailure::Timeout(timeout));
            }
        }
    }

    /// The init error the function reported, if any (it may report one and
    /// exit before ever asking for an invocation).
    pub fn init_error(&self) -> Option<(String, String)> {
        self.shared.progress().init_error.clone()
    }

    /// The extensions the process registered, by name.
    pub fn extensions(&self) -> Vec<String> {
        self.shared.progress().extensions.clone()
    }

    /// Hands `event` to the function and waits for its answer.
    pub async fn invoke(&self, event: Bytes, timeout: Duration) -> Result<Invocation, InvokeError> {
        let (answer, answered) = oneshot::channel();
        let id = uuid::Uuid::new_v4().to_string();
        self.send
            .send(Pending {
                id: id.clone(),
                event,
                deadline: wall_clock_ms(timeout).unwrap_or_default(),
                answer,
            })
            .await
            .map_err(|_| InvokeError::Stopped)?;
        let outcome = match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => return Err(InvokeError::Stopped),
            Err(_) => return Err(InvokeError::Timeout(timeout)),
        };
        let started = self.shared.progress().started.remove(&id);
        Ok(Invocation {
            outcome,
            duration: started.map(|s| s.elapsed()).unwrap_or_default(),
        })
    }
}

/// The invocation deadline as Lambda sends it: milliseconds since the epoch.
fn wall_clock_ms(timeout: Duration) -> Option<Duration> {
    SystemTime::now()
        .checked_add(timeout)?
        .duration_since(UNIX_EPOCH)
        .ok()
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    {
        let mut progress = shared.progress();
        if progress.first_next.is_none() {
            progress.first_next = Some(Instant::now());
        }
    }
    shared.changed.notify_waiters();
    let pending = shared.queue.lock().await.recv().await;
    let Some(pending) = pending else {
        return StatusCode::GONE.into_response();
    };
    shared
        .progress()
        .started
        .insert(pending.id.clone(), Instant::now());
    if let Ok(mut answers) = shared.answers.lock() {
        answers.insert(pending.id.clone(), pending.answer);
    }
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", header(&pending.id));
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&pending.deadline.as_millis().to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header(&format!(
            "arn:aws:lambda:us-east-1:123456789012:function:{}",
            shared.function_name
        )),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        header("Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, headers, pending.event).into_response()
}

fn answer(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    let sender = shared.answers.lock().ok().and_then(|mut a| a.remove(id));
    match sender {
        Some(sender) => {
            // The caller may have given up waiting; nothing else to do then.
            let _ = sender.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    answer(&shared, &id, Outcome::Response(body))
}

/// Lambda's error body: `{"errorType", "errorMessage"}`; the type may also
/// come in `Lambda-Runtime-Function-Error-Type`.
fn diagnostic(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let error_type = json["errorType"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unknown".into());
    let message = json["errorMessage"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (error_type, message)
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (error_type, message) = diagnostic(&headers, &body);
    answer(
        &shared,
        &id,
        Outcome::Error {
            error_type,
            message,
        },
    )
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    shared.progress().init_error = Some(diagnostic(&headers, &body));
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let name = headers
        .get("lambda-extension-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if name.is_empty() {
        return (StatusCode::BAD_REQUEST, "Lambda-Extension-Name is required").into_response();
    }
    shared.progress().extensions.push(name);
    let body = serde_json::json!({
        "functionName": shared.function_name,
        "functionVersion": "$LATEST",
        "handler": shared.handler,
        "accountId": "123456789012",
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        "lambda-extension-identifier",
        header(&uuid::Uuid::new_v4().to_string()),
    );
    response
}

/// A registered extension waits here for events; an extension that asked
/// for none (hanul's shutdown extension) is never woken before the process
/// ends, as on Lambda.
async fn extension_next() -> Response {
    std::future::pending::<()>().await;
    StatusCode::OK.into_response()
}
