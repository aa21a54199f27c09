//! Object storage for media: presigned uploads, the worker's reads and
//! writes, and what the CDN serves. S3 on AWS; files in the data directory
//! locally.

use std::collections::BTreeMap;

/// An upload the client makes itself, straight to storage: the URL, the
/// method and the headers it must send as signed (any other type or length
/// is refused by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUpload {
    pub url: String,
    pub method: &'static str,
    pub headers: BTreeMap<String, String>,
}

/// One part of a multipart upload: a PUT of exactly `size` bytes (the
/// length is signed), answered with an `ETag` the client hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPart {
    pub part_number: u32,
    pub url: String,
    pub size: u64,
}

/// A multipart upload begun in the store, its parts presigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub upload_id: String,
    pub parts: Vec<PresignedPart>,
}

/// A part the client sent, as the store named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

/// How `length` bytes split into parts of `part_size` (the last shorter).
pub fn part_sizes(length: u64, part_size: u64) -> Vec<u64> {
    if part_size == 0 {
        return Vec::new();
    }
    let mut out = vec![part_size; (length / part_size) as usize];
    if !length.is_multiple_of(part_size) {
        out.push(length % part_size);
    }
    out
}

/// What a stored object's head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub content_type: Option<String>,
    /// Milliseconds since the epoch.
    pub last_modified_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaStoreError {
    #[error("no such object: {0}")]
    NotFound(String),
    #[error("invalid object key or request: {0}")]
    Invalid(String),
    #[error("the media store is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// A PUT of exactly `length` bytes of `content_type` to `key`, valid
    /// until `expires_at_secs`.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        expires_at_secs: u64,
    ) -> Result<PresignedUpload, MediaStoreError>;

    /// Begins a multipart upload of `length` bytes of `content_type` to
    /// `key`, and presigns each part of `part_size` (the last shorter),
    /// valid until `expires_at_secs`.
    async fn presign_multipart(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        part_size: u64,
        expires_at_secs: u64,
    ) -> Result<MultipartUpload, MediaStoreError>;

    /// Puts the parts together as the object (which then announces itself
    /// as created, as a single PUT does). A part missing, out of order or
    /// with another ETag is `Invalid`, and nothing is made.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<(), MediaStoreError>;

    /// `None` when there is no such object.
    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, MediaStoreError>;

    /// Bytes `[0, limit)` of the object (all of it if shorter).
    async fn read_prefix(&self, key: &str, limit: u64) -> Result<Vec<u8>, MediaStoreError>;

    /// The whole object.
    async fn read(&self, key: &str) -> Result<Vec<u8>, MediaStoreError>;

    /// Writes an object that is never rewritten (cached for a year).
    async fn put_immutable(
        &self,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), MediaStoreError>;

    /// Copies `from` to the immutable key `to` (a video kept as uploaded).
    async fn copy_immutable(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
    ) -> Result<(), MediaStoreError>;

    /// Idempotent: deleting a missing object is fine.
    async fn delete(&self, key: &str) -> Result<(), MediaStoreError>;
}

/// Object keys are ASCII paths of safe segments: no `..`, no empty segment.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

pub const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_length() {
        assert_eq!(part_sizes(40, 16), [16, 16, 8]);
        assert_eq!(part_sizes(32, 16), [16, 16]);
        assert_eq!(part_sizes(5, 16), [5]);
        assert!(part_sizes(5, 0).is_empty());
    }

    #[test]
    fn keys_are_safe_paths() {
        assert!(valid_key("uploads/nina/m1"));
        assert!(valid_key("media/m1/320.jpg"));
        for bad in [
            "", "/a", "a/", "a//b", "../x", "a/../b", "a b", "a/%2e", "ü",
        ] {
            assert!(!valid_key(bad), "{bad}");
        }
    }
}
