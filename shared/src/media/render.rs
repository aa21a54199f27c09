//! Image renditions: decode (within limits), turn upright by the EXIF
//! orientation, resize, and re-encode. Re-encoding writes pixels only, so
//! no EXIF (GPS included), XMP or ICC text survives into what is served.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// The widths served (an image narrower than one is served at its own).
pub const WIDTHS: [u32; 2] = [320, 1080];
pub const JPEG_QUALITY: u8 = 82;
/// A decoded image's sides and memory: a 10 MB file may not claim
/// 50000×50000 pixels and take the worker down. 256 MiB decoded holds a
/// 48-megapixel photo (145 MB as RGB) and keeps the worst case, the
/// largest image this admits, near a 320 MB peak: inside a 512 MB Lambda
/// (`media-render-peak make-worst`, README "Media").
pub const MAX_SIDE: u32 = 12_000;
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub width: u32,
    pub height: u32,
    pub content_type: &'static str,
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renditions {
    /// The upright original's size.
    pub width: u32,
    pub height: u32,
    /// Smallest first.
    pub renditions: Vec<Rendered>,
}

fn format_of(mime: &str) -> Option<ImageFormat> {
    Some(match mime {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/webp" => ImageFormat::WebP,
        "image/gif" => ImageFormat::Gif,
        _ => return None,
    })
}

/// The renditions of an image of type `mime`; an error names why it cannot
/// be decoded (the reason a rejected media item shows).
pub fn render(bytes: &[u8], mime: &str) -> Result<Renditions, String> {
    let format = format_of(mime).ok_or_else(|| format!("{mime} is not an image type"))?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("the image cannot be read: {e}"))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| format!("the image cannot be decoded: {e}"))?;
    image.apply_orientation(orientation);
    let (width, height) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return Err("the image has no pixels".into());
    }
    // Transparency is kept (PNG); everything else is a JPEG.
    let alpha = image.color().has_alpha() && mime != "image/jpeg";
    let mut renditions: Vec<Rendered> = Vec::new();
    for target in WIDTHS {
        let sized = if width > target * 2 {
            // A box-filter pass to twice the width first: it needs nothing
            // beyond its small output, where a filtered resize of a huge
            // image holds a float copy of a slice of it (a 11,577² PNG
            // peaked at 600 MB that way). The filter then works on little.
            image
                .thumbnail(target * 2, u32::MAX)
                .resize(target, u32::MAX, FilterType::CatmullRom)
        } else if width > target {
            image.resize(target, u32::MAX, FilterType::CatmullRom)
        } else {
            image.clone()
        };
        if renditions.iter().any(|r| r.width == sized.width()) {
            continue;
        }
        let mut out = Vec::new();
        let (content_type, extension) = if alpha {
            sized
                .to_rgba8()
                .write_with_encoder(PngEncoder::new(&mut out))
                .map_err(|e| format!("encoding failed: {e}"))?;
            ("image/png", "png")
        } else {
            sized
                .to_rgb8()
                .write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))
                .map_err(|e| format!("encoding failed: {e}"))?;
            ("image/jpeg", "jpg")
        };
        renditions.push(Rendered {
            width: sized.width(),
            height: sized.height(),
            content_type,
            extension,
            bytes: out,
        });
    }
    Ok(Renditions {
        width,
        height,
        renditions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn encoded(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_wide_photo_gets_two_widths_and_a_small_one_only_its_own() {
        let photo = DynamicImage::ImageRgb8(RgbImage::from_pixel(2000, 1000, Rgb([200, 10, 10])));
        let r = render(&encoded(photo, ImageFormat::Png), "image/png").unwrap();
        assert_eq!((r.width, r.height), (2000, 1000));
        let sizes: Vec<(u32, u32)> = r.renditions.iter().map(|x| (x.width, x.height)).collect();
        assert_eq!(sizes, vec![(320, 160), (1080, 540)]);
        assert!(r.renditions.iter().all(|x| x.content_type == "image/jpeg"));
        assert!(r.renditions[0].bytes.starts_with(&[0xFF, 0xD8, 0xFF]));

        let icon = DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 50, Rgba([0, 0, 0, 10])));
        let r = render(&encoded(icon, ImageFormat::Png), "image/png").unwrap();
        assert_eq!(r.renditions.len(), 1);
        assert_eq!(r.renditions[0].content_type, "image/png");
        assert_eq!((r.renditions[0].width, r.renditions[0].height), (100, 50));
    }

    #[test]
    fn garbage_and_lies_are_errors_not_panics() {
        assert!(render(b"\xFF\xD8\xFF\xE0 truncated", "image/jpeg").is_err());
        let png = encoded(
            DynamicImage::ImageRgb8(RgbImage::new(8, 8)),
            ImageFormat::Png,
        );
        assert!(render(&png, "image/jpeg").is_err());
        assert!(render(&png, "video/mp4").is_err());
        // A PNG header claiming 20000×20000 pixels.
        let mut bomb = png.clone();
        bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        assert!(render(&bomb, "image/png").is_err());
    }
}
