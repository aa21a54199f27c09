//! The web client (`web/` at the top of the repository): plain ES modules,
//! no build step. The local host serves it at `/`; on AWS the same files
//! sit in S3 behind CloudFront (`hanul-local web build` / `web publish`).
//!
//! Assets live under `/app/<version>/`, where the version is a digest of
//! every file: those URLs never change content, so they are cached for a
//! year (`immutable`), and a new client is a new version. `index.html` and
//! `config.json` are the only mutable files and are never cached stale.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hanul_shared::http::ApiError;
use sha2::{Digest, Sha256};

pub mod publish;

/// Every file of the client, embedded at build time. A test keeps this
/// list equal to the contents of `web/`.
pub const FILES: &[(&str, &[u8])] = &[
    ("app.css", include_bytes!("../../../../web/app.css")),
    ("icon.svg", include_bytes!("../../../../web/icon.svg")),
    ("js/api.js", include_bytes!("../../../../web/js/api.js")),
    ("js/auth.js", include_bytes!("../../../../web/js/auth.js")),
    ("js/chat.js", include_bytes!("../../../../web/js/chat.js")),
    ("js/feed.js", include_bytes!("../../../../web/js/feed.js")),
    ("js/links.js", include_bytes!("../../../../web/js/links.js")),
    ("js/main.js", include_bytes!("../../../../web/js/main.js")),
    ("js/media.js", include_bytes!("../../../../web/js/media.js")),
    (
        "js/people.js",
        include_bytes!("../../../../web/js/people.js"),
    ),
    (
        "js/settings.js",
        include_bytes!("../../../../web/js/settings.js"),
    ),
    (
        "js/socket.js",
        include_bytes!("../../../../web/js/socket.js"),
    ),
    ("js/ui.js", include_bytes!("../../../../web/js/ui.js")),
];

const INDEX: &str = include_str!("../../../../web/index.html");

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Revalidated on every load, so a new version shows at once.
pub const REVALIDATE: &str = "no-cache";

/// The client at one version.
#[derive(Debug, Clone)]
pub struct WebClient {
    pub version: String,
    index: String,
}

impl Default for WebClient {
    fn default() -> Self {
        Self::new()
    }
}

impl WebClient {
    pub fn new() -> Self {
        let mut digest = Sha256::new();
        for (path, bytes) in FILES {
            digest.update((path.len() as u64).to_le_bytes());
            digest.update(path.as_bytes());
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        }
        digest.update(INDEX.as_bytes());
        let version = hex::encode(&digest.finalize()[..6]);
        let index = INDEX.replace("{{ASSETS}}", &format!("/app/{version}"));
        Self { version, index }
    }

    pub fn index(&self) -> &str {
        &self.index
    }

    /// The file at `path` of this version.
    pub fn asset(&self, version: &str, path: &str) -> Option<&'static [u8]> {
        if version != self.version {
            return None;
        }
        FILES.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
    }

    /// The objects a static host serves (S3 keys under `app/`), assets
    /// first: uploaded in this order, a new `index.html` never names an
    /// asset that is not there yet.
    pub fn objects(&self, config_json: &str) -> Vec<WebObject> {
        let mut out: Vec<WebObject> = FILES
            .iter()
            .map(|(path, bytes)| WebObject {
                key: format!("app/{}/{path}", self.version),
                body: bytes.to_vec(),
                content_type: content_type(path),
                cache_control: IMMUTABLE,
            })
            .collect();
        out.push(WebObject {
            key: "app/config.json".into(),
            body: config_json.as_bytes().to_vec(),
            content_type: content_type("config.json"),
            cache_control: REVALIDATE,
        });
        out.push(WebObject {
            key: "app/index.html".into(),
            body: self.index.as_bytes().to_vec(),
            content_type: content_type("index.html"),
            cache_control: REVALIDATE,
        });
        out
    }
}

/// One file as a static host keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebObject {
    pub key: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// The client's settings: how it signs people in and where the chat
/// socket is. Locally: the host's own accounts, `/ws` on the same origin.
pub fn local_config(version: &str) -> String {
    serde_json::json!({
        "version": version,
        "apiBase": "",
        "socketUrl": null,
        "auth": { "kind": "local" },
    })
    .to_string()
}

/// The settings for the client on AWS: the Cognito app client and the
/// WebSocket API's URL (`wss://<api>.execute-api.<region>.amazonaws.com/v1`).
pub fn cognito_config(version: &str, region: &str, client_id: &str, socket_url: &str) -> String {
    serde_json::json!({
        "version": version,
        "apiBase": "",
        "socketUrl": socket_url,
        "auth": { "kind": "cognito", "region": region, "clientId": client_id },
    })
    .to_string()
}

/// A Content-Security-Policy that lets the page load code only from its
/// own origin and talk only to `connect` (the API, the socket, uploads)
/// and show media only from `media`, besides its own origin.
pub fn content_security_policy(connect: &[String], media: &[String]) -> String {
    let join = |extra: &[String]| {
        extra
            .iter()
            .map(|o| format!(" {o}"))
            .collect::<Vec<_>>()
            .join("")
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{media}; \
         media-src 'self' blob:{media}; connect-src 'self'{connect}; font-src 'self'; manifest-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
        media = join(media),
        connect = join(connect),
    )
}

/// What the local host serves the client with.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub client: Arc<WebClient>,
    /// `scheme://host[:port]` people reach the host at; a page asked for
    /// under another name (`localhost` for `127.0.0.1`) is sent there, so
    /// media URLs, uploads and the socket are all one origin.
    pub canonical: Option<String>,
    pub csp: String,
    pub config_json: String,
}

#[derive(Clone)]
struct Web {
    client: Arc<WebClient>,
    settings: Arc<WebSettings>,
}

/// `/`, `/app/`, `/app/index.html`, `/app/config.json`, `/app/<version>/…`.
pub fn router(settings: WebSettings) -> Router {
    let state = Web {
        client: settings.client.clone(),
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/", get(index))
        .route("/app", get(index))
        .route("/app/", get(index))
        .route("/app/index.html", get(index))
        .route("/app/config.json", get(config))
        .route("/app/{version}/{*path}", get(asset))
        .with_state(state)
}

fn secured(mut response: Response, web: &Web) -> Response {
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&web.settings.csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    response
}

async fn index(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Some(canonical) = &web.settings.canonical {
        let authority = canonical.split("://").nth(1).unwrap_or_default();
        let asked = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !asked.is_empty() && !asked.eq_ignore_ascii_case(authority) {
            // Temporary and not cached: a browser would keep a 308 for
            // this name forever, whatever runs on it later.
            let to = format!("{canonical}/");
            if let Ok(location) = HeaderValue::from_str(&to) {
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [
                        (header::LOCATION, location),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    ],
                )
                    .into_response();
            }
        }
    }
    let response = (
        [
            (header::CONTENT_TYPE, content_type("index.html")),
            (header::CACHE_CONTROL, REVALIDATE),
        ],
        web.client.index().to_owned(),
    )
        .into_response();
    secured(response, &web)
}

async fn config(State(web): State<Web>) -> Response {
    let response = (
        [
            (header::CONTENT_TYPE, content_type("config.json")),
            (header::CACHE_CONTROL, REVALIDATE),
        ],
        web.settings.config_json.clone(),
    )
        .into_response();
    secured(response, &web)
}

async fn asset(State(web): State<Web>, Path((version, path)): Path<(String, String)>) -> Response {
    match web.client.asset(&version, &path) {
        Some(bytes) => {
            let response = (
                [
                    (header::CONTENT_TYPE, content_type(&path)),
                    (header::CACHE_CONTROL, IMMUTABLE),
                ],
                bytes,
            )
                .into_response();
            secured(response, &web)
        }
        // Another version (a page open across an upgrade reloads) or no
        // such file.
        None => {
            let mut response =
                ApiError::not_found(format!("no {path} in client version {version}"))
                    .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `FILES` holds exactly what `web/` holds (besides index.html).
    #[test]
    fn every_file_of_the_client_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    if rel != "index.html" {
                        on_disk.push(rel);
                    }
                }
            }
        }
        on_disk.sort();
        let embedded: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        assert_eq!(on_disk, embedded, "web/ and web::FILES differ");
    }

    #[test]
    fn the_index_names_this_versions_assets() {
        let client = WebClient::new();
        assert_eq!(client.version.len(), 12);
        assert!(!client.index().contains("{{"));
        assert!(
            client
                .index()
                .contains(&format!("/app/{}/js/main.js", client.version))
        );
        assert!(client.asset(&client.version, "js/main.js").is_some());
        assert!(client.asset("000000000000", "js/main.js").is_none());
        assert!(client.asset(&client.version, "../Cargo.toml").is_none());
    }

    #[test]
    fn objects_put_assets_before_the_index() {
        let client = WebClient::new();
        let objects = client.objects("{}");
        assert_eq!(objects.len(), FILES.len() + 2);
        assert_eq!(
            objects.last().map(|o| o.key.as_str()),
            Some("app/index.html")
        );
        for o in &objects[..FILES.len()] {
            assert!(
                o.key.starts_with(&format!("app/{}/", client.version)),
                "{}",
                o.key
            );
            assert_eq!(o.cache_control, IMMUTABLE);
        }
        let js = objects.iter().find(|o| o.key.ends_with("main.js")).unwrap();
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
    }

    #[test]
    fn the_policy_names_only_the_given_origins() {
        let csp =
            content_security_policy(&["wss://x.example".into()], &["https://cdn.example".into()]);
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("connect-src 'self' wss://x.example;"));
        assert!(csp.contains("img-src 'self' data: blob: https://cdn.example;"));
        assert!(!csp.contains("unsafe"));
    }
}
