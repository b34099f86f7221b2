//! One `Range: bytes=…` request, as RFC 9110 defines it.

/// An inclusive byte range within an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Parses a `Range` header against an object of `size` bytes. `Ok(None)`: serve the whole
    /// object (not a bytes range, or several ranges, which a server may ignore); `Err`:
    /// unsatisfiable (416).
    pub fn parse(header: &str, size: u64) -> Result<Option<ByteRange>, ()> {
        let Some(spec) = header.trim().strip_prefix("bytes=") else {
            return Ok(None);
        };
        if spec.contains(',') {
            return Ok(None);
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Err(());
        };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // A suffix: the last N bytes.
            let suffix: u64 = last.parse().map_err(|_| ())?;
            if suffix == 0 || size == 0 {
                return Err(());
            }
            ByteRange {
                start: size.saturating_sub(suffix),
                end: size - 1,
            }
        } else {
            let start: u64 = first.parse().map_err(|_| ())?;
            let end = if last.is_empty() {
                size.saturating_sub(1)
            } else {
                let end: u64 = last.parse().map_err(|_| ())?;
                if end < start {
                    return Err(());
                }
                end.min(size.saturating_sub(1))
            };
            ByteRange { start, end }
        };
        if range.start >= size {
            return Err(());
        }
        Ok(Some(range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |start, end| Ok(Some(ByteRange { start, end }));
        assert_eq!(ByteRange::parse("bytes=0-9", 100), r(0, 9));
        assert_eq!(ByteRange::parse("bytes=90-", 100), r(90, 99));
        assert_eq!(ByteRange::parse("bytes=-10", 100), r(90, 99));
        assert_eq!(ByteRange::parse("bytes=-1000", 100), r(0, 99));
        assert_eq!(ByteRange::parse("bytes=50-1000", 100), r(50, 99));
        assert_eq!(ByteRange::parse("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(ByteRange::parse("items=0-1", 100), Ok(None));
        assert_eq!(ByteRange::parse("bytes=100-", 100), Err(()));
        assert_eq!(ByteRange::parse("bytes=9-1", 100), Err(()));
        assert_eq!(ByteRange::parse("bytes=-0", 100), Err(()));
        assert_eq!(ByteRange::parse("bytes=x-1", 100), Err(()));
    }
}
