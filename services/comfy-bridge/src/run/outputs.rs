//! A finished run's images: fetched from `/view` or taken from the WebSocket, stripped of
//! their text chunks (unless the job keeps them), hashed and measured. This is the one place
//! every output's bytes pass through before they leave the bridge.

use easel_proto::bridge::v1::OutputImage;
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::comfy::ComfyError;
use crate::comfy::protocol::ImageRef;
use crate::isolation::png_text::{PngError, insert_text_chunk, strip_text_chunks};

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

/// Why an output could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// `/view` failed.
    #[error(transparent)]
    Comfy(#[from] ComfyError),
    /// The PNG's chunks do not add up, so its text cannot be removed safely.
    #[error("the image is not a well-formed PNG: {0}")]
    Png(#[from] PngError),
    /// Larger than one event can carry.
    #[error("the image is larger than {MAX_IMAGE_BYTES} bytes")]
    TooLarge,
}

/// Fetches one image and describes it.
pub async fn fetch(
    backend: &Backend,
    node_id: &str,
    image: &ImageRef,
    index: u32,
    keep_text: bool,
) -> Result<OutputImage, OutputError> {
    let file = backend.client.view(image, MAX_IMAGE_BYTES).await?;
    describe(
        node_id,
        &image.filename,
        &file.data,
        file.content_type,
        index,
        keep_text,
    )
}

/// Describes an image that came over the WebSocket (`SaveImageWebsocket`, which has no file
/// name: it gets `easel_<n>_.png`, numbered like ComfyUI's). Such images carry no metadata:
/// with `kept_prompt` (the job keeps its workflow metadata) the graph is written into a
/// `prompt` text chunk, as `SaveImage` would have.
pub fn streamed(
    node_id: &str,
    png: &[u8],
    index: u32,
    kept_prompt: Option<&str>,
) -> Result<OutputImage, OutputError> {
    if png.len() as u64 > MAX_IMAGE_BYTES {
        return Err(OutputError::TooLarge);
    }
    let filename = format!("easel_{:05}_.png", u64::from(index) + 1);
    match kept_prompt {
        Some(prompt) => {
            let with_prompt = insert_text_chunk(&strip_text_chunks(png)?, "prompt", prompt)?;
            describe(
                node_id,
                &filename,
                &with_prompt,
                "image/png".to_string(),
                index,
                true,
            )
        }
        None => describe(
            node_id,
            &filename,
            png,
            "image/png".to_string(),
            index,
            false,
        ),
    }
}

fn describe(
    node_id: &str,
    filename: &str,
    data: &[u8],
    content_type: String,
    index: u32,
    keep_text: bool,
) -> Result<OutputImage, OutputError> {
    let data = if keep_text {
        data.to_vec()
    } else {
        strip_text_chunks(data)?
    };
    let sha256 = hex::encode(Sha256::digest(&data));
    let dimensions = png_dimensions(&data);
    let (width, height) = dimensions.unwrap_or((0, 0));
    let content_type = if dimensions.is_some() {
        "image/png".to_string()
    } else {
        content_type
    };
    Ok(OutputImage {
        node_id: node_id.to_string(),
        filename: filename.to_string(),
        content_type,
        size_bytes: data.len() as u64,
        sha256,
        width,
        height,
        data,
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
