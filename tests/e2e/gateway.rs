//! What every route shares: health, JSON errors, body limit, request ids,
//! local tokens.

use hanul_e2e::{Backend, LocalHost, client, error_code};
use serde_json::{Value, json};

async fn health_answers(backend: Backend) {
    let host = LocalHost::start(backend);
    let r = client().get(host.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

async fn errors_are_json(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    let r = c.get(host.url("/no/such/route")).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = c.post(host.url("/health")).send().await.unwrap();
    assert_eq!(error_code(r, 405).await, "method_not_allowed");
    // Over the 64 KiB body limit, with and without a Content-Length.
    let big = vec![b'x'; 70 * 1024];
    let r = c
        .post(host.url("/local/v1/token"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    let stream = futures_body(big);
    let sent = c
        .post(host.url("/local/v1/token"))
        .header("content-type", "application/json")
        .body(stream)
        .send()
        .await;
    // The server answers before reading the rest of a chunked body and may
    // close the connection while the client still writes; if an answer
    // arrives, it is the JSON 413.
    if let Ok(r) = sent {
        assert_eq!(error_code(r, 413).await, "payload_too_large");
    }
}

fn futures_body(bytes: Vec<u8>) -> reqwest::Body {
    // A body of unknown length is sent chunked.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

async fn local_tokens_are_issued_and_checked(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    let r = c
        .post(host.url("/local/v1/token"))
        .json(&json!({"userId": "nina"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    for bad in [
        json!({}),
        json!({"userId": ""}),
        json!({"userId": "a b"}),
        json!({"userId": 5}),
        json!({"userId": "u", "x": 1}),
    ] {
        let r = c
            .post(host.url("/local/v1/token"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        let code = error_code(r, 400).await;
        assert!(
            code == "invalid_body" || code == "invalid_user_id",
            "{bad}: {code}"
        );
    }
    let r = c
        .post(host.url("/local/v1/token"))
        .body("{\"userId\": \"u\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 415).await, "unsupported_media_type");
    let r = c
        .post(host.url("/local/v1/token"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_body");
}

hanul_e2e::on_both_backends!(
    health_answers,
    errors_are_json,
    local_tokens_are_issued_and_checked
);
