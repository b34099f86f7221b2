//! Removing the text chunks from a PNG without touching its pixels.
//!
//! ComfyUI's `SaveImage` writes the whole prompt graph (`prompt`) and the UI workflow
//! (`workflow`) into `tEXt` chunks; other tools use `iTXt` and `zTXt`. Each chunk's CRC covers
//! only its own type and data, so dropping whole chunks leaves every other chunk — and the
//! image data — byte for byte as it was: one forward pass over the chunks, nothing decoded.

/// The PNG signature.
const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The chunk types that carry text.
const TEXT_CHUNKS: &[&[u8; 4]] = &[b"tEXt", b"iTXt", b"zTXt"];

/// Why a PNG could not be rewritten.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PngError {
    /// A chunk runs past the end of the data.
    #[error("a PNG chunk at byte {0} is cut short")]
    Truncated(usize),
    /// There is data after `IEND`, or no `IEND`.
    #[error("the PNG does not end with its IEND chunk")]
    NoEnd,
}

/// Whether `data` starts like a PNG.
pub fn is_png(data: &[u8]) -> bool {
    data.starts_with(SIGNATURE)
}

/// `data` without its text chunks. Data that is not a PNG is returned as it is (ComfyUI may
/// answer a `/view` with WebP or JPEG for previews); a PNG whose chunks do not add up is an
/// error rather than a guess.
pub fn strip_text_chunks(data: &[u8]) -> Result<Vec<u8>, PngError> {
    if !is_png(data) {
        return Ok(data.to_vec());
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(SIGNATURE);
    let mut at = SIGNATURE.len();
    loop {
        let header = data.get(at..at + 8).ok_or(PngError::Truncated(at))?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind: &[u8; 4] = header[4..8]
            .try_into()
            .map_err(|_| PngError::Truncated(at))?;
        // length, type, data, CRC
        let end = at
            .checked_add(12)
            .and_then(|n| n.checked_add(length))
            .filter(|end| *end <= data.len())
            .ok_or(PngError::Truncated(at))?;
        if !TEXT_CHUNKS.contains(&kind) {
            out.extend_from_slice(&data[at..end]);
        }
        at = end;
        if kind == b"IEND" {
            return if at == data.len() {
                Ok(out)
            } else {
                Err(PngError::NoEnd)
            };
        }
        if at == data.len() {
            return Err(PngError::NoEnd);
        }
    }
}

/// `data` with a `tEXt` chunk `keyword` = `text` right after `IHDR`, where ComfyUI's
/// `SaveImage` puts its `prompt`: images that came over the WebSocket carry no metadata, and a
/// job that asked to keep it gets what `SaveImage` would have written. Non-ASCII characters
/// are written as JSON `\uXXXX` escapes, as Python's `json.dumps` does, so the chunk stays
/// Latin-1 as `tEXt` requires.
pub fn insert_text_chunk(data: &[u8], keyword: &str, json: &str) -> Result<Vec<u8>, PngError> {
    if !is_png(data) {
        return Ok(data.to_vec());
    }
    let at = SIGNATURE.len();
    let header = data.get(at..at + 8).ok_or(PngError::Truncated(at))?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let after_ihdr = at + 12 + length;
    if &header[4..8] != b"IHDR" || after_ihdr > data.len() {
        return Err(PngError::Truncated(at));
    }
    let mut body = keyword.as_bytes().to_vec();
    body.push(0);
    for unit in json.chars() {
        if unit.is_ascii() {
            body.push(unit as u8);
        } else {
            let mut buffer = [0u16; 2];
            for half in unit.encode_utf16(&mut buffer) {
                body.extend_from_slice(format!("\\u{half:04x}").as_bytes());
            }
        }
    }
    let mut chunk = Vec::with_capacity(body.len() + 12);
    chunk.extend_from_slice(
        &u32::try_from(body.len())
            .map_err(|_| PngError::NoEnd)?
            .to_be_bytes(),
    );
    chunk.extend_from_slice(b"tEXt");
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    let mut out = Vec::with_capacity(data.len() + chunk.len());
    out.extend_from_slice(&data[..after_ihdr]);
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&data[after_ihdr..]);
    Ok(out)
}

/// The PNG (ISO 3309) CRC-32 of a chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The keywords of the text chunks in `data` (for tests and diagnostics).
pub fn text_keywords(data: &[u8]) -> Vec<String> {
    let mut keywords = Vec::new();
    if !is_png(data) {
        return keywords;
    }
    let mut at = SIGNATURE.len();
    while let Some(header) = data.get(at..at + 8) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(body) = data.get(at + 8..at + 8 + length) else {
            break;
        };
        if TEXT_CHUNKS.iter().any(|kind| &header[4..8] == *kind) {
            let keyword = body.split(|byte| *byte == 0).next().unwrap_or_default();
            keywords.push(String::from_utf8_lossy(keyword).into_owned());
        }
        at += 12 + length;
    }
    keywords
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        // Any CRC: the rewrite never recomputes or checks it, it keeps the chunk's own.
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    #[test]
    fn the_recorded_output_loses_its_prompt_and_keeps_its_pixels() {
        let data = include_bytes!("../../tests/fixtures/output.png");
        assert!(text_keywords(data).contains(&"prompt".to_string()));
        let stripped = strip_text_chunks(data).expect("strip");
        assert!(text_keywords(&stripped).is_empty());
        assert!(!stripped.windows(4).any(|window| window == b"tEXt"));
        // Every other chunk is kept byte for byte: the IDAT (pixels) and IEND included.
        let idat = data
            .windows(4)
            .position(|window| window == b"IDAT")
            .expect("idat")
            - 4;
        let kept = stripped
            .windows(4)
            .position(|window| window == b"IDAT")
            .expect("idat")
            - 4;
        assert_eq!(&data[idat..], &stripped[kept..]);
        assert_eq!(&data[..33], &stripped[..33]);
    }

    #[test]
    fn a_kept_prompt_is_a_valid_text_chunk_after_ihdr() {
        let data = include_bytes!("../../tests/fixtures/output.png");
        let bare = strip_text_chunks(data).expect("strip");
        let with =
            insert_text_chunk(&bare, "prompt", r#"{"6": {"text": "café"}}"#).expect("insert");
        assert_eq!(text_keywords(&with), ["prompt"]);
        let start = with
            .windows(4)
            .position(|window| window == b"tEXt")
            .expect("chunk");
        assert_eq!(start, 33 + 4, "right after IHDR");
        let length = u32::from_be_bytes(with[33..37].try_into().expect("length")) as usize;
        let body = &with[start + 4..start + 4 + length];
        assert_eq!(body, b"prompt\0{\"6\": {\"text\": \"caf\\u00e9\"}}");
        let crc = u32::from_be_bytes(
            with[start + 4 + length..start + 8 + length]
                .try_into()
                .expect("crc"),
        );
        assert_eq!(crc, crc32(&with[start..start + 4 + length]));
        // The recorded file's own tEXt chunk checks out with the same CRC.
        let own = data
            .windows(4)
            .position(|window| window == b"tEXt")
            .expect("own");
        let own_length =
            u32::from_be_bytes(data[own - 4..own].try_into().expect("length")) as usize;
        let own_crc = u32::from_be_bytes(
            data[own + 4 + own_length..own + 8 + own_length]
                .try_into()
                .expect("crc"),
        );
        assert_eq!(own_crc, crc32(&data[own..own + 4 + own_length]));
        assert_eq!(strip_text_chunks(&with).expect("strip"), bare);
    }

    #[test]
    fn text_chunks_of_every_kind_go_and_broken_pngs_are_errors() {
        let mut png = SIGNATURE.to_vec();
        png.extend(chunk(b"IHDR", &[0; 13]));
        png.extend(chunk(b"iTXt", b"workflow\0\0\0\0\0{}"));
        png.extend(chunk(b"zTXt", b"prompt\0\0xyz"));
        png.extend(chunk(b"IDAT", b"pixels"));
        png.extend(chunk(b"IEND", b""));
        let stripped = strip_text_chunks(&png).expect("strip");
        assert_eq!(text_keywords(&png), ["workflow", "prompt"]);
        let mut expected = SIGNATURE.to_vec();
        expected.extend(chunk(b"IHDR", &[0; 13]));
        expected.extend(chunk(b"IDAT", b"pixels"));
        expected.extend(chunk(b"IEND", b""));
        assert_eq!(stripped, expected);
        assert_eq!(
            strip_text_chunks(&png[..png.len() - 3]),
            Err(PngError::Truncated(png.len() - 12))
        );
        let mut trailing = png.clone();
        trailing.push(0);
        assert_eq!(strip_text_chunks(&trailing), Err(PngError::NoEnd));
        assert_eq!(
            strip_text_chunks(b"RIFF....WEBP").expect("as is"),
            b"RIFF....WEBP"
        );
    }
}
