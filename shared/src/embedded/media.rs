//! Media objects as files under the data directory (owner-only), and the
//! local host's stand-in for S3's presigned PUT: an upload URL on the host,
//! HMAC-signed over the key, type, exact length and expiry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ports::media::{
    CompletedPart, MediaStore, MediaStoreError, MultipartUpload, ObjectHead, PresignedPart,
    PresignedUpload, part_sizes, valid_key,
};
use crate::ports::{OutgoingMessage, Queue};

/// The local upload route; `{key}` follows.
pub const LOCAL_UPLOAD_PATH: &str = "/local/v1/uploads";

pub struct FileMediaStore {
    root: PathBuf,
    base_url: String,
    key: Vec<u8>,
    /// Where `ObjectCreated` events go (the media queue), as S3 sends them.
    events: std::sync::OnceLock<std::sync::Arc<dyn Queue>>,
}

impl std::fmt::Debug for FileMediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMediaStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: std::io::Error) -> MediaStoreError {
    MediaStoreError::Unavailable(e.to_string())
}

/// What a signed upload URL carries besides its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadGrant {
    /// Empty for a part of a multipart upload (the type was set at its start).
    pub content_type: String,
    pub length: u64,
    pub expires_at_secs: u64,
    /// A part: the upload's id and the part's number.
    pub part: Option<(String, u32)>,
}

/// A multipart upload's id: 32 hex digits (also its folder's name).
fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl FileMediaStore {
    /// `root` is made owner-only; `base_url` is the host's own address.
    pub fn open(root: &Path, base_url: &str, key: &[u8]) -> Result<Self, MediaStoreError> {
        super::private_dir(root).map_err(unavailable)?;
        Ok(Self {
            root: root.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            key: key.to_vec(),
            events: std::sync::OnceLock::new(),
        })
    }

    /// The queue `ObjectCreated` events go to (set once, by the host).
    pub fn set_events(&self, queue: std::sync::Arc<dyn Queue>) {
        let _ = self.events.set(queue);
    }

    /// Sends the event S3 would for a new object. If it cannot be queued
    /// the object is removed, so the client's retry starts clean (nothing
    /// half-accepted).
    pub async fn announce_created(
        &self,
        key: &str,
        size: u64,
        event_name: &str,
        now_ms: u64,
    ) -> Result<(), MediaStoreError> {
        let Some(queue) = self.events.get() else {
            return Err(MediaStoreError::Unavailable(
                "no queue takes upload events".into(),
            ));
        };
        let event = serde_json::json!({"Records": [{
            "eventVersion": "2.1",
            "eventSource": "hanul:local",
            "eventName": event_name,
            "eventTime": crate::shortener::link::format_instant(now_ms),
            "s3": {"bucket": {"name": "local"}, "object": {"key": key, "size": size}},
        }]});
        if let Err(e) = queue.send(OutgoingMessage::new(event.to_string())).await {
            tracing::warn!(error = %e, "the upload's event could not be queued");
            let _ = self.delete(key).await;
            return Err(MediaStoreError::Unavailable(
                "the upload could not be queued; retry".into(),
            ));
        }
        Ok(())
    }

    /// Removes what abandoned uploads left in `.incoming/` (a single PUT
    /// cut off, a multipart upload never completed) once older than
    /// `max_age`, as the bucket's lifecycle does on AWS; answers how many.
    pub async fn sweep_incoming(
        &self,
        max_age: std::time::Duration,
    ) -> Result<usize, MediaStoreError> {
        let dir = self.root.join(".incoming");
        tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            let mut removed = 0;
            for entry in entries {
                let entry = entry?;
                let old = entry
                    .metadata()?
                    .modified()?
                    .elapsed()
                    .is_ok_and(|age| age > max_age);
                if !old {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
                removed += 1;
            }
            Ok(removed)
        })
        .await
        .map_err(|e| MediaStoreError::Unavailable(e.to_string()))?
        .map_err(unavailable)
    }

    fn parts_dir(&self, upload_id: &str) -> Result<PathBuf, MediaStoreError> {
        if !valid_upload_id(upload_id) {
            return Err(MediaStoreError::Invalid("no such upload".into()));
        }
        Ok(self.root.join(".incoming").join(format!("mp-{upload_id}")))
    }

    /// Keeps a received part (already on disk at `temp`) under its number,
    /// with its ETag; a part sent again replaces the first.
    pub async fn keep_part(
        &self,
        upload_id: &str,
        part_number: u32,
        temp: &Path,
        etag: &str,
    ) -> Result<(), MediaStoreError> {
        let dir = self.parts_dir(upload_id)?;
        let (temp, etag) = (temp.to_owned(), etag.to_owned());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if !dir.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such upload",
                ));
            }
            write_durably(&dir.join(format!("{part_number}.etag")), etag.as_bytes())?;
            std::fs::rename(&temp, dir.join(part_number.to_string()))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| MediaStoreError::Unavailable(e.to_string()))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                MediaStoreError::Invalid("no such upload".into())
            } else {
                unavailable(e)
            }
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, MediaStoreError> {
        if !valid_key(key) {
            return Err(MediaStoreError::Invalid(format!("bad object key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    fn type_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".type");
        PathBuf::from(name)
    }

    fn mac(&self, key: &str, grant: &UploadGrant) -> Result<Hmac<Sha256>, MediaStoreError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .map_err(|e| MediaStoreError::Invalid(e.to_string()))?;
        mac.update(
            format!(
                "PUT\n{key}\n{}\n{}\n{}",
                grant.content_type, grant.length, grant.expires_at_secs
            )
            .as_bytes(),
        );
        if let Some((upload_id, part)) = &grant.part {
            mac.update(format!("\npart\n{upload_id}\n{part}").as_bytes());
        }
        Ok(mac)
    }

    /// Checks an upload URL's signature (constant time) and expiry.
    pub fn check_grant(
        &self,
        key: &str,
        grant: &UploadGrant,
        signature: &str,
        now_secs: u64,
    ) -> Result<(), &'static str> {
        if !valid_key(key) || !key.starts_with("uploads/") {
            return Err("no upload goes to that key");
        }
        let given = hex::decode(signature).map_err(|_| "the signature does not match")?;
        let mac = self
            .mac(key, grant)
            .map_err(|_| "the signature does not match")?;
        if mac.verify_slice(&given).is_err() {
            return Err("the signature does not match");
        }
        if now_secs > grant.expires_at_secs {
            return Err("the upload URL has expired");
        }
        Ok(())
    }

    /// A new temporary file for an upload in progress (owner-only).
    pub async fn begin_upload(&self) -> Result<(PathBuf, tokio::fs::File), MediaStoreError> {
        let dir = self.root.join(".incoming");
        super::private_dir(&dir).map_err(unavailable)?;
        let path = dir.join(uuid::Uuid::new_v4().simple().to_string());
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(&path).await.map_err(unavailable)?;
        Ok((path, file))
    }

    /// Moves a complete upload into place: a broken one never shows as an
    /// object.
    pub async fn commit_upload(
        &self,
        temp: &Path,
        key: &str,
        content_type: &str,
    ) -> Result<(), MediaStoreError> {
        let path = self.path(key)?;
        let (temp, content_type) = (temp.to_owned(), content_type.to_owned());
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(&root);
            super::private_dir(dir)?;
            write_durably(&Self::type_path(&path), content_type.as_bytes())?;
            std::fs::rename(&temp, &path)?;
            sync_dir(dir)
        })
        .await
        .map_err(|e| MediaStoreError::Unavailable(e.to_string()))?
        .map_err(unavailable)
    }

    async fn write(
        &self,
        key: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<(), MediaStoreError> {
        let path = self.path(key)?;
        let type_path = Self::type_path(&path);
        let content_type = content_type.to_owned();
        let bytes = bytes.to_vec();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let dir = path.parent().unwrap_or(&root);
            super::private_dir(dir)?;
            let temp = dir.join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            write_durably(&type_path, content_type.as_bytes())?;
            std::fs::rename(&temp, &path)?;
            sync_dir(dir)
        })
        .await
        .map_err(|e| MediaStoreError::Unavailable(e.to_string()))?
        .map_err(unavailable)
    }

    /// The object opened for reading (streamed, never held whole), its
    /// length and content type, for `GET /media/...`.
    pub async fn open_object(
        &self,
        key: &str,
    ) -> Result<Option<(tokio::fs::File, u64, String)>, MediaStoreError> {
        let path = self.path(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => {
                let length = file.metadata().await.map_err(unavailable)?.len();
                let content_type = tokio::fs::read_to_string(Self::type_path(&path))
                    .await
                    .unwrap_or_else(|_| "application/octet-stream".into());
                Ok(Some((file, length, content_type)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Writes a small file owner-only and on disk before returning.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename in `dir` durable (the directory entry itself).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[async_trait]
impl MediaStore for FileMediaStore {
    async fn presign_multipart(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        part_size: u64,
        expires_at_secs: u64,
    ) -> Result<MultipartUpload, MediaStoreError> {
        self.path(key)?;
        let Some(rest) = key.strip_prefix("uploads/") else {
            return Err(MediaStoreError::Invalid("uploads go under uploads/".into()));
        };
        let sizes = part_sizes(length, part_size);
        if sizes.is_empty() || sizes.len() > 10_000 {
            return Err(MediaStoreError::Invalid(format!(
                "{length} bytes in parts of {part_size} is not a multipart upload"
            )));
        }
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.parts_dir(&upload_id)?;
        let meta = format!("{key}\n{content_type}\n{length}\n{}", sizes.len());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            super::private_dir(&dir)?;
            write_durably(&dir.join("upload"), meta.as_bytes())
        })
        .await
        .map_err(|e| MediaStoreError::Unavailable(e.to_string()))?
        .map_err(unavailable)?;
        let mut parts = Vec::with_capacity(sizes.len());
        for (i, size) in sizes.into_iter().enumerate() {
            let part_number = i as u32 + 1;
            let grant = UploadGrant {
                content_type: String::new(),
                length: size,
                expires_at_secs,
                part: Some((upload_id.clone(), part_number)),
            };
            let signature = hex::encode(self.mac(key, &grant)?.finalize().into_bytes());
            let mut url = url::Url::parse(&format!("{}{LOCAL_UPLOAD_PATH}/{rest}", self.base_url))
                .map_err(|e| MediaStoreError::Invalid(e.to_string()))?;
            url.query_pairs_mut()
                .append_pair("uploadId", &upload_id)
                .append_pair("partNumber", &part_number.to_string())
                .append_pair("length", &size.to_string())
                .append_pair("expires", &expires_at_secs.to_string())
                .append_pair("signature", &signature);
            parts.push(PresignedPart {
                part_number,
                url: url.to_string(),
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
        let dir = self.parts_dir(upload_id)?;
        self.path(key)?;
        let meta = match tokio::fs::read_to_string(dir.join("upload")).await {
            Ok(meta) => meta,
            Err(_) => return Err(MediaStoreError::Invalid("no such upload".into())),
        };
        let mut lines = meta.lines();
        let (Some(for_key), Some(content_type), Some(length), Some(count)) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(MediaStoreError::Unavailable(
                "a damaged upload record".into(),
            ));
        };
        if for_key != key {
            return Err(MediaStoreError::Invalid("no such upload".into()));
        }
        let count: usize = count.parse().unwrap_or(0);
        let length: u64 = length.parse().unwrap_or(0);
        if parts.len() != count
            || parts
                .iter()
                .enumerate()
                .any(|(i, p)| p.part_number as usize != i + 1)
        {
            return Err(MediaStoreError::Invalid(format!(
                "name all {count} parts, in order from 1"
            )));
        }
        for p in parts {
            let kept = tokio::fs::read_to_string(dir.join(format!("{}.etag", p.part_number)))
                .await
                .map_err(|_| {
                    MediaStoreError::Invalid(format!("part {} was not sent", p.part_number))
                })?;
            if kept != p.etag.trim_matches('"') {
                return Err(MediaStoreError::Invalid(format!(
                    "part {} is not the one sent (its ETag differs)",
                    p.part_number
                )));
            }
        }
        let (temp, file) = self.begin_upload().await?;
        drop(file);
        let (from, to) = (dir.clone(), temp.clone());
        let joined = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut out = std::fs::OpenOptions::new().write(true).open(&to)?;
            let mut total = 0;
            for n in 1..=count {
                let mut part = std::fs::File::open(from.join(n.to_string()))?;
                total += std::io::copy(&mut part, &mut out)?;
            }
            out.sync_all()?;
            Ok(total)
        })
        .await
        .map_err(|e| MediaStoreError::Unavailable(e.to_string()))?;
        let size = match joined {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(unavailable(e));
            }
        };
        if size != length {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(MediaStoreError::Invalid(format!(
                "the parts hold {size} bytes, not the {length} signed for"
            )));
        }
        self.commit_upload(&temp, key, content_type).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.announce_created(key, size, "ObjectCreated:CompleteMultipartUpload", now)
            .await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(())
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        expires_at_secs: u64,
    ) -> Result<PresignedUpload, MediaStoreError> {
        self.path(key)?;
        let Some(rest) = key.strip_prefix("uploads/") else {
            return Err(MediaStoreError::Invalid("uploads go under uploads/".into()));
        };
        let grant = UploadGrant {
            content_type: content_type.to_owned(),
            length,
            expires_at_secs,
            part: None,
        };
        let signature = hex::encode(self.mac(key, &grant)?.finalize().into_bytes());
        let mut url = url::Url::parse(&format!("{}{LOCAL_UPLOAD_PATH}/{rest}", self.base_url))
            .map_err(|e| MediaStoreError::Invalid(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("contentType", content_type)
            .append_pair("length", &length.to_string())
            .append_pair("expires", &expires_at_secs.to_string())
            .append_pair("signature", &signature);
        Ok(PresignedUpload {
            url: url.to_string(),
            method: "PUT",
            headers: BTreeMap::from([
                ("content-type".to_owned(), content_type.to_owned()),
                ("content-length".to_owned(), length.to_string()),
            ]),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, MediaStoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(ObjectHead {
                size: meta.len(),
                content_type: tokio::fs::read_to_string(Self::type_path(&path)).await.ok(),
                last_modified_ms: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn read_prefix(&self, key: &str, limit: u64) -> Result<Vec<u8>, MediaStoreError> {
        use tokio::io::AsyncReadExt;
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                MediaStoreError::NotFound(key.to_owned())
            } else {
                unavailable(e)
            }
        })?;
        let mut out = Vec::new();
        file.take(limit)
            .read_to_end(&mut out)
            .await
            .map_err(unavailable)?;
        Ok(out)
    }

    async fn read(&self, key: &str) -> Result<Vec<u8>, MediaStoreError> {
        let path = self.path(key)?;
        tokio::fs::read(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                MediaStoreError::NotFound(key.to_owned())
            } else {
                unavailable(e)
            }
        })
    }

    async fn put_immutable(
        &self,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), MediaStoreError> {
        self.write(key, content_type, &bytes).await
    }

    /// A file copy, never in memory (a video is up to 200 MB), made
    /// durable before it takes its name.
    async fn copy_immutable(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
    ) -> Result<(), MediaStoreError> {
        let (source, path) = (self.path(from)?, self.path(to)?);
        let (content_type, root, from) =
            (content_type.to_owned(), self.root.clone(), from.to_owned());
        tokio::task::spawn_blocking(move || -> Result<(), MediaStoreError> {
            let dir = path.parent().unwrap_or(&root);
            super::private_dir(dir).map_err(unavailable)?;
            let temp = dir.join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
            let mut input = std::fs::File::open(&source).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    MediaStoreError::NotFound(from.clone())
                } else {
                    unavailable(e)
                }
            })?;
            let copied = (|| -> std::io::Result<()> {
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut output = options.open(&temp)?;
                std::io::copy(&mut input, &mut output)?;
                output.sync_all()?;
                write_durably(&Self::type_path(&path), content_type.as_bytes())?;
                std::fs::rename(&temp, &path)?;
                sync_dir(dir)
            })();
            if copied.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            copied.map_err(unavailable)
        })
        .await
        .map_err(|e| MediaStoreError::Unavailable(e.to_string()))?
    }

    async fn delete(&self, key: &str) -> Result<(), MediaStoreError> {
        let path = self.path(key)?;
        for p in [Self::type_path(&path), path] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }
}
