//! `Idempotency-Key`: a retried POST with the same key and body returns the
//! first result; the same key with another body is a conflict (the domain
//! compares the request hashes).

use crate::error::ApiError;
use actix_web::HttpRequest;
use heartrule_domain::IdempotencyKey;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Set on a response that replays a stored result.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

const MAX_KEY_LEN: usize = 255;

/// The request's key with the hash of `route` and its normalised `body`, or
/// `None` when the request carries no key.
pub(crate) fn idempotency_key(
    request: &HttpRequest,
    route: &str,
    body: &impl Serialize,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = request.headers().get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::invalid_request(format!(
                "`Idempotency-Key` must be 1–{MAX_KEY_LEN} visible ASCII characters"
            ))
        })?;
    let body = serde_json::to_value(body)
        .map_err(|e| ApiError::internal(format!("request body could not be normalised: {e}")))?;
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        request_hash: request_hash(route, &body),
    }))
}

/// Hex SHA-256 of the route and the body in canonical JSON (keys sorted,
/// no whitespace), so key order and formatting of the request don't matter.
#[must_use]
pub fn request_hash(route: &str, body: &Value) -> String {
    let mut canonical = String::with_capacity(route.len() + 64);
    canonical.push_str(route);
    canonical.push('\n');
    write_canonical(body, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order_but_not_values_or_route() {
        let a = json!({"sessionId": "x", "message": "hi", "nested": {"b": 1, "a": [1, 2]}});
        let b: Value = serde_json::from_str(
            r#"{ "nested": {"a": [1,2], "b": 1}, "message": "hi", "sessionId": "x" }"#,
        )
        .unwrap();
        assert_eq!(
            request_hash("POST /api/chat", &a),
            request_hash("POST /api/chat", &b)
        );
        assert_ne!(
            request_hash("POST /api/chat", &a),
            request_hash("POST /api/chat/stream", &a)
        );
        let c = json!({"sessionId": "x", "message": "hello", "nested": {"b": 1, "a": [1, 2]}});
        assert_ne!(
            request_hash("POST /api/chat", &a),
            request_hash("POST /api/chat", &c)
        );
        assert_eq!(request_hash("r", &a).len(), 64);
    }

    #[test]
    fn reads_and_validates_the_header() {
        let body = json!({"content": "x"});
        let none = TestRequest::default().to_http_request();
        assert!(idempotency_key(&none, "r", &body).unwrap().is_none());

        let ok = TestRequest::default()
            .insert_header(("Idempotency-Key", "turn-42"))
            .to_http_request();
        let key = idempotency_key(&ok, "r", &body).unwrap().unwrap();
        assert_eq!(key.key, "turn-42");
        assert_eq!(key.request_hash, request_hash("r", &body));

        for bad in ["", "has space", &"k".repeat(256)] {
            let request = TestRequest::default()
                .insert_header(("Idempotency-Key", bad))
                .to_http_request();
            let error = idempotency_key(&request, "r", &body).unwrap_err();
            assert_eq!(error.code(), "INVALID_REQUEST", "{bad:?}");
        }
    }
}
