//! The composition of media: the bucket (files locally), the library that
//! posts and profiles read, the service the media functions run.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, ConfigError, Platform, TableName};
use crate::media::{
    MEDIA_BASE_URL_VAR, MEDIA_BUCKET_VAR, MEDIA_UPLOAD_TTL_VAR, MediaLibrary, MediaService,
};
use crate::ports::media::MediaStore;
use crate::ports::queue::QueueSpec;

pub const MEDIA_QUEUE: &str = "media-process";
pub const MEDIA_DLQ: &str = "media-process-dlq";
/// The local upload URLs' HMAC key (the local host keeps one in its data
/// directory).
pub const MEDIA_UPLOAD_KEY_VAR: &str = "MEDIA_UPLOAD_KEY";

impl Platform {
    pub fn media_queue_spec(&self) -> QueueSpec {
        // Renditions of a 10 MB image take seconds; six times the worker's
        // 60 s timeout, as Lambda advises for SQS sources.
        QueueSpec::new(MEDIA_QUEUE)
            .with_visibility(Duration::from_secs(360))
            .with_dead_letter(MEDIA_DLQ, 5)
    }

    fn media_base_url(&self) -> Result<String, ConfigError> {
        self.setting(MEDIA_BASE_URL_VAR).ok_or_else(|| {
            ConfigError(format!(
                "{MEDIA_BASE_URL_VAR} is not set: the CDN's https origin that serves /media/*"
            ))
        })
    }

    /// What posts and profiles need: the feed table and the CDN's URL.
    pub async fn media_library(&self) -> Result<MediaLibrary, ConfigError> {
        Ok(MediaLibrary::new(
            self.table(TableName::Feed).await?,
            &self.media_base_url()?,
        ))
    }

    /// The media bucket: `MEDIA_BUCKET` on AWS (made, with its event
    /// notification to the `media-process` queue, on a bootstrapped
    /// stack), files under the data directory locally.
    pub async fn media_store(&self) -> Result<Arc<dyn MediaStore>, ConfigError> {
        self.media_store
            .get_or_try_init(|| async {
                let store: Arc<dyn MediaStore> = match &self.backend {
                    Backend::Embedded { .. } => match self.file_media_store()? {
                        Some(files) => files,
                        None => return Err(ConfigError("no media directory".into())),
                    },
                    Backend::Aws {
                        clients,
                        bootstrap_prefix,
                    } => {
                        let bucket = match (self.setting(MEDIA_BUCKET_VAR), bootstrap_prefix) {
                            (Some(bucket), _) => bucket,
                            (None, Some(prefix)) => {
                                let bucket = format!("{prefix}media").to_ascii_lowercase();
                                let queue = format!("{prefix}{MEDIA_QUEUE}");
                                // The queue first: the notification names it.
                                self.queue(&self.media_queue_spec()).await?;
                                ensure_bucket(clients.s3(), clients.sqs(), &bucket, &queue).await?;
                                bucket
                            }
                            (None, None) => {
                                return Err(ConfigError(format!(
                                    "{MEDIA_BUCKET_VAR} is not set: it names the media bucket"
                                )));
                            }
                        };
                        Arc::new(crate::aws::S3MediaStore::new(clients.config(), bucket))
                    }
                };
                Ok(store)
            })
            .await
            .cloned()
    }

    /// The local files behind the media store (the embedded backend only),
    /// for the host's upload route and `/media/...`.
    pub fn file_media_store(
        &self,
    ) -> Result<Option<Arc<crate::embedded::FileMediaStore>>, ConfigError> {
        let Backend::Embedded { store, .. } = &self.backend else {
            return Ok(None);
        };
        if let Some(files) = self.file_media.get() {
            return Ok(Some(files.clone()));
        }
        let dir = store
            .path()
            .parent()
            .map(|p| p.join("media"))
            .ok_or_else(|| ConfigError("the store has no directory".into()))?;
        let key = self
            .setting(MEDIA_UPLOAD_KEY_VAR)
            .ok_or_else(|| ConfigError(format!("{MEDIA_UPLOAD_KEY_VAR} is not set")))?;
        let files = Arc::new(
            crate::embedded::FileMediaStore::open(&dir, &self.media_base_url()?, key.as_bytes())
                .map_err(|e| ConfigError(e.to_string()))?,
        );
        Ok(Some(self.file_media.get_or_init(|| files).clone()))
    }

    /// Uploads and the `media-process` worker.
    pub async fn media(&self) -> Result<Arc<MediaService>, ConfigError> {
        self.media
            .get_or_try_init(|| async {
                let ttl = crate::settings::bounded(
                    &|n: &str| self.setting(n),
                    MEDIA_UPLOAD_TTL_VAR,
                    900,
                    1,
                    86_400,
                    "seconds",
                )
                .map_err(ConfigError)?;
                Ok(Arc::new(MediaService::new(
                    self.media_library().await?,
                    self.table(TableName::Feed).await?,
                    self.media_store().await?,
                    self.clock(),
                    Duration::from_secs(ttl),
                )))
            })
            .await
            .cloned()
    }
}

/// A development bucket (moto): made if missing, with `ObjectCreated`
/// under `uploads/` sent to the queue.
async fn ensure_bucket(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    bucket: &str,
    queue: &str,
) -> Result<(), ConfigError> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    let fail = |what: &str, e: String| ConfigError(format!("media bucket {bucket}: {what}: {e}"));
    if s3.head_bucket().bucket(bucket).send().await.is_err() {
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| {
                fail(
                    "create",
                    aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                )
            })?;
    }
    let url = sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| {
            fail(
                "queue url",
                aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            )
        })?
        .queue_url
        .unwrap_or_default();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| {
            fail(
                "queue arn",
                aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            )
        })?
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .unwrap_or_default();
    let rule = FilterRule::builder()
        .name(FilterRuleName::Prefix)
        .value("uploads/")
        .build();
    let target = QueueConfiguration::builder()
        .id("media-process")
        .queue_arn(arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(
            NotificationConfigurationFilter::builder()
                .key(S3KeyFilter::builder().filter_rules(rule).build())
                .build(),
        )
        .build()
        .map_err(|e| fail("notification", e.to_string()))?;
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(target)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            fail(
                "notification",
                aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            )
        })?;
    Ok(())
}
