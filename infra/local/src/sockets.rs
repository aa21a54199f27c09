//! `GET /ws?token=`: the local host's WebSocket endpoint, in API Gateway's
//! place. Each socket gets a connection id and a place in `LocalSockets`
//! (what the `Connections` port posts to); `$connect` runs before the
//! upgrade (a refusal is an HTTP answer, as on AWS), every text frame goes
//! to the function of the route its `action` selects, `$disconnect` runs
//! when the socket ends. Frames of one socket are handled in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use hanul_functions::{SOCKETS, SocketHandler, SocketRequest};
use hanul_shared::chat::socket::{MAX_INCOMING_FRAME, error_frame, route_of};
use hanul_shared::embedded::{LocalSockets, SocketFrame};
use hanul_shared::http::ApiError;
use hanul_shared::platform::{ConfigError, Platform};
use hanul_shared::ports::Connections;

use crate::accounts::Accounts;

/// Sockets open at once (`CHAT_MAX_CONNECTIONS`); each holds a file
/// descriptor and a few KB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

#[derive(Clone)]
struct Hub(Arc<HubInner>);

struct HubInner {
    sockets: Arc<LocalSockets>,
    routes: HashMap<&'static str, SocketHandler>,
    open: AtomicUsize,
    max: usize,
    /// Checks that a socket's session is still signed in.
    accounts: Option<Arc<Accounts>>,
}

/// How often an open socket's session is checked again: a sign-out or a
/// password change closes the user's sockets within this.
const SESSION_RECHECK: Duration = Duration::from_secs(10);

/// The `/ws` router over the platform's socket functions; the platform
/// posts to these sockets from then on.
pub async fn router(
    platform: &Arc<Platform>,
    accounts: Option<Arc<Accounts>>,
) -> Result<Router, ConfigError> {
    let sockets = LocalSockets::new();
    platform.set_connections(sockets.clone() as Arc<dyn Connections>)?;
    let mut routes = HashMap::new();
    for socket in SOCKETS {
        routes.insert(socket.route_key, (socket.build)(platform.clone()).await?);
    }
    let max = match platform.setting("CHAT_MAX_CONNECTIONS") {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                ConfigError(format!(
                    "CHAT_MAX_CONNECTIONS={raw:?}: expected a whole number from 1 to 1000000"
                ))
            })?,
    };
    let hub = Hub(Arc::new(HubInner {
        sockets,
        routes,
        open: AtomicUsize::new(0),
        max,
        accounts,
    }));
    Ok(Router::new().route("/ws", get(upgrade)).with_state(hub))
}

async fn upgrade(
    State(hub): State<Hub>,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::bad_request("not_a_websocket", e.body_text()).into_response();
        }
    };
    if hub.0.open.load(Ordering::Relaxed) >= hub.0.max {
        return ApiError::unavailable("the host holds as many sockets as it allows", 5)
            .into_response();
    }
    let connection_id = uuid::Uuid::new_v4().simple().to_string();
    // Registered before `$connect`, so the greeting it queues finds the socket.
    let outgoing = hub.0.sockets.register(&connection_id);
    let Some(connect) = hub.0.routes.get("$connect") else {
        return ApiError::internal().into_response();
    };
    let reply = connect(SocketRequest {
        route_key: "$connect".into(),
        connection_id: connection_id.clone(),
        token: query.get("token").cloned(),
        ..SocketRequest::default()
    })
    .await;
    let user = match (reply.status, reply.user_id) {
        (200, Some(user)) => user,
        (status, _) => {
            hub.0.sockets.unregister(&connection_id);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            let body = reply.body.unwrap_or_default();
            return (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    // An account's token names its session; a development token has none.
    let session = match (&hub.0.accounts, query.get("token")) {
        (Some(accounts), Some(token)) => accounts
            .tokens()
            .verify(token)
            .ok()
            .and_then(|claims| claims.get("sid").cloned())
            .map(|sid| (accounts.clone(), sid)),
        _ => None,
    };
    hub.0.open.fetch_add(1, Ordering::Relaxed);
    // tungstenite reads into a 128 KiB buffer by default: most of an idle
    // socket's memory. Frames are at most 32 KiB, so 8 KiB reads suffice.
    ws.max_message_size(4 * MAX_INCOMING_FRAME)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(hub, socket, connection_id, user, session, outgoing))
}

async fn serve(
    hub: Hub,
    socket: WebSocket,
    connection_id: String,
    user: String,
    session: Option<(Arc<Accounts>, String)>,
    mut outgoing: tokio::sync::mpsc::Receiver<SocketFrame>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            let message = match frame {
                SocketFrame::Text(text) => Message::Text(text.into()),
                SocketFrame::Close => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut recheck = tokio::time::interval(SESSION_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await;
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = recheck.tick(), if session.is_some() => {
                if let Some((accounts, sid)) = &session
                    && matches!(accounts.session_is_live(&user, sid).await, Ok(false))
                {
                    let frame = error_frame("session_ended", "signed out: sign in again", None, None);
                    let _ = hub.0.sockets.post(&connection_id, &frame).await;
                    let _ = hub.0.sockets.close(&connection_id).await;
                    // Let the writer send both before the socket goes.
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
                    break;
                }
                continue;
            }
        };
        let Some(Ok(message)) = message else {
            break;
        };
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(_) => {
                let frame = error_frame("bad_frame", "frames are JSON text frames", None, None);
                let _ = hub.0.sockets.post(&connection_id, &frame).await;
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if text.len() > MAX_INCOMING_FRAME {
            let frame = error_frame(
                "frame_too_large",
                &format!("a frame is at most {MAX_INCOMING_FRAME} bytes"),
                None,
                None,
            );
            let _ = hub.0.sockets.post(&connection_id, &frame).await;
            continue;
        }
        let route = route_of(&text);
        let Some(handler) = hub.0.routes.get(route) else {
            continue;
        };
        handler(SocketRequest {
            route_key: route.into(),
            connection_id: connection_id.clone(),
            body: Some(text),
            token: None,
            user_id: Some(user.clone()),
        })
        .await;
        if writer.is_finished() {
            // The writer gave up (the socket was closed or fell behind).
            break;
        }
    }
    hub.0.sockets.unregister(&connection_id);
    writer.abort();
    if let Some(disconnect) = hub.0.routes.get("$disconnect") {
        disconnect(SocketRequest {
            route_key: "$disconnect".into(),
            connection_id,
            user_id: Some(user),
            ..SocketRequest::default()
        })
        .await;
    }
    hub.0.open.fetch_sub(1, Ordering::Relaxed);
}
