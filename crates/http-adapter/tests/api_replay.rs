//! Replays over the in-memory store and the real engine: each committed
//! turn records its LLM exchanges; a stored session replayed against the
//! version it ran on matches turn for turn without an LLM call, and against
//! an edited version reports the first divergence. Then the route: its
//! report, its 404s and its role check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test::TestRequest;
use heartrule_domain::{
    Actor, AuditAction, AuditFilter, AuditLog, DivergenceAspect, ErrorCode, MessageHistory,
    SessionId, SessionManagerConfig, VariableScope,
};
use heartrule_http_adapter::auth::{AuthFailure, Authenticator};
use heartrule_http_adapter::HttpConfig;
use serde_json::{json, Value};
use std::sync::Arc;
use support::*;

/// [`STREAM_SCRIPT`] with its third question about `topic` under the
/// action id `action`, and the answer to the second kept in `name_var`.
fn edited(action: &str, topic: &str, name_var: &str) -> String {
    STREAM_SCRIPT
        .replace("ask_mood", action)
        .replace("最近的心情", topic)
        .replace(
            "target_variable: user_name",
            &format!("target_variable: {name_var}"),
        )
}

/// Saves `content` as the draft and publishes it (compatible mode).
async fn publish<S, B>(app: &S, id: &str, content: &str) -> Value
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let draft = get(app, &format!("/api/projects/{id}/draft")).await;
    let revision = draft.body["revision"].as_u64().unwrap();
    let saved = call(
        app,
        TestRequest::put()
            .uri(&format!("/api/projects/{id}/draft"))
            .set_json(json!({"content": content, "revision": revision})),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    let published = post(
        app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible", "releaseNote": "edit"}),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text);
    published.body
}

/// A session on [`STREAM_SCRIPT`] (version 1) run for two turns: the
/// opening turn (two LLM calls), then the name (one call, writes
/// `user_name`). Returns the script and session ids.
async fn stored_conversation<S, B>(app: &S, llm: &FakeLlm) -> (String, SessionId)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let script_id = create_script(app, "replayed", STREAM_SCRIPT).await;
    queue_stream_first_turn(llm);
    let created = create_session(app, &script_id).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let session = created.body["sessionId"].as_str().unwrap().to_owned();
    queue_stream_second_turn(llm);
    let turn = post(
        app,
        &format!("/api/sessions/{session}/messages"),
        json!({"content": "小明"}),
    )
    .await;
    assert_eq!(turn.status, 200, "{}", turn.text);
    assert_eq!(turn.body["variables"]["user_name"], "小明");
    assert_eq!(llm.call_count(), 3);
    (script_id, session.parse().unwrap())
}

#[actix_web::test]
async fn each_turn_records_its_exchanges_with_the_prompt_only_when_capture_is_allowed() {
    for record_prompts in [false, true] {
        let h = Harness::with_manager(
            HttpConfig::default(),
            SessionManagerConfig {
                record_prompts,
                ..SessionManagerConfig::default()
            },
        );
        let app = h.service().await;
        let (_, session) = stored_conversation(&app, &h.llm).await;
        let exchanges = h.store.list_llm_exchanges(session).await.unwrap();
        let calls = h.llm.calls();
        assert_eq!(exchanges.len(), 3, "one per LLM call");
        let numbers: Vec<(u64, u32)> = exchanges
            .iter()
            .map(|e| (e.turn_number, e.call_index))
            .collect();
        assert_eq!(numbers, [(1, 0), (1, 1), (2, 0)]);
        let actions: Vec<&str> = exchanges.iter().map(|e| e.action_id.as_str()).collect();
        assert_eq!(actions, ["welcome", "ask_name", "ask_mood"]);
        for (exchange, call) in exchanges.iter().zip(&calls) {
            assert_eq!(exchange.purpose, call.purpose);
            assert_eq!(exchange.prompt_hash.len(), 64);
            assert_eq!(
                exchange.prompt.as_deref(),
                record_prompts.then_some(call.prompt.as_str()),
                "the prompt text is kept only with content capture"
            );
        }
        assert_eq!(exchanges[0].response, "欢迎你来");
        let messages = h.store.list_messages(session, 0, 100).await.unwrap();
        assert_eq!(exchanges[2].turn_id, messages.last().unwrap().turn_id);
    }
}

#[actix_web::test]
async fn a_replay_on_the_same_version_matches_without_calling_the_llm() {
    let h = Harness::default_config();
    let app = h.service().await;
    let (_, session) = stored_conversation(&app, &h.llm).await;
    let calls_before = h.llm.call_count();

    let report = h
        .state
        .conversations
        .replay(&Actor::editor("ed"), session, None)
        .await
        .unwrap();
    assert!(!report.diverged, "{report:#?}");
    assert_eq!(report.first_divergence, None);
    assert_eq!(report.stored_version, Some(1));
    assert_eq!(report.target_version, Some(1));
    assert_eq!((report.turns_stored, report.turns_replayed), (2, 2));
    assert_eq!((report.llm_calls_reused, report.llm_calls_made), (3, 0));
    assert_eq!(report.recorded_exchanges, 3);
    assert_eq!(report.note, None);
    assert_eq!(h.llm.call_count(), calls_before, "no LLM call was made");

    // Nothing was written: the stored conversation is as it was.
    assert_eq!(
        h.store.list_messages(session, 0, 100).await.unwrap().len(),
        4
    );
    assert_eq!(h.store.list_llm_exchanges(session).await.unwrap().len(), 3);
}

#[actix_web::test]
async fn a_replay_on_an_edited_version_reports_the_first_divergence() {
    let h = Harness::default_config();
    let app = h.service().await;
    let (script_id, session) = stored_conversation(&app, &h.llm).await;
    // Version 2 asks about sleep instead of mood, under another action id.
    publish(
        &app,
        &script_id,
        &edited("ask_sleep", "最近的睡眠", "user_name"),
    )
    .await;
    let calls_before = h.llm.calls().len();
    h.llm
        .reply(json!({"content": "小明，最近睡得好吗？", "EXIT": "false"}).to_string());

    let editor = Actor::editor("ed");
    let report = h
        .state
        .conversations
        .replay(&editor, session, Some(2))
        .await
        .unwrap();
    assert!(report.diverged, "{report:#?}");
    assert_eq!(
        (report.stored_version, report.target_version),
        (Some(1), Some(2))
    );
    assert_eq!(report.turns_replayed, 2);
    assert_eq!(
        (report.llm_calls_reused, report.llm_calls_made),
        (2, 1),
        "the unchanged opening turn reuses its responses; only the new question is asked"
    );
    assert_eq!(h.llm.calls().len(), calls_before + 1);
    assert!(h.llm.last_call().prompt.contains("最近的睡眠"));
    let divergence = report.first_divergence.unwrap();
    assert_eq!(divergence.turn, 2);
    assert_eq!(divergence.user_message.as_deref(), Some("小明"));
    assert_eq!(
        divergence.aspects,
        [DivergenceAspect::Messages, DivergenceAspect::Position]
    );
    assert_eq!(divergence.stored_action_id.as_deref(), Some("ask_mood"));
    assert_eq!(divergence.replayed_action_id.as_deref(), Some("ask_sleep"));
    assert_eq!(
        divergence.stored_topic_path.as_deref(),
        Some("p1/t1/ask_mood")
    );
    assert_eq!(
        divergence.replayed_topic_path.as_deref(),
        Some("p1/t1/ask_sleep")
    );
    assert_eq!(
        divergence.stored_ai_text.as_deref(),
        Some(STREAM_MOOD_QUESTION)
    );
    assert_eq!(
        divergence.replayed_ai_text.as_deref(),
        Some("小明，最近睡得好吗？")
    );
    assert!(divergence.variables.is_empty());

    // Version 3 keeps the answer under another name: the variables differ.
    publish(&app, &script_id, &edited("ask_mood", "最近的心情", "name")).await;
    h.llm
        .reply(json!({"content": "{user_name}，最近心情怎么样？", "EXIT": "false"}).to_string());
    let report = h
        .state
        .conversations
        .replay(&editor, session, Some(3))
        .await
        .unwrap();
    let divergence = report.first_divergence.unwrap();
    assert_eq!(divergence.turn, 2);
    assert!(divergence.aspects.contains(&DivergenceAspect::Variables));
    let differences: Vec<(&str, Option<&Value>, Option<&Value>)> = divergence
        .variables
        .iter()
        .map(|d| (d.name.as_str(), d.stored.as_ref(), d.replayed.as_ref()))
        .collect();
    assert_eq!(
        differences,
        [
            ("name", None, Some(&json!("小明"))),
            ("user_name", Some(&json!("小明")), None),
        ]
    );
    assert!(divergence
        .variables
        .iter()
        .all(|d| d.scope == VariableScope::Session || d.scope == VariableScope::Topic));
}

#[actix_web::test]
async fn replays_are_for_editors_and_name_a_missing_session_or_version() {
    let h = Harness::default_config();
    let app = h.service().await;
    let (_, session) = stored_conversation(&app, &h.llm).await;
    let conversations = &h.state.conversations;

    let refused = conversations
        .replay(&Actor::client("user-1"), session, None)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        ErrorCode::Forbidden,
        "not even the session's own user"
    );
    let missing = conversations
        .replay(&Actor::admin("root"), SessionId::new_random(), None)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), ErrorCode::SessionNotFound);
    let no_version = conversations
        .replay(&Actor::admin("root"), session, Some(9))
        .await
        .unwrap_err();
    assert_eq!(no_version.code(), ErrorCode::VersionNotFound);
}

#[actix_web::test]
async fn the_replay_route_reports_and_is_audited() {
    let h = Harness::default_config();
    let app = h.service().await;
    let (_, session) = stored_conversation(&app, &h.llm).await;

    let reply = post(&app, &format!("/api/sessions/{session}/replay"), json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = &reply.body;
    assert_eq!(body["sessionId"], session.to_string());
    assert_eq!(body["diverged"], false);
    assert_eq!(body["targetVersion"], 1);
    assert_eq!(body["turnsReplayed"], 2);
    assert_eq!(body["llmCallsReused"], 3);
    assert_eq!(body["llmCallsMade"], 0);
    assert!(body.get("firstDivergence").is_none());

    let events = h
        .store
        .list_events(&AuditFilter {
            action: Some(AuditAction::SessionReplay),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target_id, session.to_string());
    assert_eq!(events[0].details["targetVersion"], 1);
    assert_eq!(events[0].details["diverged"], false);

    let uri = format!("/api/sessions/{session}/replay?version=7");
    post(&app, &uri, json!({}))
        .await
        .error(404, "VERSION_NOT_FOUND");
    let uri = format!("/api/sessions/{}/replay", SessionId::new_random());
    post(&app, &uri, json!({}))
        .await
        .error(404, "SESSION_NOT_FOUND");
    post(&app, "/api/sessions/not-a-uuid/replay", json!({}))
        .await
        .error(400, "INVALID_REQUEST");
    let uri = format!("/api/sessions/{session}/replay?version=next");
    post(&app, &uri, json!({}))
        .await
        .error(400, "INVALID_REQUEST");
    assert_eq!(
        get(&app, &format!("/api/sessions/{session}/replay"))
            .await
            .status,
        405
    );
}

struct ClientUser;

impl Authenticator for ClientUser {
    fn authenticate(&self, _authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        Ok(Actor::client("user-1"))
    }
}

#[actix_web::test]
async fn clients_may_not_replay_even_their_own_session() {
    let h = Harness::default_config();
    let session = {
        let app = h.service().await;
        stored_conversation(&app, &h.llm).await.1
    };
    let mut h = h;
    h.state = h.state.clone().with_authenticator(Arc::new(ClientUser));
    let app = h.service().await;
    post(&app, &format!("/api/sessions/{session}/replay"), json!({}))
        .await
        .error(403, "FORBIDDEN");
}
