//! `Connections`: a frame posted to a connection reaches it; closing ends
//! it; an oversize frame is refused before it leaves. Locally the host's
//! sockets (with Gone for a closed one); on AWS the management API (moto
//! answers only on an endpoint without a stage path, accepts every
//! connection id and never says Gone: Gone is proven by the embedded
//! adapter and by the SDK error mapping's unit test).

use std::sync::Arc;

use hanul_shared::aws::ManagementApiConnections;
use hanul_shared::embedded::{LocalSockets, SocketFrame};
use hanul_shared::ports::connections::MAX_FRAME_BYTES;
use hanul_shared::ports::{ConnectionError, Connections};

use crate::support::{moto, unique};

/// What both adapters must do.
async fn contract(connections: &dyn Connections, id: &str) {
    connections.post(id, r#"{"type":"hello"}"#).await.unwrap();
    let big = "x".repeat(MAX_FRAME_BYTES + 1);
    assert!(matches!(
        connections.post(id, &big).await,
        Err(ConnectionError::Invalid(_))
    ));
    assert!(matches!(
        connections.post(id, "").await,
        Err(ConnectionError::Invalid(_))
    ));
    connections.close(id).await.unwrap();
    // Closing what is closed is not an error.
    connections.close(id).await.unwrap();
}

#[tokio::test]
async fn embedded_posts_reach_the_socket_and_a_closed_one_is_gone() {
    let sockets = LocalSockets::new();
    let id = unique("conn");
    let mut rx = sockets.register(&id);
    contract(sockets.as_ref(), &id).await;
    assert_eq!(
        rx.recv().await,
        Some(SocketFrame::Text(r#"{"type":"hello"}"#.into()))
    );
    assert_eq!(rx.recv().await, Some(SocketFrame::Close));
    assert_eq!(sockets.post(&id, "after").await, Err(ConnectionError::Gone));
    assert_eq!(
        sockets.post("never-registered", "x").await,
        Err(ConnectionError::Gone)
    );
}

#[tokio::test]
async fn aws_posts_through_the_management_api() {
    let config = moto().await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let client = aws_sdk_apigatewaymanagement::Client::from_conf(
        aws_sdk_apigatewaymanagement::config::Builder::from(&config)
            .endpoint_url(endpoint)
            .build(),
    );
    let connections: Arc<dyn Connections> = Arc::new(ManagementApiConnections::new(client));
    contract(connections.as_ref(), &unique("conn")).await;
}
