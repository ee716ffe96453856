//! Extractors that turn every malformed request into a problem+json answer: JSON bodies
//! (content type, size, nesting depth, syntax, unknown fields, types), query strings and paths.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use flowline_core::validation::ValidationErrors;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The deepest JSON nesting a body may have.
pub const MAX_JSON_DEPTH: usize = 64;
/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, parsed strictly.
pub struct ApiJson<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Whether `bytes` nests arrays and objects deeper than `limit`, looking only at structure.
fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a JSON document into `T`, telling syntax errors (400) from wrong shapes (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if nests_deeper_than(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::bad_request(
            "json_too_deep",
            format!("JSON nests deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    // Syntax first, so a document that is not JSON is told apart from one of the wrong shape.
    let document: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    if let Some(path) = nul_path(&document, String::new()) {
        return Err(ApiError::invalid(
            path,
            "text must not contain NUL characters",
        ));
    }
    let value = serde_path_to_error::deserialize::<_, T>(document).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ApiError::Validation(ValidationErrors::single(field, e.into_inner().to_string()))
    })?;
    Ok(value)
}

/// The path of the first string (or key) holding a NUL character, which no text column stores.
fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(at),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_path(v, here)
            }
        }),
        _ => None,
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(e)
                    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::PayloadTooLarge(format!("the body is over {MAX_BODY_BYTES} bytes"))
                }
                other => ApiError::bad_request("unreadable_body", other.body_text()),
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A query string, parsed strictly.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts
            .uri
            .query()
            .is_some_and(|q| q.to_ascii_lowercase().contains("%00"))
        {
            return Err(ApiError::bad_request(
                "invalid_query",
                "the query string must not contain NUL characters",
            ));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

/// Path parameters, parsed strictly.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings_only() {
        assert!(!nests_deeper_than(br#"{"a": [1, {"b": "[[[[[["}]}"#, 3));
        assert!(nests_deeper_than(&b"[".repeat(65), 64));
        assert!(!nests_deeper_than(&b"[".repeat(64), 64));
        assert!(!nests_deeper_than(br#"{"a": "\"[[[[" }"#, 1));
    }

    #[test]
    fn syntax_errors_and_shape_errors_are_told_apart() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            n: u32,
        }
        assert!(matches!(
            parse_json::<Body>(b"{"),
            Err(ApiError::BadRequest {
                code: "malformed_json",
                ..
            })
        ));
        assert!(matches!(
            parse_json::<Body>(b"{} x"),
            Err(ApiError::BadRequest {
                code: "malformed_json",
                ..
            })
        ));
        match parse_json::<Body>(br#"{"n": "x"}"#) {
            Err(ApiError::Validation(e)) => assert_eq!(e.0[0].field, "n"),
            other => panic!("{other:?}"),
        }
        match parse_json::<Body>(br#"{"n": 1, "zzz": 2}"#) {
            Err(ApiError::Validation(e)) => assert!(e.0[0].message.contains("zzz"), "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
}
