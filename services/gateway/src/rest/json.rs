//! JSON in and out under the proto3 JSON mapping, and errors in the envelope.
//!
//! Handlers and extractors fail with [`ApiError`]; the router's [`finish_errors`] layer turns
//! it into the envelope `{"error": {"code", "message", "details", "requestId"}}` with the
//! request's id, so every error, axum's rejections included, has the same shape.

use std::time::Duration;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use easel_runtime::error::{Error, ErrorEnvelope, reason};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::REQUEST_ID;

/// An error answered in the envelope.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        ApiError(Error::from_status(&status))
    }
}

/// An error waiting for [`finish_errors`] to write its envelope (response extension).
#[derive(Clone, Debug)]
struct PendingEnvelope {
    envelope: ErrorEnvelope,
    retry_after: Option<Duration>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        error.log();
        let mut response = error.http_status().into_response();
        response.extensions_mut().insert(PendingEnvelope {
            envelope: error.to_envelope(None),
            retry_after: error.retry_after(),
        });
        response
    }
}

/// Writes the envelope of an [`ApiError`] answer, with the request's id.
pub async fn finish_errors(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let mut response = next.run(request).await;
    let Some(pending) = response.extensions_mut().remove::<PendingEnvelope>() else {
        return response;
    };
    let mut envelope = pending.envelope;
    envelope.error.request_id = request_id;
    let status = response.status();
    let mut answer = json_response(status, &envelope);
    // Keep what the handler set (e.g. Allow on 405), then the envelope's own headers.
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(delay) = pending.retry_after {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    answer
}

/// A JSON answer.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(error) => ApiError(Error::internal(error)).into_response(),
    }
}

/// A JSON answer of a proto message with the proto's own field names (snake_case) instead of
/// the proto3 JSON mapping's camelCase. Only for messages without `Struct` or `Value` fields,
/// whose keys are the caller's and must stay as they are.
pub fn snake_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(value) => json_response(status, &snake_keys(value)),
        Err(error) => ApiError(Error::internal(error)).into_response(),
    }
}

/// `value` with every object key in snake_case (`nextPageToken` → `next_page_token`).
pub fn snake_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (snake_case(&key), snake_keys(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

fn snake_case(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for character in name.chars() {
        if character.is_ascii_uppercase() {
            snake.push('_');
            snake.push(character.to_ascii_lowercase());
        } else {
            snake.push(character);
        }
    }
    snake
}

/// A request body in the proto3 JSON mapping, deserialized with field paths in errors.
#[derive(Debug)]
pub struct ProtoJson<T>(pub T);

impl<S, T> FromRequest<S> for ProtoJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = json_body(request, state, false).await?;
        parse_json(&body).map(ProtoJson).map_err(ApiError)
    }
}

/// Like [`ProtoJson`], but an empty body means the message's defaults.
#[derive(Debug)]
pub struct OptionalProtoJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalProtoJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = json_body(request, state, true).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalProtoJson(T::default()));
        }
        parse_json(&body).map(OptionalProtoJson).map_err(ApiError)
    }
}

/// The raw body of a JSON request: 415 unless the content type is JSON (an empty body may
/// come without one when `optional`), 413 over the body limit.
pub async fn json_body<S: Send + Sync>(
    request: Request,
    state: &S,
    optional: bool,
) -> Result<Bytes, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let body = Bytes::from_request(request, state)
        .await
        .map_err(body_rejection)?;
    match content_type {
        Some(content_type) if is_json(&content_type) => Ok(body),
        None if optional && body.is_empty() => Ok(body),
        _ => Err(ApiError(
            Error::invalid_argument(
                "the request body must be JSON (Content-Type: application/json)",
            )
            .with_reason(reason::UNSUPPORTED_MEDIA_TYPE),
        )),
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The error of a body that could not be read.
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(payload_too_large())
    } else {
        ApiError(Error::invalid_argument(
            "the request body could not be read",
        ))
    }
}

/// 413 in the vocabulary.
pub fn payload_too_large() -> Error {
    Error::invalid_argument("the request body is larger than the limit")
        .with_reason(reason::PAYLOAD_TOO_LARGE)
}

/// Deserializes `body` with errors naming the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        json_error(&path, error.inner())
    })?;
    deserializer.end().map_err(|error| json_error("", &error))?;
    Ok(value)
}

/// Deserializes an already parsed JSON value with errors naming the field; `prefix` is put in
/// front of every path (the field's name in the request when the value was moved).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let path = match (prefix.is_empty(), path.is_empty() || path == ".") {
            (true, _) => path,
            (false, true) => prefix.to_string(),
            (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
            (false, false) => format!("{prefix}.{path}"),
        };
        json_error(&path, error.inner())
    })
}

/// A JSON error as INVALID_ARGUMENT naming the field. Values the caller sent are not echoed
/// (they may be prompts or secrets and messages get logged), except unknown enum values and
/// field names, which say what was wrong.
pub fn json_error(path: &str, error: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    if error.to_string().starts_with("recursion limit exceeded") {
        // serde_json stops at 128 levels; say which limit applies to what a client nests.
        return Error::invalid_argument(format!(
            "the request body nests too deeply: a workflow document may nest at most {} levels",
            easel_proto::limits::MAX_WORKFLOW_DEPTH
        ));
    }
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => Error::invalid_argument(format!(
            "the request body is not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        )),
        Category::Data => {
            let description = describe_data_error(&error.to_string());
            let field = if path.is_empty() || path == "." {
                unknown_field_name(&description).unwrap_or_default()
            } else {
                path.to_string()
            };
            if field.is_empty() {
                Error::invalid_argument(description)
            } else {
                Error::invalid_field(field, description)
            }
        }
    }
}

/// serde's message without the caller's value and without the position suffix.
fn describe_data_error(message: &str) -> String {
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head);
    for kind in ["invalid type: string ", "invalid value: string "] {
        if let Some(rest) = message.strip_prefix(kind) {
            // `invalid type: string "…", expected u32` → `invalid type: string, expected u32`.
            if let Some((_, expected)) = rest.rsplit_once("\", expected ") {
                return format!("{}, expected {expected}", kind.trim_end());
            }
            return kind.trim_end().to_string();
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
    {
        let shown: String = value.chars().take(64).collect();
        return format!("unknown value \"{shown}\", expected {expected}");
    }
    message.to_string()
}

/// The field named by serde's "unknown field `x`" message.
fn unknown_field_name(description: &str) -> Option<String> {
    let rest = description.strip_prefix("unknown field `")?;
    let (name, _) = rest.split_once('`')?;
    Some(name.chars().take(64).collect())
}

/// A path parameter as text, its rejection in the envelope.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParam(value))
            .map_err(|rejection: PathRejection| {
                ApiError(Error::invalid_argument(format!(
                    "invalid path parameter: {}",
                    rejection.body_text()
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use easel_proto::jobs::v1::TextToImage;

    use super::*;

    #[test]
    fn malformed_json_says_where() {
        let error = parse_json::<TextToImage>(b"{\"prompt\": ").unwrap_err();
        assert!(error.message().contains("not valid JSON"), "{error}");
        assert!(error.field_violations().is_empty());
    }

    #[test]
    fn an_unknown_enum_value_names_the_field() {
        let error =
            parse_json::<TextToImage>(br#"{"prompt":"x","sampler":"SAMPLER_BOGUS"}"#).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "sampler");
        assert!(error.message().contains("SAMPLER_BOGUS"), "{error}");
    }

    #[test]
    fn a_wrong_type_does_not_echo_the_value() {
        let error =
            parse_json::<TextToImage>(br#"{"prompt":"x","width":"a secret sunset"}"#).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "width");
        assert!(!error.message().contains("secret"), "{error}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let error = parse_json::<TextToImage>(br#"{"prompt":"x","colour":"red"}"#).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "colour");
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let error = parse_json::<TextToImage>(br#"{"prompt":"x"} 1"#).unwrap_err();
        assert!(error.message().contains("not valid JSON"), "{error}");
    }

    #[test]
    fn keys_turn_snake_case() {
        let value = serde_json::json!({"nextPageToken": "t", "apiKeys": [{"keyId": 1}]});
        assert_eq!(
            snake_keys(value),
            serde_json::json!({"next_page_token": "t", "api_keys": [{"key_id": 1}]})
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
    }
}
