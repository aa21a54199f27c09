//! hanul's Lambda handlers. Each function is a small axum router over one
//! service; `routes::FUNCTIONS` is the single route table both hosts use.

pub mod chat;
pub mod feed;
pub mod health;
pub mod ids;
pub mod media;
pub mod notify;
pub mod ratelimit;
pub mod routes;
pub mod runtime;
pub mod shortener;

pub use routes::{
    Auth, FUNCTIONS, Function, PERIODIC, Periodic, Route, SOCKETS, SocketHandler, SocketReply,
    SocketRequest, SocketRoute, SqsHandler, WORKERS, Worker,
};
