//! `Cdn` on CloudFront: one invalidation per call.

use async_trait::async_trait;
use aws_sdk_cloudfront::Client;
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};

use crate::ports::cdn::{Cdn, CdnError, validate_paths};

#[derive(Debug, Clone)]
pub struct CloudFrontCdn {
    client: Client,
    distribution_id: String,
}

impl CloudFrontCdn {
    pub fn new(client: Client, distribution_id: impl Into<String>) -> Self {
        Self {
            client,
            distribution_id: distribution_id.into(),
        }
    }

    pub fn distribution_id(&self) -> &str {
        &self.distribution_id
    }
}

#[async_trait]
impl Cdn for CloudFrontCdn {
    async fn invalidate(&self, paths: &[String]) -> Result<String, CdnError> {
        validate_paths(paths)?;
        let invalid = |e: aws_sdk_cloudfront::error::BuildError| CdnError::Invalid(e.to_string());
        let batch = InvalidationBatch::builder()
            .caller_reference(uuid::Uuid::new_v4().simple().to_string())
            .paths(
                Paths::builder()
                    .quantity(paths.len() as i32)
                    .set_items(Some(paths.to_vec()))
                    .build()
                    .map_err(invalid)?,
            )
            .build()
            .map_err(invalid)?;
        let out = self
            .client
            .create_invalidation()
            .distribution_id(&self.distribution_id)
            .invalidation_batch(batch)
            .send()
            .await
            .map_err(|e| {
                CdnError::Unavailable(aws_sdk_cloudfront::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(out
            .invalidation()
            .map(|i| i.id().to_owned())
            .unwrap_or_default())
    }
}
