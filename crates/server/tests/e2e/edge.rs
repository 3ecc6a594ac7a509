//! The edge through the whole server: rate limits on the Redis buckets
//! (and on the local ones when Redis is down), security headers and CORS.

use crate::support::{closed_port, redis_keys, Env, Services, TestApp};
use serde_json::json;

/// Three general requests and two LLM-calling ones per caller, then
/// nothing for about a minute.
fn tight_limits(env: Env) -> Env {
    env.set("HEARTRULE__RATE_LIMITS__PER_IP__RATE", "0.05")
        .set("HEARTRULE__RATE_LIMITS__PER_IP__BURST", "3")
        .set("HEARTRULE__RATE_LIMITS__LLM__RATE", "0.05")
        .set("HEARTRULE__RATE_LIMITS__LLM__BURST", "2")
}

async fn assert_limits_hold(app: &TestApp) {
    for _ in 0..3 {
        app.get("/api/scripts").await.ok();
    }
    let refused = app.get("/api/scripts").await;
    let body = refused.error(429, "RATE_LIMITED");
    assert_eq!(body["error"]["recovery"]["canRetry"], true, "{body}");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("a 429 says when to retry")
        .parse()
        .unwrap();
    assert!(
        (15..=20).contains(&retry_after),
        "one token at 0.05/s: {retry_after}"
    );
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));

    // The LLM routes have their own bucket, still full.
    let body = json!({"userId": "edge", "scriptId": "00000000-0000-4000-8000-00000000000b"});
    for _ in 0..2 {
        let created = app.post("/api/sessions", &body).await;
        assert_ne!(created.status.as_u16(), 429, "{}", created.text);
    }
    app.post("/api/sessions", &body)
        .await
        .error(429, "RATE_LIMITED");

    // Public routes are never limited.
    for path in ["/health", "/ready", "/", "/openapi.json"] {
        assert_ne!(app.get(path).await.status.as_u16(), 429, "{path}");
    }
}

#[actix_web::test]
async fn a_burst_over_the_limit_gets_429_with_retry_after_from_the_redis_bucket() {
    let services = Services::new().await;
    let app = TestApp::start(&tight_limits(services.env())).await;
    assert_limits_hold(&app).await;
    let keys = redis_keys(&services.redis_prefix);
    for bucket in ["api", "llm"] {
        let key = format!("{}:ratelimit:{bucket}:ip:127.0.0.1", services.redis_prefix);
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn with_redis_down_the_local_limiter_still_limits() {
    let services = Services::new().await;
    let down = format!("redis://127.0.0.1:{}", closed_port());
    let env = Env::base()
        .database(&services.db)
        .redis(&down, &services.redis_prefix);
    let app = TestApp::start(&tight_limits(env)).await;
    // Redis cannot answer, so every 429 here comes from the local buckets.
    assert_limits_hold(&app).await;
    app.stop().await;
}

#[actix_web::test]
async fn without_redis_each_instance_limits_on_its_own() {
    let app = TestApp::start(&tight_limits(Env::base())).await;
    assert_limits_hold(&app).await;
    app.stop().await;
}

#[actix_web::test]
async fn security_headers_and_cors_reach_the_client() {
    let env = Env::base()
        .set(
            "HEARTRULE__HTTP__CORS__ALLOWED_ORIGINS",
            "https://app.example.com",
        )
        .set("HEARTRULE__HTTP__HSTS_MAX_AGE", "180d");
    let app = TestApp::start(&env).await;
    for path in ["/", "/api/scripts", "/api/nowhere", "/docs/"] {
        let reply = app.get(path).await;
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert!(reply.header("content-security-policy").is_some(), "{path}");
        assert_eq!(
            reply.header("strict-transport-security"),
            Some("max-age=15552000; includeSubDomains"),
            "{path}"
        );
    }
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.at("/api/sessions"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    app.stop().await;
}
