//! Contract tests: every port, both adapters, the same assertions.

mod support;

mod cdn;
mod connections;
mod queue;
mod senders;
mod table;
