//! Adapters on the AWS SDK. `AWS_ENDPOINT_URL` points every client at another
//! endpoint (a moto server in tests).

pub mod apigateway;
pub mod bootstrap;
pub mod cloudfront;
pub mod dynamodb;
pub mod s3;
pub mod sesv2;
pub mod sns;
pub mod sqs;

pub use apigateway::ManagementApiConnections;
pub use cloudfront::CloudFrontCdn;
pub use dynamodb::DynamoTable;
pub use s3::S3MediaStore;
pub use sesv2::SesEmail;
pub use sns::{SnsPush, SnsSms};
pub use sqs::SqsQueue;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;

/// The shared SDK configuration, read once from the environment. Its HTTPS
/// client sets up TLS (and loads the trust store) on the first AWS call, not
/// when a client is made: a cold start builds every client it may need, and
/// most requests need one or two services, some none.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(deferred_https_client());
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
        && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some()
    {
        // Lambda hands the role's credentials over in the environment, the
        // first place the default chain looks. Reading them directly skips
        // building the rest of the chain, whose web-identity provider alone
        // makes an STS client (a third of a cold start's instructions).
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    loader.load().await
}

/// The client the SDK would build by default (hyper, rustls on aws-lc, the
/// proxy settings of the environment), behind [`DeferredTls`].
fn deferred_https_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{Builder, ConnectorBuilder, tls};
    let inner = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    SharedHttpClient::new(DeferredTls(inner))
}

/// The SDK's default HTTPS client, less its eager check: the default client
/// builds a connector (loading the native trust store) when a service client
/// is constructed; this one builds it when the first request asks for it.
#[derive(Debug)]
struct DeferredTls(SharedHttpClient);

impl HttpClient for DeferredTls {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn validate_base_client_config(
        &self,
        _: &RuntimeComponentsBuilder,
        _: &ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        Ok(())
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.0.validate_final_config(components, cfg)
    }
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
