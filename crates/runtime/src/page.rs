//! Page tokens of the list calls, the same in every service: opaque to clients, they carry the
//! last key of the previous page (keyset pagination, so pages stay stable while rows are
//! added) and, for a filtered listing, the filter they were made for, so a token cannot be
//! replayed against another filter.
//!
//! A token is the key in unpadded base64url, followed by `.` and the filter in base64url when
//! there is one (`.` is outside the base64url alphabet).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::Error;

/// The request field every list call names its page token by.
pub const FIELD: &str = "page_token";

/// A page token this service did not hand out (or made for another filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("is not a token this service returned")]
pub struct InvalidPageToken;

impl From<InvalidPageToken> for Error {
    fn from(invalid: InvalidPageToken) -> Self {
        Error::invalid_field(FIELD, invalid.to_string())
    }
}

/// The token of the page after the one ending at `after`, for a listing filtered by `filter`
/// (empty when unfiltered).
pub fn encode(after: &str, filter: &str) -> String {
    let key = URL_SAFE_NO_PAD.encode(after);
    if filter.is_empty() {
        key
    } else {
        format!("{key}.{}", URL_SAFE_NO_PAD.encode(filter))
    }
}

/// The key a token continues after, read with `parse` (an id parser), or `None` for the first
/// page (an empty token). A token of another filter, or whose key `parse` refuses, is invalid.
pub fn decode<T>(
    token: &str,
    filter: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, InvalidPageToken> {
    if token.is_empty() {
        return Ok(None);
    }
    let (key, token_filter) = match token.split_once('.') {
        Some((key, filter)) => (key, base64_text(filter)?),
        None => (token, String::new()),
    };
    if token_filter != filter {
        return Err(InvalidPageToken);
    }
    parse(&base64_text(key)?).map(Some).ok_or(InvalidPageToken)
}

fn base64_text(part: &str) -> Result<String, InvalidPageToken> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(InvalidPageToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(key: &str) -> Option<String> {
        Some(key.to_string())
    }

    #[test]
    fn tokens_round_trip_with_and_without_a_filter() {
        assert_eq!(
            decode(&encode("job_1", ""), "", any),
            Ok(Some("job_1".into()))
        );
        let bound = encode("art_1", "job_9");
        assert_eq!(decode(&bound, "job_9", any), Ok(Some("art_1".into())));
        assert_eq!(decode("", "job_9", any), Ok(None));
    }

    #[test]
    fn tokens_stay_bound_to_their_filter() {
        let bound = encode("art_1", "job_9");
        assert_eq!(decode(&bound, "", any), Err(InvalidPageToken));
        assert_eq!(decode(&bound, "job_8", any), Err(InvalidPageToken));
        assert_eq!(
            decode(&encode("art_1", ""), "job_9", any),
            Err(InvalidPageToken)
        );
    }

    #[test]
    fn forged_tokens_are_refused() {
        for forged in ["!!!", "a.b.c", "..", &URL_SAFE_NO_PAD.encode([0xff, 0xfe])] {
            assert_eq!(decode(forged, "", any), Err(InvalidPageToken), "{forged}");
        }
        let refused = |_: &str| None::<String>;
        assert_eq!(
            decode(&encode("../x", ""), "", refused),
            Err(InvalidPageToken)
        );
    }

    #[test]
    fn an_invalid_token_names_the_field() {
        let error = Error::from(InvalidPageToken);
        assert_eq!(error.field_violations()[0].field, FIELD);
    }
}
