//! Creates tables and queues that do not exist yet. On AWS, template.yaml
//! owns every resource; this is for a moto server or a scratch account.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::ports::QueueSpec;
use crate::ports::table::{PK, SK, TTL};

#[derive(Debug, thiserror::Error)]
#[error("cannot create {what}: {message}")]
pub struct BootstrapError {
    pub what: String,
    pub message: String,
}

fn failed(what: &str, e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// Creates a `pk`/`sk` table with TTL on `ttl`, unless it exists.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), BootstrapError> {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| failed(name, e))
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(|e| failed(name, e))
    };
    let created = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(failed(name, DisplayErrorContext(&e))),
    }
    // Real DynamoDB takes TTL settings only once the table is ACTIVE.
    for _ in 0..120 {
        let status = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| failed(name, DisplayErrorContext(&e)))?
            .table
            .and_then(|t| t.table_status);
        if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let ttl = client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL)
                .enabled(true)
                .build()
                .map_err(|e| failed(name, e))?,
        )
        .send()
        .await;
    match ttl {
        Ok(_) => Ok(()),
        // "TimeToLive is already enabled": an existing table, already set up.
        Err(e) if e.code() == Some("ValidationException") => Ok(()),
        Err(e) => Err(failed(name, DisplayErrorContext(&e))),
    }
}

/// Creates the queue (and its dead-letter queue first) and returns its URL.
pub async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    spec: &QueueSpec,
    physical_name: &str,
    dead_letter_arn: Option<&str>,
) -> Result<String, BootstrapError> {
    let mut attributes = HashMap::from([(
        QueueAttributeName::VisibilityTimeout,
        spec.visibility_timeout.as_secs().to_string(),
    )]);
    if !spec.delay.is_zero() {
        attributes.insert(
            QueueAttributeName::DelaySeconds,
            spec.delay.as_secs().to_string(),
        );
    }
    if spec.fifo() {
        attributes.insert(QueueAttributeName::FifoQueue, "true".into());
    }
    if let Some(arn) = dead_letter_arn {
        attributes.insert(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({
                "deadLetterTargetArn": arn,
                "maxReceiveCount": spec.max_receive_count,
            })
            .to_string(),
        );
    }
    let created = client
        .create_queue()
        .queue_name(physical_name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await;
    let url = match created {
        Ok(out) => out.queue_url,
        // Made earlier with other settings (say a new NOTIFY_MAX_ATTEMPTS):
        // bring it to these. FIFO-ness cannot change, and need not.
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_queue_name_exists()) =>
        {
            let url = client
                .get_queue_url()
                .queue_name(physical_name)
                .send()
                .await
                .map_err(|e| failed(physical_name, aws_sdk_sqs::error::DisplayErrorContext(&e)))?
                .queue_url;
            attributes.remove(&QueueAttributeName::FifoQueue);
            client
                .set_queue_attributes()
                .set_queue_url(url.clone())
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| failed(physical_name, aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
            url
        }
        Err(e) => {
            return Err(failed(
                physical_name,
                aws_sdk_sqs::error::DisplayErrorContext(&e),
            ));
        }
    };
    url.ok_or_else(|| failed(physical_name, "no queue URL in the answer"))
}

/// Finds the distribution whose comment is `name`, or creates one (an origin
/// that serves nothing: on moto only its invalidations matter). Returns its id.
pub async fn ensure_distribution(
    client: &aws_sdk_cloudfront::Client,
    name: &str,
) -> Result<String, BootstrapError> {
    use aws_sdk_cloudfront::types::{
        CustomOriginConfig, DefaultCacheBehavior, DistributionConfig, Origin, OriginProtocolPolicy,
        Origins, ViewerProtocolPolicy,
    };
    let what = format!("distribution {name}");
    let list = client
        .list_distributions()
        .send()
        .await
        .map_err(|e| failed(&what, aws_sdk_cloudfront::error::DisplayErrorContext(e)))?;
    if let Some(found) = list
        .distribution_list()
        .map(|l| l.items())
        .unwrap_or_default()
        .iter()
        .find(|d| d.comment() == name)
    {
        return Ok(found.id().to_owned());
    }
    let origin = Origin::builder()
        .id("api")
        .domain_name("origin.invalid")
        .custom_origin_config(
            CustomOriginConfig::builder()
                .http_port(80)
                .https_port(443)
                .origin_protocol_policy(OriginProtocolPolicy::HttpsOnly)
                .build()
                .map_err(|e| failed(&what, e))?,
        )
        .build()
        .map_err(|e| failed(&what, e))?;
    let config = DistributionConfig::builder()
        .caller_reference(name)
        .comment(name)
        .enabled(true)
        .origins(
            Origins::builder()
                .quantity(1)
                .items(origin)
                .build()
                .map_err(|e| failed(&what, e))?,
        )
        .default_cache_behavior(
            DefaultCacheBehavior::builder()
                .target_origin_id("api")
                .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
                .cache_policy_id("4135ea2d-6df8-44a3-9df3-4b5a84be39ad")
                .build()
                .map_err(|e| failed(&what, e))?,
        )
        .build()
        .map_err(|e| failed(&what, e))?;
    let created = match client
        .create_distribution()
        .distribution_config(config)
        .send()
        .await
    {
        Ok(created) => created,
        // Our caller reference is the name: it exists, though the listing
        // (moto's has no comments) did not show it. Find it by reference.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_distribution_already_exists()) =>
        {
            for summary in list
                .distribution_list()
                .map(|l| l.items())
                .unwrap_or_default()
            {
                let config = client
                    .get_distribution_config()
                    .id(summary.id())
                    .send()
                    .await
                    .map_err(|e| {
                        failed(&what, aws_sdk_cloudfront::error::DisplayErrorContext(e))
                    })?;
                if config
                    .distribution_config()
                    .is_some_and(|c| c.caller_reference() == name)
                {
                    return Ok(summary.id().to_owned());
                }
            }
            return Err(failed(&what, "it exists but is not listed"));
        }
        Err(e) => {
            return Err(failed(
                &what,
                aws_sdk_cloudfront::error::DisplayErrorContext(e),
            ));
        }
    };
    created
        .distribution()
        .map(|d| d.id().to_owned())
        .ok_or_else(|| failed(&what, "the answer named no distribution"))
}

/// Creates (or finds) an SNS platform application, for a moto server: real
/// ones need APNs or FCM credentials and are made outside the stack.
pub async fn ensure_platform_application(
    client: &aws_sdk_sns::Client,
    name: &str,
    platform: &str,
) -> Result<String, BootstrapError> {
    let what = format!("platform application {name}");
    let out = client
        .create_platform_application()
        .name(name)
        .platform(platform)
        .attributes("PlatformCredential", "local-credential")
        .attributes("PlatformPrincipal", "local-principal")
        .send()
        .await
        .map_err(|e| failed(&what, aws_sdk_sns::error::DisplayErrorContext(e)))?;
    out.platform_application_arn()
        .map(str::to_owned)
        .ok_or_else(|| failed(&what, "no ARN in the answer"))
}

/// Verifies a sender address with SES v2 (moto verifies at once).
pub async fn ensure_email_identity(
    client: &aws_sdk_sesv2::Client,
    address: &str,
) -> Result<(), BootstrapError> {
    use aws_sdk_sesv2::error::ProvideErrorMetadata;
    match client
        .create_email_identity()
        .email_identity(address)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("AlreadyExistsException") => Ok(()),
        Err(e) => Err(failed(
            &format!("email identity {address}"),
            aws_sdk_sesv2::error::DisplayErrorContext(e),
        )),
    }
}
