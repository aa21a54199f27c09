//! The media worker's memory on one big image: `media-render-peak make F`
//! writes a ~10 MB JPEG of noise (4000×3000, quality 97); `media-render-peak
//! F` renders it as `media-process` does and prints the time and the
//! process's peak RSS (VmHWM), so the figure is the render's alone.

use std::io::Cursor;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [make, path] if make == "make" => {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let image = image::RgbImage::from_fn(4000, 3000, |_, _| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
            });
            let mut out = Cursor::new(Vec::new());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 97)
                .encode_image(&image)
                .expect("encode");
            let bytes = out.into_inner();
            std::fs::write(path, &bytes).expect("write");
            println!("wrote {path}: {} bytes", bytes.len());
        }
        [path] => {
            let bytes = std::fs::read(path).expect("read");
            let start = Instant::now();
            let rendered =
                hanul_shared::media::render::render(&bytes, "image/jpeg").expect("render");
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
