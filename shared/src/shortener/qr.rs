//! QR codes of short URLs, as SVG or PNG.

use qrcode::{Color, EcLevel, QrCode};

use super::error::ShortenerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrFormat {
    Svg,
    Png,
}

impl QrFormat {
    pub fn parse(raw: Option<&str>) -> Result<QrFormat, ShortenerError> {
        match raw.unwrap_or("svg") {
            "svg" => Ok(QrFormat::Svg),
            "png" => Ok(QrFormat::Png),
            other => Err(ShortenerError::Invalid(
                "invalid_format",
                format!("format must be svg or png, not {other:?}"),
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            QrFormat::Svg => "image/svg+xml",
            QrFormat::Png => "image/png",
        }
    }
}

/// Pixels per module in the PNG, and the quiet zone in modules.
const SCALE: usize = 8;
const QUIET: usize = 4;

pub fn render(text: &str, format: QrFormat) -> Result<Vec<u8>, ShortenerError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| ShortenerError::Invalid("invalid_request", format!("cannot encode: {e}")))?;
    match format {
        QrFormat::Svg => Ok(code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build()
            .into_bytes()),
        QrFormat::Png => png(&code),
    }
}

fn png(code: &QrCode) -> Result<Vec<u8>, ShortenerError> {
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    // One byte per pixel, grayscale: 0 dark, 255 light.
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
        for y in my * SCALE..(my + 1) * SCALE {
            pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    let failed = |e: png::EncodingError| ShortenerError::Store(format!("png encoding: {e}"));
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(failed)?;
    writer.write_image_data(&pixels).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_and_png_render() {
        let svg = render("https://hnl.example/abc1234", QrFormat::Svg).unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("<svg"));
        let png = render("https://hnl.example/abc1234", QrFormat::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(QrFormat::parse(Some("gif")).is_err());
        assert_eq!(QrFormat::parse(None).unwrap(), QrFormat::Svg);
    }
}
