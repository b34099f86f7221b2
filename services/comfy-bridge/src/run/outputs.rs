//! A finished run's images: fetched from `/view`, hashed and measured.

use easel_proto::bridge::v1::OutputImage;
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::comfy::ComfyError;
use crate::comfy::protocol::ImageRef;

/// Largest image sent in one event (the gRPC limit is 64 MiB, with room for the envelope).
pub const MAX_IMAGE_BYTES: u64 = 60 << 20;

/// Width and height from a PNG's IHDR chunk, when the bytes are a PNG.
pub fn png_dimensions(data: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if data.len() < 24 || !data.starts_with(SIGNATURE) || &data[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(data[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(data[20..24].try_into().ok()?);
    Some((width, height))
}

/// Fetches one image and describes it.
pub async fn fetch(
    backend: &Backend,
    node_id: &str,
    image: &ImageRef,
    index: u32,
) -> Result<OutputImage, ComfyError> {
    let file = backend.client.view(image, MAX_IMAGE_BYTES).await?;
    let sha256 = hex::encode(Sha256::digest(&file.data));
    let (width, height) = png_dimensions(&file.data).unwrap_or((0, 0));
    let content_type = if png_dimensions(&file.data).is_some() {
        "image/png".to_string()
    } else {
        file.content_type
    };
    Ok(OutputImage {
        node_id: node_id.to_string(),
        filename: image.filename.clone(),
        content_type,
        size_bytes: file.data.len() as u64,
        sha256,
        width,
        height,
        data: file.data.to_vec(),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_output_png_is_512_square() {
        let data = include_bytes!("../../tests/fixtures/output.png");
        assert_eq!(png_dimensions(data), Some((512, 512)));
        assert_eq!(png_dimensions(b"GIF89a...................."), None);
        assert_eq!(png_dimensions(&data[..20]), None);
    }
}
