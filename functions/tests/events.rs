//! Each function answers the sample API Gateway event shipped for it in
//! `tests/events/` (the same files `sam local invoke -e` and
//! `cargo lambda invoke --data-file` take), through the same layers it has on
//! Lambda, on an embedded platform.

use std::path::PathBuf;
use std::sync::Arc;

use hanul_functions::FUNCTIONS;
use hanul_shared::embedded::EmbeddedStore;
use hanul_shared::http;
use hanul_shared::platform::Platform;
use serde_json::Value;
use tower::ServiceExt;

fn event_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/events/{name}.json"))
}

async fn invoke(name: &str) -> (u16, Value, axum::http::HeaderMap) {
    let text = std::fs::read_to_string(event_path(name)).expect("event file");
    let request = lambda_http::request::from_str(&text).expect("an API Gateway v2 event");
    let dir = tempfile::tempdir().unwrap();
    let platform = Arc::new(Platform::embedded(EmbeddedStore::open(dir.path()).unwrap()));
    let function = hanul_functions::routes::find(name).expect("function");
    let router = http::api(
        (function.build)(platform).await.unwrap(),
        http::DEFAULT_BODY_LIMIT,
    );
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

#[test]
fn every_function_has_a_sample_event() {
    for f in FUNCTIONS {
        assert!(
            event_path(f.name).exists(),
            "tests/events/{}.json is missing",
            f.name
        );
    }
}

#[tokio::test]
async fn health_event() {
    let (status, body, headers) = invoke("health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    // The gateway's request id is the request id.
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("JKJaXmPLvHcESHA=")
    );
}

#[tokio::test]
async fn ids_generate_event() {
    let (status, body, _) = invoke("ids-generate").await;
    assert_eq!(status, 200);
    let ids = body["ids"].as_array().expect("ids");
    assert_eq!(ids.len(), 3, "the event asks for count=3");
}

#[tokio::test]
async fn ids_decode_event() {
    let (status, body, _) = invoke("ids-decode").await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "251499267617099776");
    assert_eq!(body["machineId"], 361);
    assert_eq!(body["timestampMs"], 1_795_651_698_030u64);
}
