//! The local host's sign-up and sign-in routes (Cognito's on AWS).

pub mod service;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hanul_shared::http::auth::{TokenError, bearer};
use hanul_shared::http::{self, ApiError};
use serde::Deserialize;

pub use service::{AccountError, Accounts, Session};

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let message = e.to_string();
        match e {
            AccountError::InvalidUserName => ApiError::bad_request("invalid_user_name", message),
            AccountError::WeakPassword(_) => ApiError::bad_request("weak_password", message),
            AccountError::Taken => ApiError::new(StatusCode::CONFLICT, "user_name_taken", message),
            AccountError::InvalidCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", message)
            }
            AccountError::InvalidRefresh => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_refresh_token", message)
            }
            AccountError::RateLimited(secs) => ApiError {
                retry_after: Some(secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
            AccountError::Store(e) => {
                tracing::warn!(error = %e, "account store");
                ApiError::unavailable("accounts are unavailable; try again", 1)
            }
            AccountError::Unavailable(e) => {
                tracing::warn!(error = e, "sign-in limits");
                ApiError::unavailable("sign-in is unavailable; try again", 1)
            }
            AccountError::Internal(e) => {
                tracing::error!(error = e, "accounts");
                ApiError::internal()
            }
        }
    }
}

/// Who may say where a request came from: the peers named by
/// `--trusted-proxy`, whose `X-Forwarded-For` and `X-Forwarded-Proto` count.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpAddr>);

impl TrustedProxies {
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(
                part.parse::<IpAddr>()
                    .map_err(|_| format!("--trusted-proxy {part:?}: expected an IP address"))?,
            );
        }
        Ok(Self(out))
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.0.contains(&peer)
    }

    /// The client's address: the peer's, or the last hop a trusted proxy
    /// added.
    pub fn client_address(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusts(peer.ip())
            && let Some(hop) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|v| v.trim().parse::<IpAddr>().ok())
                .next_back()
        {
            return hop;
        }
        peer.ip()
    }
}

#[derive(Clone)]
struct AccountState {
    accounts: Arc<Accounts>,
    proxies: Arc<TrustedProxies>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Credentials {
    user_name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Tokens are never cached, by a browser or anything between.
fn tokens_response(status: StatusCode, session: Session) -> Response {
    let mut response = (status, Json(session)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn sign_up(
    State(state): State<AccountState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    let Json(c) = body.map_err(http::json_rejection)?;
    let address = state.proxies.client_address(peer, &headers).to_string();
    let session = state
        .accounts
        .sign_up(&c.user_name, &c.password, &address)
        .await?;
    Ok(tokens_response(StatusCode::CREATED, session))
}

async fn sign_in(
    State(state): State<AccountState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    let Json(c) = body.map_err(http::json_rejection)?;
    let address = state.proxies.client_address(peer, &headers).to_string();
    let session = state
        .accounts
        .sign_in(&c.user_name, &c.password, &address)
        .await?;
    Ok(tokens_response(StatusCode::OK, session))
}

async fn refresh(
    State(state): State<AccountState>,
    body: JsonBody<RefreshRequest>,
) -> Result<Response, ApiError> {
    let Json(r) = body.map_err(http::json_rejection)?;
    let session = state.accounts.refresh(&r.refresh_token).await?;
    Ok(tokens_response(StatusCode::OK, session))
}

async fn sign_out(
    State(state): State<AccountState>,
    body: JsonBody<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let Json(r) = body.map_err(http::json_rejection)?;
    state.accounts.sign_out(&r.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_password(
    State(state): State<AccountState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let token =
        bearer(&parts).ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
    let claims = state.accounts.verify(token).await.map_err(|e| match e {
        TokenError::Unavailable(m) => ApiError::unavailable(m, 1),
        e => ApiError::unauthorized(e.to_string()),
    })?;
    let user = claims
        .get("sub")
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("the token names no user"))?;
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::bad_request("invalid_body", "the body could not be read"))?;
    let change: PasswordChange = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid: {e}"))
    })?;
    let session = state
        .accounts
        .change_password(&user, &change.current_password, &change.new_password)
        .await?;
    Ok(tokens_response(StatusCode::OK, session))
}

/// `/local/v1/accounts`, `/local/v1/sessions[/refresh|/sign-out]`,
/// `/local/v1/me/password`.
pub fn router(accounts: Arc<Accounts>, proxies: Arc<TrustedProxies>) -> Router {
    Router::new()
        .route("/local/v1/accounts", post(sign_up))
        .route("/local/v1/sessions", post(sign_in))
        .route("/local/v1/sessions/refresh", post(refresh))
        .route("/local/v1/sessions/sign-out", post(sign_out))
        .route("/local/v1/me/password", post(change_password))
        .with_state(AccountState { accounts, proxies })
}
