//! Checks on the images the platform hands back.

/// The width and height of a PNG, or a description of why `bytes` is not one.
pub fn png_size(bytes: &[u8]) -> Result<(u32, u32), String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder
        .read_info()
        .map_err(|error| format!("not a PNG: {error}"))?;
    let info = reader.info();
    Ok((info.width, info.height))
}
