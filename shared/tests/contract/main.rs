//! Contract tests: every port, both adapters, the same assertions.

mod support;

mod queue;
mod table;
