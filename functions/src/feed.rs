//! The news feed's functions: the follow graph, blocks, profiles, posts and
//! the feed read (each the caller's token), the fan-out worker and the
//! outbox sweeper. The HTTP routes are described in `feed.openapi.yaml`.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hanul_shared::feed::{
    CreatePost, FeedPage, FeedPost, FeedQuery, FeedService, FollowOutcome, ListQuery, Profile,
    PutProfile, UserList, UserProfile,
};
use hanul_shared::http::auth::Caller;
use hanul_shared::http::{ApiError, json_rejection, query_rejection};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};

use crate::routes::{self, Auth, Function, Periodic, SqsHandler, Tick, Worker};

type Feed = State<Arc<FeedService>>;

/// One function: its route and the handler, over the platform's feed.
macro_rules! feed_function {
    ($($args:tt)*) => {
        crate::routes::service_function!(feed, $($args)*)
    };
}

pub const FOLLOW_PUT: Function = feed_function!(
    "follow-put",
    routes::put("/api/v1/me/following/{userId}", Auth::Jwt),
    "/api/v1/me/following/{userId}",
    put,
    follow
);
pub const FOLLOW_DELETE: Function = feed_function!(
    "follow-delete",
    routes::delete("/api/v1/me/following/{userId}", Auth::Jwt),
    "/api/v1/me/following/{userId}",
    delete,
    unfollow
);
pub const FOLLOWING_LIST: Function = feed_function!(
    "following-list",
    routes::get("/api/v1/me/following", Auth::Jwt),
    "/api/v1/me/following",
    get,
    following
);
pub const FOLLOWERS_LIST: Function = feed_function!(
    "followers-list",
    routes::get("/api/v1/me/followers", Auth::Jwt),
    "/api/v1/me/followers",
    get,
    followers
);
pub const FRIENDS_LIST: Function = feed_function!(
    "friends-list",
    routes::get("/api/v1/me/friends", Auth::Jwt),
    "/api/v1/me/friends",
    get,
    friends
);
pub const PROFILE_GET: Function = feed_function!(
    "profile-get",
    routes::get("/api/v1/me/profile", Auth::Jwt),
    "/api/v1/me/profile",
    get,
    get_profile
);
pub const PROFILE_PUT: Function = feed_function!(
    "profile-put",
    routes::put("/api/v1/me/profile", Auth::Jwt),
    "/api/v1/me/profile",
    put,
    put_profile
);
pub const USERS_GET: Function = feed_function!(
    "users-get",
    routes::get("/api/v1/users/{userId}", Auth::Jwt),
    "/api/v1/users/{userId}",
    get,
    get_user
);
pub const POSTS_CREATE: Function = feed_function!(
    "posts-create",
    routes::post("/api/v1/me/posts", Auth::Jwt),
    "/api/v1/me/posts",
    post,
    create_post
);
pub const POSTS_GET: Function = feed_function!(
    "posts-get",
    routes::get("/api/v1/posts/{postId}", Auth::Jwt),
    "/api/v1/posts/{postId}",
    get,
    get_post
);
pub const POSTS_DELETE: Function = feed_function!(
    "posts-delete",
    routes::delete("/api/v1/me/posts/{postId}", Auth::Jwt),
    "/api/v1/me/posts/{postId}",
    delete,
    delete_post
);
pub const USER_POSTS: Function = feed_function!(
    "user-posts",
    routes::get("/api/v1/users/{userId}/posts", Auth::Jwt),
    "/api/v1/users/{userId}/posts",
    get,
    user_posts
);
pub const BLOCKS_PUT: Function = feed_function!(
    "blocks-put",
    routes::put("/api/v1/me/blocks/{userId}", Auth::Jwt),
    "/api/v1/me/blocks/{userId}",
    put,
    block
);
pub const BLOCKS_DELETE: Function = feed_function!(
    "blocks-delete",
    routes::delete("/api/v1/me/blocks/{userId}", Auth::Jwt),
    "/api/v1/me/blocks/{userId}",
    delete,
    unblock
);
pub const FEED_READ: Function = feed_function!(
    "feed-read",
    routes::get("/api/v1/me/feed", Auth::Jwt),
    "/api/v1/me/feed",
    get,
    read_feed
);

async fn follow(
    State(service): Feed,
    caller: Caller,
    Path(target): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = service.follow(&caller.user_id, &target).await?;
    Ok(Json(json!({
        "userId": target,
        "following": true,
        "created": outcome == FollowOutcome::Followed,
    })))
}

async fn unfollow(
    State(service): Feed,
    caller: Caller,
    Path(target): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = service.unfollow(&caller.user_id, &target).await?;
    Ok(Json(
        json!({ "userId": target, "following": false, "removed": removed }),
    ))
}

fn list_query(query: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, ApiError> {
    query.map(|Query(q)| q).map_err(query_rejection)
}

fn feed_query(query: Result<Query<FeedQuery>, QueryRejection>) -> Result<FeedQuery, ApiError> {
    query.map(|Query(q)| q).map_err(query_rejection)
}

async fn following(
    State(service): Feed,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(
        service
            .list_following(&caller.user_id, list_query(query)?)
            .await?,
    ))
}

async fn followers(
    State(service): Feed,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(
        service
            .list_followers(&caller.user_id, list_query(query)?)
            .await?,
    ))
}

async fn friends(
    State(service): Feed,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(
        service
            .list_friends(&caller.user_id, list_query(query)?)
            .await?,
    ))
}

async fn get_profile(State(service): Feed, caller: Caller) -> Result<Json<Profile>, ApiError> {
    Ok(Json(service.get_profile(&caller.user_id).await?))
}

async fn put_profile(
    State(service): Feed,
    caller: Caller,
    body: Result<Json<PutProfile>, JsonRejection>,
) -> Result<Json<Profile>, ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    Ok(Json(service.put_profile(&caller.user_id, request).await?))
}

async fn get_user(
    State(service): Feed,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<UserProfile>, ApiError> {
    Ok(Json(service.view_user(&caller.user_id, &user).await?))
}

async fn create_post(
    State(service): Feed,
    caller: Caller,
    body: Result<Json<CreatePost>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    let published = service.create_post(&caller.user_id, request).await?;
    let status = if published.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(published.post)).into_response())
}

async fn get_post(
    State(service): Feed,
    caller: Caller,
    Path(post_id): Path<String>,
) -> Result<Json<FeedPost>, ApiError> {
    Ok(Json(
        service.get_post(Some(&caller.user_id), &post_id).await?,
    ))
}

async fn delete_post(
    State(service): Feed,
    caller: Caller,
    Path(post_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.delete_post(&caller.user_id, &post_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_posts(
    State(service): Feed,
    caller: Caller,
    Path(author): Path<String>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<FeedPage>, ApiError> {
    Ok(Json(
        service
            .list_user_posts(Some(&caller.user_id), &author, feed_query(query)?)
            .await?,
    ))
}

async fn block(
    State(service): Feed,
    caller: Caller,
    Path(target): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let created = service.block(&caller.user_id, &target).await?;
    Ok(Json(
        json!({ "userId": target, "blocked": true, "created": created }),
    ))
}

async fn unblock(
    State(service): Feed,
    caller: Caller,
    Path(target): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = service.unblock(&caller.user_id, &target).await?;
    Ok(Json(
        json!({ "userId": target, "blocked": false, "removed": removed }),
    ))
}

async fn read_feed(
    State(service): Feed,
    caller: Caller,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<FeedPage>, ApiError> {
    Ok(Json(
        service
            .read_feed(&caller.user_id, feed_query(query)?)
            .await?,
    ))
}

/// The fan-out worker. A standard queue: messages are independent jobs, run
/// concurrently; a job that fails (a bad body, a store error) is reported
/// alone, so SQS retries it and, after `maxReceiveCount`, parks it in the DLQ.
pub const FANOUT_WORKER: Worker = Worker {
    name: "feed-fanout",
    queue: |platform| platform.feed_queue_spec(),
    build: |platform| {
        Box::pin(async move {
            let service = platform.feed().await?;
            let handler: SqsHandler = Arc::new(move |event: LambdaEvent<SqsEvent>| {
                let service = service.clone();
                Box::pin(async move {
                    let outcomes = futures_util::future::join_all(
                        event.payload.records.into_iter().map(|record| {
                            let service = service.clone();
                            async move {
                                let id = record.message_id.clone().unwrap_or_default();
                                let body = record.body.as_deref().unwrap_or_default();
                                match service.handle_fanout_message(body).await {
                                    Ok(_) => None,
                                    Err(e) => {
                                        tracing::warn!(message_id = %id, error = %e, "fan-out job failed");
                                        Some(id)
                                    }
                                }
                            }
                        }),
                    )
                    .await;
                    Ok(crate::shortener::batch_failures(
                        outcomes.into_iter().flatten().collect(),
                    ))
                })
            });
            Ok(handler)
        })
    },
};

/// Re-sends fan-out jobs whose publish could not queue them (the outbox
/// items the post's transaction wrote), so no accepted post is stranded.
pub const OUTBOX_SWEEPER: Periodic = Periodic {
    name: "feed-outbox",
    every: Duration::from_secs(60),
    local_every_var: "FEED_OUTBOX_INTERVAL_MS",
    build: |platform| {
        Box::pin(async move {
            let service = platform.feed().await?;
            let tick: Tick = Arc::new(move || {
                let service = service.clone();
                Box::pin(async move {
                    service
                        .sweep_outbox()
                        .await
                        .map(|_| ())
                        .map_err(|e| lambda_runtime::Error::from(e.to_string()))
                })
            });
            Ok(tick)
        })
    },
};
