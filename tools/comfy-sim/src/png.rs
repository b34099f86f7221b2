//! PNG in and out: SaveImage-style files with `tEXt` metadata chunks, and LoadImage decoding.

use std::io::Cursor;

use crate::image::Image;

/// How hard to compress: ComfyUI uses level 4 for SaveImage and 1 for previews; both map to
/// a fast level here, because large images must encode quickly.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// SaveImage.
    Save,
    /// PreviewImage and WebSocket previews.
    Preview,
}

/// Encodes `image` as 8-bit RGB PNG with `tEXt` chunks (key, text) placed before IDAT.
pub fn encode(image: &Image, texts: &[(String, String)], level: Level) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(match level {
            Level::Save => png::Compression::Fast,
            Level::Preview => png::Compression::Fastest,
        });
        for (key, text) in texts {
            encoder
                .add_text_chunk(key.clone(), text.clone())
                .map_err(|error| error.to_string())?;
        }
        let mut writer = encoder.write_header().map_err(|error| error.to_string())?;
        writer
            .write_image_data(&image.to_rgb8())
            .map_err(|error| error.to_string())?;
        writer.finish().map_err(|error| error.to_string())?;
    }
    Ok(out)
}

/// A decoded file: the RGB image and, when the file had alpha, LoadImage's mask (`1 - alpha`).
#[derive(Debug)]
pub struct Decoded {
    /// The RGB image.
    pub image: Image,
    /// The mask, `None` when the file had no alpha channel.
    pub mask: Option<Vec<f32>>,
}

/// Decodes a PNG file to RGB (grey is expanded, 16-bit is stripped, palettes are expanded).
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|error| error.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_owned())?;
    let mut buffer = vec![0u8; size];
    let info = reader
        .next_frame(&mut buffer)
        .map_err(|error| error.to_string())?;
    let data = &buffer[..info.buffer_size()];
    let pixels = info.width as usize * info.height as usize;
    let (rgb, alpha): (Vec<u8>, Option<Vec<u8>>) = match info.color_type {
        png::ColorType::Rgb => (data.to_vec(), None),
        png::ColorType::Rgba => (
            data.chunks_exact(4)
                .flat_map(|pixel| [pixel[0], pixel[1], pixel[2]])
                .collect(),
            Some(data.chunks_exact(4).map(|pixel| pixel[3]).collect()),
        ),
        png::ColorType::Grayscale => (
            data.iter().flat_map(|&grey| [grey, grey, grey]).collect(),
            None,
        ),
        png::ColorType::GrayscaleAlpha => (
            data.chunks_exact(2)
                .flat_map(|pixel| [pixel[0], pixel[0], pixel[0]])
                .collect(),
            Some(data.chunks_exact(2).map(|pixel| pixel[1]).collect()),
        ),
        png::ColorType::Indexed => return Err("unexpanded palette".to_owned()),
    };
    if rgb.len() != pixels * 3 {
        return Err("truncated image data".to_owned());
    }
    Ok(Decoded {
        image: Image::from_rgb8(info.width, info.height, &rgb),
        mask: alpha.map(|alpha| {
            alpha
                .iter()
                .map(|&value| 1.0 - f32::from(value) / 255.0)
                .collect()
        }),
    })
}

/// The `tEXt` chunks of a PNG, for tests and tools.
pub fn text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let reader = decoder.read_info().map_err(|error| error.to_string())?;
    Ok(reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|chunk| (chunk.keyword.clone(), chunk.text.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_text() {
        let image = Image::solid(5, 3, 0x102030);
        let bytes = encode(
            &image,
            &[("prompt".to_owned(), "{}".to_owned())],
            Level::Save,
        )
        .expect("encode");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoded = decode(&bytes).expect("decode");
        assert_eq!(decoded.image.to_rgb8(), image.to_rgb8());
        assert!(decoded.mask.is_none());
        assert_eq!(
            text_chunks(&bytes).expect("chunks"),
            vec![("prompt".to_owned(), "{}".to_owned())]
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(b"not a png at all").is_err());
    }
}
