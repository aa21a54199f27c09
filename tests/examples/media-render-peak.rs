//! The media worker's memory on one big image: `media-render-peak make F`
//! writes a ~10 MB JPEG (6000×4000, quality 97); `media-render-peak
//! F` renders it as `media-process` does and prints the time and the
//! process's peak RSS (VmHWM), so the figure is the render's alone.
//! `media-render-peak make-worst F` writes the largest image the decoder
//! admits (a PNG as big in pixels as MAX_DECODE_BYTES allows), the worst a
//! 10 MB upload can ask of the worker's memory.

use std::io::Cursor;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [make, path] if make == "make" => {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            // A 24-megapixel photo's worth of detail: gradients with grain,
            // which JPEG keeps at about 10 MB.
            let image = image::RgbImage::from_fn(6000, 4000, |x, y| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let grain = (seed % 10) as u32;
                image::Rgb([
                    ((x / 24 + grain) % 256) as u8,
                    ((y / 16 + grain) % 256) as u8,
                    (((x + y) / 40 + grain) % 256) as u8,
                ])
            });
            let mut out = Cursor::new(Vec::new());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 97)
                .encode_image(&image)
                .expect("encode");
            let bytes = out.into_inner();
            std::fs::write(path, &bytes).expect("write");
            println!("wrote {path}: {} bytes", bytes.len());
        }
        [make, path] if make == "make-worst" => {
            // The largest image the decode limit admits, in a small file: a
            // smooth gradient PNG as wide and tall as MAX_DECODE_BYTES allows.
            let side =
                ((hanul_shared::media::render::MAX_DECODE_BYTES / 3) as f64).sqrt() as u32 - 8;
            let image = image::RgbImage::from_fn(side, side, |x, y| {
                image::Rgb([(x / 40) as u8, (y / 40) as u8, ((x + y) / 80) as u8])
            });
            let mut out = Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(image)
                .write_to(&mut out, image::ImageFormat::Png)
                .expect("encode");
            let bytes = out.into_inner();
            std::fs::write(path, &bytes).expect("write");
            println!("wrote {path}: {side}x{side}, {} bytes", bytes.len());
        }
        [path] => {
            let bytes = std::fs::read(path).expect("read");
            let start = Instant::now();
            let mime = if bytes.starts_with(b"\x89PNG") {
                "image/png"
            } else {
                "image/jpeg"
            };
            let rendered = hanul_shared::media::render::render(&bytes, mime).expect("render");
            let elapsed = start.elapsed();
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let peak = status
                .lines()
                .find(|l| l.starts_with("VmHWM"))
                .unwrap_or("VmHWM: ?");
            println!(
                "{} bytes, {}x{} → {} renditions ({} bytes) in {:.0} ms; {peak}",
                bytes.len(),
                rendered.width,
                rendered.height,
                rendered.renditions.len(),
                rendered
                    .renditions
                    .iter()
                    .map(|r| r.bytes.len())
                    .sum::<usize>(),
                elapsed.as_secs_f64() * 1000.0
            );
        }
        _ => eprintln!("usage: media-render-peak make FILE | media-render-peak FILE"),
    }
}
