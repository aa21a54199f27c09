//! The load run's baseline: a plain axum "hello" server on the same runtime
//! settings as the local host, so `infra/scripts/load.sh` can express the local
//! host's throughput as a share of what this machine does with no work at all.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3999".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let app = axum::Router::new().route("/{code}", axum::routing::get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
