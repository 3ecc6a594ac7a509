//! Repair intents through the running server, on the `hello` script waiting
//! at its `ask_name` question: skip, stop and a request for a person in
//! Chinese and English (the local detector), a skip only the LLM's
//! `user_intent` reads, the neutral handoff with its holding reply and the
//! release, and no crisis wording or alert anywhere.

use crate::support::counselor::{answer, counselor, prompt_of, reply_text};
use crate::support::{FakeServer, Services, TestApp};
use heartrule_testkit::webhook::WebhookReceiver;
use serde_json::Value;
use std::time::Duration;

const SECRET: &str = "e2e-on-call-secret-0123";
/// No phrase of the local detector; the fake LLM reads a skip into it.
const VAGUE: &str = "嗯……这个我们换个话题聊吧";

/// The scripted counselor, except that an `ai_ask` reply whose latest user
/// message is [`VAGUE`] carries `metadata.user_intent: "skip"`.
async fn llm_server() -> FakeServer {
    FakeServer::start(|_, request| {
        let prompt = prompt_of(request);
        let latest = prompt
            .lines()
            .filter_map(|line| line.strip_prefix("来访者: "))
            .next_back();
        if latest == Some(VAGUE) && prompt.contains("<task>") {
            let mut reply: Value = serde_json::from_str(&reply_text(&prompt)).unwrap();
            reply["metadata"] = serde_json::json!({ "user_intent": "skip" });
            return answer(request, &reply.to_string());
        }
        counselor(request)
    })
    .await
}

/// A new `hello` session waiting at its question.
async fn session(app: &TestApp) -> String {
    let script = app.script_id("hello").await;
    let created = app.create_session(&script).await;
    assert_eq!(created["position"]["actionId"], "ask_name", "{created}");
    created["sessionId"].as_str().unwrap().to_owned()
}

/// The newest stored messages, newest first.
async fn last_messages(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    let messages = app.get(&format!("/api/sessions/{id}/messages")).await.ok();
    messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take(n)
        .cloned()
        .collect()
}

#[actix_web::test]
async fn skip_stop_and_a_request_for_a_person_in_each_language_do_what_they_say() {
    let services = Services::new().await;
    let llm = llm_server().await;
    // The on-call webhook is configured: a request for a person must not
    // reach it.
    let hook = WebhookReceiver::start(&[]).await;
    let app = TestApp::start(
        &services
            .env()
            .openai(llm.base_url())
            .set("HEARTRULE__SAFETY__WEBHOOK__URL", hook.url())
            .set("HEARTRULE__SAFETY__WEBHOOK__SECRET", SECRET),
    )
    .await;

    // Skip: the question is declined and the script moves on in the same turn.
    for (message, source) in [
        ("这个问题我想跳过", "local"),
        ("Can we skip this question?", "local"),
        (VAGUE, "llm"),
    ] {
        let id = session(&app).await;
        let turn = app.send(&id, message).await.ok();
        assert_eq!(turn["sessionStatus"], "completed", "{message}: {turn}");
        // The goodbye ran, its placeholder empty.
        assert!(
            turn["aiMessage"]
                .as_str()
                .unwrap()
                .starts_with("Nice to meet you, !"),
            "{message}: {turn}"
        );
        let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
        assert_eq!(stored["variables"]["visitor_name"], Value::Null, "{stored}");
        assert_eq!(
            stored["variableStore"]["session"]["visitor_name"]["source"], "declined",
            "{stored}"
        );
        let user = last_messages(&app, &id, 2).await[1].clone();
        assert_eq!(user["content"], message);
        assert_eq!(user["metadata"]["repair"]["intent"], "skip", "{user}");
        assert_eq!(user["metadata"]["repair"]["source"], source);
        assert_eq!(user["metadata"]["repair"]["declined"][0], "visitor_name");
    }

    // Stop: the closing message, the session completed, the LLM not asked.
    for (message, closing) in [
        ("算了，我不想聊了", "今天就先聊到这里"),
        ("I want to stop.", "stop here for today"),
    ] {
        let id = session(&app).await;
        let before = llm.request_count();
        let turn = app.send(&id, message).await.ok();
        assert_eq!(llm.request_count(), before, "{message}");
        assert_eq!(turn["sessionStatus"], "completed", "{message}: {turn}");
        assert_eq!(turn["executionStatus"], "completed");
        assert!(
            turn["aiMessage"].as_str().unwrap().contains(closing),
            "{turn}"
        );
        let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
        assert_eq!(stored["status"], "completed");
        assert_eq!(stored["endedBy"], "user_request", "{stored}");
        assert!(stored["completedAt"].is_string());
        let reply = last_messages(&app, &id, 1).await[0].clone();
        assert_eq!(reply["metadata"]["repair"]["endedBy"], "user_request");
        // A finished session stays finished.
        let after = app.send(&id, "hello?").await.ok();
        assert_eq!(after["sessionStatus"], "completed");
    }

    // A person: neutral handoff, holding reply, released by an editor.
    for (message, reply, waiting, holding) in [
        (
            "我想和真人聊聊",
            "工作人员",
            "还在吗",
            "工作人员会尽快与你联系",
        ),
        (
            "Can I talk to a real person?",
            "connect you with a person",
            "hello?",
            "will contact you soon",
        ),
    ] {
        let id = session(&app).await;
        let turn = app.send(&id, message).await.ok();
        assert_eq!(turn["sessionStatus"], "handoff", "{message}: {turn}");
        assert_eq!(turn["executionStatus"], "paused");
        assert_eq!(turn["position"]["actionId"], "ask_name");
        let text = turn["aiMessage"].as_str().unwrap();
        assert!(text.contains(reply), "{text}");
        assert!(
            !text.contains("400-161-9995") && !text.contains("988"),
            "{text}"
        );
        let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
        assert_eq!(stored["status"], "handoff");
        assert_eq!(stored["handoff"]["reason"], "user_request", "{stored}");
        assert_eq!(stored["handoff"]["level"], "none");
        assert_eq!(stored["riskLevel"], "none");
        assert_eq!(stored["riskEvents"], serde_json::json!([]));

        let before = llm.request_count();
        let held = app.send(&id, waiting).await.ok();
        assert_eq!(held["sessionStatus"], "handoff");
        assert!(
            held["aiMessage"].as_str().unwrap().contains(holding),
            "{held}"
        );
        assert_eq!(llm.request_count(), before);

        let released = app
            .post(
                &format!("/api/sessions/{id}/release"),
                &serde_json::json!({}),
            )
            .await
            .ok();
        assert_eq!(released["sessionStatus"], "active", "{released}");
        let resumed = app.send(&id, "叫我小明").await.ok();
        assert_eq!(resumed["sessionStatus"], "completed", "{resumed}");
        let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
        assert_eq!(stored["endedBy"], Value::Null, "the script ended it");
    }

    // Negated and benign phrasings are answers like any other.
    for message in ["别跳过，叫我小明", "I don't want to stop, call me Sam"] {
        let id = session(&app).await;
        let turn = app.send(&id, message).await.ok();
        assert_eq!(turn["sessionStatus"], "completed", "{message}: {turn}");
        let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
        assert_eq!(stored["variables"]["visitor_name"], "小明", "{message}");
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hook.received().is_empty(), "no alert for repair intents");
    app.stop().await;
}

#[actix_web::test]
async fn with_notify_on_human_a_request_for_a_person_alerts_the_on_call_webhook() {
    let services = Services::new().await;
    let llm = llm_server().await;
    let hook = WebhookReceiver::start(&[]).await;
    let app = TestApp::start(
        &services
            .env()
            .openai(llm.base_url())
            .set("HEARTRULE__SAFETY__WEBHOOK__URL", hook.url())
            .set("HEARTRULE__SAFETY__WEBHOOK__SECRET", SECRET)
            .set("HEARTRULE__REPAIR_INTENTS__NOTIFY_ON_HUMAN", "true"),
    )
    .await;
    let id = session(&app).await;
    let turn = app.send(&id, "I need a human counselor please").await.ok();
    assert_eq!(turn["sessionStatus"], "handoff", "{turn}");
    let hooks = hook.wait_for(1).await;
    let body: Value = serde_json::from_slice(&hooks[0].body).unwrap();
    assert_eq!(body["type"], "repair.human_request", "{body}");
    assert_eq!(body["sessionId"], id.as_str());
    assert_eq!(body["level"], "none");
    assert_eq!(body["sources"][0], "local");
    assert!(
        !body.to_string().contains("human counselor please"),
        "{body}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_streamed_stop_streams_the_closing_message_under_repair() {
    let services = Services::new().await;
    let llm = llm_server().await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let id = session(&app).await;
    let response = app
        .http
        .post(app.at("/api/chat/stream"))
        .json(&serde_json::json!({"sessionId": id, "message": "Let's end the session"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let chunk = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|event| event["actionId"] == "repair")
        .unwrap_or_else(|| panic!("no repair chunk in {text}"));
    assert!(
        chunk["chunk"]
            .as_str()
            .unwrap()
            .contains("stop here for today"),
        "{chunk}"
    );
    let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
    assert_eq!(stored["status"], "completed");
    app.stop().await;
}
