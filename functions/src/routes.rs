//! The route table, once (DESIGN rule 4). template.yaml declares the same
//! functions and routes; `tests/route_parity.rs` proves the two agree.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use hanul_shared::platform::{ConfigError, Platform};

/// Whether API Gateway's JWT authorizer guards the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Public: the gateway checks no token and the handler sees no caller.
    None,
    /// A valid token is required; the handler reads the caller's claims.
    Jwt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// In API Gateway's syntax, which axum shares: `/api/v1/ids/{id}`.
    pub path: &'static str,
    pub auth: Auth,
}

pub type BuildFuture = Pin<Box<dyn Future<Output = Result<Router, ConfigError>> + Send>>;

/// One Lambda function: its binary name, its routes and how to build it.
pub struct Function {
    /// The binary (`functions/src/bin/<name>.rs`) and `BuildProperties.Binary`.
    pub name: &'static str,
    pub routes: &'static [Route],
    pub build: fn(Arc<Platform>) -> BuildFuture,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .finish()
    }
}

pub const fn get(path: &'static str, auth: Auth) -> Route {
    Route {
        method: Method::GET,
        path,
        auth,
    }
}

pub static FUNCTIONS: &[Function] = &[
    crate::health::HEALTH,
    crate::ids::IDS_GENERATE,
    crate::ids::IDS_DECODE,
];

pub fn find(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}
