//! The media bucket on S3. Path-style addressing: with an endpoint override
//! (moto) virtual-host names do not resolve, and it costs nothing on AWS.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

use crate::ports::media::{
    CompletedPart, IMMUTABLE_CACHE_CONTROL, MediaStore, MediaStoreError, MultipartUpload,
    ObjectHead, PresignedPart, PresignedUpload, part_sizes, valid_key,
};

#[derive(Debug, Clone)]
pub struct S3MediaStore {
    client: Client,
    bucket: String,
}

fn unavailable(e: impl std::fmt::Display) -> MediaStoreError {
    MediaStoreError::Unavailable(e.to_string())
}

impl S3MediaStore {
    pub fn new(config: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn check(key: &str) -> Result<(), MediaStoreError> {
        if valid_key(key) {
            Ok(())
        } else {
            Err(MediaStoreError::Invalid(format!("bad object key {key:?}")))
        }
    }
}

#[async_trait]
impl MediaStore for S3MediaStore {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        expires_at_secs: u64,
    ) -> Result<PresignedUpload, MediaStoreError> {
        Self::check(key)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expires_in = Duration::from_secs(expires_at_secs.saturating_sub(now).max(1));
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| MediaStoreError::Invalid(e.to_string()))?;
        let length = i64::try_from(length)
            .map_err(|_| MediaStoreError::Invalid("the length is too large".into()))?;
        // Both headers are signed: S3 refuses another type or length.
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(length)
            .presigned(config)
            .await
            .map_err(unavailable)?;
        let headers: BTreeMap<String, String> = request
            .headers()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Ok(PresignedUpload {
            url: request.uri().to_owned(),
            method: "PUT",
            headers,
        })
    }

    async fn presign_multipart(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        part_size: u64,
        expires_at_secs: u64,
    ) -> Result<MultipartUpload, MediaStoreError> {
        Self::check(key)?;
        let sizes = part_sizes(length, part_size);
        if sizes.is_empty() || sizes.len() > 10_000 {
            return Err(MediaStoreError::Invalid(format!(
                "{length} bytes in parts of {part_size} is not an S3 multipart upload"
            )));
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(unavailable)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| MediaStoreError::Unavailable("S3 named no upload id".into()))?
            .to_owned();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expires_in = Duration::from_secs(expires_at_secs.saturating_sub(now).max(1));
        let mut parts = Vec::with_capacity(sizes.len());
        for (i, size) in sizes.into_iter().enumerate() {
            let config = PresigningConfig::expires_in(expires_in)
                .map_err(|e| MediaStoreError::Invalid(e.to_string()))?;
            let part_number = i as u32 + 1;
            // The length is signed: S3 refuses a part of another size.
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(part_number as i32)
                .content_length(size as i64)
                .presigned(config)
                .await
                .map_err(unavailable)?;
            parts.push(PresignedPart {
                part_number,
                url: request.uri().to_owned(),
                size,
            });
        }
        Ok(MultipartUpload { upload_id, parts })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<(), MediaStoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3Part};
        Self::check(key)?;
        let parts: Vec<S3Part> = parts
            .iter()
            .map(|p| {
                S3Part::builder()
                    .part_number(p.part_number as i32)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        match self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| aws_sdk_s3::error::ProvideErrorMetadata::code(s))
                    .unwrap_or_default()
                    .to_owned();
                match code.as_str() {
                    // The client's parts do not add up: its mistake, not ours.
                    "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall" | "NoSuchUpload" => {
                        Err(MediaStoreError::Invalid(format!(
                            "the parts do not complete the upload ({code})"
                        )))
                    }
                    _ => Err(unavailable(aws_sdk_s3::error::DisplayErrorContext(e))),
                }
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, MediaStoreError> {
        Self::check(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectHead {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                content_type: out.content_type().map(str::to_owned),
                last_modified_ms: out
                    .last_modified()
                    .and_then(|t| t.to_millis().ok())
                    .map(|ms| ms.max(0) as u64),
            })),
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
                {
                    Ok(None)
                } else {
                    Err(unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))
                }
            }
        }
    }

    async fn read_prefix(&self, key: &str, limit: u64) -> Result<Vec<u8>, MediaStoreError> {
        Self::check(key)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=0-{}", limit - 1))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_no_such_key() => MediaStoreError::NotFound(key.to_owned()),
                _ => unavailable(aws_sdk_s3::error::DisplayErrorContext(e)),
            })?;
        let bytes = out.body.collect().await.map_err(unavailable)?.into_bytes();
        // A store that ignores the range still gives no more than asked.
        Ok(bytes[..bytes.len().min(limit as usize)].to_vec())
    }

    async fn read(&self, key: &str) -> Result<Vec<u8>, MediaStoreError> {
        Self::check(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_no_such_key() => MediaStoreError::NotFound(key.to_owned()),
                _ => unavailable(aws_sdk_s3::error::DisplayErrorContext(e)),
            })?;
        Ok(out
            .body
            .collect()
            .await
            .map_err(unavailable)?
            .into_bytes()
            .to_vec())
    }

    async fn put_immutable(
        &self,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), MediaStoreError> {
        Self::check(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .cache_control(IMMUTABLE_CACHE_CONTROL)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn copy_immutable(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
    ) -> Result<(), MediaStoreError> {
        Self::check(from)?;
        Self::check(to)?;
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{from}", self.bucket))
            .key(to)
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type(content_type)
            .cache_control(IMMUTABLE_CACHE_CONTROL)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), MediaStoreError> {
        Self::check(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
