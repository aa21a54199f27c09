//! `hanul-local web build|publish`: the web client as the stack's web
//! bucket holds it, written to a folder or uploaded to S3, with the
//! settings of the deployed stack (its Cognito app client and socket URL).

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use hanul_shared::aws::CloudFrontCdn;
use hanul_shared::ports::Cdn;

use super::{WebClient, WebObject, cognito_config};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum WebCommand {
    /// Writes the client into OUT as the web bucket holds it
    /// (app/index.html, app/config.json, app/<version>/…).
    Build {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        stack: StackSettings,
    },
    /// Uploads the client to the stack's web bucket (outputs WebBucketName,
    /// UserPoolClientId, ChatSocketUrl), then, given the distribution,
    /// drops CloudFront's copies of the index and the settings.
    Publish {
        #[arg(long)]
        bucket: String,
        #[command(flatten)]
        stack: StackSettings,
        /// The distribution (output DistributionId) to invalidate.
        #[arg(long)]
        distribution_id: Option<String>,
    },
}

/// What the client needs to know of the deployed stack.
#[derive(Debug, Clone, clap::Args)]
pub struct StackSettings {
    /// The Cognito app client people sign in with (output UserPoolClientId).
    #[arg(long)]
    pub cognito_client_id: String,
    /// The stack's region.
    #[arg(long, env = "AWS_REGION")]
    pub region: String,
    /// The chat WebSocket URL (output ChatSocketUrl), `wss://…/v1`.
    #[arg(long)]
    pub socket_url: String,
}

impl StackSettings {
    fn validate(&self) -> Result<(), String> {
        let ok_id = |s: &str| {
            (1..=128).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !ok_id(&self.cognito_client_id) {
            return Err(format!(
                "--cognito-client-id {:?} is not a Cognito app client id",
                self.cognito_client_id
            ));
        }
        if !ok_id(&self.region) {
            return Err(format!("--region {:?} is not a region", self.region));
        }
        match url::Url::parse(&self.socket_url) {
            Ok(u) if u.scheme() == "wss" && u.host_str().is_some() => Ok(()),
            _ => Err(format!(
                "--socket-url {:?} must be a wss:// URL",
                self.socket_url
            )),
        }
    }

    fn config_json(&self, version: &str) -> String {
        cognito_config(
            version,
            &self.region,
            &self.cognito_client_id,
            &self.socket_url,
        )
    }
}

pub async fn run(command: WebCommand) -> Result<String, String> {
    let client = WebClient::new();
    match command {
        WebCommand::Build { out, stack } => {
            stack.validate()?;
            let objects = client.objects(&stack.config_json(&client.version));
            write_all(&out, &objects)?;
            Ok(format!(
                "wrote {} files of client version {} to {}",
                objects.len(),
                client.version,
                out.display()
            ))
        }
        WebCommand::Publish {
            bucket,
            stack,
            distribution_id,
        } => {
            stack.validate()?;
            let config = hanul_shared::aws::sdk_config().await;
            let objects = client.objects(&stack.config_json(&client.version));
            upload(&config, &bucket, &objects).await?;
            let mut done = format!(
                "uploaded {} files of client version {} to s3://{bucket}/app/",
                objects.len(),
                client.version
            );
            if let Some(id) = distribution_id {
                let cdn = CloudFrontCdn::new(aws_sdk_cloudfront::Client::new(&config), id);
                let paths = ["/app/", "/app/index.html", "/app/config.json"].map(String::from);
                let invalidation = cdn.invalidate(&paths).await.map_err(|e| e.to_string())?;
                done.push_str(&format!("; invalidation {invalidation} sent"));
            }
            Ok(done)
        }
    }
}

fn write_all(out: &Path, objects: &[WebObject]) -> Result<(), String> {
    for o in objects {
        let path = out.join(&o.key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, &o.body).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Puts every object in order (assets, then settings, then the index).
pub async fn upload(
    config: &aws_config::SdkConfig,
    bucket: &str,
    objects: &[WebObject],
) -> Result<(), String> {
    let s3 = hanul_shared::aws::S3MediaStore::new(config, bucket);
    for o in objects {
        s3.client()
            .put_object()
            .bucket(bucket)
            .key(&o.key)
            .content_type(o.content_type)
            .cache_control(o.cache_control)
            .body(ByteStream::from(o.body.clone()))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "uploading {}: {}",
                    o.key,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
    }
    Ok(())
}
