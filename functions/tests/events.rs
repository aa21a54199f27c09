//! Each function answers the sample API Gateway event shipped for it in
//! `tests/events/` (the same files `sam local invoke -e` and
//! `cargo lambda invoke --data-file` take), through the same layers it has on
//! Lambda, on an embedded platform. Workers get their sample SQS event.

use std::path::PathBuf;
use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use hanul_functions::{FUNCTIONS, PERIODIC, SOCKETS, WORKERS};
use hanul_shared::embedded::EmbeddedStore;
use hanul_shared::http;
use hanul_shared::platform::Platform;
use hanul_shared::shortener::{CreateLink, RedirectKind};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use tower::ServiceExt;

fn event_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/events/{name}.json"))
}

/// An embedded platform with the settings template.yaml gives the functions,
/// and the link the sample events name: `docs-link`, owned by `nina`.
async fn platform(dir: &tempfile::TempDir) -> Arc<Platform> {
    let platform = Arc::new(
        Platform::embedded(EmbeddedStore::open(dir.path()).unwrap())
            .with_default("SHORT_BASE_URL", "https://hnl.example")
            .with_default(
                "SHORTENER_CODE_KEY",
                "an example key of at least 32 characters",
            )
            .with_default(
                "SERVICE_API_KEYS",
                "example:an-example-service-key-0123456789",
            )
            .with_default("JWT_ISSUER", "http://127.0.0.1:9/pool")
            .with_default("JWT_AUDIENCE", "client-1"),
    );
    let shortener = platform.shortener().await.unwrap();
    let docs = CreateLink {
        long_url: "https://example.com/docs".into(),
        alias: Some("docs-link".into()),
        redirect: Some(RedirectKind::Temporary),
        ..CreateLink::default()
    };
    shortener.create(docs, Some("nina")).await.unwrap();
    platform
}

async fn invoke(name: &str) -> (u16, Value, axum::http::HeaderMap, Vec<u8>) {
    let text = std::fs::read_to_string(event_path(name)).expect("event file");
    let request = lambda_http::request::from_str(&text).expect("an API Gateway v2 event");
    let dir = tempfile::tempdir().unwrap();
    let platform = platform(&dir).await;
    let function = hanul_functions::routes::find(name).expect("function");
    let router = http::api(
        hanul_functions::runtime::lambda_router(function, platform)
            .await
            .unwrap(),
        http::DEFAULT_BODY_LIMIT,
    );
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
        bytes,
    )
}

/// Runs a worker on its sample event; returns the ids it reports as failed.
async fn invoke_worker(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(event_path(name)).expect("event file");
    let event: SqsEvent = serde_json::from_str(&text).expect("an SQS event");
    let dir = tempfile::tempdir().unwrap();
    let platform = platform(&dir).await;
    let worker = hanul_functions::routes::find_worker(name).expect("worker");
    let handler = (worker.build)(platform).await.unwrap();
    let response = handler(LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

#[test]
fn every_function_and_worker_has_a_sample_event() {
    for name in FUNCTIONS
        .iter()
        .map(|f| f.name)
        .chain(WORKERS.iter().map(|w| w.name))
        .chain(PERIODIC.iter().map(|p| p.name))
        .chain(SOCKETS.iter().map(|s| s.name))
    {
        assert!(
            event_path(name).exists(),
            "tests/events/{name}.json is missing"
        );
    }
}

#[tokio::test]
async fn health_event() {
    let (status, body, headers, _) = invoke("health").await;
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
    let (status, body, _, _) = invoke("ids-generate").await;
    assert_eq!(status, 200);
    let ids = body["ids"].as_array().expect("ids");
    assert_eq!(ids.len(), 3, "the event asks for count=3");
}

#[tokio::test]
async fn ids_decode_event() {
    let (status, body, _, _) = invoke("ids-decode").await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "251499267617099776");
    assert_eq!(body["machineId"], 361);
    assert_eq!(body["timestampMs"], 1_795_651_698_030u64);
}

#[tokio::test]
async fn shorten_event() {
    let (status, body, headers, _) = invoke("shorten").await;
    assert_eq!(status, 201, "{body}");
    let code = body["code"].as_str().expect("code");
    assert_eq!(code.len(), 7);
    assert_eq!(body["shortUrl"], format!("https://hnl.example/{code}"));
    assert_eq!(body["redirect"], 302);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        body["shortUrl"].as_str()
    );
}

#[tokio::test]
async fn shorten_batch_event() {
    let (status, body, _, _) = invoke("shorten-batch").await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["status"], 201);
    assert_eq!(body["results"][1]["status"], 400);
    assert_eq!(body["results"][1]["error"]["code"], "invalid_url");
    assert_eq!(
        (body["succeeded"].as_u64(), body["failed"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn redirect_event() {
    let (status, _, headers, _) = invoke("redirect").await;
    assert_eq!(status, 302);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some("https://example.com/docs")
    );
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("private, no-store")
    );
}

#[tokio::test]
async fn urls_get_event_reads_the_owner_from_the_authorizer() {
    let (status, body, _, _) = invoke("urls-get").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], "docs-link");
    assert_eq!(body["stats"]["totalClicks"], 0);
}

#[tokio::test]
async fn urls_list_event_lists_the_callers_links() {
    let (status, body, headers, _) = invoke("urls-list").await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<&str> = body["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["code"].as_str())
        .collect();
    assert_eq!(codes, ["docs-link"]);
    assert_eq!(body["links"][0]["clicks"], 0);
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("private, no-store")
    );
}

#[tokio::test]
async fn urls_update_event() {
    let (status, body, _, _) = invoke("urls-update").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["longUrl"], "https://example.com/docs/v2");
    assert_eq!(body["cdn"], "queued");
}

#[tokio::test]
async fn urls_delete_event() {
    let (status, body, _, _) = invoke("urls-delete").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true);
}

#[tokio::test]
async fn urls_qr_event() {
    let (status, _, headers, bytes) = invoke("urls-qr").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    assert_eq!(&bytes[..4], b"\x89PNG");
}

#[tokio::test]
async fn ratelimit_check_event() {
    let (status, body, headers, _) = invoke("ratelimit-check").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rule"], "shorten-per-ip");
    assert_eq!(body["allowed"], true);
    assert_eq!(body["limit"], 60);
    assert_eq!(body["remaining"], 59);
    assert_eq!(body["source"], "store");
    // The response's own fields are the calling service's quota here.
    assert_eq!(
        headers
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok()),
        Some("\"ratelimit-check-per-service\";q=100000;w=1")
    );
}

#[tokio::test]
async fn shortener_clicks_event_counts_once_and_fails_the_malformed_one() {
    // The same click twice (a redelivery) and one message that is not JSON.
    assert_eq!(invoke_worker("shortener-clicks").await, vec!["m3"]);
}

#[tokio::test]
async fn cdn_invalidate_event_fails_only_the_bad_request() {
    assert_eq!(invoke_worker("cdn-invalidate").await, vec!["m2"]);
}

/// On Lambda a route with an optional token is public at the gateway: the
/// function itself verifies a token that is sent.
#[tokio::test]
async fn lambda_checks_optional_tokens_itself() {
    let dir = tempfile::tempdir().unwrap();
    let function = hanul_functions::routes::find("shorten").unwrap();
    let bare = Arc::new(
        Platform::embedded(EmbeddedStore::open(dir.path()).unwrap())
            .with_default("SHORT_BASE_URL", "https://hnl.example")
            .with_default(
                "SHORTENER_CODE_KEY",
                "an example key of at least 32 characters",
            ),
    );
    let refused = hanul_functions::runtime::lambda_router(function, bare).await;
    assert!(refused.unwrap_err().to_string().contains("JWT_ISSUER"));

    let dir = tempfile::tempdir().unwrap();
    let platform = Arc::new(
        Platform::embedded(EmbeddedStore::open(dir.path()).unwrap())
            .with_default("SHORT_BASE_URL", "https://hnl.example")
            .with_default(
                "SHORTENER_CODE_KEY",
                "an example key of at least 32 characters",
            )
            .with_default("JWT_ISSUER", "http://127.0.0.1:9/pool")
            .with_default("JWT_AUDIENCE", "client-1"),
    );
    let router = http::api(
        hanul_functions::runtime::lambda_router(function, platform)
            .await
            .unwrap(),
        http::DEFAULT_BODY_LIMIT,
    );
    let text = std::fs::read_to_string(event_path("shorten")).unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    let anonymous = lambda_http::request::from_str(&event.to_string()).unwrap();
    let response = router.clone().oneshot(anonymous).await.unwrap();
    assert_eq!(response.status(), 201);
    event["headers"]["authorization"] = Value::from("Bearer not-a-jwt");
    let forged = lambda_http::request::from_str(&event.to_string()).unwrap();
    let response = router.oneshot(forged).await.unwrap();
    assert_eq!(
        response.status(),
        401,
        "a bad token is refused, not ignored"
    );
}

#[tokio::test]
async fn devices_put_event() {
    let (status, body, _, _) = invoke("devices-put").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["platform"], "android");
    assert_eq!(body["enabled"], true);
}

#[tokio::test]
async fn devices_list_event() {
    let (status, body, _, _) = invoke("devices-list").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["devices"], serde_json::json!([]));
}

#[tokio::test]
async fn devices_delete_event_of_an_unknown_device() {
    let (status, body, _, _) = invoke("devices-delete").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "device_not_found");
}

#[tokio::test]
async fn settings_events() {
    let (status, body, _, _) = invoke("settings-get").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channels"]["sms"], true, "defaults: every channel on");
    let (status, body, _, _) = invoke("settings-put").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quietHours"]["timeZone"], "Asia/Seoul");
}

#[tokio::test]
async fn notifications_send_event() {
    let (status, body, _, _) = invoke("notifications-send").await;
    assert_eq!(status, 202, "{body}");
    // The sample user has no device and no address yet: both skipped.
    assert_eq!(body["status"], "skipped");
    assert_eq!(body["notificationId"].as_str().map(str::len), Some(32));
}

#[tokio::test]
async fn notifications_status_event_of_an_unknown_id() {
    let (status, body, _, _) = invoke("notifications-status").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "notification_not_found");
}

#[tokio::test]
async fn notify_worker_events() {
    // A malformed message fails alone.
    assert_eq!(invoke_worker("notify-push-ios").await, vec!["m2"]);
    assert!(invoke_worker("notify-push-android").await.is_empty());
    // The same delivery twice in one batch: delivered concurrently, one claims
    // it and the other backs off (or, if the first already finished, is a
    // duplicate); never both sent, never both failed.
    assert!(invoke_worker("notify-sms").await.len() <= 1);
    assert!(invoke_worker("notify-email").await.is_empty());
}

#[tokio::test]
async fn notify_scheduler_event() {
    let text = std::fs::read_to_string(event_path("notify-scheduler")).expect("event file");
    let _: Value = serde_json::from_str(&text).expect("an EventBridge event");
    let dir = tempfile::tempdir().unwrap();
    let periodic = hanul_functions::routes::find_periodic("notify-scheduler").unwrap();
    let tick = (periodic.build)(platform(&dir).await).await.unwrap();
    tick().await.unwrap();
}

#[test]
fn every_socket_event_is_an_api_gateway_websocket_event_of_its_route() {
    for socket in SOCKETS {
        let text = std::fs::read_to_string(event_path(socket.name)).expect("event file");
        let event: aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest =
            serde_json::from_str(&text).expect("a WebSocket proxy event");
        let request = hanul_functions::runtime::socket_request(event);
        assert_eq!(request.route_key, socket.route_key, "{}", socket.name);
        assert!(!request.connection_id.is_empty(), "{}", socket.name);
        assert_eq!(
            request.token.is_some(),
            socket.route_key == "$connect",
            "{}",
            socket.name
        );
    }
}
