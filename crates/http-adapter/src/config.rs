//! Tunables of the HTTP adapter.

use actix_cors::Cors;
use actix_web::http::header::HeaderName;
use actix_web::http::Method;
use std::time::Duration;

/// Settings of the HTTP layer. The server builds it from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest accepted JSON body; larger ones get `413 PAYLOAD_TOO_LARGE`.
    pub body_limit_bytes: usize,
    /// How often the WebSocket endpoint pings its client.
    pub ws_ping_interval: Duration,
    /// A WebSocket client that sends nothing (not even a pong) for this long is disconnected.
    pub ws_client_timeout: Duration,
    /// Whether turn responses carry `debugInfo` (every LLM call of the turn, prompts included).
    pub include_debug_info: bool,
    /// Largest page of `GET /api/sessions/{id}/messages`.
    pub history_page_limit: usize,
    /// Which browser origins may call the API.
    pub cors: CorsConfig,
    /// `Strict-Transport-Security` max-age on every response; `None` sends
    /// none (set it only when clients reach the server over TLS).
    pub hsts_max_age: Option<Duration>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            ws_ping_interval: Duration::from_secs(15),
            ws_client_timeout: Duration::from_secs(45),
            include_debug_info: true,
            history_page_limit: 200,
            cors: CorsConfig::default(),
            hsts_max_age: None,
        }
    }
}

/// Cross-origin access for browsers. No origin listed (the default): no
/// CORS headers at all, so only pages of the API's own origin can read its
/// responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`); `*` alone allows any
    /// origin, and only without credentials.
    pub allowed_origins: Vec<String>,
    /// Methods a cross-origin request may use (`GET`, `POST`, …).
    pub allowed_methods: Vec<String>,
    /// Request headers a cross-origin request may send.
    pub allowed_headers: Vec<String>,
    /// Response headers the page may read besides the CORS-safelisted ones.
    pub expose_headers: Vec<String>,
    /// Whether the browser may send cookies or HTTP authentication along.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Option<Duration>,
}

/// The origin that allows every origin.
const ANY_ORIGIN: &str = "*";

impl CorsConfig {
    /// Whether cross-origin access is configured at all.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// Rejects settings the middleware could not honour, with the reason
    /// (the server prefixes the configuration key).
    ///
    /// # Errors
    /// A wildcard origin together with credentials (browsers refuse it and
    /// it would hand any site the user's session), a wildcard among other
    /// origins, an origin that is not `scheme://host[:port]`, or a method or
    /// header name that does not parse.
    pub fn validate(&self) -> Result<(), String> {
        let wildcard = self.allowed_origins.iter().any(|o| o == ANY_ORIGIN);
        if wildcard && self.allow_credentials {
            return Err(
                "allowed_origins `*` cannot be combined with allow_credentials: list the origins"
                    .to_owned(),
            );
        }
        if wildcard && self.allowed_origins.len() > 1 {
            return Err("allowed_origins `*` must be the only entry".to_owned());
        }
        for origin in self.allowed_origins.iter().filter(|o| *o != ANY_ORIGIN) {
            if !is_origin(origin) {
                return Err(format!(
                    "allowed_origins `{origin}` is not an origin like https://app.example.com \
                     (scheme and host, optional port, no path)"
                ));
            }
        }
        for method in &self.allowed_methods {
            Method::from_bytes(method.as_bytes())
                .map_err(|_| format!("allowed_methods `{method}` is not an HTTP method"))?;
        }
        for header in self.allowed_headers.iter().chain(&self.expose_headers) {
            HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("`{header}` is not an HTTP header name"))?;
        }
        Ok(())
    }

    /// The CORS middleware of these settings; call [`CorsConfig::validate`]
    /// first (an invalid setting fails the worker's start).
    pub(crate) fn middleware(&self) -> Cors {
        let mut cors = Cors::default();
        if self.allowed_origins.iter().any(|o| o == ANY_ORIGIN) {
            cors = cors.allow_any_origin().send_wildcard();
        } else {
            for origin in &self.allowed_origins {
                cors = cors.allowed_origin(origin);
            }
        }
        cors = cors
            .allowed_methods(self.allowed_methods.iter().map(String::as_str))
            .allowed_headers(self.allowed_headers.iter().map(String::as_str))
            .expose_headers(self.expose_headers.iter().map(String::as_str))
            .max_age(
                self.max_age
                    .map(|age| usize::try_from(age.as_secs()).unwrap_or(usize::MAX)),
            );
        if self.allow_credentials {
            cors = cors.supports_credentials();
        }
        cors
    }
}

/// `scheme://host[:port]` and nothing else: what a browser sends as `Origin`.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, port)| {
        if port.parse::<u16>().is_ok() {
            host
        } else {
            rest
        }
    });
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let config = HttpConfig::default();
        assert_eq!(config.body_limit_bytes, 1_048_576);
        assert_eq!(config.ws_ping_interval, Duration::from_secs(15));
        assert_eq!(config.ws_client_timeout, Duration::from_secs(45));
        assert!(config.include_debug_info);
        assert_eq!(config.history_page_limit, 200);
        assert!(!config.cors.enabled());
        assert_eq!(config.hsts_max_age, None);
    }

    fn cors(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_headers: vec!["content-type".into(), "authorization".into()],
            expose_headers: vec!["x-request-id".into(), "retry-after".into()],
            allow_credentials: credentials,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    #[test]
    fn a_wildcard_origin_with_credentials_is_refused() {
        let error = cors(&["*"], true).validate().unwrap_err();
        assert!(error.contains("allow_credentials"), "{error}");
        assert!(cors(&["*"], false).validate().is_ok());
        assert!(cors(&["*", "https://a.example"], false).validate().is_err());
    }

    #[test]
    fn origins_methods_and_headers_must_parse() {
        assert!(
            cors(&["https://app.example.com", "http://localhost:5173"], true)
                .validate()
                .is_ok()
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://files.example.com",
            "https://",
        ] {
            let error = cors(&[bad], false).validate().unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
        let mut bad_method = cors(&["https://a.example"], false);
        bad_method.allowed_methods.push("GE T".into());
        assert!(bad_method.validate().is_err());
        let mut bad_header = cors(&["https://a.example"], false);
        bad_header.expose_headers.push("x request".into());
        assert!(bad_header.validate().is_err());
    }
}
