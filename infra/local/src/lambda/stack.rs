//! The template's resources made on an AWS endpoint (a moto server), named
//! by their logical ids as `sam local` names them, so every `!Ref` in a
//! function's environment points at something real.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::QueueAttributeName;
use hanul_shared::aws::bootstrap;

use super::template::{ACCOUNT, REGION, Resolve, Template, TemplateError};

/// The provisioned stack: what each logical id resolves to.
pub struct Stack {
    parameters: BTreeMap<String, String>,
    refs: BTreeMap<String, String>,
    attributes: BTreeMap<(String, String), String>,
    secrets: BTreeMap<String, String>,
}

impl Stack {
    /// Makes the template's tables, queues and distribution on the endpoint
    /// of `config`, named `prefix + logical id` (idempotent; a fresh prefix
    /// gives a fresh stack), and takes parameter values from `parameters`,
    /// else the template's defaults.
    pub async fn provision(
        template: &Template,
        config: &aws_config::SdkConfig,
        prefix: &str,
        parameters: BTreeMap<String, String>,
    ) -> Result<Self, TemplateError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| TemplateError(format!("{what}: {e}"));
        let mut stack = Stack {
            parameters,
            refs: BTreeMap::new(),
            attributes: BTreeMap::new(),
            secrets: BTreeMap::new(),
        };
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        for id in template.of_type("AWS::DynamoDB::Table") {
            let name = format!("{prefix}{id}");
            bootstrap::ensure_table(&dynamodb, &name)
                .await
                .map_err(|e| failed(&id, &e))?;
            stack.attributes.insert(
                (id.clone(), "Arn".into()),
                format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"),
            );
            stack.refs.insert(id, name);
        }
        let sqs = aws_sdk_sqs::Client::new(config);
        for id in template.of_type("AWS::SQS::Queue") {
            let fifo = template
                .resource(&id)
                .and_then(|r| r.get("Properties"))
                .and_then(|p| p.get("FifoQueue"))
                .and_then(serde_yaml_ng::Value::as_bool)
                .unwrap_or(false);
            let name = if fifo {
                format!("{prefix}{id}.fifo")
            } else {
                format!("{prefix}{id}")
            };
            let mut create = sqs.create_queue().queue_name(&name);
            if fifo {
                create = create.attributes(QueueAttributeName::FifoQueue, "true");
            }
            let url = create
                .send()
                .await
                .map_err(|e| failed(&id, &aws_sdk_sqs::error::DisplayErrorContext(e)))?
                .queue_url()
                .map(str::to_owned)
                .ok_or_else(|| TemplateError(format!("{id}: no queue URL")))?;
            let attr = |a: &str, v: String| ((id.clone(), a.to_owned()), v);
            stack.attributes.extend([
                attr("Arn", format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")),
                attr("QueueUrl", url.clone()),
                attr("QueueName", name.clone()),
            ]);
            stack.refs.insert(id, url);
        }
        // Buckets by their logical id, lowercased (S3 names are).
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .build(),
        );
        for id in template.of_type("AWS::S3::Bucket") {
            let name = format!("{prefix}{id}").to_ascii_lowercase();
            if s3.head_bucket().bucket(&name).send().await.is_err() {
                s3.create_bucket()
                    .bucket(&name)
                    .send()
                    .await
                    .map_err(|e| failed(&id, &aws_sdk_s3::error::DisplayErrorContext(e)))?;
            }
            stack.attributes.extend([
                ((id.clone(), "Arn".into()), format!("arn:aws:s3:::{name}")),
                (
                    (id.clone(), "RegionalDomainName".into()),
                    format!("{name}.s3.{REGION}.amazonaws.com"),
                ),
            ]);
            stack.refs.insert(id, name);
        }
        let cloudfront = aws_sdk_cloudfront::Client::new(config);
        for id in template.of_type("AWS::CloudFront::Distribution") {
            let distribution =
                bootstrap::ensure_distribution(&cloudfront, &format!("{prefix}{id}"))
                    .await
                    .map_err(|e| failed(&id, &e))?;
            stack.attributes.insert(
                (id.clone(), "DomainName".into()),
                format!("{}.cloudfront.net", distribution.to_lowercase()),
            );
            stack.refs.insert(id, distribution);
        }
        // Resolved by CloudFormation at deploy time, never read at run time.
        for id in template.of_type("AWS::SecretsManager::Secret") {
            let arn = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{id}");
            let value = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            stack.secrets.insert(arn.clone(), value);
            stack.refs.insert(id, arn);
        }
        // The WebSocket API: an id and its stage's name, for the
        // management endpoint the chat functions are given.
        for id in template.of_type("AWS::ApiGatewayV2::Api") {
            let api_id = format!("{}{}", prefix.trim_end_matches('-'), id.len());
            stack.refs.insert(id, api_id.to_lowercase());
        }
        for id in template.of_type("AWS::ApiGatewayV2::Stage") {
            let name = template
                .resource(&id)
                .and_then(|r| r.get("Properties"))
                .and_then(|p| p.get("StageName"))
                .and_then(serde_yaml_ng::Value::as_str)
                .unwrap_or("v1")
                .to_owned();
            stack.refs.insert(id, name);
        }
        for id in template.of_type("AWS::Cognito::UserPool") {
            stack.refs.insert(id, format!("{REGION}_hanulLocal"));
        }
        for id in template.of_type("AWS::Cognito::UserPoolClient") {
            stack.refs.insert(id, "hanul-local-client".into());
        }
        for (name, default) in template_parameters(template) {
            stack.parameters.entry(name).or_insert(default);
        }
        Ok(stack)
    }

    /// Gives a secret the value a caller will present (a deploy has
    /// Secrets Manager generate it).
    pub fn set_secret(&mut self, logical_id: &str, value: &str) -> bool {
        match self.refs.get(logical_id) {
            Some(arn) => {
                self.secrets.insert(arn.clone(), value.to_owned());
                true
            }
            None => false,
        }
    }

    /// A secret's value as the functions receive it (for callers that must
    /// present it, like a service key).
    pub fn secret_value(&self, logical_id: &str) -> Option<String> {
        self.refs
            .get(logical_id)
            .and_then(|arn| self.secrets.get(arn))
            .cloned()
    }
}

fn template_parameters(template: &Template) -> Vec<(String, String)> {
    template
        .parameter_names()
        .into_iter()
        .filter_map(|name| Some((name.clone(), template.parameter_default(&name)?)))
        .collect()
}

impl Resolve for Stack {
    fn parameter(&self, name: &str) -> Option<String> {
        self.parameters.get(name).cloned()
    }

    fn reference(&self, logical_id: &str) -> Option<String> {
        self.refs.get(logical_id).cloned()
    }

    fn attribute(&self, logical_id: &str, attribute: &str) -> Option<String> {
        self.attributes
            .get(&(logical_id.to_owned(), attribute.to_owned()))
            .cloned()
    }

    fn secret(&self, secret: &str) -> Option<String> {
        self.secrets.get(secret).cloned()
    }
}
