//! hanul: domain logic, ports and adapters shared by every function and host.

pub mod aws;
pub mod cdn;
pub mod chat;
pub mod embedded;
pub mod feed;
pub mod http;
pub mod ids;
pub mod media;
pub mod notify;
pub mod platform;
pub mod ports;
pub mod ratelimit;
pub mod settings;
pub mod shortener;
