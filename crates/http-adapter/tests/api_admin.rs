//! Admin routes end to end over the in-memory store: the audit log, the
//! export and erasure of one user, the admin role they need, and a
//! sensitive variable that stays out of `debugInfo`, logs, spans and the
//! default export. Alone in its test binary because it installs a capturing
//! subscriber (per thread; tracing caches callsite interest process-wide).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test::TestRequest;
use heartrule_domain::{Actor, UserDataStore, SENSITIVE_MASK};
use heartrule_http_adapter::auth::{AuthFailure, Authenticator};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use support::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const SECRET: &str = "ID-7731-SECRET";

/// One ask extracting a sensitive id, then a goodbye that repeats it (so a
/// later prompt holds the value too).
const PRIVACY_SCRIPT: &str = r#"
session:
  session_id: privacy
  phases:
    - phase_id: p1
      topics:
        - topic_id: t1
          actions:
            - action_id: ask_id
              action_type: ai_ask
              config:
                content: "Ask for the national id"
                output:
                  - get: national_id
                    sensitive: true
                max_rounds: 1
            - action_id: say_bye
              action_type: ai_say
              config:
                content: "Thank the user for the id {national_id}"
                require_acknowledgment: false
"#;

/// Every log event's fields and every span's attributes, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String)>>>);

struct Fields<'a>(&'a mut Vec<String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={value}", field.name()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), fields.join(" ")));
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push((
            format!("span {}", attrs.metadata().name()),
            fields.join(" "),
        ));
    }

    fn on_record(&self, _id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        values.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push(("span record".to_owned(), fields.join(" ")));
    }
}

impl Capture {
    fn lines(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

async fn start_session<S, B>(app: &S, script_id: &str, user: &str) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let created = post(
        app,
        "/api/sessions",
        json!({"userId": user, "scriptId": script_id}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    created.body["sessionId"].as_str().unwrap().to_owned()
}

fn actions(events: &Value) -> Vec<&str> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn a_sensitive_value_stays_out_of_debug_info_logs_spans_and_the_default_export_and_erasure_leaves_only_the_audit(
) {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "privacy", PRIVACY_SCRIPT).await;

    h.llm
        .reply(json!({"content": "What is your national id?"}).to_string());
    let alice = start_session(&app, &script_id, "alice").await;
    h.llm.reply(format!(
        r#"{{"content": "Thanks", "EXIT": "true", "national_id": "{SECRET}"}}"#
    ));
    h.llm.reply(format!("Noted {SECRET}, goodbye"));
    let answered = post(
        &app,
        &format!("/api/sessions/{alice}/messages"),
        json!({"content": format!("mine is {SECRET}")}),
    )
    .await;
    assert_eq!(answered.status, 200, "{}", answered.text);
    assert_eq!(answered.body["variables"]["national_id"], SECRET);
    let debug_info = answered.body["debugInfo"].to_string();
    assert_eq!(
        answered.body["debugInfo"].as_array().unwrap().len(),
        2,
        "{debug_info}"
    );
    assert!(!debug_info.contains(SECRET), "{debug_info}");
    assert!(debug_info.contains(SENSITIVE_MASK), "{debug_info}");
    // What the LLM adapter is told to keep out of its telemetry.
    let calls = h.llm.calls();
    let last = calls.last().unwrap();
    assert!(last.prompt.contains(SECRET), "the model still sees it");
    assert!(!last.sensitive.mask(&last.prompt).contains(SECRET));

    // Bob's data must survive Alice's erasure.
    h.llm
        .reply(json!({"content": "What is your national id?"}).to_string());
    let bob = start_session(&app, &script_id, "bob").await;

    let masked = get(&app, "/api/admin/users/alice/export").await;
    assert_eq!(masked.status, 200, "{}", masked.text);
    assert_eq!(masked.body["userId"], "alice");
    assert_eq!(masked.body["sensitiveIncluded"], false);
    let sessions = masked.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session"]["sessionId"], alice.as_str());
    let message_count = sessions[0]["messages"].as_array().unwrap().len();
    assert!(message_count >= 3, "{}", masked.text);
    let snapshot_count = sessions[0]["variableHistory"].as_array().unwrap().len();
    assert!(snapshot_count >= 1, "{}", masked.text);
    assert_eq!(
        sessions[0]["session"]["variables"]["national_id"],
        SENSITIVE_MASK
    );
    assert!(!masked.text.contains(SECRET), "{}", masked.text);
    assert!(!masked.text.contains("bob"));

    let full = get(&app, "/api/admin/users/alice/export?includeSensitive=true").await;
    assert_eq!(full.status, 200, "{}", full.text);
    assert_eq!(full.body["sensitiveIncluded"], true);
    assert_eq!(
        full.body["sessions"][0]["session"]["variables"]["national_id"],
        SECRET
    );
    assert!(full.body["sessions"][0]["variableHistory"]
        .to_string()
        .contains(SECRET));

    let erased = call(&app, TestRequest::delete().uri("/api/admin/users/alice")).await;
    assert_eq!(erased.status, 200, "{}", erased.text);
    assert_eq!(erased.body["userId"], "alice");
    assert_eq!(erased.body["erased"]["sessions"], 1);
    assert_eq!(erased.body["erased"]["messages"], message_count);
    assert_eq!(erased.body["erased"]["variableSnapshots"], snapshot_count);
    let erasure_event = erased.body["auditEventId"].as_str().unwrap().to_owned();

    // Nothing of Alice is left to read; Bob is untouched.
    let gone = get(&app, &format!("/api/sessions/{alice}")).await;
    gone.error(404, "SESSION_NOT_FOUND");
    let after = get(&app, "/api/admin/users/alice/export").await;
    assert_eq!(after.body["sessions"], json!([]));
    assert!(UserDataStore::export_user(&h.store, "alice")
        .await
        .unwrap()
        .sessions
        .is_empty());
    let bob_session = get(&app, &format!("/api/sessions/{bob}")).await;
    assert_eq!(bob_session.status, 200);

    // The audit log: the script write and both privacy operations, newest
    // first, with the erasure record kept.
    let log = get(&app, "/api/admin/audit-events").await;
    assert_eq!(log.status, 200, "{}", log.text);
    assert_eq!(
        actions(&log.body),
        vec![
            "user.export",
            "user.erase",
            "user.export",
            "user.export",
            "script.create"
        ]
    );
    let erasures = get(
        &app,
        "/api/admin/audit-events?action=user.erase&targetId=alice",
    )
    .await;
    let events = erasures.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", erasures.text);
    assert_eq!(events[0]["id"], erasure_event.as_str());
    assert_eq!(events[0]["actorSubject"], "local-operator");
    assert_eq!(events[0]["targetType"], "user");
    assert!(!log.text.contains(SECRET));
    assert!(
        !log.text.contains(&alice),
        "no erased session id in the audit log"
    );
    let page = get(&app, "/api/admin/audit-events?limit=2&offset=1").await;
    assert_eq!(actions(&page.body), vec!["user.erase", "user.export"]);
    let bad = get(&app, "/api/admin/audit-events?action=user.rename").await;
    bad.error(400, "INVALID_REQUEST");

    // Nothing the process logged or traced holds the value; the audit lines
    // are there under their own target.
    let lines = capture.lines();
    for (target, text) in &lines {
        assert!(!text.contains(SECRET), "{target}: {text}");
    }
    let audit_lines: Vec<&String> = lines
        .iter()
        .filter(|(target, _)| target == "heartrule::audit")
        .map(|(_, text)| text)
        .collect();
    assert_eq!(audit_lines.len(), 5, "{audit_lines:?}");
    assert!(audit_lines.iter().any(
        |l| l.contains("audit.action=\"user.erase\"") || l.contains("audit.action=user.erase")
    ));
}

/// Every request acts as the client `alice`.
struct ClientAlice;

impl Authenticator for ClientAlice {
    fn authenticate(&self, _authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        Ok(Actor::client("alice"))
    }
}

#[actix_web::test]
async fn the_admin_routes_refuse_anyone_but_an_admin() {
    let mut h = Harness::default_config();
    h.state = h.state.clone().with_authenticator(Arc::new(ClientAlice));
    let app = h.service().await;
    for request in [
        TestRequest::get().uri("/api/admin/audit-events"),
        TestRequest::get().uri("/api/admin/users/alice/export"),
        TestRequest::delete().uri("/api/admin/users/alice"),
        // Even the client's own usage: the report is for administrators.
        TestRequest::get().uri("/api/users/alice/usage"),
    ] {
        call(&app, request).await.error(403, "FORBIDDEN");
    }
}

#[actix_web::test]
async fn what_the_document_refuses_the_admin_routes_refuse() {
    let h = Harness::default_config();
    let app = h.service().await;
    for uri in [
        "/api/admin/users/a%00b/export",
        "/api/admin/audit-events?actor=a%00b",
        "/api/admin/audit-events?targetId=a%00b",
        "/api/admin/audit-events?limit=0",
        "/api/admin/audit-events?limit=501",
        "/api/admin/audit-events?targetType=message",
        "/api/admin/users/alice/export?includeSensitive=maybe",
        "/api/users/a%00b/usage",
        "/api/users/alice/usage?from=yesterday",
        "/api/users/alice/usage?to=2026-13-01",
    ] {
        get(&app, uri).await.error(400, "INVALID_REQUEST");
    }
    let long = "x".repeat(256);
    call(
        &app,
        TestRequest::delete().uri(&format!("/api/admin/users/{long}")),
    )
    .await
    .error(400, "INVALID_REQUEST");
    let fine = get(&app, "/api/admin/audit-events?limit=500&offset=4294967295").await;
    assert_eq!(fine.status, 200, "{}", fine.text);
}
