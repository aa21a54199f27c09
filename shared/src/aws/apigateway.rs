//! `Connections` on the API Gateway management API of the WebSocket API:
//! `PostToConnection` and `DeleteConnection`. The client's endpoint is the
//! stage's `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_smithy_runtime_api::http::Response as HttpResponse;

use crate::ports::connections::{ConnectionError, Connections, validate_frame};

#[derive(Debug, Clone)]
pub struct ManagementApiConnections {
    client: Client,
}

impl ManagementApiConnections {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// `GoneException` (410) names a connection that is closed; everything else
/// is the service's trouble, retried by the caller.
fn map_error<E>(e: SdkError<E, HttpResponse>) -> ConnectionError
where
    E: aws_sdk_apigatewaymanagement::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let gone_status = matches!(&e, SdkError::ServiceError(se) if se.raw().status().as_u16() == 410);
    use aws_sdk_apigatewaymanagement::error::ProvideErrorMetadata;
    match e.code() {
        Some("GoneException") => ConnectionError::Gone,
        Some("PayloadTooLargeException") => {
            ConnectionError::Invalid("the frame is larger than API Gateway takes".into())
        }
        _ if gone_status => ConnectionError::Gone,
        _ => ConnectionError::Unavailable(
            aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
        ),
    }
}

#[async_trait]
impl Connections for ManagementApiConnections {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), ConnectionError> {
        validate_frame(frame)?;
        self.client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame.as_bytes().to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(map_error)
    }

    async fn close(&self, connection_id: &str) -> Result<(), ConnectionError> {
        match self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_error(e) {
                ConnectionError::Gone => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
    use aws_sdk_apigatewaymanagement::types::error::GoneException;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn service_error(err: PostToConnectionError, status: u16) -> ConnectionError {
        let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        map_error(SdkError::service_error(err, raw))
    }

    #[test]
    fn gone_exception_names_a_dead_connection() {
        let gone = PostToConnectionError::GoneException(GoneException::builder().build());
        assert_eq!(service_error(gone, 410), ConnectionError::Gone);
    }

    #[test]
    fn other_errors_are_the_service_being_unavailable() {
        let other = PostToConnectionError::unhandled("boom");
        assert!(matches!(
            service_error(other, 500),
            ConnectionError::Unavailable(_)
        ));
    }
}
