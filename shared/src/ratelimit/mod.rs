//! Distributed rate limiting: pure algorithms, rules from YAML, state in the
//! `Table` port, a circuit breaker and an in-process fallback.

pub mod algorithm;
pub mod limiter;
pub mod rules;

pub use algorithm::{Algorithm, Decision, Limit, State};
pub use limiter::{Identity, LimiterConfig, Outcome, RateLimiter, Source, Unavailable, Verdict};
pub use rules::{DEFAULT_RULES, DEFAULT_RULES_JSON, KeySource, OnStoreError, Rule, RuleSet};
