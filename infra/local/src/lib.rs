//! The local host: hanul's functions, gateway and queue workers in one process.

pub mod accounts;
pub mod faults;
pub mod lambda;
pub mod media;
pub mod outbox;
pub mod poller;
pub mod server;
pub mod sockets;
pub mod tls;
pub mod web;
