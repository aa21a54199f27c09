//! `GET /api/v1/ids?count=N` and `GET /api/v1/ids/{id}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hanul_shared::http::ApiError;
use hanul_shared::http::emf::Metrics;
use hanul_shared::ids::{IdParts, IdService};
use serde::Serialize;

use crate::routes::{self, Auth, Function};

pub const IDS_GENERATE: Function = Function {
    name: "ids-generate",
    routes: &[routes::get("/api/v1/ids", Auth::None)],
    build: |platform| {
        Box::pin(async move {
            let ids = platform.ids().await?;
            Ok(Router::new()
                .route("/api/v1/ids", get(generate))
                .with_state(ids))
        })
    },
};

pub const IDS_DECODE: Function = Function {
    name: "ids-decode",
    routes: &[routes::get("/api/v1/ids/{id}", Auth::None)],
    build: |_| Box::pin(async { Ok(Router::new().route("/api/v1/ids/{id}", get(decode))) }),
};

#[derive(Debug, Serialize)]
pub struct IdsResponse {
    /// Strings: JSON numbers lose precision above 2^53.
    pub ids: Vec<String>,
}

async fn generate(
    State(ids): State<Arc<IdService>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let count = IdService::parse_count(query.get("count").map(String::as_str))?;
    let issued = ids.generate(count).await?;
    Metrics::new()
        .dimension("Function", "ids-generate")
        .count("IdsIssued", issued.len() as u64)
        .emit();
    let body = IdsResponse {
        ids: issued.iter().map(ToString::to_string).collect(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)))
}

async fn decode(Path(id): Path<String>) -> Result<Json<IdParts>, ApiError> {
    Ok(Json(IdService::decode(&id)?))
}
