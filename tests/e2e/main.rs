//! End-to-end: real HTTP clients against the local host, on both backends.

mod chat;
mod feed;
mod gateway;
mod ids;
mod notify;
mod ratelimit;
mod shortener;
