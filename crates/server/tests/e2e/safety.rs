//! The crisis protocol through the running server: crisis messages in each
//! language (and benign ones using the same words) against the `hello`
//! script, the LLM's `crisis_signal` on an innocuous-looking message, the
//! session held in handoff, the holding reply, the release, and the signed
//! webhook delivered to an in-test receiver and recorded in PostgreSQL.

use crate::support::counselor::{answer, counselor, prompt_of, reply_text};
use crate::support::{eventually, rows, FakeServer, Services, TestApp};
use heartrule_notify::{verify, SIGNATURE_HEADER};
use heartrule_testkit::webhook::WebhookReceiver;
use serde_json::Value;
use std::time::Duration;

const SECRET: &str = "e2e-on-call-secret-0123";
/// Innocuous to the local detector; the fake LLM reads a crisis into it.
const VEILED: &str = "我想把东西都送给朋友，然后去一个很远的地方";

/// The scripted counselor, except that an `ai_ask` reply whose latest user
/// message is [`VEILED`] carries `metadata.crisis_signal: true`.
async fn llm_server() -> FakeServer {
    FakeServer::start(|_, request| {
        let prompt = prompt_of(request);
        let latest = prompt
            .lines()
            .filter_map(|line| line.strip_prefix("来访者: "))
            .next_back();
        if latest == Some(VEILED) && prompt.contains("<task>") {
            let mut reply: Value = serde_json::from_str(&reply_text(&prompt)).unwrap();
            reply["metadata"] = serde_json::json!({ "crisis_signal": true });
            return answer(request, &reply.to_string());
        }
        counselor(request)
    })
    .await
}

async fn start(services: &Services, llm: &FakeServer, hook: &WebhookReceiver) -> TestApp {
    TestApp::start(
        &services
            .env()
            .openai(llm.base_url())
            .set("HEARTRULE__SAFETY__WEBHOOK__URL", hook.url())
            .set("HEARTRULE__SAFETY__WEBHOOK__SECRET", SECRET)
            .set("HEARTRULE__SAFETY__WEBHOOK__BACKOFF", "10ms"),
    )
    .await
}

/// A new `hello` session waiting at its question.
async fn session(app: &TestApp) -> String {
    let script = app.script_id("hello").await;
    let created = app.create_session(&script).await;
    assert_eq!(created["position"]["actionId"], "ask_name", "{created}");
    created["sessionId"].as_str().unwrap().to_owned()
}

/// Checks every hook's signature and returns their JSON bodies.
fn signed_bodies(hooks: &[heartrule_testkit::webhook::ReceivedHook]) -> Vec<Value> {
    hooks
        .iter()
        .map(|hook| {
            let signature = &hook.headers[SIGNATURE_HEADER];
            assert!(
                verify(SECRET.as_bytes(), &hook.body, signature),
                "signature does not verify"
            );
            assert!(!verify(b"another-secret-entirely", &hook.body, signature));
            serde_json::from_slice(&hook.body).unwrap()
        })
        .collect()
}

#[actix_web::test]
async fn crisis_messages_in_each_language_follow_the_protocol_and_alert_the_on_call_webhook() {
    let services = Services::new().await;
    let llm = llm_server().await;
    // The first delivery fails once: the retry is recorded too.
    let hook = WebhookReceiver::start(&[503]).await;
    let app = start(&services, &llm, &hook).await;

    let crises = [
        ("我不想活了", "400-161-9995"),
        ("真的活不下去了，我想结束自己的生命", "400-161-9995"),
        ("我今晚就想自杀", "400-161-9995"),
        ("I want to kill myself", "988"),
        ("Honestly I don't want to live anymore", "988"),
        ("I've been thinking about ending my life tonight", "988"),
    ];
    let mut sessions = Vec::new();
    for (message, hotline) in crises {
        let id = session(&app).await;
        let before = llm.request_count();
        let turn = app.send(&id, message).await.ok();
        // The local detector alone decided: the LLM was not asked.
        assert_eq!(llm.request_count(), before, "{message}");
        assert_eq!(turn["sessionStatus"], "handoff", "{message}: {turn}");
        assert_eq!(turn["executionStatus"], "paused", "{message}");
        let reply = turn["aiMessage"].as_str().unwrap();
        assert!(reply.contains(hotline), "{message}: {reply}");
        assert_eq!(
            turn["position"]["actionId"], "ask_name",
            "the script did not move"
        );

        let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
        assert_eq!(stored["status"], "handoff");
        assert!(
            ["high", "imminent"].contains(&stored["riskLevel"].as_str().unwrap()),
            "{stored}"
        );
        let event = &stored["riskEvents"][0];
        assert_eq!(event["source"], "local");
        assert_eq!(event["evidence"], message);
        assert_eq!(event["protocol"], true);
        assert!(stored["handoff"]["since"].is_string());

        // The user's words and the crisis reply are the turn's messages.
        let messages = app.get(&format!("/api/sessions/{id}/messages")).await.ok();
        let last: Vec<&Value> = messages["data"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .take(2)
            .collect();
        assert_eq!(last[1]["content"], message);
        assert!(last[0]["content"].as_str().unwrap().contains(hotline));
        sessions.push(id);
    }

    // One alert per protocol turn (plus the one retried after the 503),
    // each signed, carrying no conversation text.
    let hooks = hook.wait_for(crises.len() + 1).await;
    assert_eq!(hooks.len(), crises.len() + 1);
    let bodies = signed_bodies(&hooks);
    for id in &sessions {
        assert!(
            bodies.iter().any(|b| b["sessionId"] == id.as_str()),
            "no alert for {id}"
        );
    }
    for body in &bodies {
        assert_eq!(body["type"], "safety.crisis");
        assert_eq!(body["handoff"], true);
        assert_eq!(body["sources"][0], "local");
        let text = body.to_string();
        assert!(
            !text.contains("活不下去") && !text.contains("kill myself"),
            "{text}"
        );
    }
    // Every attempt is recorded, the failed one included.
    let db = &services.db;
    eventually(Duration::from_secs(10), "deliveries recorded", || async {
        rows(db, "SELECT * FROM safety_deliveries").await.len() == crises.len() + 1
    })
    .await;
    let outcomes = rows(
        db,
        "SELECT outcome, count(*) AS n FROM safety_deliveries GROUP BY outcome ORDER BY outcome",
    )
    .await;
    assert_eq!(outcomes[0]["outcome"], "delivered");
    assert_eq!(outcomes[0]["n"], crises.len());
    assert_eq!(outcomes[1]["outcome"], "failed");
    assert_eq!(outcomes[1]["n"], 1);
    app.stop().await;
}

#[actix_web::test]
async fn benign_uses_of_crisis_words_pass_through_to_the_script() {
    let services = Services::new().await;
    let llm = llm_server().await;
    let hook = WebhookReceiver::start(&[]).await;
    let app = start(&services, &llm, &hook).await;
    for message in [
        "我昨天看了电影《想死的心》，叫我小明",
        "I'm just killing time before class, call me Sam",
        "I'm dying to see the new film, I'm Sam",
    ] {
        let id = session(&app).await;
        let turn = app.send(&id, message).await.ok();
        assert_eq!(turn["sessionStatus"], "completed", "{message}: {turn}");
        assert!(
            turn["aiMessage"]
                .as_str()
                .unwrap()
                .starts_with("Nice to meet you"),
            "{turn}"
        );
        let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
        assert_eq!(stored["riskLevel"], "none", "{message}");
        assert!(stored["handoff"].is_null());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hook.received().is_empty());
    app.stop().await;
}

#[actix_web::test]
async fn the_llm_crisis_signal_alone_starts_the_protocol_and_handoff_holds_until_released() {
    let services = Services::new().await;
    let llm = llm_server().await;
    let hook = WebhookReceiver::start(&[]).await;
    let app = start(&services, &llm, &hook).await;
    let id = session(&app).await;

    let turn = app.send(&id, VEILED).await.ok();
    assert_eq!(turn["sessionStatus"], "handoff", "{turn}");
    assert!(turn["aiMessage"].as_str().unwrap().contains("400-161-9995"));
    // The script's own outcome was dropped: it still waits at its question.
    assert_eq!(turn["position"]["actionId"], "ask_name");
    let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
    assert_eq!(stored["riskEvents"][0]["source"], "llm");
    assert_eq!(
        stored["riskEvents"][0]["patternIds"][0],
        "llm.crisis_signal"
    );
    assert_eq!(stored["turnCount"], 2, "the creation and the protocol turn");
    let bodies = signed_bodies(&hook.wait_for(1).await);
    assert_eq!(bodies[0]["sources"][0], "llm");
    assert_eq!(bodies[0]["sessionId"], id.as_str());

    // While held, messages get the holding reply and the script waits.
    let before = llm.request_count();
    let held = app.send(&id, "好的，我等着").await.ok();
    assert_eq!(held["sessionStatus"], "handoff");
    assert!(held["aiMessage"].as_str().unwrap().contains("400-161-9995"));
    assert_eq!(llm.request_count(), before);

    // An editor or admin releases it (auth is off: the local operator).
    let released = app
        .post(
            &format!("/api/sessions/{id}/release"),
            &serde_json::json!({}),
        )
        .await
        .ok();
    assert_eq!(released["sessionStatus"], "active", "{released}");
    assert_eq!(released["executionStatus"], "waiting_input");
    app.post(
        &format!("/api/sessions/{id}/release"),
        &serde_json::json!({}),
    )
    .await
    .error(409, "CONFLICT");

    // The script resumes where it stood.
    let resumed = app.send(&id, "叫我小明").await.ok();
    assert_eq!(resumed["sessionStatus"], "completed", "{resumed}");
    let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
    assert_eq!(stored["riskLevel"], "high", "the record stays");
    app.stop().await;
}

#[actix_web::test]
async fn a_streamed_crisis_turn_streams_the_crisis_reply_and_ends_in_handoff() {
    let services = Services::new().await;
    let llm = llm_server().await;
    let hook = WebhookReceiver::start(&[]).await;
    let app = start(&services, &llm, &hook).await;
    let id = session(&app).await;
    let response = app
        .http
        .post(app.at("/api/chat/stream"))
        .json(&serde_json::json!({"sessionId": id, "message": "I want to end it all tonight"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let chunk = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|event| event["actionId"] == "safety")
        .unwrap_or_else(|| panic!("no safety chunk in {text}"));
    assert!(chunk["chunk"].as_str().unwrap().contains("988"), "{chunk}");
    let stored = app.get(&format!("/api/sessions/{id}")).await.ok();
    assert_eq!(stored["status"], "handoff");
    assert_eq!(stored["riskLevel"], "imminent");
    assert_eq!(hook.wait_for(1).await.len(), 1);
    app.stop().await;
}
