//! Uploads, the check after them, and what posts and profiles attach.

use std::sync::Arc;
use std::time::Duration;

use crate::feed::{FeedError, Media};
use crate::ports::media::{CompletedPart, MediaStore, MediaStoreError};
use crate::ports::table::{Condition, Consistency, Key, Table, TableError, Update, num, s};
use crate::ports::{Clock, Item};
use crate::shortener::link::format_instant;

use super::model::*;
use super::render;
use super::sniff::{SNIFF_BYTES, sniff};

/// Clock skew allowed between the store's `Last-Modified` and our expiry
/// (S3 itself refuses an expired URL; this holds where nothing checks).
const EXPIRY_SKEW_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("no such media")]
    NotFound,
    #[error("the media store failed: {0}")]
    Store(String),
}

impl From<TableError> for MediaError {
    fn from(e: TableError) -> Self {
        MediaError::Store(e.to_string())
    }
}

impl From<MediaStoreError> for MediaError {
    fn from(e: MediaStoreError) -> Self {
        MediaError::Store(e.to_string())
    }
}

impl From<MediaError> for FeedError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Invalid(code, m) => FeedError::Invalid(code, m),
            MediaError::NotFound => FeedError::Invalid("invalid_media", "no such media".into()),
            MediaError::Store(m) => FeedError::Store(m),
        }
    }
}

fn media_key(id: &str) -> Key {
    Key::new(format!("media#{id}"), "media")
}

pub fn upload_key(owner: &str, id: &str) -> String {
    format!("uploads/{owner}/{id}")
}

fn record_of(item: Item) -> Result<MediaRecord, MediaError> {
    serde_dynamo::from_item(item).map_err(|e| MediaError::Store(format!("a media item: {e}")))
}

/// What reads media: the feed's table and the CDN's base URL. Posts and
/// profiles need only this, not the bucket.
#[derive(Clone)]
pub struct MediaLibrary {
    table: Arc<dyn Table>,
    base_url: String,
}

impl MediaLibrary {
    pub fn new(table: Arc<dyn Table>, base_url: &str) -> Self {
        Self {
            table,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.base_url)
    }

    pub async fn record(&self, id: &str) -> Result<Option<MediaRecord>, MediaError> {
        if !crate::feed::valid_media_id(id) {
            return Ok(None);
        }
        match self.table.get(&media_key(id), Consistency::Strong).await? {
            Some(item) => Ok(Some(record_of(item)?)),
            None => Ok(None),
        }
    }

    pub fn view(&self, r: &MediaRecord) -> MediaView {
        let renditions: Vec<RenditionView> = r
            .renditions
            .iter()
            .map(|x| RenditionView {
                url: self.url(&x.key),
                content_type: x.content_type.clone(),
                width: x.width,
                height: x.height,
                bytes: x.bytes,
            })
            .collect();
        MediaView {
            media_id: r.media_id.clone(),
            state: r.state,
            kind: r.kind,
            content_type: r.content_type.clone(),
            size: r.size,
            reason: r.reason.clone(),
            width: r.width,
            height: r.height,
            url: renditions.last().map(|x| x.url.clone()),
            renditions,
            created_at: format_instant(r.created_ms),
        }
    }

    /// The attachments of a post: each the caller's own and `ready`, in
    /// the order given; anything else refuses the whole post.
    pub async fn attachable(&self, owner: &str, ids: &[String]) -> Result<Vec<Media>, MediaError> {
        let keys: Vec<Key> = ids.iter().map(|id| media_key(id)).collect();
        let items = if keys.is_empty() {
            Vec::new()
        } else {
            self.table.batch_get(&keys).await?
        };
        let mut records = Vec::new();
        for item in items {
            records.push(record_of(item)?);
        }
        let mut out = Vec::new();
        for id in ids {
            let Some(r) = records
                .iter()
                .find(|r| &r.media_id == id && r.owner_id == owner)
            else {
                return Err(MediaError::Invalid(
                    "invalid_media",
                    format!("media {id} is not one of yours"),
                ));
            };
            if r.state != MediaState::Ready {
                return Err(MediaError::Invalid(
                    "media_not_ready",
                    format!("media {id} is {:?}, not ready", r.state).to_lowercase(),
                ));
            }
            let view = self.view(r);
            out.push(Media {
                media_id: id.clone(),
                kind: Some(view.kind),
                content_type: Some(view.content_type),
                width: view.width,
                height: view.height,
                url: view.url,
                renditions: view.renditions,
            });
        }
        Ok(out)
    }

    /// An avatar: the caller's own ready image; answers its small URL.
    pub async fn avatar(&self, owner: &str, id: &str) -> Result<String, MediaError> {
        let media = self.attachable(owner, &[id.to_owned()]).await?;
        let first = media.into_iter().next().ok_or(MediaError::NotFound)?;
        if first.kind != Some(MediaKind::Image) {
            return Err(MediaError::Invalid(
                "invalid_avatar_media_id",
                "an avatar must be an image".into(),
            ));
        }
        first
            .renditions
            .first()
            .map(|r| r.url.clone())
            .ok_or(MediaError::NotFound)
    }
}

/// Uploads and their processing.
pub struct MediaService {
    library: MediaLibrary,
    table: Arc<dyn Table>,
    store: Arc<dyn MediaStore>,
    clock: Arc<dyn Clock>,
    upload_ttl: Duration,
}

/// What processing made: the renditions and the image's size, or why it
/// was rejected.
type Outcome = Result<(Vec<Rendition>, Option<(u32, u32)>), String>;

/// How one upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    Ready,
    Rejected(String),
    /// Nothing to do: already processed, or no such media.
    Skipped,
}

impl MediaService {
    pub fn new(
        library: MediaLibrary,
        table: Arc<dyn Table>,
        store: Arc<dyn MediaStore>,
        clock: Arc<dyn Clock>,
        upload_ttl: Duration,
    ) -> Self {
        Self {
            library,
            table,
            store,
            clock,
            upload_ttl,
        }
    }

    pub fn library(&self) -> &MediaLibrary {
        &self.library
    }

    /// `POST /api/v1/me/media`.
    pub async fn create(
        &self,
        caller: &str,
        request: CreateMedia,
    ) -> Result<MediaUpload, MediaError> {
        let Some(t) = media_type(&request.content_type) else {
            return Err(MediaError::Invalid(
                "unsupported_content_type",
                format!(
                    "contentType must be one of {}",
                    TYPES.iter().map(|t| t.mime).collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if request.size == 0 || request.size > t.max_bytes {
            return Err(MediaError::Invalid(
                "invalid_size",
                format!("size must be 1 to {} bytes for {}", t.max_bytes, t.mime),
            ));
        }
        if !crate::feed::valid_user_id(caller) {
            return Err(MediaError::Invalid("invalid_user_id", "bad caller".into()));
        }
        let id = format!("m{}", uuid::Uuid::new_v4().simple());
        let now = self.clock.now_ms();
        let multipart = request.size > MULTIPART_THRESHOLD;
        // Parts get four times as long: a 200 MB video at 2 Mbit/s takes
        // 14 minutes, which one PUT's window would not fit.
        let ttl = self.upload_ttl.as_secs() * if multipart { MULTIPART_TTL_FACTOR } else { 1 };
        let expires = now / 1000 + ttl;
        let key = upload_key(caller, &id);
        // The store's multipart upload is begun first: its id goes in the
        // record, which is written before any URL is handed out.
        let multipart = if multipart {
            Some(
                self.store
                    .presign_multipart(&key, t.mime, request.size, PART_SIZE, expires)
                    .await?,
            )
        } else {
            None
        };
        let record = MediaRecord {
            media_id: id.clone(),
            owner_id: caller.to_owned(),
            content_type: t.mime.to_owned(),
            kind: t.kind,
            size: request.size,
            state: MediaState::Pending,
            reason: None,
            width: None,
            height: None,
            renditions: Vec::new(),
            created_ms: now,
            upload_expires_secs: expires,
            upload_id: multipart.as_ref().map(|m| m.upload_id.clone()),
            parts: multipart.as_ref().map(|m| m.parts.len() as u32),
        };
        let mut item: Item = serde_dynamo::to_item(&record)
            .map_err(|e| MediaError::Store(format!("encoding media: {e}")))?;
        for (k, v) in media_key(&id).to_item().into_inner() {
            item.insert(k, v);
        }
        // Kept a day past its URL's expiry if never uploaded (TTL).
        item.insert("ttl".into(), num(expires + 86_400));
        self.table.put(item, Some(Condition::NotExists)).await?;
        if let Some(m) = multipart {
            return Ok(MediaUpload {
                multipart: Some(MultipartView {
                    part_size: PART_SIZE,
                    complete_url: format!("/api/v1/me/media/{id}/complete"),
                    parts: m
                        .parts
                        .into_iter()
                        .map(|p| PartView {
                            part_number: p.part_number,
                            upload_url: p.url,
                            size: p.size,
                        })
                        .collect(),
                }),
                media_id: id,
                upload_url: None,
                method: "PUT",
                headers: Default::default(),
                expires_at: format_instant(expires * 1000),
            });
        }
        let upload = self
            .store
            .presign_put(&key, t.mime, request.size, expires)
            .await?;
        Ok(MediaUpload {
            media_id: id,
            upload_url: Some(upload.url),
            method: upload.method,
            headers: upload.headers,
            multipart: None,
            expires_at: format_instant(expires * 1000),
        })
    }

    /// `POST /api/v1/me/media/{mediaId}/complete`: the parts of the
    /// caller's multipart upload become the object, which the worker then
    /// checks as any upload. The parts must be all of them, in order, as
    /// the store named them; nothing is made otherwise.
    pub async fn complete(
        &self,
        caller: &str,
        id: &str,
        request: CompleteMedia,
    ) -> Result<MediaView, MediaError> {
        let record = match self.library.record(id).await? {
            Some(r) if r.owner_id == caller => r,
            _ => return Err(MediaError::NotFound),
        };
        let (Some(upload_id), Some(count)) = (&record.upload_id, record.parts) else {
            return Err(MediaError::Invalid(
                "not_multipart",
                "this media was uploaded in one PUT; there is nothing to complete".into(),
            ));
        };
        if record.state != MediaState::Pending {
            return Err(MediaError::Invalid(
                "not_pending",
                "this media's upload is already complete".into(),
            ));
        }
        if self.clock.now_secs() > record.upload_expires_secs {
            return Err(MediaError::Invalid(
                "upload_expired",
                "the upload's URLs have expired: start a new upload".into(),
            ));
        }
        let well_formed = request.parts.len() == count as usize
            && request.parts.iter().enumerate().all(|(i, p)| {
                p.part_number as usize == i + 1 && (1..=1024).contains(&p.etag.len())
            });
        if !well_formed {
            return Err(MediaError::Invalid(
                "invalid_parts",
                format!("name all {count} parts in order, each with the ETag its upload answered"),
            ));
        }
        let parts: Vec<CompletedPart> = request
            .parts
            .into_iter()
            .map(|p| CompletedPart {
                part_number: p.part_number,
                etag: p.etag,
            })
            .collect();
        match self
            .store
            .complete_multipart(&upload_key(caller, id), upload_id, &parts)
            .await
        {
            Ok(()) => Ok(self.library.view(&record)),
            Err(MediaStoreError::Invalid(why)) => Err(MediaError::Invalid("invalid_parts", why)),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /api/v1/me/media/{mediaId}`: the caller's own only.
    pub async fn get(&self, caller: &str, id: &str) -> Result<MediaView, MediaError> {
        match self.library.record(id).await? {
            Some(r) if r.owner_id == caller => Ok(self.library.view(&r)),
            _ => Err(MediaError::NotFound),
        }
    }

    /// One queue message: an S3 event notification (or the host's copy of
    /// one). Test events and other prefixes are ignored.
    pub async fn handle_event(&self, body: &str) -> Result<Vec<Processed>, MediaError> {
        let event: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| MediaError::Invalid("invalid_event", format!("not JSON: {e}")))?;
        if event.get("Event").and_then(|v| v.as_str()) == Some("s3:TestEvent") {
            return Ok(Vec::new());
        }
        let records = event
            .get("Records")
            .and_then(|r| r.as_array())
            .ok_or_else(|| MediaError::Invalid("invalid_event", "no Records".into()))?;
        let mut out = Vec::new();
        for record in records {
            let name = record
                .get("eventName")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let key = record
                .pointer("/s3/object/key")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            // Keys arrive URL-encoded; ours never need it, so decode and
            // let the shape check refuse anything odd.
            let key: String = url::form_urlencoded::parse(format!("k={key}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default();
            if !name.starts_with("ObjectCreated") || !key.starts_with("uploads/") {
                continue;
            }
            out.push(self.process(&key).await?);
        }
        Ok(out)
    }

    /// Checks one upload and makes its renditions. Safe to repeat: a
    /// retried message finds the media no longer pending.
    pub async fn process(&self, key: &str) -> Result<Processed, MediaError> {
        let mut parts = key.split('/');
        let (Some("uploads"), Some(owner), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(Processed::Skipped);
        };
        let Some(record) = self.library.record(id).await? else {
            // Nothing asked for it: not ours to keep.
            self.store.delete(key).await?;
            return Ok(Processed::Skipped);
        };
        if record.owner_id != owner {
            self.store.delete(key).await?;
            return Ok(Processed::Skipped);
        }
        if record.state != MediaState::Pending {
            self.store.delete(key).await?;
            return Ok(Processed::Skipped);
        }
        let Some(head) = self.store.head(key).await? else {
            return Ok(Processed::Skipped);
        };
        if let Some(reason) = self.refusal(&record, key, &head).await? {
            self.finish(&record, key, Err(reason.clone())).await?;
            return Ok(Processed::Rejected(reason));
        }
        let result = match record.kind {
            MediaKind::Image => self.render_image(&record, key).await?,
            MediaKind::Video => self.keep_video(&record, key).await?,
        };
        let processed = match &result {
            Ok(_) => Processed::Ready,
            Err(reason) => Processed::Rejected(reason.clone()),
        };
        self.finish(&record, key, result).await?;
        Ok(processed)
    }

    /// Why an upload is refused before decoding, if it is.
    async fn refusal(
        &self,
        record: &MediaRecord,
        key: &str,
        head: &crate::ports::media::ObjectHead,
    ) -> Result<Option<String>, MediaError> {
        if head.size != record.size {
            return Ok(Some(format!(
                "the upload is {} bytes, not the {} declared",
                head.size, record.size
            )));
        }
        if let Some(sent) = head.content_type.as_deref()
            && sent != record.content_type
        {
            return Ok(Some(format!(
                "the upload was sent as {sent}, not the {} declared",
                record.content_type
            )));
        }
        // A multipart upload's object is dated by its completion, which
        // `complete` already held to the expiry.
        if record.upload_id.is_none()
            && head
                .last_modified_ms
                .is_some_and(|t| t > record.upload_expires_secs * 1000 + EXPIRY_SKEW_MS)
        {
            return Ok(Some("the upload arrived after its URL expired".into()));
        }
        let prefix = self.store.read_prefix(key, SNIFF_BYTES).await?;
        match sniff(&prefix) {
            Some(real) if real == record.content_type => Ok(None),
            Some(real) => Ok(Some(format!(
                "the file is {real}, not the {} declared",
                record.content_type
            ))),
            None => Ok(Some(format!(
                "the file is not {} (nor any accepted type)",
                record.content_type
            ))),
        }
    }

    async fn render_image(&self, record: &MediaRecord, key: &str) -> Result<Outcome, MediaError> {
        // One decode at a time per process: each may hold up to
        // MAX_DECODE_BYTES, and the local host runs several batches at once.
        static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        let _turn = RENDERING
            .acquire()
            .await
            .map_err(|e| MediaError::Store(format!("rendering stopped: {e}")))?;
        let bytes = self.store.read(key).await?;
        let mime = record.content_type.clone();
        let rendered = tokio::task::spawn_blocking(move || render::render(&bytes, &mime))
            .await
            .map_err(|e| MediaError::Store(format!("rendering stopped: {e}")))?;
        let rendered = match rendered {
            Ok(r) => r,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut renditions = Vec::new();
        for r in rendered.renditions {
            let key = format!("media/{}/{}.{}", record.media_id, r.width, r.extension);
            let bytes = r.bytes.len() as u64;
            self.store
                .put_immutable(&key, r.content_type, r.bytes)
                .await?;
            renditions.push(Rendition {
                key,
                content_type: r.content_type.to_owned(),
                width: Some(r.width),
                height: Some(r.height),
                bytes,
            });
        }
        Ok(Ok((renditions, Some((rendered.width, rendered.height)))))
    }

    async fn keep_video(&self, record: &MediaRecord, key: &str) -> Result<Outcome, MediaError> {
        let extension = if record.content_type == "video/webm" {
            "webm"
        } else {
            "mp4"
        };
        let to = format!("media/{}/video.{extension}", record.media_id);
        self.store
            .copy_immutable(key, &to, &record.content_type)
            .await?;
        Ok(Ok((
            vec![Rendition {
                key: to,
                content_type: record.content_type.clone(),
                width: None,
                height: None,
                bytes: record.size,
            }],
            None,
        )))
    }

    /// Marks the media ready or rejected (only from pending), then deletes
    /// the upload: a crash in between leaves a retry that finds it done.
    async fn finish(
        &self,
        record: &MediaRecord,
        key: &str,
        result: Outcome,
    ) -> Result<(), MediaError> {
        let update = match &result {
            Ok((renditions, size)) => {
                let list = serde_dynamo::to_attribute_value(renditions)
                    .map_err(|e| MediaError::Store(format!("encoding renditions: {e}")))?;
                // Ready media is kept: it no longer expires.
                let mut u = Update::new()
                    .set("state", s("ready"))
                    .set("renditions", list)
                    .remove("ttl");
                if let Some((w, h)) = size {
                    u = u.set("width", num(w)).set("height", num(h));
                }
                u
            }
            Err(reason) => {
                tracing::info!(media = record.media_id, reason, "upload rejected");
                Update::new()
                    .set("state", s("rejected"))
                    .set("reason", s(reason))
            }
        };
        match self
            .table
            .update(
                &media_key(&record.media_id),
                update,
                Some(Condition::eq("state", s("pending"))),
            )
            .await
        {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.delete(key).await?;
        Ok(())
    }
}
