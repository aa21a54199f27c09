//! Contract tests: every port, both adapters, the same assertions.

mod support;

mod cdn;
mod queue;
mod senders;
mod table;
