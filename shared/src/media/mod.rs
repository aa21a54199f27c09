//! Media: image and video uploads, straight to storage with a presigned
//! URL, checked and resized by the `media-process` worker, served by the CDN.

pub mod model;
pub mod render;
pub mod service;
pub mod sniff;

pub use model::{
    CompleteMedia, CompletedPartRequest, CreateMedia, MULTIPART_THRESHOLD, MediaKind, MediaRecord,
    MediaState, MediaUpload, MediaView, MultipartView, PART_SIZE, PartView, Rendition,
    RenditionView,
};
pub use service::{MediaError, MediaLibrary, MediaService, Processed};

/// The variables naming the bucket and the CDN's base URL on AWS.
pub const MEDIA_BUCKET_VAR: &str = "MEDIA_BUCKET";
pub const MEDIA_BASE_URL_VAR: &str = "MEDIA_BASE_URL";
/// How long an upload URL lives (seconds, 1–86400; default 900).
pub const MEDIA_UPLOAD_TTL_VAR: &str = "MEDIA_UPLOAD_TTL_SECONDS";
