//! End-to-end: real HTTP clients against the local host, on both backends.

mod accounts;
mod chat;
mod feed;
mod gateway;
mod ids;
mod media;
mod notify;
mod ratelimit;
mod shortener;
