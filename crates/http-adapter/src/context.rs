//! Per-request facts the middleware establishes and the handlers read.

use actix_web::{HttpMessage, HttpRequest};

/// The header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest incoming request id that is reused.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Identifies a request in responses, logs and error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub request_id: String,
    pub trace_id: Option<String>,
}

impl RequestContext {
    /// The context the middleware stored, or a fresh one when the handler
    /// runs without the middleware.
    #[must_use]
    pub fn of(request: &HttpRequest) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self {
                request_id: new_request_id(),
                trace_id: None,
            })
    }
}

/// The user a request names (body `userId` or path `{userId}`), for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestUser(pub String);

/// Records the user a request is about, for the access log and the root span.
pub(crate) fn name_user(request: &HttpRequest, user_id: &str) {
    request
        .extensions_mut()
        .insert(RequestUser(user_id.to_owned()));
}

/// A fresh request id.
#[must_use]
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The incoming id when it is sane (1–128 characters of `[A-Za-z0-9._:-]`),
/// so a client can correlate its logs with ours but cannot inject into them.
#[must_use]
pub fn sane_request_id(incoming: Option<&str>) -> Option<String> {
    let id = incoming?.trim();
    let sane = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    sane.then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_sane_ids_only() {
        assert_eq!(
            sane_request_id(Some("abc-123_x.y:z")),
            Some("abc-123_x.y:z".to_owned())
        );
        assert_eq!(
            sane_request_id(Some("  trimmed ")),
            Some("trimmed".to_owned())
        );
        assert_eq!(sane_request_id(None), None);
        assert_eq!(sane_request_id(Some("")), None);
        assert_eq!(sane_request_id(Some("has space")), None);
        assert_eq!(sane_request_id(Some("line\nbreak")), None);
        assert_eq!(sane_request_id(Some(&"a".repeat(129))), None);
        assert!(sane_request_id(Some(&"a".repeat(128))).is_some());
    }

    #[test]
    fn new_ids_are_uuids() {
        let id = new_request_id();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_ne!(id, new_request_id());
    }
}
