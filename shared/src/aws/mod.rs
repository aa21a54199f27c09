//! Adapters on the AWS SDK. `AWS_ENDPOINT_URL` points every client at another
//! endpoint (a moto server in tests).

pub mod bootstrap;
pub mod dynamodb;
pub mod sqs;

pub use dynamodb::DynamoTable;
pub use sqs::SqsQueue;

/// The shared SDK configuration, read once from the environment.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
