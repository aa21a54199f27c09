//! Adapters on the AWS SDK. `AWS_ENDPOINT_URL` points every client at another
//! endpoint (a moto server in tests).

pub mod bootstrap;
pub mod cloudfront;
pub mod dynamodb;
pub mod sesv2;
pub mod sns;
pub mod sqs;

pub use cloudfront::CloudFrontCdn;
pub use dynamodb::DynamoTable;
pub use sesv2::SesEmail;
pub use sns::{SnsPush, SnsSms};
pub use sqs::SqsQueue;

/// The shared SDK configuration, read once from the environment.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// A configuration for an explicit endpoint (a moto server), with the dummy
/// credentials and region such a server accepts when none are set.
pub async fn endpoint_config(endpoint: &str) -> aws_config::SdkConfig {
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "hanul-endpoint",
        ))
        .load()
        .await
}
