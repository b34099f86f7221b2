//! What an upload really is: image types from their magic bytes, and width and height from
//! their headers. Nothing here trusts what the client declared.

/// Bytes needed to tell every accepted type apart.
pub const SNIFF_BYTES: usize = 12;

/// How much of the start of a file is kept to find the image size (a JPEG's frame header
/// may come after large EXIF or ICC segments).
pub const HEADER_BYTES: usize = 256 * 1024;

/// An accepted image type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// `image/png`.
    Png,
    /// `image/jpeg`.
    Jpeg,
    /// `image/webp`.
    Webp,
    /// `image/gif`.
    Gif,
}

impl ImageKind {
    /// Every accepted type.
    pub const ALL: [ImageKind; 4] = [
        ImageKind::Png,
        ImageKind::Jpeg,
        ImageKind::Webp,
        ImageKind::Gif,
    ];

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Webp => "image/webp",
            ImageKind::Gif => "image/gif",
        }
    }

    /// The file extension of its object key.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Webp => "webp",
            ImageKind::Gif => "gif",
        }
    }

    /// The type a client declared (`image/png`, case-insensitive, parameters ignored;
    /// `image/jpg` is accepted as the common misspelling of `image/jpeg`).
    pub fn from_mime(declared: &str) -> Option<ImageKind> {
        let essence = declared
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "image/png" => Some(ImageKind::Png),
            "image/jpeg" | "image/jpg" => Some(ImageKind::Jpeg),
            "image/webp" => Some(ImageKind::Webp),
            "image/gif" => Some(ImageKind::Gif),
            _ => None,
        }
    }

    /// The type of these first bytes, if accepted.
    pub fn sniff(start: &[u8]) -> Option<ImageKind> {
        if start.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else if start.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageKind::Jpeg)
        } else if start.starts_with(b"GIF87a") || start.starts_with(b"GIF89a") {
            Some(ImageKind::Gif)
        } else if start.len() >= 12 && &start[0..4] == b"RIFF" && &start[8..12] == b"WEBP" {
            Some(ImageKind::Webp)
        } else {
            None
        }
    }

    /// Width and height from the header, when the header says.
    pub fn dimensions(self, header: &[u8]) -> Option<(u32, u32)> {
        let size = match self {
            ImageKind::Png => png_size(header),
            ImageKind::Jpeg => jpeg_size(header),
            ImageKind::Gif => gif_size(header),
            ImageKind::Webp => webp_size(header),
        }?;
        (size.0 > 0 && size.1 > 0).then_some(size)
    }
}

fn be_u16(bytes: &[u8], at: usize) -> Option<u32> {
    let pair = bytes.get(at..at + 2)?;
    Some(u32::from(u16::from_be_bytes([pair[0], pair[1]])))
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u32> {
    let pair = bytes.get(at..at + 2)?;
    Some(u32::from(u16::from_le_bytes([pair[0], pair[1]])))
}

fn le_u24(bytes: &[u8], at: usize) -> Option<u32> {
    let three = bytes.get(at..at + 3)?;
    Some(u32::from_le_bytes([three[0], three[1], three[2], 0]))
}

fn png_size(header: &[u8]) -> Option<(u32, u32)> {
    // Signature (8), then the IHDR chunk: length (4), "IHDR", width, height (big-endian).
    if header.get(12..16)? != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(header.get(16..20)?.try_into().ok()?);
    let height = u32::from_be_bytes(header.get(20..24)?.try_into().ok()?);
    Some((width, height))
}

fn gif_size(header: &[u8]) -> Option<(u32, u32)> {
    Some((le_u16(header, 6)?, le_u16(header, 8)?))
}

fn jpeg_size(header: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *header.get(at)? == 0xFF && *header.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *header.get(at)? != 0xFF {
            return None;
        }
        let marker = *header.get(at + 1)?;
        at += 2;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD8 => continue,
            // End of image or start of scan before any frame header: no size.
            0xD9 | 0xDA => return None,
            // Start-of-frame markers (not DHT 0xC4, JPG 0xC8, DAC 0xCC).
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                let height = be_u16(header, at + 3)?;
                let width = be_u16(header, at + 5)?;
                return Some((width, height));
            }
            _ => {
                let length = be_u16(header, at)? as usize;
                if length < 2 {
                    return None;
                }
                at += length;
            }
        }
    }
}

fn webp_size(header: &[u8]) -> Option<(u32, u32)> {
    match header.get(12..16)? {
        b"VP8 " => {
            // Frame tag (3), start code 9d 01 2a, then 14-bit width and height.
            if header.get(23..26)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            Some((le_u16(header, 26)? & 0x3FFF, le_u16(header, 28)? & 0x3FFF))
        }
        b"VP8L" => {
            if *header.get(20)? != 0x2F {
                return None;
            }
            let bits = u32::from_le_bytes(header.get(21..25)?.try_into().ok()?);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8X" => Some((le_u24(header, 24)? + 1, le_u24(header, 27)? + 1)),
        _ => None,
    }
}

/// Tiny valid headers of each type, for tests here and in the integration tests.
#[doc(hidden)]
pub mod samples {
    /// A PNG header (signature + IHDR) of `width`×`height`, followed by `filler` bytes.
    pub fn png(width: u32, height: u32, filler: usize) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend_from_slice(&13_u32.to_be_bytes());
        bytes.extend_from_slice(b"IHDR");
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend((0..filler).map(|i| (i % 251) as u8));
        bytes
    }

    /// A JPEG with an APP0 segment and a baseline frame header.
    pub fn jpeg(width: u16, height: u16, filler: usize) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        bytes.extend_from_slice(b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00");
        bytes.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        bytes.extend((0..filler).map(|i| (i % 241) as u8));
        bytes.extend_from_slice(&[0xFF, 0xD9]);
        bytes
    }

    /// A GIF89a header.
    pub fn gif(width: u16, height: u16, filler: usize) -> Vec<u8> {
        let mut bytes = b"GIF89a".to_vec();
        bytes.extend_from_slice(&width.to_le_bytes());
        bytes.extend_from_slice(&height.to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0]);
        bytes.extend((0..filler).map(|i| (i % 239) as u8));
        bytes.push(0x3B);
        bytes
    }

    /// A lossless WebP (VP8L) header.
    pub fn webp(width: u32, height: u32, filler: usize) -> Vec<u8> {
        let bits = (width - 1) | ((height - 1) << 14);
        let mut body = b"WEBPVP8L".to_vec();
        body.extend_from_slice(&((5 + filler) as u32).to_le_bytes());
        body.push(0x2F);
        body.extend_from_slice(&bits.to_le_bytes());
        body.extend((0..filler).map(|i| (i % 233) as u8));
        let mut bytes = b"RIFF".to_vec();
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_is_recognized_with_its_size() {
        let cases = [
            (samples::png(640, 480, 10), ImageKind::Png, (640, 480)),
            (samples::jpeg(1024, 768, 10), ImageKind::Jpeg, (1024, 768)),
            (samples::gif(32, 16, 10), ImageKind::Gif, (32, 16)),
            (samples::webp(512, 300, 10), ImageKind::Webp, (512, 300)),
        ];
        for (bytes, kind, size) in cases {
            assert_eq!(ImageKind::sniff(&bytes[..SNIFF_BYTES]), Some(kind));
            assert_eq!(kind.dimensions(&bytes), Some(size), "{kind:?}");
            assert_eq!(ImageKind::from_mime(kind.mime()), Some(kind));
        }
    }

    #[test]
    fn anything_else_is_not_an_image() {
        for bytes in [
            &b""[..],
            b"hello world!",
            b"<svg xmlns=",
            b"\x89PNX\r\n\x1a\n1234",
            b"RIFF0000WAVE",
        ] {
            assert_eq!(ImageKind::sniff(bytes), None);
        }
        assert_eq!(ImageKind::from_mime("image/svg+xml"), None);
        assert_eq!(
            ImageKind::from_mime("IMAGE/PNG; charset=x"),
            Some(ImageKind::Png)
        );
    }

    #[test]
    fn truncated_or_corrupt_headers_have_no_size() {
        let png = samples::png(1, 1, 0);
        assert_eq!(ImageKind::Png.dimensions(&png[..18]), None);
        assert_eq!(
            ImageKind::Jpeg.dimensions(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00]),
            None
        );
        assert_eq!(
            ImageKind::Jpeg.dimensions(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]),
            None
        );
        assert_eq!(ImageKind::Webp.dimensions(b"RIFF0000WEBPVP8 "), None);
    }
}
