//! The local host's accounts, and what it serves when exposed beyond
//! loopback.

use hanul_e2e::{Backend, LocalHost, client, error_code};
use serde_json::{Value, json};

const PASSWORD: &str = "a long and quiet river";

async fn sign_up(host: &LocalHost, name: &str) -> Value {
    let r = client()
        .post(host.url("/local/v1/accounts"))
        .json(&json!({"userName": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

async fn me_status(host: &LocalHost, access: &Value) -> u16 {
    client()
        .get(host.url("/api/v1/me/following"))
        .bearer_auth(access.as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn accounts_sign_up_in_refresh_out_and_change_password(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    let first = sign_up(&host, "Nina").await;
    assert_eq!(first["userId"], "nina");
    assert_eq!(first["tokenType"], "Bearer");
    assert_eq!(me_status(&host, &first["accessToken"]).await, 200);

    // Taken (case-insensitively), a weak password, a bad name: 4xx, nothing made.
    for (body, status, code) in [
        (
            json!({"userName": "NINA", "password": PASSWORD}),
            409,
            "user_name_taken",
        ),
        (
            json!({"userName": "omar", "password": "password123"}),
            400,
            "weak_password",
        ),
        (
            json!({"userName": "omar", "password": "short"}),
            400,
            "weak_password",
        ),
        (
            json!({"userName": "o m", "password": PASSWORD}),
            400,
            "invalid_user_name",
        ),
        (json!({"userName": "omar"}), 400, "invalid_body"),
    ] {
        let r = c
            .post(host.url("/local/v1/accounts"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, status).await, code, "{body}");
    }
    let r = c
        .post(host.url("/local/v1/sessions"))
        .json(&json!({"userName": "omar", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_credentials");

    // A second device signs in; a refresh rotates its refresh token.
    let r = c
        .post(host.url("/local/v1/sessions"))
        .json(&json!({"userName": "nina", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let laptop: Value = r.json().await.unwrap();
    let r = c
        .post(host.url("/local/v1/sessions/refresh"))
        .json(&json!({"refreshToken": laptop["refreshToken"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let laptop2: Value = r.json().await.unwrap();
    assert_ne!(laptop2["refreshToken"], laptop["refreshToken"]);
    assert_eq!(me_status(&host, &laptop2["accessToken"]).await, 200);

    // The password changes on the phone: the laptop is signed out at once.
    let r = c
        .post(host.url("/local/v1/me/password"))
        .bearer_auth(first["accessToken"].as_str().unwrap())
        .json(
            &json!({"currentPassword": "not it at all", "newPassword": "another quiet river bend"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_credentials");
    let r = c
        .post(host.url("/local/v1/me/password"))
        .bearer_auth(first["accessToken"].as_str().unwrap())
        .json(&json!({"currentPassword": PASSWORD, "newPassword": "another quiet river bend"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let phone: Value = r.json().await.unwrap();
    assert_eq!(me_status(&host, &laptop2["accessToken"]).await, 401);
    assert_eq!(me_status(&host, &first["accessToken"]).await, 401);
    assert_eq!(me_status(&host, &phone["accessToken"]).await, 200);
    let r = c
        .post(host.url("/local/v1/sessions/refresh"))
        .json(&json!({"refreshToken": laptop2["refreshToken"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_refresh_token");

    // Sign-out ends the session; its tokens stop working.
    let r = c
        .post(host.url("/local/v1/sessions/sign-out"))
        .json(&json!({"refreshToken": phone["refreshToken"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(me_status(&host, &phone["accessToken"]).await, 401);

    // An ended session cannot open the chat socket either.
    let ws = format!(
        "{}/ws?token={}",
        host.base.replacen("http", "ws", 1),
        phone["accessToken"].as_str().unwrap()
    );
    assert!(tokio_tungstenite::connect_async(ws).await.is_err());
}

async fn wrong_and_unknown_answer_alike_and_bursts_are_limited(backend: Backend) {
    let host = LocalHost::start(backend);
    sign_up(&host, "omar").await;
    let c = client();
    let attempt = |name: &'static str, password: &'static str| {
        let c = c.clone();
        let url = host.url("/local/v1/sessions");
        async move {
            let r = c
                .post(url)
                .json(&json!({"userName": name, "password": password}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = r.json().await.unwrap();
            (status, body, retry)
        }
    };
    let (s1, wrong, _) = attempt("omar", "not the password").await;
    let (s2, unknown, _) = attempt("nobody-here", "not the password").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong, unknown);
    // The default rule allows 20 attempts an hour per account.
    let mut limited = None;
    for i in 0..25 {
        let (status, body, retry) = attempt("omar", "still not the password").await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
            assert!(retry.is_some());
            limited = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    assert!(
        limited.is_some_and(|i| i >= 15),
        "limited after {limited:?}"
    );
    // Even the right password now waits.
    let (status, _, _) = attempt("omar", PASSWORD).await;
    assert_eq!(status, 429);
}

async fn dev_endpoints_are_loopback_only_unless_turned_on(backend: Backend) {
    let c = client();
    // On loopback (every other e2e test relies on this).
    let host = LocalHost::start(backend);
    let r = c
        .post(host.url("/local/v1/token"))
        .json(&json!({"userId": "nina"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(host.url("/local/v1/outbox"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Forwarded by a proxy on this machine: not for the network behind it.
    let r = c
        .post(host.url("/local/v1/token"))
        .header("x-forwarded-for", "198.51.100.7")
        .json(&json!({"userId": "nina"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    drop(host);
    // Behind a named proxy, or public under another machine's name, a
    // loopback host is exposed: off.
    for args in [
        &["--trusted-proxy", "127.0.0.1"][..],
        &["--public-url", "https://hanul.example"][..],
    ] {
        let proxied = LocalHost::start_bound(backend, "127.0.0.1", args, &[]);
        let r = c.get(proxied.url("/local/v1/outbox")).send().await.unwrap();
        assert_eq!(error_code(r, 404).await, "not_found", "{args:?}");
    }

    // On every address: not there at all, while accounts still work.
    let exposed = LocalHost::start_bound(backend, "0.0.0.0", &[], &[]);
    let r = c
        .post(exposed.url("/local/v1/token"))
        .json(&json!({"userId": "nina"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = c.get(exposed.url("/local/v1/outbox")).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    sign_up(&exposed, "lea").await;
    let log = exposed.stderr();
    assert!(
        log.contains("serving plain HTTP on a non-loopback address"),
        "{log}"
    );
    drop(exposed);

    // Turned on explicitly: served, and said loudly.
    let flagged = LocalHost::start_bound(backend, "0.0.0.0", &["--dev-endpoints"], &[]);
    let r = c
        .post(flagged.url("/local/v1/token"))
        .json(&json!({"userId": "nina"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(flagged.stderr().contains("DEVELOPMENT ENDPOINTS ARE ON"));
    drop(flagged);
    let by_env =
        LocalHost::start_bound(backend, "0.0.0.0", &[], &[("HANUL_DEV_ENDPOINTS", "true")]);
    assert_eq!(
        c.get(by_env.url("/local/v1/outbox"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// `--tls-cert/--tls-key`: HTTPS on the host, no plain-HTTP warning.
async fn the_host_serves_https_with_a_certificate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let host = LocalHost::start_bound(
        backend,
        "0.0.0.0",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(host.base.starts_with("https://"));
    let pem = std::fs::read(&cert).unwrap();
    let tls = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let r = tls.get(host.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS port gets nowhere.
    let plain = host.base.replacen("https", "http", 1);
    assert!(
        client()
            .get(format!("{plain}/health"))
            .send()
            .await
            .is_err()
    );
    assert!(!host.stderr().contains("serving plain HTTP"));
    drop(host);
    // TLS ends at a named proxy: no warning either.
    let proxied =
        LocalHost::start_bound(backend, "0.0.0.0", &["--trusted-proxy", "127.0.0.1"], &[]);
    assert_eq!(
        client()
            .get(proxied.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        !proxied.stderr().contains("plain HTTP"),
        "{}",
        proxied.stderr()
    );
    let bad = hanul_e2e::start_fails(&[("HANUL_TRUSTED_PROXY", "not-an-ip")]);
    assert!(bad.contains("expected an IP address"), "{bad}");
}

/// A chat socket lives no longer than its session: signed out elsewhere,
/// it is told and closed.
async fn a_signed_out_session_loses_its_sockets(backend: Backend) {
    use futures_util::StreamExt;
    let host = LocalHost::start(backend);
    let session = sign_up(&host, "sol").await;
    let url = host
        .url(&format!(
            "/ws?token={}",
            session["accessToken"].as_str().unwrap()
        ))
        .replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let r = client()
        .post(host.url("/local/v1/sessions/sign-out"))
        .json(&json!({"refreshToken": session["refreshToken"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut told = false;
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                told |= text.contains("session_ended");
            }
        }
        told
    })
    .await;
    assert_eq!(ended, Ok(true), "told, then closed, within the recheck");
}

hanul_e2e::on_both_backends!(
    a_signed_out_session_loses_its_sockets,
    accounts_sign_up_in_refresh_out_and_change_password,
    wrong_and_unknown_answer_alike_and_bursts_are_limited,
    dev_endpoints_are_loopback_only_unless_turned_on,
    the_host_serves_https_with_a_certificate
);
