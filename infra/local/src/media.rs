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
use sha2::Digest;
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
struct Uploads {
    files: Arc<FileMediaStore>,
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
) -> Result<Response, ApiError> {
    let key = format!("uploads/{rest}");
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    // A part of a multipart upload names its upload and number.
    let part = query
        .get("uploadId")
        .map(|id| (id.clone(), field("partNumber").parse::<u32>().unwrap_or(0)));
    let grant = UploadGrant {
        content_type: field("contentType"),
        length: field("length").parse().unwrap_or(u64::MAX),
        expires_at_secs: field("expires").parse().unwrap_or(0),
        part: part.clone(),
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
    // A part carries no type of its own (S3 ignores one).
    if part.is_none() && content_type != grant.content_type {
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
    let mut digest = sha2::Sha256::new();
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
            digest.update(&chunk);
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
    if let Some((upload_id, number)) = part {
        // As S3 answers a part: its ETag, which the completion names.
        let etag = hex::encode(&digest.finalize()[..16]);
        if let Err(e) = up.files.keep_part(&upload_id, number, &temp, &etag).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(match e {
                MediaStoreError::Invalid(m) => refused(StatusCode::NOT_FOUND, "no_such_upload", &m),
                e => unavailable(e),
            });
        }
        let mut response = StatusCode::OK.into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
            response.headers_mut().insert(header::ETAG, v);
        }
        return Ok(response);
    }
    up.files
        .commit_upload(&temp, &key, &grant.content_type)
        .await
        .map_err(unavailable)?;
    up.files
        .announce_created(
            &key,
            size,
            "ObjectCreated:Put",
            up.platform.clock().now_ms(),
        )
        .await
        .map_err(|_| ApiError::unavailable("the upload could not be queued; retry", 1))?;
    Ok(StatusCode::OK.into_response())
}

/// A `Range` header against an object of `length` bytes: `None` for the
/// whole object, `Some(Ok((first, last)))` for one satisfiable range,
/// `Some(Err(()))` for an unsatisfiable one (416). Only single ranges are
/// honoured, as browsers ask for video; several ranges get the whole.
pub fn byte_range(header: Option<&str>, length: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        // The last `n` bytes.
        let n: u64 = end.parse().ok()?;
        if n == 0 || length == 0 {
            return Some(Err(()));
        }
        (length.saturating_sub(n), length - 1)
    } else {
        let first: u64 = start.parse().ok()?;
        let last = if end.is_empty() {
            length.saturating_sub(1)
        } else {
            end.parse::<u64>().ok()?.min(length.saturating_sub(1))
        };
        if first >= length || last < first {
            return Some(Err(()));
        }
        (first, last)
    };
    Some(Ok(range))
}

/// What `GET /media/...` sends: the body, the object's length, the range
/// sent (if one) and the content type.
type Found = (Body, u64, Option<(u64, u64)>, String);

/// `GET /media/{key}`: immutable renditions, cached for a year, streamed
/// from disk, with single byte ranges (video seeking; Safari asks for
/// ranges before it plays at all).
async fn serve(
    State(store): State<Served>,
    Path(rest): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let key = format!("media/{rest}");
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let found: Result<Option<Found>, MediaStoreError> = match &store {
        Served::Files(files) => match files.open_object(&key).await {
            Ok(Some((mut file, length, content_type))) => match byte_range(range_header, length) {
                Some(Err(())) => return unsatisfiable(length),
                Some(Ok((first, last))) => match file.seek(std::io::SeekFrom::Start(first)).await {
                    Ok(_) => {
                        let stream = tokio_util::io::ReaderStream::new(file.take(last - first + 1));
                        Ok(Some((
                            Body::from_stream(stream),
                            length,
                            Some((first, last)),
                            content_type,
                        )))
                    }
                    Err(e) => Err(MediaStoreError::Unavailable(e.to_string())),
                },
                None => Ok(Some((
                    Body::from_stream(tokio_util::io::ReaderStream::new(file)),
                    length,
                    None,
                    content_type,
                ))),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        },
        // moto's S3 behind `--backend aws`: a test path, read whole.
        Served::Store(store) => match store.head(&key).await {
            Ok(Some(head)) => match store.read(&key).await {
                Ok(bytes) => {
                    let length = bytes.len() as u64;
                    let content_type = head
                        .content_type
                        .unwrap_or_else(|| "application/octet-stream".into());
                    match byte_range(range_header, length) {
                        Some(Err(())) => return unsatisfiable(length),
                        Some(Ok((first, last))) => Ok(Some((
                            Body::from(bytes[first as usize..=last as usize].to_vec()),
                            length,
                            Some((first, last)),
                            content_type,
                        ))),
                        None => Ok(Some((Body::from(bytes), length, None, content_type))),
                    }
                }
                Err(e) => Err(e),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        },
    };
    match found {
        Ok(Some((body, length, range, content_type))) => {
            let mut response = body.into_response();
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
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let sent = match range {
                Some((first, last)) => {
                    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{length}"))
                    {
                        response.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    last - first + 1
                }
                None => length,
            };
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(sent));
            response
        }
        Ok(None) | Err(MediaStoreError::Invalid(_)) | Err(MediaStoreError::NotFound(_)) => {
            ApiError::not_found("no such media").into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}

fn unsatisfiable(length: u64) -> Response {
    let mut response = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        format!("the object has {length} bytes"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{length}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_are_read_as_browsers_send_them() {
        assert_eq!(byte_range(None, 100), None);
        assert_eq!(byte_range(Some("bytes=0-"), 100), Some(Ok((0, 99))));
        assert_eq!(byte_range(Some("bytes=10-19"), 100), Some(Ok((10, 19))));
        assert_eq!(byte_range(Some("bytes=90-500"), 100), Some(Ok((90, 99))));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Some(Ok((90, 99))));
        assert_eq!(byte_range(Some("bytes=-500"), 100), Some(Ok((0, 99))));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Some(Err(())));
        assert_eq!(byte_range(Some("bytes=20-10"), 100), Some(Err(())));
        assert_eq!(byte_range(Some("bytes=-0"), 100), Some(Err(())));
        assert_eq!(
            byte_range(Some("bytes=0-1,5-6"), 100),
            None,
            "several: the whole"
        );
        assert_eq!(byte_range(Some("items=0-1"), 100), None);
        assert_eq!(byte_range(Some("bytes=x-1"), 100), None);
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
        files.set_events(platform.queue(&platform.media_queue_spec()).await?);
        let uploads = Router::new()
            .route(&format!("{LOCAL_UPLOAD_PATH}/{{*key}}"), put(upload))
            .with_state(Uploads {
                files,
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
