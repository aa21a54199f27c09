//! The local host's S3 and CloudFront for media: the upload URL that
//! `POST /api/v1/me/media` hands out (checked as S3 checks a presigned PUT:
//! signature, expiry, exact type and length), the `ObjectCreated` event S3
//! would send, and `GET /media/...` as the CDN serves it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use futures::StreamExt;
use hanul_shared::embedded::FileMediaStore;
use hanul_shared::embedded::media::{LOCAL_UPLOAD_PATH, UploadGrant};
use hanul_shared::http::{self, ApiError};
use hanul_shared::media::model::MAX_VIDEO_BYTES;
use hanul_shared::platform::Platform;
use hanul_shared::ports::media::{IMMUTABLE_CACHE_CONTROL, MediaStore, MediaStoreError};
use hanul_shared::ports::{OutgoingMessage, Queue};
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
struct Uploads {
    files: Arc<FileMediaStore>,
    queue: Arc<dyn Queue>,
    platform: Arc<Platform>,
}

fn refused(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError::new(status, code, message)
}

fn unavailable(e: MediaStoreError) -> ApiError {
    tracing::warn!(error = %e, "media store");
    ApiError::unavailable("media storage is unavailable; retry the upload", 1)
}

/// `PUT /local/v1/uploads/{key}?contentType=&length=&expires=&signature=`.
async fn upload(
    State(up): State<Uploads>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let key = format!("uploads/{rest}");
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    let grant = UploadGrant {
        content_type: field("contentType"),
        length: field("length").parse().unwrap_or(u64::MAX),
        expires_at_secs: field("expires").parse().unwrap_or(0),
    };
    let now = up.platform.clock().now_secs();
    up.files
        .check_grant(&key, &grant, &field("signature"), now)
        .map_err(|m| refused(StatusCode::FORBIDDEN, "signature_refused", m))?;
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != grant.content_type {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "signature_refused",
            "the Content-Type is not the one the URL was signed for",
        ));
    }
    let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Err(refused(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send a Content-Length (the URL was signed for one)",
        ));
    };
    if length != grant.length {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "signature_refused",
            "the Content-Length is not the one the URL was signed for",
        ));
    }
    let (temp, mut file) = up.files.begin_upload().await.map_err(unavailable)?;
    let written = async {
        let mut stream = request.into_body().into_data_stream();
        let mut total: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                refused(
                    StatusCode::BAD_REQUEST,
                    "incomplete_body",
                    "the upload was cut short",
                )
            })?;
            total += chunk.len() as u64;
            if total > grant.length {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "body_too_long",
                    "the body is longer than its Content-Length",
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| unavailable(MediaStoreError::Unavailable(e.to_string())))?;
        }
        if total != grant.length {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "incomplete_body",
                "the body is shorter than its Content-Length",
            ));
        }
        file.sync_all()
            .await
            .map_err(|e| unavailable(MediaStoreError::Unavailable(e.to_string())))?;
        Ok(total)
    }
    .await;
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
    };
    up.files
        .commit_upload(&temp, &key, &grant.content_type)
        .await
        .map_err(unavailable)?;
    // What S3 sends the queue. If it cannot be queued the upload is undone,
    // so the client's retry starts clean (nothing half-accepted).
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "hanul:local",
        "eventName": "ObjectCreated:Put",
        "eventTime": hanul_shared::shortener::link::format_instant(up.platform.clock().now_ms()),
        "s3": {"bucket": {"name": "local"}, "object": {"key": key, "size": size}},
    }]});
    if let Err(e) = up.queue.send(OutgoingMessage::new(event.to_string())).await {
        tracing::warn!(error = %e, "the upload's event could not be queued");
        let _ = up.files.delete(&key).await;
        return Err(ApiError::unavailable(
            "the upload could not be queued; retry",
            1,
        ));
    }
    Ok(StatusCode::OK)
}

/// `GET /media/{key}`: immutable renditions, cached for a year.
async fn serve(State(store): State<Served>, Path(rest): Path<String>) -> Response {
    let key = format!("media/{rest}");
    let found = match &store {
        Served::Files(files) => files.open_object(&key).await,
        Served::Store(store) => match store.head(&key).await {
            Ok(Some(head)) => store.read(&key).await.map(|bytes| {
                Some((
                    bytes,
                    head.content_type
                        .unwrap_or_else(|| "application/octet-stream".into()),
                ))
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        },
    };
    match found {
        Ok(Some((bytes, content_type))) => {
            let mut response = Body::from(bytes).into_response();
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                headers.insert(header::CONTENT_TYPE, v);
            }
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(IMMUTABLE_CACHE_CONTROL),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Ok(None) | Err(MediaStoreError::Invalid(_)) | Err(MediaStoreError::NotFound(_)) => {
            ApiError::not_found("no such media").into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}

#[derive(Clone)]
enum Served {
    Files(Arc<FileMediaStore>),
    Store(Arc<dyn MediaStore>),
}

/// The upload route (local files only; on moto the URL is moto's) and
/// `/media/...`, each with the common layers and its own body limit.
pub async fn router(platform: &Arc<Platform>) -> Result<Router, crate::server::StartError> {
    let files = platform.file_media_store()?;
    let served = match &files {
        Some(files) => Served::Files(files.clone()),
        None => Served::Store(platform.media_store().await?),
    };
    let mut router = Router::new();
    if let Some(files) = files {
        let queue = platform.queue(&platform.media_queue_spec()).await?;
        let uploads = Router::new()
            .route(&format!("{LOCAL_UPLOAD_PATH}/{{*key}}"), put(upload))
            .with_state(Uploads {
                files,
                queue,
                platform: platform.clone(),
            });
        // The largest upload, plus room for nothing else.
        router = router.merge(uploads.layer(axum::extract::DefaultBodyLimit::max(
            MAX_VIDEO_BYTES as usize + 1,
        )));
    }
    let media = Router::new()
        .route("/media/{*key}", get(serve))
        .with_state(served);
    Ok(http::api_without_fallback(
        router.merge(media),
        MAX_VIDEO_BYTES as usize + 1,
    ))
}
