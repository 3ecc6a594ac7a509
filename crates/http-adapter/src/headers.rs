//! Security headers on every response, errors and 404s included.
//!
//! The API serves JSON, never pages, so its policy forbids everything a
//! browser could do with a response (run it, frame it, sniff it into
//! HTML). Swagger UI at `/docs` is the one page: its policy lets it load its
//! own scripts, styles and images and call the API, and nothing else.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use actix_web::middleware::Next;
use std::time::Duration;

/// The policy of every response but the docs.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// The policy of Swagger UI: its own assets (it sets inline styles and uses
/// `data:` icons) and calls to this origin.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' \
    'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The headers' values, computed once.
#[derive(Debug, Clone)]
pub(crate) struct SecurityHeaders {
    hsts: Option<HeaderValue>,
}

impl SecurityHeaders {
    pub(crate) fn new(hsts_max_age: Option<Duration>) -> Self {
        Self {
            hsts: hsts_max_age.and_then(|age| {
                HeaderValue::from_str(&format!("max-age={}; includeSubDomains", age.as_secs())).ok()
            }),
        }
    }

    fn apply(&self, path: &str, headers: &mut HeaderMap) {
        let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
            headers.insert(name, HeaderValue::from_static(value));
        };
        set(headers, X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(headers, X_FRAME_OPTIONS, "DENY");
        set(headers, REFERRER_POLICY, "no-referrer");
        let docs = path == "/docs" || path.starts_with("/docs/");
        set(
            headers,
            CONTENT_SECURITY_POLICY,
            if docs { DOCS_CSP } else { API_CSP },
        );
        if path == "/api" || path.starts_with("/api/") {
            // Conversations are private: no cache on the way may keep them.
            set(headers, CACHE_CONTROL, "no-store");
        }
        if let Some(hsts) = &self.hsts {
            headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
}

/// Adds the headers to whatever the inner services answer, and to the
/// response an error that escaped them will be rendered as.
pub(crate) async fn secure<B>(
    headers: SecurityHeaders,
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let path = request.path().to_owned();
    match next.call(request).await {
        Ok(mut response) => {
            headers.apply(&path, response.headers_mut());
            Ok(response)
        }
        Err(mut error) => {
            error.add_response_mapper(move |mut response| {
                headers.apply(&path, response.headers_mut());
                response
            });
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_docs_get_their_own_policy() {
        let headers = SecurityHeaders::new(None);
        let mut api = HeaderMap::new();
        headers.apply("/api/sessions", &mut api);
        assert_eq!(api.get(CONTENT_SECURITY_POLICY).unwrap(), API_CSP);
        assert_eq!(api.get(CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(api.get(X_FRAME_OPTIONS).unwrap(), "DENY");
        assert!(api.get(STRICT_TRANSPORT_SECURITY).is_none());

        let mut docs = HeaderMap::new();
        headers.apply("/docs/swagger-ui.css", &mut docs);
        assert_eq!(docs.get(CONTENT_SECURITY_POLICY).unwrap(), DOCS_CSP);
        assert!(docs.get(CACHE_CONTROL).is_none());
        assert_eq!(docs.get(X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
    }

    #[test]
    fn hsts_only_when_configured() {
        let headers = SecurityHeaders::new(Some(Duration::from_secs(31_536_000)));
        let mut map = HeaderMap::new();
        headers.apply("/health", &mut map);
        assert_eq!(
            map.get(STRICT_TRANSPORT_SECURITY).unwrap(),
            "max-age=31536000; includeSubDomains"
        );
    }
}
