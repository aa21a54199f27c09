//! Media: real uploads with the presigned URL (the host's locally, moto's
//! S3 on the AWS backend), the worker's check, renditions served, posts.

use std::io::Cursor;
use std::time::Duration;

use hanul_e2e::{Backend, LocalHost, client, error_code, eventually, token};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

const SECRET_PLACE: &[u8] = b"GPS-SECRET-48.8584N";

fn encoded(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn photo(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    }))
}

/// A JPEG carrying an EXIF APP1 segment: an ImageDescription naming a
/// place and a GPS IFD with a latitude reference.
fn jpeg_with_gps() -> Vec<u8> {
    let jpeg = encoded(photo(1600, 1200), ImageFormat::Jpeg);
    let mut tiff: Vec<u8> = b"MM\0*\0\0\0\x08".to_vec();
    // IFD0: two entries, ImageDescription (ASCII) and the GPS IFD pointer.
    let desc_offset = 8 + 2 + 2 * 12 + 4;
    let gps_offset = desc_offset + SECRET_PLACE.len() as u32 + 1;
    tiff.extend_from_slice(&2u16.to_be_bytes());
    tiff.extend_from_slice(&0x010Eu16.to_be_bytes());
    tiff.extend_from_slice(&2u16.to_be_bytes());
    tiff.extend_from_slice(&(SECRET_PLACE.len() as u32 + 1).to_be_bytes());
    tiff.extend_from_slice(&desc_offset.to_be_bytes());
    tiff.extend_from_slice(&0x8825u16.to_be_bytes());
    tiff.extend_from_slice(&4u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&gps_offset.to_be_bytes());
    tiff.extend_from_slice(&0u32.to_be_bytes());
    tiff.extend_from_slice(SECRET_PLACE);
    tiff.push(0);
    // GPS IFD: GPSLatitudeRef = "N".
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&2u16.to_be_bytes());
    tiff.extend_from_slice(&2u32.to_be_bytes());
    tiff.extend_from_slice(b"N\0\0\0");
    tiff.extend_from_slice(&0u32.to_be_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    assert!(out.windows(SECRET_PLACE.len()).any(|w| w == SECRET_PLACE));
    out
}

/// The shortest MP4 our check accepts: an `ftyp` box and an `mdat`.
fn mp4() -> Vec<u8> {
    let mut out = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41".to_vec();
    let payload = vec![7u8; 4096];
    out.extend_from_slice(&((payload.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend_from_slice(&payload);
    out
}

async fn create(host: &LocalHost, token: &str, content_type: &str, size: usize) -> Value {
    let r = client()
        .post(host.url("/api/v1/me/media"))
        .bearer_auth(token)
        .json(&json!({"contentType": content_type, "size": size}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["method"], "PUT");
    assert!(body["expiresAt"].is_string());
    body
}

/// Uploads as a browser would: the URL, the method and the signed headers,
/// with `content_type` and `bytes` as given (to tell lies).
async fn upload(grant: &Value, content_type: &str, bytes: Vec<u8>) -> u16 {
    let mut request = client().put(grant["uploadUrl"].as_str().unwrap());
    for (name, value) in grant["headers"].as_object().unwrap() {
        if name != "content-type" && name != "content-length" {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    request
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn media(host: &LocalHost, token: &str, id: &str) -> (u16, Value) {
    let r = client()
        .get(host.url(&format!("/api/v1/me/media/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn settled(host: &LocalHost, token: &str, id: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let (status, body) = media(host, token, id).await;
        if status == 200 && body["state"] != "pending" {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await
}

/// Uploads `bytes` declared as `content_type` and waits for the verdict.
async fn uploaded(host: &LocalHost, token: &str, content_type: &str, bytes: Vec<u8>) -> Value {
    let grant = create(host, token, content_type, bytes.len()).await;
    assert_eq!(upload(&grant, content_type, bytes).await, 200);
    settled(host, token, grant["mediaId"].as_str().unwrap()).await
}

async fn fetch(url: &str) -> (String, Vec<u8>, String) {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
    (content_type, r.bytes().await.unwrap().to_vec(), cache)
}

/// The local host serves `/media/...` on both backends (from moto's S3 on
/// the AWS one), as CloudFront does in front of the bucket.
async fn images_and_video_end_ready_with_renditions_and_no_gps(backend: Backend) {
    let host = LocalHost::start(backend);
    let nina = token(&host, "nina").await;

    let png = uploaded(
        &host,
        &nina,
        "image/png",
        encoded(photo(1500, 900), ImageFormat::Png),
    )
    .await;
    assert_eq!(png["state"], "ready", "{png}");
    assert_eq!(
        (png["width"].as_u64(), png["height"].as_u64()),
        (Some(1500), Some(900))
    );
    let widths: Vec<u64> = png["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["width"].as_u64().unwrap())
        .collect();
    assert_eq!(widths, vec![320, 1080]);
    for r in png["renditions"].as_array().unwrap() {
        let url = r["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("{}/media/", host.base)), "{url}");
        let (content_type, bytes, cache) = fetch(url).await;
        assert_eq!(content_type, "image/jpeg");
        assert!(cache.contains("immutable"));
        assert_eq!(bytes.len() as u64, r["bytes"].as_u64().unwrap());
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!(decoded.width() as u64, r["width"].as_u64().unwrap());
    }

    let jpeg = uploaded(&host, &nina, "image/jpeg", jpeg_with_gps()).await;
    assert_eq!(jpeg["state"], "ready", "{jpeg}");
    for r in jpeg["renditions"].as_array().unwrap() {
        let (_, bytes, _) = fetch(r["url"].as_str().unwrap()).await;
        assert!(!bytes.windows(4).any(|w| w == b"Exif"), "EXIF left");
        assert!(!bytes.windows(SECRET_PLACE.len()).any(|w| w == SECRET_PLACE));
    }

    let webp = uploaded(
        &host,
        &nina,
        "image/webp",
        encoded(photo(400, 300), ImageFormat::WebP),
    )
    .await;
    assert_eq!(webp["state"], "ready", "{webp}");
    assert_eq!(webp["renditions"].as_array().unwrap().len(), 2);

    let video = mp4();
    let mp4 = uploaded(&host, &nina, "video/mp4", video.clone()).await;
    assert_eq!(mp4["state"], "ready", "{mp4}");
    assert_eq!(mp4["kind"], "video");
    let (content_type, bytes, _) = fetch(mp4["url"].as_str().unwrap()).await;
    assert_eq!(content_type, "video/mp4");
    assert_eq!(bytes, video);
    // Players seek by byte ranges.
    let r = client()
        .get(mp4["url"].as_str().unwrap())
        .header("range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 8-15/{}", video.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &video[8..16]);
    let r = client()
        .get(mp4["url"].as_str().unwrap())
        .header("range", format!("bytes={}-", video.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    // Someone else's media is not there for them.
    let omar = token(&host, "omar").await;
    let (status, _) = media(&host, &omar, png["mediaId"].as_str().unwrap()).await;
    assert_eq!(status, 404);
}

/// Each lie ends refused: the store refuses the upload (S3's signed
/// headers, the host's check) or the worker rejects what arrived (moto
/// checks neither length nor signature, so there it is the worker's).
async fn lies_and_late_uploads_are_refused(backend: Backend) {
    let host = LocalHost::start_with(backend, &[("MEDIA_UPLOAD_TTL_SECONDS", "2")]);
    let nina = token(&host, "nina").await;
    let png = encoded(photo(64, 64), ImageFormat::Png);
    let jpeg = encoded(photo(64, 64), ImageFormat::Jpeg);
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.resize(2048, 0);
    let mut cases: Vec<(&str, Value, u16)> = Vec::new();

    let grant = create(&host, &nina, "image/png", png.len() + 100).await;
    cases.push((
        "shorter",
        grant.clone(),
        upload(&grant, "image/png", png.clone()).await,
    ));
    let grant = create(&host, &nina, "image/png", png.len() - 10).await;
    cases.push((
        "longer",
        grant.clone(),
        upload(&grant, "image/png", png.clone()).await,
    ));
    let grant = create(&host, &nina, "image/png", jpeg.len()).await;
    cases.push((
        "jpeg as png",
        grant.clone(),
        upload(&grant, "image/png", jpeg.clone()).await,
    ));
    let grant = create(&host, &nina, "video/mp4", elf.len()).await;
    cases.push((
        "elf as mp4",
        grant.clone(),
        upload(&grant, "video/mp4", elf).await,
    ));
    let grant = create(&host, &nina, "image/png", png.len()).await;
    cases.push((
        "wrong content type header",
        grant.clone(),
        upload(&grant, "image/gif", png.clone()).await,
    ));
    let late = create(&host, &nina, "image/png", png.len()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    cases.push((
        "expired",
        late.clone(),
        upload(&late, "image/png", png.clone()).await,
    ));

    for (what, grant, status) in cases {
        let id = grant["mediaId"].as_str().unwrap();
        if status == 200 {
            let m = settled(&host, &nina, id).await;
            assert_eq!(m["state"], "rejected", "{what}: {m}");
            assert!(m["reason"].is_string(), "{what}");
            assert!(m["renditions"].as_array().unwrap().is_empty());
        } else {
            assert!((400..500).contains(&status), "{what}: {status}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (_, m) = media(&host, &nina, id).await;
            assert_eq!(m["state"], "pending", "{what}: {m}");
        }
        // Nothing of it can be attached.
        let r = client()
            .post(host.url("/api/v1/me/posts"))
            .bearer_auth(&nina)
            .json(&json!({"text": what, "mediaIds": [id]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{what}");
    }

    // Bad requests for an upload URL change nothing.
    for (body, code) in [
        (
            json!({"contentType": "application/x-msdownload", "size": 10}),
            "unsupported_content_type",
        ),
        (
            json!({"contentType": "image/png", "size": 0}),
            "invalid_size",
        ),
        (
            json!({"contentType": "image/png", "size": 10 * 1024 * 1024 + 1}),
            "invalid_size",
        ),
        (
            json!({"contentType": "video/mp4", "size": 200 * 1024 * 1024 + 1}),
            "invalid_size",
        ),
        (json!({"contentType": "image/png"}), "invalid_body"),
    ] {
        let r = client()
            .post(host.url("/api/v1/me/media"))
            .bearer_auth(&nina)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, code, "{body}");
    }
    let r = client()
        .post(host.url("/api/v1/me/media"))
        .json(&json!({"contentType": "image/png", "size": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn posts_attach_own_ready_media_and_the_feed_shows_cdn_urls(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    let nina = token(&host, "nina").await;
    let omar = token(&host, "omar").await;
    let r = c
        .put(host.url("/api/v1/me/following/nina"))
        .bearer_auth(&omar)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let mine = uploaded(
        &host,
        &nina,
        "image/png",
        encoded(photo(1200, 800), ImageFormat::Png),
    )
    .await;
    let theirs = uploaded(
        &host,
        &omar,
        "image/png",
        encoded(photo(100, 100), ImageFormat::Png),
    )
    .await;
    let pending = create(&host, &nina, "image/png", 100).await;
    let mine_id = mine["mediaId"].as_str().unwrap();
    let post = |media: Value| {
        let c = c.clone();
        let url = host.url("/api/v1/me/posts");
        let nina = nina.clone();
        async move {
            c.post(url)
                .bearer_auth(nina)
                .json(&json!({"text": "look", "mediaIds": media}))
                .send()
                .await
                .unwrap()
        }
    };
    for (media, code) in [
        (json!([theirs["mediaId"]]), "invalid_media"),
        (json!([pending["mediaId"]]), "media_not_ready"),
        (json!(["m-no-such-media"]), "invalid_media"),
        (json!([mine_id, mine_id]), "invalid_media"),
        (json!([mine_id, "a", "b", "c", "d"]), "invalid_media"),
    ] {
        assert_eq!(
            error_code(post(media.clone()).await, 400).await,
            code,
            "{media}"
        );
    }
    // Four is the most, and allowed.
    let mut four = vec![json!(mine_id)];
    for _ in 0..3 {
        let m = uploaded(
            &host,
            &nina,
            "image/png",
            encoded(photo(40, 40), ImageFormat::Png),
        )
        .await;
        four.push(m["mediaId"].clone());
    }
    let r = post(json!(four)).await;
    assert_eq!(r.status(), 201);
    let r = post(json!([mine_id])).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["media"][0]["mediaId"], mine_id);

    // The follower's feed carries the CDN URLs, and they serve the bytes.
    let page: Value = eventually(Duration::from_secs(30), || async {
        let page: Value = c
            .get(host.url("/api/v1/me/feed"))
            .bearer_auth(&omar)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["posts"].as_array().is_some_and(|p| !p.is_empty()) {
            Ok(page)
        } else {
            Err(page)
        }
    })
    .await;
    let media = &page["posts"][0]["media"][0];
    assert_eq!(media["kind"], "image");
    let mut served = 0;
    for r in media["renditions"].as_array().unwrap() {
        let (content_type, bytes, _) = fetch(r["url"].as_str().unwrap()).await;
        assert_eq!(content_type, "image/jpeg");
        served += bytes.len();
    }
    assert!(served > 0);

    // An avatar: the owner's ready image only.
    let r = c
        .put(host.url("/api/v1/me/profile"))
        .bearer_auth(&nina)
        .json(&json!({"displayName": "Nina", "avatarMediaId": theirs["mediaId"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_media");
    let r = c
        .put(host.url("/api/v1/me/profile"))
        .bearer_auth(&nina)
        .json(&json!({"displayName": "Nina", "avatarMediaId": mine_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let profile: Value = r.json().await.unwrap();
    let avatar = profile["avatarUrl"].as_str().unwrap();
    assert_eq!(fetch(avatar).await.0, "image/jpeg");
}

/// A video of `size` bytes our check accepts: `ftyp`, then one `mdat`.
fn big_mp4(size: usize) -> Vec<u8> {
    let mut out = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41".to_vec();
    let payload = size - out.len() - 8;
    out.extend_from_slice(&((payload + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend((0..payload).map(|i| (i % 251) as u8));
    out
}

/// PUTs one part (the next `size` bytes of `file` from `offset`) to its
/// presigned URL: its number and the ETag the store answered.
async fn send_part(part: &Value, file: &[u8], offset: &mut usize) -> (u64, String) {
    let size = part["size"].as_u64().unwrap() as usize;
    let r = client()
        .put(part["uploadUrl"].as_str().unwrap())
        .body(file[*offset..*offset + size].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    *offset += size;
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    (part["partNumber"].as_u64().unwrap(), etag)
}

async fn complete(
    host: &LocalHost,
    token: &str,
    grant: &Value,
    parts: &[(u64, String)],
) -> reqwest::Response {
    let parts: Vec<Value> = parts
        .iter()
        .map(|(n, etag)| json!({"partNumber": n, "etag": etag}))
        .collect();
    client()
        .post(host.url(grant["multipart"]["completeUrl"].as_str().unwrap()))
        .bearer_auth(token)
        .json(&json!({ "parts": parts }))
        .send()
        .await
        .unwrap()
}

/// Above 32 MiB an upload goes in presigned parts of 16 MiB, each answered
/// with an ETag; completing names them all, in order, and only the owner
/// may; then the worker checks the whole file as any upload.
async fn big_videos_go_in_parts(backend: Backend) {
    let host = LocalHost::start(backend);
    let nina = token(&host, "nina").await;
    let video = big_mp4(40 * 1024 * 1024);
    let grant = create(&host, &nina, "video/mp4", video.len()).await;
    assert!(grant["uploadUrl"].is_null(), "{grant}");
    let parts = grant["multipart"]["parts"].as_array().unwrap().clone();
    assert_eq!(grant["multipart"]["partSize"], 16 * 1024 * 1024);
    let sizes: Vec<u64> = parts.iter().map(|p| p["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [16 << 20, 16 << 20, 8 << 20]);
    let id = grant["mediaId"].as_str().unwrap().to_owned();

    let mut sent = Vec::new();
    let mut offset = 0usize;
    for part in &parts {
        sent.push(send_part(part, &video, &mut offset).await);
        if sent.len() == 1 {
            // Completing before every part is there is refused.
            let r = complete(&host, &nina, &grant, &sent).await;
            assert_eq!(error_code(r, 400).await, "invalid_parts");
        }
    }
    // Out of order, a part missing, or someone else's: refused.
    let mut swapped = sent.clone();
    swapped.swap(0, 1);
    let r = complete(&host, &nina, &grant, &swapped).await;
    assert_eq!(error_code(r, 400).await, "invalid_parts");
    let r = complete(&host, &nina, &grant, &sent[..2]).await;
    assert_eq!(error_code(r, 400).await, "invalid_parts");
    let mut changed = sent.clone();
    changed[1].1 = "\"00000000000000000000000000000000\"".into();
    let r = complete(&host, &nina, &grant, &changed).await;
    assert_eq!(
        error_code(r, 400).await,
        "invalid_parts",
        "a part not the one sent"
    );
    let omar = token(&host, "omar").await;
    let r = complete(&host, &omar, &grant, &sent).await;
    assert_eq!(error_code(r, 404).await, "not_found");
    // A one-PUT upload has nothing to complete.
    let small = create(&host, &nina, "image/png", 100).await;
    let r = client()
        .post(host.url(&format!(
            "/api/v1/me/media/{}/complete",
            small["mediaId"].as_str().unwrap()
        )))
        .bearer_auth(&nina)
        .json(&json!({"parts": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "not_multipart");

    let r = complete(&host, &nina, &grant, &sent).await;
    assert_eq!(r.status(), 202);
    let ready = settled(&host, &nina, &id).await;
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(ready["size"], video.len());
    let (content_type, bytes, _) = fetch(ready["url"].as_str().unwrap()).await;
    assert_eq!(content_type, "video/mp4");
    assert!(bytes == video, "the served video is the uploaded one");
    let r = complete(&host, &nina, &grant, &sent).await;
    assert_eq!(error_code(r, 400).await, "not_pending");
}

/// A multipart upload completed after its URLs expired is refused, and
/// nothing is made.
async fn a_late_completion_is_refused(backend: Backend) {
    let host = LocalHost::start_with(backend, &[("MEDIA_UPLOAD_TTL_SECONDS", "1")]);
    let nina = token(&host, "nina").await;
    let video = big_mp4(33 * 1024 * 1024);
    let grant = create(&host, &nina, "video/mp4", video.len()).await;
    let mut sent = Vec::new();
    let mut offset = 0usize;
    for part in grant["multipart"]["parts"].as_array().unwrap() {
        sent.push(send_part(part, &video, &mut offset).await);
    }
    // Four times the one-PUT window (1 s), and then some.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let r = complete(&host, &nina, &grant, &sent).await;
    assert_eq!(error_code(r, 400).await, "upload_expired");
    let (_, still) = media(&host, &nina, grant["mediaId"].as_str().unwrap()).await;
    assert_eq!(still["state"], "pending", "nothing was made");
}

hanul_e2e::on_both_backends!(
    a_late_completion_is_refused,
    big_videos_go_in_parts,
    images_and_video_end_ready_with_renditions_and_no_gps,
    lies_and_late_uploads_are_refused,
    posts_attach_own_ready_media_and_the_feed_shows_cdn_urls
);
