//! Chat's functions: the HTTP routes (each the caller's token), the
//! WebSocket routes (one function per route key), the `chat-deliver`
//! worker and the `chat-sweep` periodic function. The HTTP routes are
//! described in `chat.openapi.yaml`, the frames in the README.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hanul_shared::chat::{
    AddMembers, ChatService, Conversation, ConversationList, CreateConversation, EditMessage,
    History, HistoryQuery, ListQuery, Message, Mute, Presence, ReadMarker, ReadState, Rename,
    SendMessage, SyncPage, SyncQuery,
};
use hanul_shared::http::auth::Caller;
use hanul_shared::http::{ApiError, json_rejection, query_rejection};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};

use crate::routes::{
    self, Auth, Function, Periodic, SocketHandler, SocketReply, SocketRequest, SocketRoute,
    SqsHandler, Tick, Worker,
};

type Chat = State<Arc<ChatService>>;

macro_rules! chat_function {
    ($($args:tt)*) => {
        crate::routes::service_function!(chat, $($args)*)
    };
}

pub const CONVERSATIONS_CREATE: Function = chat_function!(
    "conversations-create",
    routes::post("/api/v1/me/conversations", Auth::Jwt),
    "/api/v1/me/conversations",
    post,
    create_conversation
);
pub const CONVERSATIONS_LIST: Function = chat_function!(
    "conversations-list",
    routes::get("/api/v1/me/conversations", Auth::Jwt),
    "/api/v1/me/conversations",
    get,
    list_conversations
);
pub const CONVERSATION_GET: Function = chat_function!(
    "conversation-get",
    routes::get("/api/v1/conversations/{conversationId}", Auth::Jwt),
    "/api/v1/conversations/{conversationId}",
    get,
    get_conversation
);
pub const CONVERSATION_UPDATE: Function = chat_function!(
    "conversation-update",
    routes::patch("/api/v1/conversations/{conversationId}", Auth::Jwt),
    "/api/v1/conversations/{conversationId}",
    patch,
    rename
);
pub const MEMBERS_ADD: Function = chat_function!(
    "members-add",
    routes::post("/api/v1/conversations/{conversationId}/members", Auth::Jwt),
    "/api/v1/conversations/{conversationId}/members",
    post,
    add_members
);
pub const MEMBERS_REMOVE: Function = chat_function!(
    "members-remove",
    routes::delete(
        "/api/v1/conversations/{conversationId}/members/{userId}",
        Auth::Jwt
    ),
    "/api/v1/conversations/{conversationId}/members/{userId}",
    delete,
    remove_member
);
pub const MESSAGES_LIST: Function = chat_function!(
    "messages-list",
    routes::get("/api/v1/conversations/{conversationId}/messages", Auth::Jwt),
    "/api/v1/conversations/{conversationId}/messages",
    get,
    history
);
pub const MESSAGES_SEND: Function = chat_function!(
    "messages-send",
    routes::post("/api/v1/conversations/{conversationId}/messages", Auth::Jwt),
    "/api/v1/conversations/{conversationId}/messages",
    post,
    send
);
pub const MESSAGES_EDIT: Function = chat_function!(
    "messages-edit",
    routes::patch(
        "/api/v1/conversations/{conversationId}/messages/{messageId}",
        Auth::Jwt
    ),
    "/api/v1/conversations/{conversationId}/messages/{messageId}",
    patch,
    edit
);
pub const MESSAGES_DELETE: Function = chat_function!(
    "messages-delete",
    routes::delete(
        "/api/v1/conversations/{conversationId}/messages/{messageId}",
        Auth::Jwt
    ),
    "/api/v1/conversations/{conversationId}/messages/{messageId}",
    delete,
    delete_message
);
pub const READ_PUT: Function = chat_function!(
    "read-put",
    routes::put("/api/v1/conversations/{conversationId}/read", Auth::Jwt),
    "/api/v1/conversations/{conversationId}/read",
    put,
    mark_read
);
pub const MUTE_PUT: Function = chat_function!(
    "mute-put",
    routes::put("/api/v1/me/conversations/{conversationId}/mute", Auth::Jwt),
    "/api/v1/me/conversations/{conversationId}/mute",
    put,
    mute
);
pub const SYNC_READ: Function = chat_function!(
    "sync-read",
    routes::get("/api/v1/me/messages", Auth::Jwt),
    "/api/v1/me/messages",
    get,
    sync
);
pub const PRESENCE_GET: Function = chat_function!(
    "presence-get",
    routes::get("/api/v1/users/{userId}/presence", Auth::Jwt),
    "/api/v1/users/{userId}/presence",
    get,
    presence
);

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(json_rejection)
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(query_rejection)
}

async fn create_conversation(
    State(chat): Chat,
    caller: Caller,
    request: Result<Json<CreateConversation>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (conversation, created) = chat
        .create_conversation(&caller.user_id, body(request)?)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(conversation)).into_response())
}

async fn list_conversations(
    State(chat): Chat,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConversationList>, ApiError> {
    Ok(Json(
        chat.list_conversations(&caller.user_id, query(q)?).await?,
    ))
}

async fn get_conversation(
    State(chat): Chat,
    caller: Caller,
    Path(cid): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(chat.get_conversation(&caller.user_id, &cid).await?))
}

async fn rename(
    State(chat): Chat,
    caller: Caller,
    Path(cid): Path<String>,
    request: Result<Json<Rename>, JsonRejection>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        chat.rename(&caller.user_id, &cid, body(request)?).await?,
    ))
}

async fn add_members(
    State(chat): Chat,
    caller: Caller,
    Path(cid): Path<String>,
    request: Result<Json<AddMembers>, JsonRejection>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        chat.add_members(&caller.user_id, &cid, body(request)?)
            .await?,
    ))
}

async fn remove_member(
    State(chat): Chat,
    caller: Caller,
    Path((cid, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    chat.remove_member(&caller.user_id, &cid, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn history(
    State(chat): Chat,
    caller: Caller,
    Path(cid): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    Ok(Json(chat.history(&caller.user_id, &cid, query(q)?).await?))
}

async fn send(
    State(chat): Chat,
    caller: Caller,
    Path(cid): Path<String>,
    request: Result<Json<SendMessage>, JsonRejection>,
) -> Result<Response, ApiError> {
    let sent = chat.send(&caller.user_id, &cid, body(request)?).await?;
    let status = if sent.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sent)).into_response())
}

async fn edit(
    State(chat): Chat,
    caller: Caller,
    Path((cid, id)): Path<(String, String)>,
    request: Result<Json<EditMessage>, JsonRejection>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(
        chat.edit(&caller.user_id, &cid, &id, body(request)?)
            .await?,
    ))
}

async fn delete_message(
    State(chat): Chat,
    caller: Caller,
    Path((cid, id)): Path<(String, String)>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(chat.delete(&caller.user_id, &cid, &id).await?))
}

async fn mark_read(
    State(chat): Chat,
    caller: Caller,
    Path(cid): Path<String>,
    request: Result<Json<ReadMarker>, JsonRejection>,
) -> Result<Json<ReadState>, ApiError> {
    let marker = body(request)?;
    Ok(Json(
        chat.mark_read(&caller.user_id, &cid, &marker.message_id)
            .await?,
    ))
}

async fn mute(
    State(chat): Chat,
    caller: Caller,
    Path(cid): Path<String>,
    request: Result<Json<Mute>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let muted = chat
        .mute(&caller.user_id, &cid, body(request)?.muted)
        .await?;
    Ok(Json(json!({ "conversationId": cid, "muted": muted })))
}

async fn sync(
    State(chat): Chat,
    caller: Caller,
    q: Result<Query<SyncQuery>, QueryRejection>,
) -> Result<Json<SyncPage>, ApiError> {
    Ok(Json(chat.sync(&caller.user_id, query(q)?).await?))
}

async fn presence(
    State(chat): Chat,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<Presence>, ApiError> {
    Ok(Json(chat.presence(&caller.user_id, &user).await?))
}

// WebSocket routes.

fn ok() -> SocketReply {
    SocketReply::status(200)
}

/// `$connect`: the token from the query string, verified here (WebSocket
/// APIs have no JWT authorizer); a bad one refuses the connection.
pub const SOCKET_CONNECT: SocketRoute = SocketRoute {
    name: "chat-connect",
    route_key: "$connect",
    build: |platform| {
        Box::pin(async move {
            let chat = platform.chat().await?;
            let verifier = platform.token_verifier()?;
            let handler: SocketHandler = Arc::new(move |request: SocketRequest| {
                let (chat, verifier) = (chat.clone(), verifier.clone());
                Box::pin(async move {
                    let Some(token) = request.token.as_deref().filter(|t| !t.is_empty()) else {
                        return SocketReply::refused(
                            401,
                            "unauthorized",
                            "a token is required: ?token=<JWT>",
                        );
                    };
                    let user = match verifier.user_of(token).await {
                        Ok(user) => user,
                        Err(e) => return SocketReply::refused(401, "unauthorized", &e.to_string()),
                    };
                    match chat.connect(&user, &request.connection_id).await {
                        Ok(()) => SocketReply {
                            user_id: Some(user),
                            ..ok()
                        },
                        Err(e) => {
                            let api = ApiError::from(e);
                            SocketReply::refused(api.status.as_u16(), api.code, &api.message)
                        }
                    }
                })
            });
            Ok(handler)
        })
    },
};

pub const SOCKET_DISCONNECT: SocketRoute = SocketRoute {
    name: "chat-disconnect",
    route_key: "$disconnect",
    build: |platform| {
        Box::pin(async move {
            let chat = platform.chat().await?;
            let handler: SocketHandler = Arc::new(move |request: SocketRequest| {
                let chat = chat.clone();
                Box::pin(async move {
                    if let Err(e) = chat
                        .disconnect(request.user_id.as_deref(), &request.connection_id)
                        .await
                    {
                        // Best effort: the sweeper removes what this left.
                        tracing::warn!(error = %e, "disconnect bookkeeping failed");
                    }
                    ok()
                })
            });
            Ok(handler)
        })
    },
};

/// A route that handles frames of a connection whose user is looked up.
macro_rules! frame_route {
    ($name:literal, $key:literal) => {
        SocketRoute {
            name: $name,
            route_key: $key,
            build: |platform| {
                Box::pin(async move {
                    let chat = platform.chat().await?;
                    let handler: SocketHandler = Arc::new(move |request: SocketRequest| {
                        let chat = chat.clone();
                        Box::pin(async move { frame(&chat, $key, request).await })
                    });
                    Ok(handler)
                })
            },
        }
    };
}

async fn frame(chat: &ChatService, route: &str, request: SocketRequest) -> SocketReply {
    let user = match &request.user_id {
        Some(u) => Some(u.clone()),
        None => match chat.connection_user(&request.connection_id).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the connection's user");
                return SocketReply::status(500);
            }
        },
    };
    let Some(user) = user else {
        // Swept or never recorded: the client reconnects.
        if let Err(e) = chat_close(chat, &request.connection_id).await {
            tracing::warn!(error = %e, "an unknown connection could not be closed");
        }
        return SocketReply::status(410);
    };
    chat.handle_frame(
        route,
        &user,
        &request.connection_id,
        request.body.as_deref().unwrap_or_default(),
    )
    .await;
    ok()
}

async fn chat_close(chat: &ChatService, connection_id: &str) -> Result<(), String> {
    chat.reply(
        "",
        connection_id,
        &hanul_shared::chat::socket::error_frame(
            "unknown_connection",
            "this connection is not registered; reconnect",
            None,
            None,
        ),
    )
    .await;
    Ok(())
}

pub const SOCKET_DEFAULT: SocketRoute = frame_route!("chat-default", "$default");
pub const SOCKET_SEND: SocketRoute = frame_route!("chat-send", "send");
pub const SOCKET_SYNC: SocketRoute = frame_route!("chat-sync", "sync");
pub const SOCKET_HEARTBEAT: SocketRoute = frame_route!("chat-heartbeat", "heartbeat");
pub const SOCKET_TYPING: SocketRoute = frame_route!("chat-typing", "typing");
pub const SOCKET_READ: SocketRoute = frame_route!("chat-read", "read");

/// The delivery worker. A FIFO queue: records come in order, per group;
/// the first failure stops the batch and reports it and every record
/// after it, so nothing of a conversation runs out of order.
pub const DELIVER_WORKER: Worker = Worker {
    name: "chat-deliver",
    queue: |platform| platform.chat_queue_spec(),
    build: |platform| {
        Box::pin(async move {
            let chat = platform.chat_with_push().await?;
            let handler: SqsHandler = Arc::new(move |event: LambdaEvent<SqsEvent>| {
                let chat = chat.clone();
                Box::pin(async move {
                    let mut failed = Vec::new();
                    for record in event.payload.records {
                        let id = record.message_id.clone().unwrap_or_default();
                        if !failed.is_empty() {
                            failed.push(id);
                            continue;
                        }
                        let body = record.body.as_deref().unwrap_or_default();
                        match chat.handle_job_message(body).await {
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(message_id = %id, error = %e, "delivery job failed");
                                failed.push(id);
                            }
                        }
                    }
                    Ok(crate::shortener::batch_failures(failed))
                })
            });
            Ok(handler)
        })
    },
};

/// Resends stranded delivery jobs and takes devices that missed two
/// heartbeats offline.
pub const SWEEPER: Periodic = Periodic {
    name: "chat-sweep",
    every: Duration::from_secs(60),
    local_every_var: "CHAT_SWEEP_INTERVAL_MS",
    build: |platform| {
        Box::pin(async move {
            let chat = platform.chat().await?;
            let tick: Tick = Arc::new(move || {
                let chat = chat.clone();
                Box::pin(async move {
                    chat.sweep()
                        .await
                        .map(|_| ())
                        .map_err(|e| lambda_runtime::Error::from(e.to_string()))
                })
            });
            Ok(tick)
        })
    },
};
