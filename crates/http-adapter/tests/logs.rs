//! Logs: one access line per request, one error line per failure, and no
//! conversation text. Alone in its test binary because the capturing
//! subscriber is installed per thread and tracing caches callsite interest
//! process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use support::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// A captured log event: target, level, module and fields.
#[derive(Debug, Clone)]
struct Captured {
    target: String,
    level: tracing::Level,
    module: String,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct FieldVisitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldVisitor(&mut fields));
        let meta = event.metadata();
        self.0.lock().unwrap().push(Captured {
            target: meta.target().to_owned(),
            level: *meta.level(),
            module: meta.module_path().unwrap_or_default().to_owned(),
            fields,
        });
    }
}

#[actix_web::test]
async fn one_access_line_per_request_and_error_logs_without_conversation_text() {
    let capture = Capture::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let h = Harness::default_config();
    let app = h.service().await;
    let secret = "我最近总是失眠，很难受";

    let listed = get(&app, "/api/users/user-9/sessions").await;
    let missing = post(
        &app,
        "/api/sessions/00000000-0000-4000-8000-0000000000bb/messages",
        json!({"content": secret}),
    )
    .await;
    missing.error(404, "SESSION_NOT_FOUND");

    let events = capture.0.lock().unwrap().clone();
    let access: Vec<&Captured> = events
        .iter()
        .filter(|e| e.target == "heartrule::access")
        .collect();
    assert_eq!(access.len(), 2, "{access:#?}");
    let first = &access[0].fields;
    assert_eq!(access[0].level, tracing::Level::INFO);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["route"], "/api/users/{userId}/sessions");
    assert_eq!(first["status"], "200");
    assert_eq!(first["user_id"], "user-9");
    assert_eq!(first["request_id"], listed.request_id());
    assert!(first.contains_key("latency_ms") && first.contains_key("client_ip"));
    let second = &access[1].fields;
    assert_eq!(second["route"], "/api/sessions/{id}/messages");
    assert_eq!(second["status"], "404");
    assert_eq!(second["request_id"], missing.request_id());

    let error_lines: Vec<&Captured> = events
        .iter()
        .filter(|e| {
            e.fields
                .get("error.code")
                .is_some_and(|c| c == "SESSION_NOT_FOUND")
        })
        .collect();
    assert_eq!(error_lines.len(), 1, "one error line per failure");
    assert_eq!(error_lines[0].level, tracing::Level::WARN);
    assert_eq!(error_lines[0].fields["error.type"], "session");
    assert_eq!(
        error_lines[0].fields["session.id"],
        "00000000-0000-4000-8000-0000000000bb"
    );

    let ours: Vec<&Captured> = events
        .iter()
        .filter(|e| e.module.starts_with("heartrule_http_adapter"))
        .collect();
    assert!(!ours.is_empty());
    for event in ours {
        let all: Value = json!(event.fields);
        assert!(
            !all.to_string().contains(secret),
            "conversation text logged: {event:?}"
        );
    }
}
