//! Typed, prefixed ids (`job_…`, `key_…`, `art_…`): server-made, sortable by creation time,
//! and safe as a path segment because they only ever contain `[a-z0-9_]`.

/// Makes a new id with the prefix: the prefix, `_`, and a UUIDv7 in lowercase hex.
///
/// UUIDv7 starts with the creation time in milliseconds, so ids sort by age, which keeps
/// B-tree inserts local and makes keyset pagination by id follow creation order.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Whether `value` is an id made by [`new_id`] with this prefix. Anything else a client
/// sends (path characters, other prefixes, wrong lengths) is not.
pub fn is_valid_id(prefix: &str, value: &str) -> bool {
    value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| {
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Declares a newtype id with its prefix, parsing and display.
#[macro_export]
macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id's prefix.
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique id.
            pub fn new() -> Self {
                $name($crate::ids::new_id($prefix))
            }

            /// Parses an id a client sent; `None` unless it is well-formed.
            pub fn parse(value: &str) -> Option<Self> {
                $crate::ids::is_valid_id($prefix, value).then(|| $name(value.to_string()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    typed_id!(
        /// A test id.
        TestId,
        "tst"
    );

    #[test]
    fn ids_round_trip_and_reject_anything_else() {
        let id = TestId::new();
        assert_eq!(TestId::PREFIX, "tst");
        assert!(id.as_str().starts_with("tst_"));
        assert_eq!(TestId::parse(id.as_str()), Some(id.clone()));
        for bad in [
            "",
            "tst_",
            "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b",
            "tst_../../etc/passwd",
            "tst_0190A5B2C3D47E8F9A0B1C2D3E4F5A6B",
            "tst_0190a5b2c3d47e8f9a0b1c2d3e4f5a6",
        ] {
            assert!(TestId::parse(bad).is_none(), "{bad}");
        }
        assert!(id.clone().into_string().starts_with("tst_"));
    }

    #[test]
    fn ids_sort_by_creation() {
        let first = new_id("x");
        let second = new_id("x");
        assert!(first < second);
    }
}
