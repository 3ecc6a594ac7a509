//! Whole conversations over HTTP: the CBT intake example, an LLM debug
//! script, the README walkthrough, and `Idempotency-Key` retries.

use crate::support::counselor::{answer, counselor_server, prompt_of, scripted_value};
use crate::support::{rows, Env, FakeServer, Services, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const PHASES: [&str; 4] = ["rapport", "assessment", "intervention", "closing"];

/// What the client answers at each action.
fn client_answer(action_id: &str) -> &'static str {
    match action_id {
        "ask_name" => "叫我小明就好",
        "ask_problem" => "最近工作压力很大，晚上睡不着，大概三个月了",
        "ask_distress" => "7",
        "ask_episode" => "周一例会上被点名，我想我什么都做不好，很焦虑",
        _ => "好的，我明白了",
    }
}

#[actix_web::test]
async fn cbt_intake_runs_from_creation_to_completion_and_stores_every_row() {
    let services = Services::new().await;
    let llm = counselor_server().await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let script = app.script_id("cbt_intake").await;

    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "active");
    assert_eq!(created["executionStatus"], "waiting_input");
    assert_eq!(created["position"]["phaseId"], "rapport");
    assert_eq!(created["position"]["actionId"], "greet");
    // The legacy say is the scripted text rewritten (the fake returns it verbatim).
    assert!(
        created["aiMessage"]
            .as_str()
            .unwrap()
            .starts_with("Hello, and thank you for coming today."),
        "{created}"
    );

    let mut positions = vec![created["position"].clone()];
    let mut sent = Vec::new();
    let mut last = created;
    for _ in 0..40 {
        if last["sessionStatus"] == "completed" {
            break;
        }
        let action = last["position"]["actionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let words = client_answer(&action);
        let turn = app.send(&session, words).await.ok();
        sent.push(words);
        assert_eq!(turn["turnId"].as_str().map(str::len), Some(36), "{turn}");
        positions.push(turn["position"].clone());
        last = turn;
    }
    assert_eq!(last["sessionStatus"], "completed", "{last}");
    assert_eq!(last["executionStatus"], "completed");

    // Positions only move forward through the phases, and every phase was visited.
    let phase_order: Vec<usize> = positions
        .iter()
        .filter_map(|p| p["phaseId"].as_str())
        .map(|id| {
            PHASES
                .iter()
                .position(|p| *p == id)
                .unwrap_or_else(|| panic!("phase {id}"))
        })
        .collect();
    assert!(
        phase_order.windows(2).all(|w| w[0] <= w[1]),
        "{positions:?}"
    );
    let visited: BTreeSet<usize> = phase_order.iter().copied().collect();
    // The closing phase runs through without waiting (think, say, say), so
    // it shows in the stored messages below rather than as a position.
    assert_eq!(visited, BTreeSet::from([0, 1, 2]), "{positions:?}");
    assert!(
        last["position"]["phaseId"].is_null(),
        "past the last phase: {last}"
    );
    let actions: BTreeSet<&str> = positions
        .iter()
        .filter_map(|p| p["actionId"].as_str())
        .collect();
    for expected in [
        "greet",
        "ask_name",
        "ask_problem",
        "ask_distress",
        "ask_episode",
    ] {
        assert!(
            actions.contains(expected),
            "{expected} not among {actions:?}"
        );
    }

    // Variables: extracted answers, ai_think results, the technique's outputs.
    let flat = &last["variables"];
    for name in [
        "user_name",
        "presenting_problem",
        "problem_duration",
        "hot_thought",
        "formulation",
        "thinking_trap",
        "balanced_thought",
        "session_summary",
        "homework",
    ] {
        assert_eq!(flat[name], scripted_value(name), "{name} in {flat}");
    }
    let scoped = app
        .get(&format!("/api/sessions/{session}/variables?scoped=true"))
        .await
        .ok();
    assert_eq!(scoped["session"]["user_name"]["value"], "小明", "{scoped}");
    assert_eq!(
        scoped["topic"]["recent_episode"]["recent_situation"]["value"],
        scripted_value("recent_situation"),
        "{scoped}"
    );
    assert_eq!(
        scoped["phase"]["intervention"]["evidence_against_hot_thought"]["value"],
        scripted_value("contrary_evidence"),
        "{scoped}"
    );

    // The history over HTTP: every user message, in order.
    let history = app
        .get(&format!("/api/sessions/{session}/messages"))
        .await
        .ok();
    let history = history["data"].as_array().unwrap().clone();
    let user_words: Vec<&str> = history
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(user_words, sent);
    assert_eq!(history[0]["role"], "ai");

    // The stored rows.
    let db = &services.db;
    let messages = rows(
        db,
        &format!(
            "SELECT seq, role, turn_id FROM messages WHERE session_id = '{session}' ORDER BY seq"
        ),
    )
    .await;
    assert_eq!(messages.len(), history.len());
    for (index, row) in messages.iter().enumerate() {
        assert_eq!(row["seq"], json!(index + 1), "seq contiguous: {messages:?}");
    }
    let spoken = format!(
        "SELECT DISTINCT action_id FROM messages \
         WHERE session_id = '{session}' AND role = 'assistant'"
    );
    let spoken = rows(db, &spoken).await;
    let spoken: BTreeSet<&str> = spoken
        .iter()
        .filter_map(|r| r["action_id"].as_str())
        .collect();
    for action in [
        "greet",
        "explain_confidentiality",
        "ask_name",
        "ask_problem",
        "ask_distress",
        "ask_episode",
        "bridge",
        "share_summary",
        "goodbye",
    ] {
        assert!(
            spoken.contains(action),
            "no message of {action}: {spoken:?}"
        );
    }
    let turn_ids: BTreeSet<String> = messages
        .iter()
        .map(|m| m["turn_id"].as_str().unwrap().to_owned())
        .collect();
    let variables = format!(
        "SELECT variable_name, scope, scope_key, turn_id, value FROM variables \
         WHERE session_id = '{session}' ORDER BY id"
    );
    let variables = rows(db, &variables).await;
    assert!(!variables.is_empty());
    for row in &variables {
        assert!(
            turn_ids.contains(row["turn_id"].as_str().unwrap()),
            "snapshot of an unknown turn: {row}"
        );
    }
    let snapshot = |name: &str| {
        variables
            .iter()
            .find(|row| row["variable_name"] == name)
            .unwrap_or_else(|| panic!("no snapshot of {name}: {variables:?}"))
            .clone()
    };
    assert_eq!(snapshot("user_name")["scope"], "session");
    assert_eq!(snapshot("user_name")["value"], "小明");
    assert_eq!(snapshot("recent_situation")["scope"], "topic");
    assert_eq!(snapshot("recent_situation")["scope_key"], "recent_episode");
    assert_eq!(snapshot("evidence_against_hot_thought")["scope"], "phase");
    assert_eq!(
        snapshot("evidence_against_hot_thought")["scope_key"],
        "intervention"
    );
    let stored = format!(
        "SELECT status, execution_status, completed_at, turn_count, last_message_seq \
         FROM sessions WHERE id = '{session}'"
    );
    let stored = rows(db, &stored).await;
    assert_eq!(stored[0]["status"], "completed");
    assert_eq!(stored[0]["execution_status"], "completed");
    assert!(stored[0]["completed_at"].is_string(), "{stored:?}");
    assert_eq!(stored[0]["turn_count"], json!(turn_ids.len()), "{stored:?}");
    assert_eq!(stored[0]["last_message_seq"], json!(messages.len()));
    assert_eq!(db.count("failed_turns", "true").await, 0);

    // The script and the session snapshot were cached under this test's prefix.
    let keys = crate::support::redis_keys(&services.redis_prefix);
    assert!(keys.iter().any(|k| k.contains(&session)), "{keys:?}");

    // Non-streaming turns: no request asked for a stream.
    assert!(llm
        .requests()
        .iter()
        .all(|r| !crate::support::counselor::is_stream(r)));
    app.stop().await;
}

/// A legacy say without
/// acknowledgment, then a simple ask with `target_variable`.
const LLM_DEBUG: &str = r#"
session:
  session_id: llm_debug
  session_name: "LLM debug"
  phases:
    - phase_id: phase_1
      topics:
        - topic_id: topic_1
          actions:
            - action_id: action_1
              action_type: ai_say
              config:
                content: "欢迎来到调试会话"
                require_acknowledgment: false
            - action_id: action_2
              action_type: ai_ask
              config:
                prompt_template: "询问来访者希望如何被称呼"
                target_variable: user_name
"#;

#[actix_web::test]
async fn case_32_llm_debug_script_over_http() {
    let services = Services::new().await;
    let llm = FakeServer::start(|index, request| match index {
        0 => answer(request, "欢迎您"),
        1 => answer(
            request,
            &json!({"content": "请问您希望如何称呼您？"}).to_string(),
        ),
        _ => panic!("unexpected LLM call {index}: {}", prompt_of(request)),
    })
    .await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let imported = app
        .post(
            "/api/scripts/import",
            &json!({"yamlContent": LLM_DEBUG, "scriptName": "test_llm_debug"}),
        )
        .await
        .ok();
    assert!(
        !imported["data"]["warnings"].as_array().unwrap().is_empty(),
        "deprecated fields warn: {imported}"
    );
    let script = imported["data"]["scriptId"].as_str().unwrap();

    let created = app.create_session(script).await;
    assert_eq!(created["aiMessage"], "请问您希望如何称呼您？");
    assert_eq!(created["executionStatus"], "waiting_input");
    assert_eq!(created["position"]["actionId"], "action_2");
    let session = created["sessionId"].as_str().unwrap();
    let assistant = format!(
        "SELECT content FROM messages \
         WHERE session_id = '{session}' AND role = 'assistant' ORDER BY seq"
    );
    let assistant = rows(&services.db, &assistant).await;
    assert_eq!(
        assistant,
        vec![
            json!({"content": "欢迎您"}),
            json!({"content": "请问您希望如何称呼您？"})
        ]
    );

    let turn = app.send(session, "小明").await.ok();
    assert_eq!(turn["sessionStatus"], "completed", "{turn}");
    assert_eq!(turn["executionStatus"], "completed");
    assert_eq!(turn["variables"]["user_name"], "小明");
    assert_eq!(llm.request_count(), 2);
    app.stop().await;
}

/// The README's curl walkthrough, request for request: no database, no
/// Redis, the mock LLM, the preloaded `hello` script.
#[actix_web::test]
async fn readme_walkthrough_with_the_in_memory_store_and_mock_llm() {
    let app = TestApp::start(&Env::base()).await;
    let list = app.get("/api/scripts").await.ok();
    let hello = list["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scriptName"] == "hello")
        .expect("hello is preloaded");
    let script = hello["id"].as_str().unwrap();

    let response = app
        .http
        .post(app.at("/api/sessions"))
        .header("content-type", "application/json")
        .body(format!("{{\"userId\":\"demo\",\"scriptId\":\"{script}\"}}"))
        .send()
        .await
        .unwrap();
    let created = crate::support::Response::read(response).await.ok();
    let session = created["sessionId"].as_str().unwrap();
    assert_eq!(created["executionStatus"], "waiting_input");

    let response = app
        .http
        .post(app.at(&format!("/api/sessions/{session}/messages")))
        .header("content-type", "application/json")
        .body(r#"{"content":"小明"}"#)
        .send()
        .await
        .unwrap();
    let turn = crate::support::Response::read(response).await.ok();
    assert!(turn["aiMessage"].is_string(), "{turn}");
    assert_eq!(turn["executionStatus"], "completed", "{turn}");
    assert_eq!(turn["variables"]["visitor_name"], "小明", "{turn}");

    let history = app
        .get(&format!("/api/sessions/{session}/messages"))
        .await
        .ok();
    let lines: Vec<(String, String)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    assert_eq!(lines[0].0, "ai");
    assert!(
        lines.contains(&("user".to_owned(), "小明".to_owned())),
        "{lines:?}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_retried_message_with_the_same_idempotency_key_stores_one_turn() {
    let services = Services::new().await;
    let llm = counselor_server().await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let script = app.script_id("hello").await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap();
    let path = app.at(&format!("/api/sessions/{session}/messages"));
    let send = |body: Value| {
        let request = app
            .http
            .post(&path)
            .header("Idempotency-Key", "turn-1")
            .json(&body);
        async move { crate::support::Response::read(request.send().await.unwrap()).await }
    };

    let first = send(json!({"content": "小明"})).await;
    let first_body = first.ok();
    let calls = llm.request_count();
    let retry = send(json!({"content": "小明"})).await;
    assert_eq!(retry.ok(), first_body, "the retry returns the first body");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(llm.request_count(), calls, "a replay runs nothing");
    let db = &services.db;
    assert_eq!(
        db.count(
            "messages",
            &format!("session_id = '{session}' AND role = 'user'")
        )
        .await,
        1
    );
    let turns = rows(
        db,
        &format!("SELECT DISTINCT turn_id FROM messages WHERE session_id = '{session}'"),
    )
    .await;
    assert_eq!(turns.len(), 2, "creation and one message turn");

    let conflict = send(json!({"content": "another answer"})).await;
    conflict.error(409, "CONFLICT");
    assert_eq!(
        db.count(
            "messages",
            &format!("session_id = '{session}' AND role = 'user'")
        )
        .await,
        1
    );
    app.stop().await;
}
