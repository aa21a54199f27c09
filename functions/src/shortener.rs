//! The URL shortener's functions: create (one and batch), redirect, the
//! owner's read/edit/delete, QR codes, and the click-aggregating worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use hanul_shared::cdn::{invalidate_batch, invalidation_queue};
use hanul_shared::http::auth::{Caller, MaybeCaller};
use hanul_shared::http::emf::Metrics;
use hanul_shared::http::{ApiError, json_rejection, query_rejection};
use hanul_shared::platform::{ConfigError, Platform, TableName};
use hanul_shared::ports::Queue;
use hanul_shared::shortener::qr::QrFormat;
use hanul_shared::shortener::{
    ClickAggregator, ClickEvent, ClickSink, CreateLink, MAX_BATCH, OwnedQuery, PatchLink,
    RedirectKind, ShortenerService, click_queue,
};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::routes::{self, Auth, Function, SqsHandler, Worker};

pub const SHORTEN: Function = Function {
    name: "shorten",
    routes: &[routes::post("/api/v1/shorten", Auth::Optional)],
    build: |platform| {
        Box::pin(async move {
            let service = creating(&platform).await?;
            Ok(Router::new()
                .route("/api/v1/shorten", post(shorten))
                .with_state(service))
        })
    },
};

pub const SHORTEN_BATCH: Function = Function {
    name: "shorten-batch",
    routes: &[routes::post("/api/v1/shorten/batch", Auth::Optional)],
    build: |platform| {
        Box::pin(async move {
            let service = creating(&platform).await?;
            Ok(Router::new()
                .route("/api/v1/shorten/batch", post(shorten_batch))
                .with_state(service))
        })
    },
};

pub const REDIRECT: Function = Function {
    name: "redirect",
    routes: &[
        routes::get("/{code}", Auth::None),
        routes::head("/{code}", Auth::None),
        routes::get("/api/v1/{code}", Auth::None),
        routes::head("/api/v1/{code}", Auth::None),
    ],
    build: |platform| {
        Box::pin(async move {
            let clicks = ClickSink::spawn(platform.queue(&click_queue()).await?);
            let flushed = clicks.clone();
            // Lambda gives 500 ms after SIGTERM; the lease release follows.
            platform.on_shutdown(Box::new(move || {
                Box::pin(async move {
                    if !flushed.flush(Duration::from_millis(300)).await {
                        tracing::warn!("some clicks were still being queued at shutdown");
                    }
                })
            }));
            let state = RedirectState {
                service: platform.shortener().await?,
                clicks,
            };
            Ok(Router::new()
                .route("/{code}", get(redirect))
                .route("/api/v1/{code}", get(redirect))
                .with_state(state))
        })
    },
};

pub const URLS_GET: Function = Function {
    name: "urls-get",
    routes: &[routes::get("/api/v1/urls/{code}", Auth::Jwt)],
    build: |platform| {
        Box::pin(async move {
            let service = platform.shortener().await?;
            Ok(Router::new()
                .route("/api/v1/urls/{code}", get(details))
                .with_state(service))
        })
    },
};

pub const URLS_LIST: Function = Function {
    name: "urls-list",
    routes: &[routes::get("/api/v1/me/urls", Auth::Jwt)],
    build: |platform| {
        Box::pin(async move {
            let service = platform.shortener().await?;
            Ok(Router::new()
                .route("/api/v1/me/urls", get(list_owned))
                .with_state(service))
        })
    },
};

pub const URLS_UPDATE: Function = Function {
    name: "urls-update",
    routes: &[routes::patch("/api/v1/urls/{code}", Auth::Jwt)],
    build: |platform| {
        Box::pin(async move {
            let state = EditState {
                service: platform.shortener().await?,
                purges: platform.queue(&invalidation_queue()).await?,
            };
            Ok(Router::new()
                .route("/api/v1/urls/{code}", patch(update))
                .with_state(state))
        })
    },
};

pub const URLS_DELETE: Function = Function {
    name: "urls-delete",
    routes: &[routes::delete("/api/v1/urls/{code}", Auth::Jwt)],
    build: |platform| {
        Box::pin(async move {
            let state = EditState {
                service: platform.shortener().await?,
                purges: platform.queue(&invalidation_queue()).await?,
            };
            Ok(Router::new()
                .route("/api/v1/urls/{code}", axum::routing::delete(delete))
                .with_state(state))
        })
    },
};

pub const URLS_QR: Function = Function {
    name: "urls-qr",
    routes: &[routes::get("/api/v1/urls/{code}/qr", Auth::None)],
    build: |platform| {
        Box::pin(async move {
            let service = platform.shortener().await?;
            Ok(Router::new()
                .route("/api/v1/urls/{code}/qr", get(qr))
                .with_state(service))
        })
    },
};

pub const CLICKS_WORKER: Worker = Worker {
    name: "shortener-clicks",
    queue: |_| Ok(click_queue()),
    build: |platform| {
        Box::pin(async move {
            let aggregator = Arc::new(ClickAggregator::new(
                platform.table(TableName::Urls).await?,
                platform.clock(),
            ));
            let handler: SqsHandler = Arc::new(move |event| {
                let aggregator = aggregator.clone();
                Box::pin(async move { Ok(aggregate_clicks(&aggregator, event).await) })
            });
            Ok(handler)
        })
    },
};

pub const CDN_INVALIDATE_WORKER: Worker = Worker {
    name: "cdn-invalidate",
    queue: |_| Ok(invalidation_queue()),
    build: |platform| {
        Box::pin(async move {
            let cdn = platform.cdn().await?;
            let handler: SqsHandler = Arc::new(move |event: LambdaEvent<SqsEvent>| {
                let cdn = cdn.clone();
                Box::pin(async move {
                    let messages: Vec<(String, String)> = event
                        .payload
                        .records
                        .into_iter()
                        .map(|r| (r.message_id.unwrap_or_default(), r.body.unwrap_or_default()))
                        .collect();
                    let failed = invalidate_batch(cdn.as_ref(), &messages).await;
                    metrics("cdn-invalidate")
                        .count("InvalidationsSent", (messages.len() - failed.len()) as u64)
                        .count("InvalidationsFailed", failed.len() as u64)
                        .emit();
                    Ok(batch_failures(failed))
                })
            });
            Ok(handler)
        })
    },
};

pub(crate) fn batch_failures(ids: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in ids {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// The shortener of a function that creates links: it needs the code key.
async fn creating(platform: &Platform) -> Result<Arc<ShortenerService>, ConfigError> {
    let service = platform.shortener().await?;
    if !service.can_create() {
        return Err(ConfigError(
            "SHORTENER_CODE_KEY is not set: it keys the code permutation".into(),
        ));
    }
    Ok(service)
}

fn metrics(function: &str) -> Metrics {
    Metrics::new().dimension("Function", function)
}

fn created_response(
    service: &ShortenerService,
    created: &hanul_shared::shortener::Created,
) -> Response {
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let short_url = service.config().short_url(&created.link.code);
    let mut response = (status, Json(service.view(&created.link))).into_response();
    if let Ok(location) = HeaderValue::from_str(&short_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn shorten(
    State(service): State<Arc<ShortenerService>>,
    MaybeCaller(caller): MaybeCaller,
    body: Result<Json<CreateLink>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    let created = service
        .create(request, caller.as_ref().map(|c| c.user_id.as_str()))
        .await?;
    metrics("shorten")
        .count(
            if created.created {
                "LinksCreated"
            } else {
                "LinksReused"
            },
            1,
        )
        .emit();
    Ok(created_response(&service, &created))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    links: Vec<Value>,
}

/// Each link is checked and written on its own; the answer reports each one
/// in request order.
async fn shorten_batch(
    State(service): State<Arc<ShortenerService>>,
    MaybeCaller(caller): MaybeCaller,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    if request.links.is_empty() || request.links.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!(
                "links must hold 1 to {MAX_BATCH} links, not {}",
                request.links.len()
            ),
        ));
    }
    let owner = caller.as_ref().map(|c| c.user_id.as_str());
    let results = futures_util::future::join_all(request.links.into_iter().enumerate().map(
        |(index, raw)| {
            let service = service.clone();
            async move {
                let outcome = match serde_json::from_value::<CreateLink>(raw) {
                    Ok(link) => service.create(link, owner).await.map_err(ApiError::from),
                    Err(e) => Err(ApiError::bad_request("invalid_body", e.to_string())),
                };
                match outcome {
                    Ok(created) => json!({
                        "index": index,
                        "status": if created.created { 201 } else { 200 },
                        "link": service.view(&created.link),
                    }),
                    Err(e) => json!({
                        "index": index,
                        "status": e.status.as_u16(),
                        "error": {"code": e.code, "message": e.message},
                    }),
                }
            }
        },
    ))
    .await;
    let failed = results
        .iter()
        .filter(|r| r["status"].as_u64().is_some_and(|s| s >= 400))
        .count();
    metrics("shorten-batch")
        .count("LinksCreated", (results.len() - failed) as u64)
        .count("LinksRefused", failed as u64)
        .emit();
    Ok(Json(json!({
        "results": results,
        "succeeded": results.len() - failed,
        "failed": failed,
    })))
}

#[derive(Clone)]
struct RedirectState {
    service: Arc<ShortenerService>,
    clicks: ClickSink,
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn redirect(
    State(state): State<RedirectState>,
    method: Method,
    Path(code): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let visit = method == Method::GET;
    let target = state.service.resolve(&code, visit).await?;
    if visit && target.kind == RedirectKind::Temporary {
        // Headers are read in place, not copied: this is the hot path.
        let headers = request.headers();
        state.clicks.record(ClickEvent::new(
            &target.link_id,
            target.code.as_str(),
            state.service.clock().now_ms(),
            header_str(headers, header::REFERER),
            header_str(headers, header::USER_AGENT),
        ));
    }
    // The URL crate serializes long URLs as ASCII, so this cannot fail for
    // stored links; a corrupt one is a 500, not a panic.
    let location = HeaderValue::from_str(&target.location).map_err(|_| ApiError::internal())?;
    let cache_control =
        HeaderValue::from_str(&target.cache_control).map_err(|_| ApiError::internal())?;
    let status = match target.kind {
        RedirectKind::Permanent => StatusCode::MOVED_PERMANENTLY,
        RedirectKind::Temporary => StatusCode::FOUND,
    };
    Ok((
        status,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, cache_control),
        ],
    )
        .into_response())
}

async fn details(
    State(service): State<Arc<ShortenerService>>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let (link, stats) = service.details(&code, &caller.user_id).await?;
    let mut body = service.view(&link);
    body["visits"] = json!(link.visits);
    body["stats"] = json!(stats);
    Ok(([(header::CACHE_CONTROL, "private, no-store")], Json(body)).into_response())
}

async fn list_owned(
    State(service): State<Arc<ShortenerService>>,
    caller: Caller,
    query: Result<Query<OwnedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let page = service.list_owned(&caller.user_id, query).await?;
    let links: Vec<Value> = page
        .links
        .iter()
        .map(|owned| {
            let mut view = service.view(&owned.link);
            view["clicks"] = json!(owned.clicks);
            view["visits"] = json!(owned.link.visits);
            view
        })
        .collect();
    let body = json!({ "links": links, "nextCursor": page.next_cursor });
    Ok(([(header::CACHE_CONTROL, "private, no-store")], Json(body)).into_response())
}

#[derive(Clone)]
struct EditState {
    service: Arc<ShortenerService>,
    purges: Arc<dyn Queue>,
}

async fn update(
    State(state): State<EditState>,
    caller: Caller,
    Path(code): Path<String>,
    body: Result<Json<PatchLink>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(patch) = body.map_err(json_rejection)?;
    let (link, cdn) = state
        .service
        .update(&code, &caller.user_id, patch, state.purges.as_ref())
        .await?;
    let mut body = state.service.view(&link);
    body["cdn"] = json!(cdn);
    Ok(Json(body))
}

async fn delete(
    State(state): State<EditState>,
    caller: Caller,
    Path(code): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let force = match query.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_force",
                format!("force must be true or false, not {other:?}"),
            ));
        }
    };
    let cdn = state
        .service
        .delete(&code, &caller.user_id, force, state.purges.as_ref())
        .await?;
    metrics("urls-delete").count("LinksDeleted", 1).emit();
    Ok(Json(json!({ "code": code, "deleted": true, "cdn": cdn })))
}

async fn qr(
    State(service): State<Arc<ShortenerService>>,
    Path(code): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let format = QrFormat::parse(query.get("format").map(String::as_str))?;
    let image = service.qr(&code, format).await?;
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        image,
    )
        .into_response())
}

/// Counts each click once; a message that fails (malformed, or the table
/// refused) is reported so only it is retried, and after five receives it
/// rests in the DLQ.
async fn aggregate_clicks(
    aggregator: &ClickAggregator,
    event: LambdaEvent<SqsEvent>,
) -> SqsBatchResponse {
    let mut failed = Vec::new();
    let mut clicks = Vec::new();
    let mut ids = Vec::new();
    for record in event.payload.records {
        let id = record.message_id.clone().unwrap_or_default();
        match ClickEvent::parse(record.body.as_deref().unwrap_or_default()) {
            Ok(click) => {
                clicks.push(click);
                ids.push(id);
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "not a click event");
                failed.push(id);
            }
        }
    }
    let (mut counted, mut duplicates) = (0u64, 0u64);
    match aggregator.record_batch(&clicks).await {
        Ok(fresh) => {
            counted = fresh.iter().filter(|f| **f).count() as u64;
            duplicates = fresh.len() as u64 - counted;
        }
        Err(e) => {
            // Nothing of the batch was counted past what its markers show:
            // the queue delivers it again and the markers drop what was.
            tracing::warn!(error = %e, clicks = clicks.len(), "clicks not counted");
            failed.extend(ids);
        }
    }
    metrics("shortener-clicks")
        .count("ClicksCounted", counted)
        .count("ClicksDeduplicated", duplicates)
        .count("ClicksFailed", failed.len() as u64)
        .emit();
    batch_failures(failed)
}
