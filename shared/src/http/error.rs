//! The one mapping from errors to HTTP responses (DESIGN rule 6): every error
//! is JSON, `{"error": {"code": "snake_case", "message": "..."}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::feed::FeedError;
use crate::ids::IdError;
use crate::notify::NotifyError;
use crate::shortener::ShortenerError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side",
        )
    }

    /// The code for a status that no handler chose (router, extractors, limits).
    pub fn code_for(status: StatusCode) -> &'static str {
        match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::GONE => "gone",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "bad_request",
            _ => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        match &e {
            IdError::InvalidCount => ApiError::bad_request("invalid_count", e.to_string()),
            IdError::InvalidId(_) => ApiError::bad_request("invalid_id", e.to_string()),
            IdError::ClockMovedBackwards { .. }
            | IdError::ShuttingDown
            | IdError::LeaseExpired
            | IdError::NoMachineId
            | IdError::Unavailable(_) => {
                tracing::warn!(error = %e, "cannot issue ids");
                ApiError {
                    code: "ids_unavailable",
                    ..ApiError::unavailable(e.to_string(), 1)
                }
            }
            IdError::ClockOutOfRange { .. } | IdError::InvalidConfig(_) => {
                tracing::error!(error = %e, "clock outside the id range");
                ApiError::internal()
            }
        }
    }
}

impl From<ShortenerError> for ApiError {
    fn from(e: ShortenerError) -> Self {
        let message = e.to_string();
        match e {
            ShortenerError::InvalidUrl(_) => ApiError::bad_request("invalid_url", message),
            ShortenerError::Invalid(code, _) => ApiError::bad_request(code, message),
            ShortenerError::Alias(_) => ApiError::bad_request("invalid_alias", message),
            ShortenerError::AliasTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "alias_taken", message)
            }
            ShortenerError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "link_not_found", message)
            }
            ShortenerError::Expired => ApiError::new(StatusCode::GONE, "link_expired", message),
            ShortenerError::Exhausted => ApiError::new(StatusCode::GONE, "link_exhausted", message),
            ShortenerError::ConfirmationRequired { .. } => {
                ApiError::new(StatusCode::CONFLICT, "confirmation_required", message)
            }
            ShortenerError::Throttled => ApiError {
                code: "throttled",
                ..ApiError::unavailable(message, 1)
            },
            ShortenerError::Store(_) => {
                tracing::error!(error = %message, "link store failure");
                ApiError::unavailable("the link store is unavailable; retry shortly", 1)
            }
        }
    }
}

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        let message = e.to_string();
        match e {
            NotifyError::Invalid(code, _) => ApiError::bad_request(code, message),
            NotifyError::DeviceNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "device_not_found", message)
            }
            NotifyError::NotificationNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "notification_not_found", message)
            }
            NotifyError::TooManyDevices(_) => {
                ApiError::new(StatusCode::CONFLICT, "too_many_devices", message)
            }
            NotifyError::Throttled => ApiError {
                code: "throttled",
                ..ApiError::unavailable(message, 1)
            },
            NotifyError::Store(_) => {
                tracing::error!(error = %message, "notification store failure");
                ApiError::unavailable("the notification store is unavailable; retry shortly", 1)
            }
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        let message = e.to_string();
        let code = e.code();
        match e {
            FeedError::Invalid(..) => ApiError::bad_request(code, message),
            FeedError::PostNotFound => ApiError::new(StatusCode::NOT_FOUND, code, message),
            FeedError::FollowLimit(_) => ApiError::new(StatusCode::CONFLICT, code, message),
            FeedError::Blocked => ApiError::new(StatusCode::FORBIDDEN, code, message),
            FeedError::Throttled => ApiError {
                code,
                ..ApiError::unavailable(message, 1)
            },
            FeedError::Ids(_) => {
                tracing::warn!(error = %message, "cannot issue post ids");
                ApiError {
                    code,
                    ..ApiError::unavailable(message, 1)
                }
            }
            FeedError::Store(_) => {
                tracing::error!(error = %message, "feed store failure");
                ApiError::unavailable("the feed store is unavailable; retry shortly", 1)
            }
        }
    }
}

impl From<crate::media::MediaError> for ApiError {
    fn from(e: crate::media::MediaError) -> Self {
        use crate::media::MediaError as E;
        let message = e.to_string();
        match e {
            E::Invalid(code, _) => ApiError::bad_request(code, message),
            E::NotFound => ApiError::not_found(message),
            E::Store(_) => {
                tracing::error!(error = %message, "media store failure");
                ApiError::unavailable("media is unavailable; retry shortly", 1)
            }
        }
    }
}

impl From<crate::chat::ChatError> for ApiError {
    fn from(e: crate::chat::ChatError) -> Self {
        use crate::chat::ChatError as E;
        let message = e.to_string();
        let code = e.code();
        match e {
            E::Invalid(..) => ApiError::bad_request(code, message),
            E::ConversationNotFound | E::MessageNotFound | E::PresenceNotVisible => {
                ApiError::new(StatusCode::NOT_FOUND, code, message)
            }
            E::NotSender | E::NotAdmin | E::Blocked(_) => {
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            E::MessageDeleted => ApiError::new(StatusCode::GONE, code, message),
            E::ConversationLimit(_) => ApiError::new(StatusCode::CONFLICT, code, message),
            E::RateLimited(secs) => ApiError {
                retry_after: Some(secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            },
            E::Throttled => ApiError {
                code,
                ..ApiError::unavailable(message, 1)
            },
            E::Ids(_) => {
                tracing::warn!(error = %message, "cannot issue message ids");
                ApiError {
                    code,
                    ..ApiError::unavailable(message, 1)
                }
            }
            E::Store(_) => {
                tracing::error!(error = %message, "chat store failure");
                ApiError::unavailable("the chat store is unavailable; retry shortly", 1)
            }
        }
    }
}

/// A query string that did not parse (an unknown or malformed parameter).
pub fn query_rejection(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", e.body_text())
}

/// A JSON body that did not parse: 413 if too large, 415 if not JSON,
/// 400 otherwise (syntax or shape), always with the parser's message.
pub fn json_rejection(e: axum::extract::rejection::JsonRejection) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.body_text(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            e.body_text(),
        ),
        _ => ApiError::bad_request("invalid_body", e.body_text()),
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"))
}

/// Turns any error response that is not JSON yet (a router 404 or 405, an
/// extractor rejection, a body-limit 413) into the JSON error shape, keeping
/// the original text as the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_owned();
    if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase();
    }
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), %message, "unhandled server error");
        message = "something went wrong on our side".into();
    }
    let mut out = ApiError::new(status, ApiError::code_for(status), message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// A panic in a handler is a 500 JSON error, not a dropped connection.
/// (Release builds abort on panic, as Lambda functions should.)
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    ApiError::internal().into_response()
}

/// The fallback for paths no function serves.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
