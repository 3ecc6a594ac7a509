//! Failures actix detects itself get the API's error shape, every response
//! carries `X-Request-Id`, and the service routes answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::http::header;
use actix_web::test::TestRequest;
use heartrule_http_adapter::{
    ComponentState, ComponentStatus, HttpConfig, Readiness, ReadinessProbe, RequestTracing,
    StaticReadiness,
};
use serde_json::json;
use std::sync::{Arc, Mutex};
use support::*;

const SESSION: &str = "00000000-0000-4000-8000-00000000000a";

#[actix_web::test]
async fn bad_json_missing_and_mistyped_fields_are_invalid_requests() {
    let h = Harness::default_config();
    let app = h.service().await;
    let uri = format!("/api/sessions/{SESSION}/messages");

    let bad_json = call(
        &app,
        TestRequest::post()
            .uri(&uri)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload("{\"content\": "),
    )
    .await;
    let error = bad_json.error(400, "INVALID_REQUEST");
    assert_eq!(error["type"], "request");
    assert!(error["details"].is_string());

    let missing = post(&app, &uri, json!({"text": "hi"})).await;
    let error = missing.error(400, "INVALID_REQUEST");
    assert!(error["details"].as_str().unwrap().contains("content"));

    let mistyped = post(&app, &uri, json!({"content": 42})).await;
    mistyped.error(400, "INVALID_REQUEST");

    let bad_query = get(&app, "/api/scripts?limit=many").await;
    bad_query.error(400, "INVALID_REQUEST");
}

#[actix_web::test]
async fn wrong_or_missing_content_type_is_415() {
    let h = Harness::default_config();
    let app = h.service().await;
    let text = call(
        &app,
        TestRequest::post()
            .uri("/api/chat")
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload(r#"{"sessionId":"x","message":"hi"}"#),
    )
    .await;
    text.error(415, "UNSUPPORTED_MEDIA_TYPE");

    let none = call(
        &app,
        TestRequest::post()
            .uri("/api/chat")
            .set_payload(r#"{"sessionId":"x","message":"hi"}"#),
    )
    .await;
    none.error(415, "UNSUPPORTED_MEDIA_TYPE");
}

#[actix_web::test]
async fn body_over_the_limit_is_413() {
    let h = Harness::new(HttpConfig {
        body_limit_bytes: 1024,
        ..HttpConfig::default()
    });
    let app = h.service().await;
    let uri = format!("/api/sessions/{SESSION}/messages");
    let big = post(&app, &uri, json!({"content": "x".repeat(2000)})).await;
    let error = big.error(413, "PAYLOAD_TOO_LARGE");
    assert!(error["message"].as_str().unwrap().contains("1024"));

    let small = post(&app, &uri, json!({"content": "x".repeat(100)})).await;
    small.error(404, "SESSION_NOT_FOUND");
}

#[actix_web::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let h = Harness::default_config();
    let app = h.service().await;
    let unknown = get(&app, "/api/nothing/here").await;
    unknown.error(404, "NOT_FOUND");
    let unknown_post = post(&app, "/api/sessions/x/y/z", json!({})).await;
    unknown_post.error(404, "NOT_FOUND");

    let wrong = call(&app, TestRequest::delete().uri("/api/sessions")).await;
    wrong.error(405, "METHOD_NOT_ALLOWED");
    let wrong = call(&app, TestRequest::put().uri("/health")).await;
    wrong.error(405, "METHOD_NOT_ALLOWED");
    let wrong = get(&app, "/api/chat").await;
    wrong.error(405, "METHOD_NOT_ALLOWED");
}

#[actix_web::test]
async fn every_response_carries_a_request_id() {
    let h = Harness::default_config();
    let app = h.service().await;
    let replies = vec![
        get(&app, "/").await,
        get(&app, "/health").await,
        get(&app, "/ready").await,
        get(&app, "/openapi.json").await,
        get(&app, "/docs").await,
        get(&app, "/docs/").await,
        get(&app, "/metrics").await,
        get(&app, "/api/scripts").await,
        get(&app, "/nope").await,
        get(&app, "/api/sessions/bad").await,
        call(&app, TestRequest::patch().uri("/api/chat")).await,
        post(
            &app,
            "/api/chat",
            json!({"sessionId": SESSION, "message": "hi"}),
        )
        .await,
        post(
            &app,
            "/api/chat/stream",
            json!({"sessionId": SESSION, "message": "hi"}),
        )
        .await,
    ];
    let mut ids = std::collections::HashSet::new();
    for reply in &replies {
        let id = reply.request_id();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        ids.insert(id.to_owned());
    }
    assert_eq!(ids.len(), replies.len(), "each request gets its own id");

    let reused = call(
        &app,
        TestRequest::get()
            .uri("/nope")
            .insert_header(("X-Request-Id", "client-req-42")),
    )
    .await;
    assert_eq!(reused.request_id(), "client-req-42");
    reused.error(404, "NOT_FOUND");

    let insane = call(
        &app,
        TestRequest::get()
            .uri("/health")
            .insert_header(("X-Request-Id", "bad id with spaces")),
    )
    .await;
    assert!(uuid::Uuid::parse_str(insane.request_id()).is_ok());
}

#[actix_web::test]
async fn info_health_and_metrics_without_renderer() {
    let h = Harness::default_config();
    let app = h.service().await;
    let info = get(&app, "/").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.body["docs"], "/docs");
    assert_eq!(info.body["openapi"], "/openapi.json");

    let health = get(&app, "/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    assert!(health.body["timestamp"].is_string());
    assert!(health.body["uptime"].as_f64().unwrap() >= 0.0);

    let metrics = get(&app, "/metrics").await;
    metrics.error(404, "NOT_FOUND");
}

fn readiness(components: Vec<ComponentStatus>) -> Arc<dyn ReadinessProbe> {
    Arc::new(StaticReadiness(Readiness { components }))
}

#[actix_web::test]
async fn readiness_is_503_only_when_a_critical_component_is_down() {
    let cases = [
        (ComponentState::Up, ComponentState::Up, 200, "ok"),
        (ComponentState::Up, ComponentState::Down, 200, "degraded"),
        (ComponentState::Down, ComponentState::Up, 503, "down"),
    ];
    for (postgres, redis, status, level) in cases {
        let mut h = Harness::default_config();
        h.state = h.state.clone().with_readiness(readiness(vec![
            ComponentStatus::new("postgres", postgres, true),
            ComponentStatus::new("redis", redis, false).with_detail("connection refused"),
        ]));
        let app = h.service().await;
        let ready = get(&app, "/ready").await;
        assert_eq!(ready.status.as_u16(), status, "{}", ready.text);
        assert_eq!(ready.body["status"], level);
        assert_eq!(ready.body["components"][1]["name"], "redis");
        assert_eq!(ready.body["components"][1]["critical"], false);
        assert_eq!(ready.body["components"][1]["detail"], "connection refused");
    }
}

/// Records what the adapter asked of the trace hooks.
#[derive(Default)]
struct RecordingTracing {
    traceparents: Mutex<Vec<Option<String>>>,
}

impl RequestTracing for RecordingTracing {
    fn continue_trace(&self, header: &dyn Fn(&str) -> Option<String>, _span: &tracing::Span) {
        self.traceparents
            .lock()
            .unwrap()
            .push(header("traceparent"));
    }

    fn trace_id(&self, _span: &tracing::Span) -> Option<String> {
        Some("4bf92f3577b34da6a3ce929d0e0e4736".into())
    }
}

#[actix_web::test]
async fn trace_context_is_continued_and_named_in_error_bodies() {
    let mut h = Harness::default_config();
    let hooks = Arc::new(RecordingTracing::default());
    h.state = h.state.clone().with_tracing(hooks.clone());
    let app = h.service().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = call(
        &app,
        TestRequest::get()
            .uri("/api/sessions/not-a-uuid")
            .insert_header(("traceparent", traceparent)),
    )
    .await;
    let error = reply.error(400, "INVALID_REQUEST");
    assert_eq!(
        error["context"]["traceId"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        hooks.traceparents.lock().unwrap().as_slice(),
        [Some(traceparent.to_owned())]
    );
}
