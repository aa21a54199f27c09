//! Media as stored and as answered.

use serde::{Deserialize, Serialize};

/// What a media item is for the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
}

/// One accepted upload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType {
    pub mime: &'static str,
    pub kind: MediaKind,
    pub max_bytes: u64,
}

pub const MAX_IMAGE_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_VIDEO_BYTES: u64 = 200 * 1024 * 1024;

pub const TYPES: &[MediaType] = &[
    MediaType {
        mime: "image/jpeg",
        kind: MediaKind::Image,
        max_bytes: MAX_IMAGE_BYTES,
    },
    MediaType {
        mime: "image/png",
        kind: MediaKind::Image,
        max_bytes: MAX_IMAGE_BYTES,
    },
    MediaType {
        mime: "image/webp",
        kind: MediaKind::Image,
        max_bytes: MAX_IMAGE_BYTES,
    },
    MediaType {
        mime: "image/gif",
        kind: MediaKind::Image,
        max_bytes: MAX_IMAGE_BYTES,
    },
    MediaType {
        mime: "video/mp4",
        kind: MediaKind::Video,
        max_bytes: MAX_VIDEO_BYTES,
    },
    MediaType {
        mime: "video/webm",
        kind: MediaKind::Video,
        max_bytes: MAX_VIDEO_BYTES,
    },
];

pub fn media_type(mime: &str) -> Option<&'static MediaType> {
    TYPES.iter().find(|t| t.mime == mime)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaState {
    /// Waiting for its upload and the check.
    Pending,
    Ready,
    Rejected,
}

/// One servable form of a media item, under an immutable key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendition {
    pub key: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub bytes: u64,
}

/// The media item (`media#<id>` / `media` in the feed table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaRecord {
    pub media_id: String,
    pub owner_id: String,
    pub content_type: String,
    pub kind: MediaKind,
    /// The size the upload was signed for.
    pub size: u64,
    pub state: MediaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default)]
    pub renditions: Vec<Rendition>,
    pub created_ms: u64,
    pub upload_expires_secs: u64,
    /// A multipart upload's id in the store, and how many parts it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

/// A rendition as answered: its CDN URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionView {
    pub url: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub bytes: u64,
}

/// `GET /api/v1/me/media/{mediaId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaView {
    pub media_id: String,
    pub state: MediaState,
    pub kind: MediaKind,
    pub content_type: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The largest rendition (the video itself for a video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub renditions: Vec<RenditionView>,
    pub created_at: String,
}

/// `POST /api/v1/me/media`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateMedia {
    pub content_type: String,
    pub size: u64,
}

/// Uploads above this size go in parts: one PUT of a 200 MB video on a
/// phone's link fails as a whole and starts again from zero; in parts a
/// failure costs one part. At 5 Mbit/s up, 32 MiB is about a minute.
pub const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
/// A part: S3 wants at least 5 MiB (but the last); 16 MiB is about 27 s at
/// 5 Mbit/s, and a 200 MB video is 13 parts.
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// A multipart upload's URLs live this many times the single PUT's.
pub const MULTIPART_TTL_FACTOR: u64 = 4;

/// Its answer: where and how to upload. Up to `MULTIPART_THRESHOLD`, one
/// PUT of `uploadUrl` with `headers`; above it, a PUT of each part, then
/// `POST completeUrl` with each part's ETag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaUpload {
    pub media_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
    pub method: &'static str,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multipart: Option<MultipartView>,
    pub expires_at: String,
}

/// The parts of a multipart upload, each a presigned PUT of its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MultipartView {
    pub part_size: u64,
    pub parts: Vec<PartView>,
    pub complete_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartView {
    pub part_number: u32,
    pub upload_url: String,
    pub size: u64,
}

/// `POST /api/v1/me/media/{mediaId}/complete`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteMedia {
    pub parts: Vec<CompletedPartRequest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompletedPartRequest {
    pub part_number: u32,
    pub etag: String,
}
