//! `GET /health`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::routes::{self, Auth, Function};

pub const HEALTH: Function = Function {
    name: "health",
    routes: &[routes::get("/health", Auth::None)],
    build: |_| Box::pin(async { Ok(Router::new().route("/health", get(health))) }),
};

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
