//! The routes against mocks of the domain's inbound ports: each handler
//! passes the authenticated actor to its use case and maps the domain's
//! refusals (hidden `404`, `403 FORBIDDEN`) to the error shape; a request
//! without an actor reaches no use case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test::{self, TestRequest};
use actix_web::App;
use heartrule_domain::usecases::{MockAdministration, MockConversations, MockScriptLibrary};
use heartrule_domain::{
    Actor, DomainError, ErrorKind, ExecutionStatus, Position, ScriptId, SessionId, SessionStatus,
    StartedTurn, TurnId, TurnResult, VariableStore,
};
use heartrule_http_adapter::auth::{AuthFailure, Authenticator};
use heartrule_http_adapter::{configure, AppState, HttpConfig};
use serde_json::json;
use std::sync::Arc;
use support::{call, parse_sse};
use uuid::Uuid;

/// `Bearer alice` is the client alice, `Bearer root` an administrator;
/// anything else proves nobody.
struct TwoUsers;

impl Authenticator for TwoUsers {
    fn authenticate(&self, authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        match authorization {
            Some("Bearer alice") => Ok(Actor::client("alice")),
            Some("Bearer root") => Ok(Actor::admin("root")),
            _ => Err(AuthFailure("missing bearer token".into())),
        }
    }
}

fn state(conversations: MockConversations, scripts: MockScriptLibrary) -> AppState {
    state_with_admin(conversations, scripts, MockAdministration::new())
}

fn state_with_admin(
    conversations: MockConversations,
    scripts: MockScriptLibrary,
    admin: MockAdministration,
) -> AppState {
    AppState::new(
        Arc::new(conversations),
        Arc::new(scripts),
        Arc::new(admin),
        HttpConfig::default(),
    )
    .with_authenticator(Arc::new(TwoUsers))
}

fn hidden(id: SessionId) -> DomainError {
    DomainError::new(ErrorKind::SessionNotFound(id)).with_session(id)
}

fn forbidden() -> DomainError {
    DomainError::new(ErrorKind::Forbidden("not yours".into()))
}

fn alice() -> Actor {
    Actor::client("alice")
}

#[actix_web::test]
async fn session_reads_pass_the_actor_and_a_hidden_session_is_404() {
    let id = SessionId::from(Uuid::new_v4());
    let mut conversations = MockConversations::new();
    conversations
        .expect_get_session()
        .withf(move |actor, asked| *actor == alice() && *asked == id)
        .times(2)
        .returning(|_, id| Err(hidden(id)));
    conversations
        .expect_messages()
        .withf(move |actor, asked, after, limit| {
            *actor == alice() && *asked == id && *after == 3 && *limit == 5
        })
        .times(1)
        .returning(|_, id, _, _| Err(hidden(id)));
    conversations
        .expect_variables()
        .withf(move |actor, asked| *actor == alice() && *asked == id)
        .times(1)
        .returning(|_, id| Err(hidden(id)));
    let app = test::init_service(
        App::new().configure(configure(state(conversations, MockScriptLibrary::new()))),
    )
    .await;
    for path in [
        format!("/api/sessions/{id}"),
        format!("/api/sessions/{id}/messages?afterSeq=3&limit=5"),
        format!("/api/sessions/{id}/variables"),
        // The WebSocket route checks before the handshake.
        format!("/api/sessions/{id}/ws"),
    ] {
        let reply = call(
            &app,
            TestRequest::get()
                .uri(&path)
                .insert_header(("authorization", "Bearer alice")),
        )
        .await;
        reply.error(404, "SESSION_NOT_FOUND");
    }
}

#[actix_web::test]
async fn turns_pass_the_actor_and_map_the_domain_errors() {
    let id = SessionId::from(Uuid::new_v4());
    let mut conversations = MockConversations::new();
    conversations
        .expect_process_input()
        .withf(move |actor, input| *actor == alice() && input.session_id == id)
        .times(2)
        .returning(|_, input| Err(hidden(input.session_id)));
    conversations
        .expect_start_turn()
        .withf(move |actor, input| *actor == alice() && input.session_id == id)
        .times(1)
        .returning(|_, input| Err(hidden(input.session_id)));
    let app = test::init_service(
        App::new().configure(configure(state(conversations, MockScriptLibrary::new()))),
    )
    .await;
    for (path, body) in [
        (
            format!("/api/sessions/{id}/messages"),
            json!({"content": "hi"}),
        ),
        (
            "/api/chat".to_owned(),
            json!({"sessionId": id, "message": "hi"}),
        ),
        (
            "/api/chat/stream".to_owned(),
            json!({"sessionId": id, "message": "hi"}),
        ),
    ] {
        let reply = call(
            &app,
            TestRequest::post()
                .uri(&path)
                .insert_header(("authorization", "Bearer alice"))
                .set_json(body),
        )
        .await;
        // The stream route too answers in JSON, before any event.
        reply.error(404, "SESSION_NOT_FOUND");
    }
}

#[actix_web::test]
async fn a_streamed_turn_runs_what_the_port_started() {
    let id = SessionId::from(Uuid::new_v4());
    let result = TurnResult {
        session_id: id,
        turn_id: TurnId::from(Uuid::new_v4()),
        script_id: ScriptId::from(Uuid::new_v4()),
        session_status: SessionStatus::Active,
        execution_status: ExecutionStatus::WaitingInput,
        position: Position::default(),
        messages: Vec::new(),
        variables: VariableStore::default(),
        llm_calls: Vec::new(),
        created_at: chrono::Utc::now(),
        replayed: false,
    };
    let mut conversations = MockConversations::new();
    conversations
        .expect_start_turn()
        .withf(|actor, _| *actor == Actor::admin("root"))
        .times(1)
        .returning(move |_, _| {
            let result = result.clone();
            Ok(StartedTurn::Claimed(heartrule_domain::PendingTurn::new(
                async move { Ok(result) },
            )))
        });
    let app = test::init_service(
        App::new().configure(configure(state(conversations, MockScriptLibrary::new()))),
    )
    .await;
    let reply = call(
        &app,
        TestRequest::post()
            .uri("/api/chat/stream")
            .insert_header(("authorization", "Bearer root"))
            .set_json(json!({"sessionId": id, "message": "hi"})),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    let events = parse_sse(&reply.text);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["state", "done"]);
    assert_eq!(events[0].data["executionStatus"], "waiting_input");
}

#[actix_web::test]
async fn creating_and_listing_pass_the_actor_and_forbidden_is_403() {
    let script = Uuid::new_v4();
    let mut conversations = MockConversations::new();
    conversations
        .expect_create_session()
        .withf(move |actor, request| {
            *actor == alice() && request.user_id == "bob" && request.script_id == script.into()
        })
        .times(1)
        .returning(|_, _| Err(forbidden()));
    conversations
        .expect_list_user_sessions()
        .withf(|actor, user| *actor == alice() && user == "bob")
        .times(1)
        .returning(|_, _| Ok(Vec::new()));
    let app = test::init_service(
        App::new().configure(configure(state(conversations, MockScriptLibrary::new()))),
    )
    .await;
    let reply = call(
        &app,
        TestRequest::post()
            .uri("/api/sessions")
            .insert_header(("authorization", "Bearer alice"))
            .set_json(json!({"userId": "bob", "scriptId": script})),
    )
    .await;
    reply.error(403, "FORBIDDEN");
    let reply = call(
        &app,
        TestRequest::get()
            .uri("/api/users/bob/sessions")
            .insert_header(("authorization", "Bearer alice")),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    assert_eq!(reply.body, json!([]));
}

#[actix_web::test]
async fn script_routes_pass_the_actor_and_forbidden_is_403() {
    let id = ScriptId::from(Uuid::new_v4());
    let mut scripts = MockScriptLibrary::new();
    scripts
        .expect_create()
        .withf(|actor, draft| *actor == alice() && draft.name == "mine")
        .times(1)
        .returning(|_, _| Err(forbidden()));
    scripts
        .expect_import()
        .withf(|actor, import| *actor == alice() && import.name == "mine")
        .times(1)
        .returning(|_, _| Err(forbidden()));
    scripts
        .expect_list()
        .withf(|actor, _| *actor == alice())
        .times(1)
        .returning(|_, _| Ok(Vec::new()));
    scripts
        .expect_get()
        .withf(move |actor, asked| *actor == alice() && *asked == id)
        .times(1)
        .returning(|_, id| Err(DomainError::new(ErrorKind::ScriptNotFound(id.to_string()))));
    scripts
        .expect_validate()
        .withf(move |actor, asked, _| *actor == alice() && *asked == id)
        .times(1)
        .returning(|_, id, _| Err(DomainError::new(ErrorKind::ScriptNotFound(id.to_string()))));
    let app = test::init_service(
        App::new().configure(configure(state(MockConversations::new(), scripts))),
    )
    .await;
    let authorized =
        |request: TestRequest| request.insert_header(("authorization", "Bearer alice"));
    call(
        &app,
        authorized(TestRequest::post().uri("/api/scripts").set_json(json!({
            "scriptName": "mine", "scriptType": "session", "scriptContent": "session: {}", "author": "a"
        }))),
    )
    .await
    .error(403, "FORBIDDEN");
    call(
        &app,
        authorized(
            TestRequest::post()
                .uri("/api/scripts/import")
                .set_json(json!({
                    "scriptName": "mine", "yamlContent": "session: {}"
                })),
        ),
    )
    .await
    .error(403, "FORBIDDEN");
    let list = call(&app, authorized(TestRequest::get().uri("/api/scripts"))).await;
    assert_eq!(list.status.as_u16(), 200, "{}", list.text);
    call(
        &app,
        authorized(TestRequest::get().uri(&format!("/api/scripts/{id}"))),
    )
    .await
    .error(404, "SCRIPT_NOT_FOUND");
    call(
        &app,
        authorized(TestRequest::post().uri(&format!("/api/scripts/{id}/validate"))),
    )
    .await
    .error(404, "SCRIPT_NOT_FOUND");
}

#[actix_web::test]
async fn without_an_actor_no_use_case_runs() {
    // Mocks with no expectations panic if called: the 401 comes first.
    let app = test::init_service(App::new().configure(configure(state(
        MockConversations::new(),
        MockScriptLibrary::new(),
    ))))
    .await;
    let id = Uuid::new_v4();
    for request in [
        TestRequest::get().uri(&format!("/api/sessions/{id}")),
        TestRequest::get().uri("/api/users/alice/sessions"),
        TestRequest::get().uri("/api/scripts"),
        TestRequest::post()
            .uri("/api/chat")
            .set_json(json!({"sessionId": id, "message": "hi"})),
        TestRequest::post()
            .uri("/api/sessions")
            .set_json(json!({"userId": "alice", "scriptId": id})),
    ] {
        let reply = call(
            &app,
            request.insert_header(("authorization", "Bearer forged")),
        )
        .await;
        let error = reply.error(401, "UNAUTHORIZED");
        assert_eq!(error["details"], "missing bearer token", "{}", reply.text);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    // Public routes need no token.
    for path in ["/", "/health", "/ready", "/openapi.json"] {
        let reply = call(&app, TestRequest::get().uri(path)).await;
        assert_eq!(reply.status.as_u16(), 200, "{path}: {}", reply.text);
    }
}

#[actix_web::test]
async fn admin_routes_pass_the_actor_and_the_parsed_query_and_forbidden_is_403() {
    let root = Actor::admin("root");
    let mut admin = MockAdministration::new();
    let expected = root.clone();
    admin
        .expect_audit_events()
        .withf(move |actor, filter| {
            *actor == expected
                && filter.action == Some(heartrule_domain::AuditAction::UserErase)
                && filter.target_id.as_deref() == Some("bob")
                && (filter.limit, filter.offset) == (5, 2)
        })
        .times(1)
        .returning(|_, _| Ok(vec![]));
    admin
        .expect_export_user()
        .withf(|actor, user, include| *actor == alice() && user == "bob" && !*include)
        .times(1)
        .returning(|_, _, _| Err(forbidden()));
    let expected = root.clone();
    admin
        .expect_erase_user()
        .withf(move |actor, user| *actor == expected && user == "bob")
        .times(1)
        .returning(|_, user| {
            Ok(heartrule_domain::UserErasure {
                user_id: user.to_owned(),
                erased: heartrule_domain::ErasedCounts {
                    sessions: 1,
                    ..heartrule_domain::ErasedCounts::default()
                },
                audit_event_id: heartrule_domain::AuditEventId::new_random(),
            })
        });
    let app = test::init_service(App::new().configure(configure(state_with_admin(
        MockConversations::new(),
        MockScriptLibrary::new(),
        admin,
    ))))
    .await;
    let listed = call(
        &app,
        TestRequest::get()
            .uri("/api/admin/audit-events?action=user.erase&targetId=bob&limit=5&offset=2")
            .insert_header(("authorization", "Bearer root")),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body, json!({"events": [], "limit": 5, "offset": 2}));
    call(
        &app,
        TestRequest::get()
            .uri("/api/admin/users/bob/export")
            .insert_header(("authorization", "Bearer alice")),
    )
    .await
    .error(403, "FORBIDDEN");
    let erased = call(
        &app,
        TestRequest::delete()
            .uri("/api/admin/users/bob")
            .insert_header(("authorization", "Bearer root")),
    )
    .await;
    assert_eq!(erased.status, 200, "{}", erased.text);
    assert_eq!(erased.body["erased"]["sessions"], 1);
    // No actor: no use case runs (the mocks would panic).
    call(&app, TestRequest::delete().uri("/api/admin/users/bob"))
        .await
        .error(401, "UNAUTHORIZED");
}

#[actix_web::test]
async fn release_passes_the_actor_and_maps_the_domain_errors() {
    let id = SessionId::from(Uuid::new_v4());
    let mut conversations = MockConversations::new();
    conversations
        .expect_release_handoff()
        .withf(move |actor, asked| *actor == alice() && *asked == id)
        .times(1)
        .returning(|_, _| Err(forbidden()));
    let app = test::init_service(
        App::new().configure(configure(state(conversations, MockScriptLibrary::new()))),
    )
    .await;
    let reply = call(
        &app,
        TestRequest::post()
            .uri(&format!("/api/sessions/{id}/release"))
            .insert_header(("authorization", "Bearer alice")),
    )
    .await;
    reply.error(403, "FORBIDDEN");
}
