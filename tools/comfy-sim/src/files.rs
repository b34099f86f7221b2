//! The simulator's directories (output, input, temp) and ComfyUI's path rules for them:
//! annotated names (`x.png [output]`), traversal checks and SaveImage's counters.

use std::path::{Component, Path, PathBuf};

/// The three directories ComfyUI serves files from.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Where SaveImage writes (`type=output`).
    pub output: PathBuf,
    /// Where uploads land and LoadImage reads (`type=input`).
    pub input: PathBuf,
    /// Where PreviewImage writes (`type=temp`).
    pub temp: PathBuf,
}

impl Dirs {
    /// The directory for a `type` value, `None` for an unknown type.
    pub fn by_type(&self, kind: &str) -> Option<&Path> {
        match kind {
            "output" => Some(&self.output),
            "input" => Some(&self.input),
            "temp" => Some(&self.temp),
            _ => None,
        }
    }

    /// Resolves a LoadImage name: `sub/x.png` in the input dir, or `x.png [output]` etc.
    /// `None` when the name escapes its directory.
    pub fn resolve_annotated(&self, name: &str) -> Option<PathBuf> {
        let (name, base) = split_annotation(name);
        let base = match base {
            Some(kind) => self.by_type(kind)?,
            None => &self.input,
        };
        contained_join(base, name)
    }
}

/// Splits `"name.png [output]"` into the name and the annotation.
pub fn split_annotation(name: &str) -> (&str, Option<&str>) {
    for kind in ["output", "input", "temp"] {
        if let Some(stripped) = name.strip_suffix(&format!(" [{kind}]")) {
            return (stripped, Some(kind));
        }
    }
    (name, None)
}

/// Lexically normalises a path (`.` dropped, `..` pops), like Python's `os.path.normpath`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Joins `relative` onto `base` and returns it only if it stays inside `base`.
pub fn contained_join(base: &Path, relative: &str) -> Option<PathBuf> {
    let joined = normalize(&base.join(relative));
    joined.starts_with(base).then_some(joined)
}

/// Where SaveImage writes for a prefix: the folder, the file stem, the next counter and the
/// subfolder, mirroring `folder_paths.get_save_image_path`. Errors when the prefix escapes.
pub fn save_image_path(
    output_dir: &Path,
    prefix: &str,
) -> Result<(PathBuf, String, u64, String), String> {
    let normalized = normalize(Path::new(prefix));
    let filename = normalized
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let subfolder = normalized
        .parent()
        .map(|parent| parent.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = normalize(&output_dir.join(&subfolder));
    if !folder.starts_with(output_dir) {
        return Err(format!(
            "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: {}\n         output_dir: {}",
            folder.display(),
            output_dir.display()
        ));
    }
    std::fs::create_dir_all(&folder).map_err(|error| error.to_string())?;
    let counter = next_counter(&folder, &filename);
    Ok((folder, filename, counter, subfolder))
}

/// One more than the highest `{stem}_{NNNNN}_…` counter in `folder`, or 1.
fn next_counter(folder: &Path, stem: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 1;
    };
    let prefix_len = stem.len();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| {
            let head = name.get(..=prefix_len)?;
            let (stem_part, separator) = head.split_at(prefix_len);
            if separator != "_" || !stem_part.eq_ignore_ascii_case(stem) {
                return None;
            }
            let digits = name.get(prefix_len + 1..)?.split('_').next()?;
            Some(digits.parse::<u64>().unwrap_or(0))
        })
        .max()
        .map_or(1, |highest| highest + 1)
}

/// The Content-Type aiohttp's `mimetypes` guesses for a file name.
pub fn content_type_for(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "txt" => "text/plain",
        "json" => "application/json",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "wav" => "audio/x-wav",
        "mp3" => "audio/mpeg",
        // ComfyUI forces these to download instead of display.
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        let base = Path::new("/srv/input");
        assert_eq!(
            contained_join(base, "sub/x.png"),
            Some(PathBuf::from("/srv/input/sub/x.png"))
        );
        assert_eq!(contained_join(base, "../x.png"), None);
        assert_eq!(contained_join(base, "a/../../x.png"), None);
    }

    #[test]
    fn annotations() {
        assert_eq!(
            split_annotation("a.png [output]"),
            ("a.png", Some("output"))
        );
        assert_eq!(split_annotation("a.png"), ("a.png", None));
    }

    #[test]
    fn counter_continues_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("proto_00001_.png"), b"x").expect("write");
        std::fs::write(dir.path().join("proto_00007_.png"), b"x").expect("write");
        std::fs::write(dir.path().join("other_00009_.png"), b"x").expect("write");
        assert_eq!(next_counter(dir.path(), "proto"), 8);
        assert_eq!(next_counter(dir.path(), "fresh"), 1);
    }
}
