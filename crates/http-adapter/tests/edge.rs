//! The edge of the API as a browser or a flood sees it: security headers on
//! every response, CORS from the allow-list, and rate limits keyed by
//! subject or client address (with a fake limiter standing in for Redis).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::http::header;
use actix_web::test::TestRequest;
use async_trait::async_trait;
use heartrule_domain::{Actor, RateDecision, RateLimit, RateLimitError, RateLimiter};
use heartrule_http_adapter::auth::{AuthFailure, Authenticator};
use heartrule_http_adapter::headers::{API_CSP, DOCS_CSP};
use heartrule_http_adapter::{CorsConfig, HttpConfig, RateLimitKey, RateLimitPolicy};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const ORIGIN: &str = "https://app.example.com";

fn assert_security_headers(reply: &Reply, what: &str) {
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        reply.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert!(reply.header("content-security-policy").is_some(), "{what}");
}

// --------------------------------------------------------------- headers

#[actix_web::test]
async fn every_response_carries_the_security_headers() {
    let h = Harness::new(HttpConfig {
        hsts_max_age: Some(Duration::from_secs(86_400)),
        ..HttpConfig::default()
    });
    let app = h.service().await;
    let replies = [
        ("info", get(&app, "/").await),
        ("health", get(&app, "/health").await),
        ("document", get(&app, "/openapi.json").await),
        ("list", get(&app, "/api/scripts").await),
        ("unknown route", get(&app, "/nowhere").await),
        ("unknown api route", get(&app, "/api/nowhere").await),
        (
            "wrong method",
            call(&app, TestRequest::delete().uri("/api/scripts")).await,
        ),
        (
            "bad JSON",
            call(
                &app,
                TestRequest::post()
                    .uri("/api/sessions")
                    .insert_header((header::CONTENT_TYPE, "application/json"))
                    .set_payload("{nope"),
            )
            .await,
        ),
        (
            "unknown session",
            get(&app, "/api/sessions/00000000-0000-4000-8000-00000000000a").await,
        ),
    ];
    for (what, reply) in &replies {
        assert_security_headers(reply, what);
        assert_eq!(
            reply.header("content-security-policy"),
            Some(API_CSP),
            "{what}"
        );
        assert_eq!(
            reply.header("strict-transport-security"),
            Some("max-age=86400; includeSubDomains"),
            "{what}"
        );
    }
    let cache_control = |what: &str| {
        replies
            .iter()
            .find(|(w, _)| *w == what)
            .and_then(|(_, r)| r.header("cache-control"))
    };
    for api in ["list", "unknown api route", "bad JSON", "unknown session"] {
        assert_eq!(cache_control(api), Some("no-store"), "{api}");
    }
    assert_eq!(cache_control("health"), None);
    replies[4].1.error(404, "NOT_FOUND");
    replies[7].1.error(400, "INVALID_REQUEST");
}

#[actix_web::test]
async fn no_hsts_unless_configured() {
    let h = Harness::default_config();
    let app = h.service().await;
    assert!(get(&app, "/health")
        .await
        .header("strict-transport-security")
        .is_none());
}

#[actix_web::test]
async fn swagger_ui_renders_under_its_own_policy() {
    let h = Harness::default_config();
    let app = h.service().await;
    let page = get(&app, "/docs/").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("<div id=\"swagger-ui\">"),
        "{}",
        page.text
    );
    assert_eq!(page.header("content-security-policy"), Some(DOCS_CSP));
    assert_security_headers(&page, "docs");
    // Every asset the page loads is served, under the same policy, and the
    // policy allows each of them (same origin, no inline script).
    for asset in [
        "swagger-ui.css",
        "index.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
    ] {
        assert!(page.text.contains(asset), "the page loads {asset}");
        let reply = get(&app, &format!("/docs/{asset}")).await;
        assert_eq!(reply.status, 200, "{asset}");
        assert!(!reply.text.is_empty(), "{asset}");
        assert_eq!(
            reply.header("content-security-policy"),
            Some(DOCS_CSP),
            "{asset}"
        );
    }
    assert!(!page.text.contains("<script>"), "no inline script to allow");
    let redirect = get(&app, "/docs").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("content-security-policy"), Some(DOCS_CSP));
}

// ------------------------------------------------------------------ CORS

fn cors_config() -> HttpConfig {
    HttpConfig {
        cors: CorsConfig {
            allowed_origins: vec![ORIGIN.into()],
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: vec!["x-request-id".into(), "retry-after".into()],
            allow_credentials: true,
            max_age: Some(Duration::from_secs(600)),
        },
        ..HttpConfig::default()
    }
}

fn preflight(uri: &str, origin: &str) -> TestRequest {
    TestRequest::default()
        .method(actix_web::http::Method::OPTIONS)
        .uri(uri)
        .insert_header((header::ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "POST"))
        .insert_header((
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type, authorization",
        ))
}

#[actix_web::test]
async fn preflight_from_an_allowed_origin_is_answered() {
    let h = Harness::new(cors_config());
    let app = h.service().await;
    for uri in [
        "/api/sessions",
        "/api/sessions/00000000-0000-4000-8000-00000000000a/messages",
        "/api/chat",
    ] {
        let reply = call(&app, preflight(uri, ORIGIN)).await;
        assert!(
            reply.status.is_success(),
            "{uri}: {} {}",
            reply.status,
            reply.text
        );
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(ORIGIN),
            "{uri}"
        );
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(reply.header("access-control-max-age"), Some("600"));
        let methods = reply.header("access-control-allow-methods").unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let headers = reply.header("access-control-allow-headers").unwrap();
        assert!(headers.contains("authorization"), "{headers}");
        assert_security_headers(&reply, uri);
    }
}

#[actix_web::test]
async fn requests_from_an_allowed_origin_can_read_responses_and_errors() {
    let h = Harness::new(cors_config());
    let app = h.service().await;
    for uri in [
        "/api/scripts",
        "/api/sessions/00000000-0000-4000-8000-00000000000a",
    ] {
        let reply = call(
            &app,
            TestRequest::get()
                .uri(uri)
                .insert_header((header::ORIGIN, ORIGIN)),
        )
        .await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(ORIGIN),
            "{uri}"
        );
        let exposed = reply.header("access-control-expose-headers").unwrap();
        assert!(exposed.contains("x-request-id"), "{exposed}");
    }
}

#[actix_web::test]
async fn other_origins_get_no_cors_headers() {
    let h = Harness::new(cors_config());
    let app = h.service().await;
    let refused = call(&app, preflight("/api/sessions", "https://evil.example")).await;
    assert!(refused.header("access-control-allow-origin").is_none());
    refused.error(400, "INVALID_REQUEST");
    let simple = call(
        &app,
        TestRequest::get()
            .uri("/api/scripts")
            .insert_header((header::ORIGIN, "https://evil.example")),
    )
    .await;
    assert!(simple.header("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn without_origins_there_is_no_cors_at_all() {
    let h = Harness::default_config();
    let app = h.service().await;
    let reply = call(&app, preflight("/api/sessions", ORIGIN)).await;
    assert!(reply.header("access-control-allow-origin").is_none());
    let reply = call(
        &app,
        TestRequest::get()
            .uri("/api/scripts")
            .insert_header((header::ORIGIN, ORIGIN)),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("access-control-allow-origin").is_none());
}

// ----------------------------------------------------------- rate limits

/// Grants `allowance` requests per key, then refuses with a fixed wait;
/// records every call. `fail` makes every call an error.
#[derive(Default)]
struct FakeLimiter {
    allowance: u32,
    fail: bool,
    calls: Mutex<Vec<(String, RateLimit)>>,
    used: Mutex<HashMap<String, u32>>,
}

impl FakeLimiter {
    fn granting(allowance: u32) -> Arc<Self> {
        Arc::new(Self {
            allowance,
            ..Self::default()
        })
    }

    fn calls(&self) -> Vec<(String, RateLimit)> {
        self.calls.lock().unwrap().clone()
    }

    fn keys(&self) -> Vec<String> {
        self.calls().into_iter().map(|(key, _)| key).collect()
    }
}

#[async_trait]
impl RateLimiter for FakeLimiter {
    async fn try_acquire(
        &self,
        key: &str,
        cost: u32,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError> {
        assert_eq!(cost, 1);
        self.calls.lock().unwrap().push((key.to_owned(), limit));
        if self.fail {
            return Err(RateLimitError::Unavailable("store down".into()));
        }
        let mut used = self.used.lock().unwrap();
        let used = used.entry(key.to_owned()).or_default();
        if *used < self.allowance {
            *used += 1;
            Ok(RateDecision {
                allowed: true,
                remaining: self.allowance - *used,
                retry_after: None,
            })
        } else {
            Ok(RateDecision {
                allowed: false,
                remaining: 0,
                retry_after: Some(Duration::from_millis(1_200)),
            })
        }
    }
}

const PER_SUBJECT: RateLimit = RateLimit {
    per_second: 10.0,
    burst: 20,
};
const PER_IP: RateLimit = RateLimit {
    per_second: 5.0,
    burst: 10,
};
const LLM: RateLimit = RateLimit {
    per_second: 1.0,
    burst: 3,
};

fn policy(key: RateLimitKey, trusted: &[&str]) -> RateLimitPolicy {
    RateLimitPolicy {
        per_subject: PER_SUBJECT,
        per_ip: PER_IP,
        llm: LLM,
        key,
        trusted_proxies: trusted.iter().map(|n| n.parse().unwrap()).collect(),
    }
}

/// `Bearer <name>` proves the client `<name>`; no header is the local
/// operator (as with authentication off).
struct NamedTokens;

impl Authenticator for NamedTokens {
    fn authenticate(&self, authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        match authorization.and_then(|h| h.strip_prefix("Bearer ")) {
            Some(name) => Ok(Actor::client(name)),
            None => Ok(Actor::local_operator()),
        }
    }
}

fn harness(config: HttpConfig, limiter: &Arc<FakeLimiter>, policy: RateLimitPolicy) -> Harness {
    let mut h = Harness::new(config);
    h.state = h
        .state
        .with_authenticator(Arc::new(NamedTokens))
        .with_rate_limiter(Arc::clone(limiter) as Arc<dyn RateLimiter>, policy);
    h
}

fn from(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

#[actix_web::test]
async fn public_routes_are_never_limited() {
    let limiter = FakeLimiter::granting(0);
    let h = harness(
        HttpConfig::default(),
        &limiter,
        policy(RateLimitKey::Subject, &[]),
    );
    let app = h.service().await;
    for path in [
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/docs/",
    ] {
        let reply = get(&app, path).await;
        assert_ne!(reply.status, 429, "{path}");
    }
    assert!(limiter.calls().is_empty(), "{:?}", limiter.keys());
}

#[actix_web::test]
async fn buckets_are_keyed_by_subject_else_address_with_a_stricter_llm_bucket() {
    let limiter = FakeLimiter::granting(100);
    let h = harness(
        HttpConfig::default(),
        &limiter,
        policy(RateLimitKey::Subject, &[]),
    );
    let app = h.service().await;
    let peer = from("203.0.113.7:4711");
    call(&app, TestRequest::get().uri("/api/scripts").peer_addr(peer)).await;
    call(
        &app,
        TestRequest::get()
            .uri("/api/scripts")
            .peer_addr(peer)
            .insert_header((header::AUTHORIZATION, "Bearer alice")),
    )
    .await;
    call(
        &app,
        TestRequest::post()
            .uri("/api/sessions")
            .peer_addr(peer)
            .insert_header((header::AUTHORIZATION, "Bearer alice"))
            .set_json(
                json!({"userId": "alice", "scriptId": "00000000-0000-4000-8000-00000000000b"}),
            ),
    )
    .await;
    call(
        &app,
        TestRequest::post()
            .uri("/api/chat")
            .peer_addr(peer)
            .set_json(json!({"message": "hi"})),
    )
    .await;
    call(
        &app,
        TestRequest::get()
            .uri("/api/sessions/00000000-0000-4000-8000-00000000000a/messages")
            .peer_addr(from("[2001:db8:1:2:aaaa::1]:80")),
    )
    .await;
    assert_eq!(
        limiter.calls(),
        [
            ("api:ip:203.0.113.7".to_owned(), PER_IP),
            ("api:sub:alice".to_owned(), PER_SUBJECT),
            ("llm:sub:alice".to_owned(), LLM),
            ("llm:ip:203.0.113.7".to_owned(), LLM),
            ("api:ip:2001:db8:1:2::/64".to_owned(), PER_IP),
        ]
    );
}

#[actix_web::test]
async fn keyed_by_address_only_when_configured() {
    let limiter = FakeLimiter::granting(100);
    let h = harness(
        HttpConfig::default(),
        &limiter,
        policy(RateLimitKey::Ip, &[]),
    );
    let app = h.service().await;
    call(
        &app,
        TestRequest::get()
            .uri("/api/scripts")
            .peer_addr(from("198.51.100.1:1"))
            .insert_header((header::AUTHORIZATION, "Bearer alice")),
    )
    .await;
    assert_eq!(limiter.keys(), ["api:ip:198.51.100.1"]);
}

#[actix_web::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let limiter = FakeLimiter::granting(100);
    let h = harness(
        HttpConfig::default(),
        &limiter,
        policy(RateLimitKey::Subject, &["10.0.0.0/8"]),
    );
    let app = h.service().await;
    for peer in ["10.0.0.2:1", "192.0.2.50:1"] {
        call(
            &app,
            TestRequest::get()
                .uri("/api/scripts")
                .peer_addr(from(peer))
                .insert_header(("x-forwarded-for", "1.1.1.1, 198.51.100.9")),
        )
        .await;
    }
    assert_eq!(
        limiter.keys(),
        ["api:ip:198.51.100.9", "api:ip:192.0.2.50"],
        "the proxy's header is believed, a direct client's is not"
    );
}

#[actix_web::test]
async fn an_empty_bucket_answers_429_with_retry_after_and_the_error_shape() {
    let limiter = FakeLimiter::granting(2);
    let h = harness(cors_config(), &limiter, policy(RateLimitKey::Subject, &[]));
    let app = h.service().await;
    let request = || {
        TestRequest::get()
            .uri("/api/scripts")
            .peer_addr(from("203.0.113.8:1"))
            .insert_header((header::ORIGIN, ORIGIN))
    };
    for _ in 0..2 {
        assert_eq!(call(&app, request()).await.status, 200);
    }
    let refused = call(&app, request()).await;
    let error = refused.error(429, "RATE_LIMITED");
    assert_eq!(error["recovery"]["canRetry"], true);
    assert_eq!(refused.header("retry-after"), Some("2"), "1.2 s rounded up");
    assert_security_headers(&refused, "429");
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert_eq!(
        refused.header("access-control-allow-origin"),
        Some(ORIGIN),
        "a page can read its 429"
    );
    // Another caller is not affected; the LLM bucket is separate.
    let other = call(
        &app,
        TestRequest::get()
            .uri("/api/scripts")
            .peer_addr(from("203.0.113.9:1")),
    )
    .await;
    assert_eq!(other.status, 200);
}

#[actix_web::test]
async fn a_failing_limiter_lets_requests_through() {
    let limiter = Arc::new(FakeLimiter {
        fail: true,
        ..FakeLimiter::default()
    });
    let h = harness(
        HttpConfig::default(),
        &limiter,
        policy(RateLimitKey::Subject, &[]),
    );
    let app = h.service().await;
    let reply = get(&app, "/api/scripts").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(limiter.calls().len(), 1);
}
