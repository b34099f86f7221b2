//! Query parameters, read strictly: known names in camelCase or snake_case, bad values and
//! unknown names answered as INVALID_ARGUMENT naming the parameter.

use axum::extract::FromRequestParts;
use easel_runtime::error::Error;
use http::request::Parts;

use super::json::ApiError;

/// The query parameters of a request, consumed by name.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Query::parse(parts.uri.query().unwrap_or_default()))
    }
}

impl Query {
    /// Parses a query string.
    pub fn parse(query: &str) -> Query {
        Query {
            pairs: url::form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        }
    }

    /// Every value of the parameter under any of `names`, comma-separated values split.
    pub fn take_all(&mut self, names: &[&str]) -> Vec<String> {
        let mut values = Vec::new();
        self.pairs.retain(|(name, value)| {
            if names.contains(&name.as_str()) {
                values.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(str::to_string),
                );
                false
            } else {
                true
            }
        });
        values
    }

    /// The parameter's single value, if given.
    pub fn take_string(&mut self, names: &[&str]) -> Result<Option<String>, Error> {
        let mut found = None;
        let mut repeated = false;
        self.pairs.retain(|(name, value)| {
            if names.contains(&name.as_str()) {
                repeated |= found.is_some();
                found = Some(value.clone());
                false
            } else {
                true
            }
        });
        if repeated {
            return Err(Error::invalid_field(names[0], "is given more than once"));
        }
        Ok(found)
    }

    /// The parameter as a whole number, if given.
    pub fn take_u32(&mut self, names: &[&str]) -> Result<Option<u32>, Error> {
        match self.take_string(names)? {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| Error::invalid_field(names[0], "must be a whole number")),
        }
    }

    /// Ends reading: any parameter left is unknown.
    pub fn finish(self) -> Result<(), Error> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => {
                let shown: String = name.chars().take(64).collect();
                Err(Error::invalid_field(
                    shown,
                    "is not a parameter of this route",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_by_name_and_the_rest_is_refused() {
        let mut query =
            Query::parse("pageSize=5&status=RUNNING,PENDING&status=FAILED&page_token=x");
        assert_eq!(query.take_u32(&["pageSize", "page_size"]).unwrap(), Some(5));
        assert_eq!(
            query.take_all(&["status"]),
            ["RUNNING", "PENDING", "FAILED"]
        );
        assert_eq!(
            query
                .take_string(&["pageToken", "page_token"])
                .unwrap()
                .as_deref(),
            Some("x")
        );
        assert!(query.finish().is_ok());

        let mut query = Query::parse("pageSize=ten");
        let error = query.take_u32(&["pageSize"]).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "pageSize");

        let query = Query::parse("colour=red");
        assert_eq!(
            query.finish().unwrap_err().field_violations()[0].field,
            "colour"
        );
    }
}
