//! A file's real type from its first bytes, whatever it was declared as.

/// Bytes read to decide.
pub const SNIFF_BYTES: u64 = 64;

/// The MIME type the bytes are, among the accepted ones; `None` for
/// anything else (an executable, a text file, a truncated header).
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Some("image/jpeg");
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Some("image/gif");
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    // ISO BMFF: a box size, then `ftyp`, then an MP4 family brand.
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let brand = &bytes[8..12];
        const BRANDS: &[&[u8; 4]] = &[
            b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ",
            b"dash", b"MSNV", b"f4v ",
        ];
        if size >= 16 && BRANDS.iter().any(|b| brand == *b) {
            return Some("video/mp4");
        }
        return None;
    }
    // EBML header, then a DocType of `webm` within the header.
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        let head = &bytes[..bytes.len().min(SNIFF_BYTES as usize)];
        if head.windows(4).any(|w| w == b"webm") {
            return Some("video/webm");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_is_known_by_its_bytes_and_others_are_not() {
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            Some("image/jpeg")
        );
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"GIF89a\x01\0"), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8L"), Some("image/webp"));
        assert_eq!(
            sniff(b"\0\0\0\x18ftypisom\0\0\x02\0isommp41"),
            Some("video/mp4")
        );
        assert_eq!(
            sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm"),
            Some("video/webm")
        );
        for other in [
            &b"\x7fELF\x02\x01\x01\0"[..],
            b"MZ\x90\0",
            b"#!/bin/sh\n",
            b"RIFF\x24\0\0\0WAVEfmt ",
            b"\0\0\0\x18ftypqt  \0\0\0\0",
            b"",
            b"\xFF\xD8",
        ] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }
}
