//! The notification system's functions: devices and settings (the user's
//! token), send and status (a service key; status also to the recipient's
//! own token), one worker per delivery queue, and the scheduler.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hanul_shared::http::auth::{Caller, MaybeCaller};
use hanul_shared::http::service_keys::ServiceKeys;
use hanul_shared::http::{ApiError, json_rejection};
use hanul_shared::notify::model::RegisterDevice;
use hanul_shared::notify::{
    Delivered, DeliveryQueue, DeliveryWorker, NotifyService, SendRequest, Settings,
};
use hanul_shared::ports::Queue;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};

use crate::routes::{self, Auth, Function, Periodic, SqsHandler, Tick, Worker};

macro_rules! user_function {
    ($($args:tt)*) => {
        crate::routes::service_function!(notify_records, $($args)*)
    };
}

pub const DEVICES_PUT: Function = user_function!(
    "devices-put",
    routes::put("/api/v1/me/devices", Auth::Jwt),
    "/api/v1/me/devices",
    put,
    register_device
);
pub const DEVICES_LIST: Function = user_function!(
    "devices-list",
    routes::get("/api/v1/me/devices", Auth::Jwt),
    "/api/v1/me/devices",
    get,
    list_devices
);
pub const DEVICES_DELETE: Function = user_function!(
    "devices-delete",
    routes::delete("/api/v1/me/devices/{deviceId}", Auth::Jwt),
    "/api/v1/me/devices/{deviceId}",
    delete,
    remove_device
);
pub const SETTINGS_GET: Function = user_function!(
    "settings-get",
    routes::get("/api/v1/me/notification-settings", Auth::Jwt),
    "/api/v1/me/notification-settings",
    get,
    get_settings
);
pub const SETTINGS_PUT: Function = user_function!(
    "settings-put",
    routes::put("/api/v1/me/notification-settings", Auth::Jwt),
    "/api/v1/me/notification-settings",
    put,
    put_settings
);

#[derive(Clone)]
struct ServiceState {
    service: Arc<NotifyService>,
    keys: Arc<ServiceKeys>,
}

pub const NOTIFICATIONS_SEND: Function = Function {
    name: "notifications-send",
    routes: &[routes::post("/api/v1/notifications", Auth::None)],
    build: |platform| {
        Box::pin(async move {
            let state = ServiceState {
                service: platform.notify().await?,
                keys: Arc::new(platform.service_keys()?),
            };
            Ok(Router::new()
                .route("/api/v1/notifications", post(send))
                .with_state(state))
        })
    },
};

pub const NOTIFICATIONS_STATUS: Function = Function {
    name: "notifications-status",
    routes: &[routes::get("/api/v1/notifications/{id}", Auth::Optional)],
    build: |platform| {
        Box::pin(async move {
            let state = ServiceState {
                service: platform.notify_records().await?,
                keys: Arc::new(platform.service_keys()?),
            };
            Ok(Router::new()
                .route("/api/v1/notifications/{id}", get(status))
                .with_state(state))
        })
    },
};

async fn register_device(
    State(service): State<Arc<NotifyService>>,
    caller: Caller,
    body: Result<Json<RegisterDevice>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    let (device, created) = service.register_device(&caller.user_id, request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(device)).into_response())
}

async fn list_devices(
    State(service): State<Arc<NotifyService>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let devices = service.devices(&caller.user_id).await?;
    Ok(Json(json!({ "devices": devices })))
}

async fn remove_device(
    State(service): State<Arc<NotifyService>>,
    caller: Caller,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.remove_device(&caller.user_id, &device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_settings(
    State(service): State<Arc<NotifyService>>,
    caller: Caller,
) -> Result<Json<Settings>, ApiError> {
    Ok(Json(service.settings(&caller.user_id).await?))
}

async fn put_settings(
    State(service): State<Arc<NotifyService>>,
    caller: Caller,
    body: Result<Json<Settings>, JsonRejection>,
) -> Result<Json<Settings>, ApiError> {
    let Json(settings) = body.map_err(json_rejection)?;
    Ok(Json(service.put_settings(&caller.user_id, settings).await?))
}

async fn send(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let service_name = state.keys.require(&headers)?;
    let Json(request) = body.map_err(json_rejection)?;
    let sent = state.service.send(request).await?;
    tracing::info!(service = %service_name, notification = %sent.notification_id, created = sent.created, "notification accepted");
    Ok((StatusCode::ACCEPTED, Json(sent)).into_response())
}

/// A service with its key sees any notification; a user sees their own.
async fn status(
    State(state): State<ServiceState>,
    MaybeCaller(caller): MaybeCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let as_service = headers.contains_key("x-api-key");
    if as_service {
        state.keys.require(&headers)?;
    } else if caller.is_none() {
        return Err(ApiError::unauthorized(
            "a service key (x-api-key) or the recipient's bearer token is required",
        ));
    }
    let valid_id = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid_id {
        return Err(hanul_shared::notify::NotifyError::NotificationNotFound.into());
    }
    let status = state.service.status(&id).await?;
    if !as_service && caller.is_some_and(|c| c.user_id != status.user_id) {
        return Err(hanul_shared::notify::NotifyError::NotificationNotFound.into());
    }
    Ok(Json(json!(status)))
}

macro_rules! delivery_worker {
    ($name:literal, $queue:expr) => {
        Worker {
            name: $name,
            queue: |platform| platform.delivery_queue_spec($queue),
            build: |platform| {
                Box::pin(async move {
                    let worker = Arc::new(platform.delivery_worker($queue).await?);
                    let queue = platform
                        .queue(&platform.delivery_queue_spec($queue)?)
                        .await?;
                    let handler: SqsHandler = Arc::new(move |event| {
                        let (worker, queue) = (worker.clone(), queue.clone());
                        Box::pin(
                            async move { Ok(deliver_batch(&worker, queue.as_ref(), event).await) },
                        )
                    });
                    Ok(handler)
                })
            },
        }
    };
}

pub const PUSH_IOS_WORKER: Worker = delivery_worker!("notify-push-ios", DeliveryQueue::PushIos);
pub const PUSH_ANDROID_WORKER: Worker =
    delivery_worker!("notify-push-android", DeliveryQueue::PushAndroid);
pub const SMS_WORKER: Worker = delivery_worker!("notify-sms", DeliveryQueue::Sms);
pub const EMAIL_WORKER: Worker = delivery_worker!("notify-email", DeliveryQueue::Email);

/// The messages of a batch are independent deliveries (standard queues), so
/// they go out concurrently; a failure is reported for that message alone,
/// after pushing its next visibility out by the backoff.
async fn deliver_batch(
    worker: &DeliveryWorker,
    queue: &dyn Queue,
    event: LambdaEvent<SqsEvent>,
) -> SqsBatchResponse {
    let outcomes = futures_util::future::join_all(event.payload.records.into_iter().map(
        |record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let attr = |name: &str| {
                record
                    .attributes
                    .get(name)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let receive_count = attr("ApproximateReceiveCount").max(1) as u32;
            let sent_at = attr("SentTimestamp");
            let body = record.body.as_deref().unwrap_or_default();
            match worker.deliver(body, receive_count, sent_at).await {
                Ok(Delivered::Sent | Delivered::Duplicate) => None,
                Ok(Delivered::Dropped(reason)) => {
                    tracing::info!(message_id = %id, %reason, "delivery dropped for good");
                    None
                }
                Ok(Delivered::Retry { after, reason }) => {
                    tracing::warn!(message_id = %id, %reason, retry_in_ms = after.as_millis() as u64, "delivery will be retried");
                    if let Some(receipt) = &record.receipt_handle
                        && let Err(e) = queue.change_visibility(receipt, after).await
                    {
                        tracing::warn!(error = %e, "could not set the retry delay");
                    }
                    Some(id)
                }
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "delivery failed");
                    Some(id)
                }
            }
        },
    ))
    .await;
    crate::shortener::batch_failures(outcomes.into_iter().flatten().collect())
}

pub const NOTIFY_SCHEDULER: Periodic = Periodic {
    name: "notify-scheduler",
    every: Duration::from_secs(60),
    local_every_var: "NOTIFY_SCHEDULER_INTERVAL_MS",
    build: |platform| {
        Box::pin(async move {
            let service = platform.notify().await?;
            let tick: Tick = Arc::new(move || {
                let service = service.clone();
                Box::pin(async move {
                    service
                        .drain_schedule()
                        .await
                        .map(|_| ())
                        .map_err(|e| lambda_runtime::Error::from(e.to_string()))
                })
            });
            Ok(tick)
        })
    },
};
