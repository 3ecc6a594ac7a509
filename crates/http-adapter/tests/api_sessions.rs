//! Session and chat routes end to end: the real engine over the in-memory
//! store, driven through the actix app.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test::TestRequest;
use heartrule_domain::LlmError;
use serde_json::json;
use support::*;

#[actix_web::test]
async fn case_32_create_then_answer_completes_with_the_name() {
    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "debug", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);

    let created = create_session(&app, &script_id).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let body = &created.body;
    assert_eq!(body["aiMessage"], DEBUG_QUESTION);
    assert_eq!(body["executionStatus"], "waiting_input");
    assert_eq!(body["status"], "active");
    assert_eq!(body["sessionStatus"], "active");
    assert_eq!(body["position"]["actionId"], "action_2");
    assert_eq!(body["position"]["actionType"], "ai_ask");
    assert!(body["createdAt"].is_string());
    assert!(body["turnId"].is_string());
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{}", created.text);
    assert_eq!(messages[0]["actionId"], "action_1");
    assert_eq!(messages[0]["actionType"], "ai_say");
    assert_eq!(messages[0]["content"], DEBUG_WELCOME);
    assert_eq!(messages[1]["content"], DEBUG_QUESTION);
    assert_eq!(messages[1]["seq"], 2);
    assert_eq!(h.llm.call_count(), 2);
    let debug_info = body["debugInfo"].as_array().unwrap();
    assert_eq!(debug_info.len(), 2, "debug info lists every LLM call");
    assert_eq!(debug_info[1]["actionId"], "action_2");
    assert_eq!(
        debug_info[1]["response"],
        json!({"content": DEBUG_QUESTION}).to_string()
    );

    let session_id = body["sessionId"].as_str().unwrap().to_owned();
    let stored = get(&app, &format!("/api/sessions/{session_id}/messages")).await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.body["success"], true);
    let data = stored.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "two assistant rows stored");
    assert!(data.iter().all(|m| m["role"] == "ai"));

    let answered = post(
        &app,
        &format!("/api/sessions/{session_id}/messages"),
        json!({"content": "小明"}),
    )
    .await;
    assert_eq!(answered.status, 200, "{}", answered.text);
    let body = &answered.body;
    assert_eq!(body["executionStatus"], "completed");
    assert_eq!(body["sessionStatus"], "completed");
    assert_eq!(body["variables"]["user_name"], "小明");
    assert_eq!(body["aiMessage"], "");
    assert_eq!(body["messages"], json!([]));
    assert_eq!(
        body["variableStore"]["session"]["user_name"]["value"], "小明",
        "outputs go to the session scope by default: {}",
        answered.text
    );
    assert_eq!(
        body["variableStore"]["session"]["user_name"]["source"],
        "action_2"
    );
    assert!(
        body["position"]["actionId"].is_null(),
        "a completed session has no current action"
    );
    assert_eq!(
        h.llm.call_count(),
        2,
        "a simple ask takes the answer without a call"
    );
}

#[actix_web::test]
async fn messages_are_paged_by_seq_with_roles_mapped() {
    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "debug", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);
    let session_id = create_session(&app, &script_id).await.body["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let turn = post(
        &app,
        &format!("/api/sessions/{session_id}/messages"),
        json!({"content": "小明"}),
    )
    .await;
    assert_eq!(turn.status, 200);

    let all = get(&app, &format!("/api/sessions/{session_id}/messages")).await;
    let data = all.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let roles: Vec<&str> = data.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["ai", "ai", "user"]);
    let user = &data[2];
    assert_eq!(user["content"], "小明");
    assert_eq!(user["seq"], 3);
    for key in [
        "messageId",
        "timestamp",
        "actionId",
        "actionType",
        "metadata",
    ] {
        assert!(user.get(key).is_some(), "message.{key} missing");
    }

    let page = get(
        &app,
        &format!("/api/sessions/{session_id}/messages?afterSeq=1&limit=1"),
    )
    .await;
    let data = page.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["seq"], 2);

    let unknown = get(
        &app,
        "/api/sessions/00000000-0000-4000-8000-000000000000/messages",
    )
    .await;
    unknown.error(404, "SESSION_NOT_FOUND");
    let bad_limit = get(
        &app,
        &format!("/api/sessions/{session_id}/messages?limit=0"),
    )
    .await;
    bad_limit.error(400, "INVALID_REQUEST");
    let bad_seq = get(
        &app,
        &format!("/api/sessions/{session_id}/messages?afterSeq=x"),
    )
    .await;
    bad_seq.error(400, "INVALID_REQUEST");
}

#[actix_web::test]
async fn session_variables_and_user_listing() {
    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "debug", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);
    let created = post(
        &app,
        "/api/sessions",
        json!({"userId": "user-7", "scriptId": script_id, "initialVariables": {"city": "杭州"}}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert_eq!(created.body["variables"]["city"], "杭州");
    assert_eq!(
        created.body["variableStore"]["session"]["city"]["source"],
        "initial"
    );
    let session_id = created.body["sessionId"].as_str().unwrap().to_owned();

    let session = get(&app, &format!("/api/sessions/{session_id}")).await;
    assert_eq!(session.status, 200);
    assert_eq!(session.body["sessionId"], session_id);
    assert_eq!(session.body["id"], session_id);
    assert_eq!(session.body["userId"], "user-7");
    assert_eq!(session.body["scriptId"], script_id);
    assert_eq!(session.body["executionStatus"], "waiting_input");
    assert_eq!(session.body["position"]["actionId"], "action_2");
    assert_eq!(session.body["turnCount"], 1);
    assert!(session.body["completedAt"].is_null());

    let flat = get(&app, &format!("/api/sessions/{session_id}/variables")).await;
    assert_eq!(flat.status, 200);
    assert_eq!(flat.body, json!({"city": "杭州"}));
    let scoped = get(
        &app,
        &format!("/api/sessions/{session_id}/variables?scoped=true"),
    )
    .await;
    assert_eq!(scoped.body["session"]["city"]["value"], "杭州");
    assert_eq!(scoped.body["session"]["city"]["scope"], "session");
    assert!(scoped.body["topic"].is_object() && scoped.body["phase"].is_object());

    queue_debug_first_turn(&h.llm);
    let second = post(
        &app,
        "/api/sessions",
        json!({"userId": "user-7", "scriptId": script_id}),
    )
    .await;
    let second_id = second.body["sessionId"].as_str().unwrap().to_owned();
    let listed = get(&app, "/api/users/user-7/sessions").await;
    assert_eq!(listed.status, 200);
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [second_id.as_str(), session_id.as_str()],
        "newest first"
    );
    let nobody = get(&app, "/api/users/nobody/sessions").await;
    assert_eq!(nobody.body, json!([]));
}

#[actix_web::test]
async fn chat_runs_a_turn_in_the_original_shape() {
    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "debug", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);
    let session_id = create_session(&app, &script_id).await.body["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();

    let reply = post(
        &app,
        "/api/chat",
        json!({"sessionId": session_id, "message": "小红"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["aiMessage"], "");
    assert_eq!(reply.body["sessionStatus"], "completed");
    assert_eq!(reply.body["executionStatus"], "completed");
    assert_eq!(reply.body["extractedVariables"]["user_name"], "小红");
    assert_eq!(reply.body["messages"], json!([]));

    let empty = post(
        &app,
        "/api/chat",
        json!({"sessionId": session_id, "message": ""}),
    )
    .await;
    empty.error(400, "INVALID_REQUEST");
    let unknown = post(
        &app,
        "/api/chat",
        json!({"sessionId": "00000000-0000-4000-8000-000000000000", "message": "hi"}),
    )
    .await;
    unknown.error(404, "SESSION_NOT_FOUND");
}

#[actix_web::test]
async fn idempotency_key_replays_the_first_result_and_stores_one_turn() {
    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "stream", STREAM_SCRIPT).await;
    queue_stream_first_turn(&h.llm);
    let session_id = create_session(&app, &script_id).await.body["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    queue_stream_second_turn(&h.llm);
    let uri = format!("/api/sessions/{session_id}/messages");
    let send = |content: &str| {
        TestRequest::post()
            .uri(&uri)
            .insert_header(("Idempotency-Key", "turn-0001"))
            .set_json(json!({"content": content}))
    };

    let first = call(&app, send("小明")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    assert_eq!(first.body["aiMessage"], STREAM_MOOD_QUESTION);

    let replay = call(&app, send("小明")).await;
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body, "the replay is the identical body");
    assert_eq!(h.llm.call_count(), 3, "the replay ran no turn");

    let messages = get(&app, &uri).await;
    let contents: Vec<&str> = messages.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents.iter().filter(|c| **c == "小明").count(), 1);
    assert_eq!(
        contents.len(),
        4,
        "2 from creation, the user's, 1 AI: {contents:?}"
    );

    let conflict = call(&app, send("小红")).await;
    let error = conflict.error(409, "CONFLICT");
    assert_eq!(error["type"], "configuration");
    assert_eq!(
        get(&app, &uri).await.body["data"].as_array().unwrap().len(),
        4
    );

    let bad_key = call(
        &app,
        TestRequest::post()
            .uri(&uri)
            .insert_header(("Idempotency-Key", "has space"))
            .set_json(json!({"content": "x"})),
    )
    .await;
    bad_key.error(400, "INVALID_REQUEST");
}

#[actix_web::test]
async fn case_33_typed_errors() {
    let h = Harness::default_config();
    let app = h.service().await;

    let unknown_script = post(
        &app,
        "/api/sessions",
        json!({"userId": "u", "scriptId": "00000000-0000-4000-8000-000000000001"}),
    )
    .await;
    let error = unknown_script.error(404, "SCRIPT_NOT_FOUND");
    assert_eq!(error["type"], "configuration");
    assert_eq!(error["message"], "Script not found");

    let unknown_session = post(
        &app,
        "/api/sessions/00000000-0000-4000-8000-000000000002/messages",
        json!({"content": "hi"}),
    )
    .await;
    let error = unknown_session.error(404, "SESSION_NOT_FOUND");
    assert_eq!(error["type"], "session");
    assert_eq!(error["message"], "Session not found or expired");
    assert_eq!(error["recovery"]["canRetry"], false);
    assert_eq!(
        error["context"]["sessionId"],
        "00000000-0000-4000-8000-000000000002"
    );

    for uri in [
        "/api/sessions/not-a-uuid",
        "/api/sessions/not-a-uuid/messages",
        "/api/sessions/not-a-uuid/variables",
        "/api/scripts/not-a-uuid",
    ] {
        let reply = get(&app, uri).await;
        let error = reply.error(400, "INVALID_REQUEST");
        assert!(
            error["message"].as_str().unwrap().contains("`id`"),
            "the error names the parameter: {}",
            reply.text
        );
    }

    let invalid_import = post(
        &app,
        "/api/scripts/import?mode=strict",
        json!({"yamlContent": DEBUG_SCRIPT, "scriptName": "legacy"}),
    )
    .await;
    let error = invalid_import.error(400, "SCRIPT_VALIDATION_ERROR");
    assert_eq!(error["type"], "configuration");
    let issues = invalid_import.body["errors"].as_array().unwrap();
    assert!(!issues.is_empty());
    assert!(issues
        .iter()
        .all(|i| i["path"].is_string() && i["errorType"].is_string()));
}

#[actix_web::test]
async fn llm_failure_is_a_typed_503_and_changes_nothing() {
    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "stream", STREAM_SCRIPT).await;
    queue_stream_first_turn(&h.llm);
    let session_id = create_session(&app, &script_id).await.body["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    h.llm.fail(LlmError::RateLimited {
        retry_after: Some(std::time::Duration::from_secs(7)),
    });
    let uri = format!("/api/sessions/{session_id}/messages");

    let failed = post(&app, &uri, json!({"content": "小明"})).await;
    let error = failed.error(503, "LLM_SERVICE_ERROR");
    assert_eq!(error["type"], "runtime");
    assert_eq!(error["recovery"]["canRetry"], true);
    assert!(error["details"].as_str().unwrap().contains("rate limited"));
    assert_eq!(failed.header("retry-after"), Some("7"));
    assert_eq!(
        get(&app, &uri).await.body["data"].as_array().unwrap().len(),
        2
    );

    queue_stream_second_turn(&h.llm);
    let retried = post(&app, &uri, json!({"content": "小明"})).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
    assert_eq!(retried.body["aiMessage"], STREAM_MOOD_QUESTION);
}

#[actix_web::test]
async fn create_session_validates_its_body() {
    let h = Harness::default_config();
    let app = h.service().await;
    let empty_user = post(
        &app,
        "/api/sessions",
        json!({"userId": "", "scriptId": "00000000-0000-4000-8000-000000000001"}),
    )
    .await;
    empty_user.error(400, "INVALID_REQUEST");
    let bad_script_id = post(
        &app,
        "/api/sessions",
        json!({"userId": "u", "scriptId": "nope"}),
    )
    .await;
    let error = bad_script_id.error(400, "INVALID_REQUEST");
    assert_eq!(error["type"], "request");
    assert!(
        error["details"].as_str().unwrap().contains("UUID")
            || error["details"].as_str().unwrap().contains("uuid")
    );
}

#[actix_web::test]
async fn an_empty_message_is_a_valid_turn() {
    let h = Harness::default_config();
    let app = h.service().await;
    let script_id = create_script(&app, "debug", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);
    let session_id = create_session(&app, &script_id).await.body["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = post(
        &app,
        &format!("/api/sessions/{session_id}/messages"),
        json!({"content": ""}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body["executionStatus"], "waiting_input",
        "{}",
        reply.text
    );
    assert!(reply.body["variables"].get("user_name").is_none());
}
