//! Media: the presigned upload (in parts above 32 MiB, then completed), its
//! state, and the `media-process` worker
//! that S3's `ObjectCreated` notifications feed.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hanul_shared::http::auth::Caller;
use hanul_shared::http::{ApiError, json_rejection};
use hanul_shared::media::{CompleteMedia, CreateMedia, MediaService, MediaUpload, MediaView};
use lambda_runtime::LambdaEvent;

use crate::routes::{self, Auth, Function, SqsHandler, Worker};

type Media = State<Arc<MediaService>>;

pub const MEDIA_CREATE: Function = crate::routes::service_function!(
    media,
    "media-create",
    routes::post("/api/v1/me/media", Auth::Jwt),
    "/api/v1/me/media",
    post,
    create
);

pub const MEDIA_GET: Function = crate::routes::service_function!(
    media,
    "media-get",
    routes::get("/api/v1/me/media/{mediaId}", Auth::Jwt),
    "/api/v1/me/media/{mediaId}",
    get,
    get_media
);

pub const MEDIA_COMPLETE: Function = crate::routes::service_function!(
    media,
    "media-complete",
    routes::post("/api/v1/me/media/{mediaId}/complete", Auth::Jwt),
    "/api/v1/me/media/{mediaId}/complete",
    post,
    complete
);

async fn complete(
    State(service): Media,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<CompleteMedia>, JsonRejection>,
) -> Result<(StatusCode, Json<MediaView>), ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    let view = service.complete(&caller.user_id, &id, request).await?;
    // Accepted: the worker checks the assembled file next.
    Ok((StatusCode::ACCEPTED, Json(view)))
}

async fn create(
    State(service): Media,
    caller: Caller,
    body: Result<Json<CreateMedia>, JsonRejection>,
) -> Result<(StatusCode, Json<MediaUpload>), ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    let upload = service.create(&caller.user_id, request).await?;
    Ok((StatusCode::CREATED, Json(upload)))
}

async fn get_media(
    State(service): Media,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MediaView>, ApiError> {
    Ok(Json(service.get(&caller.user_id, &id).await?))
}

/// A standard queue: uploads are independent. On AWS a batch is one upload
/// (BatchSize 1: one decode bounds the memory); a bigger batch locally is
/// checked concurrently, images decoded one at a time. One that fails on a
/// store error is reported alone and retried, a bad message body is
/// dropped with a warning (retrying cannot fix it).
pub const PROCESS_WORKER: Worker = Worker {
    name: "media-process",
    queue: |platform| Ok(platform.media_queue_spec()),
    build: |platform| {
        Box::pin(async move {
            let service = platform.media().await?;
            let handler: SqsHandler = Arc::new(move |event: LambdaEvent<SqsEvent>| {
                let service = service.clone();
                Box::pin(async move {
                    let outcomes = futures_util::future::join_all(
                        event.payload.records.into_iter().map(|record| {
                            let service = service.clone();
                            async move {
                                let id = record.message_id.clone().unwrap_or_default();
                                let body = record.body.as_deref().unwrap_or_default();
                                match service.handle_event(body).await {
                                    Ok(done) => {
                                        tracing::info!(message_id = %id, ?done, "uploads processed");
                                        None
                                    }
                                    Err(hanul_shared::media::MediaError::Invalid(_, e)) => {
                                        tracing::warn!(message_id = %id, error = %e, "not an upload event; dropped");
                                        None
                                    }
                                    Err(e) => {
                                        tracing::warn!(message_id = %id, error = %e, "upload processing failed");
                                        Some(id)
                                    }
                                }
                            }
                        }),
                    )
                    .await;
                    Ok(crate::shortener::batch_failures(
                        outcomes.into_iter().flatten().collect(),
                    ))
                })
            });
            Ok(handler)
        })
    },
};
