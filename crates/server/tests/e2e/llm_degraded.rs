//! `llm.degraded_mode`: with `scripted`, an LLM whose breaker is open lets
//! the CBT intake run to the end on its scripted texts and `/ready` says
//! degraded; with `off` (the default) the turn fails with 503 as before.

use crate::support::{Env, FakeServer, Reply, Services, TestApp};
use serde_json::Value;

const GREETING: &str =
    "Hello, and thank you for coming today. I'm here to listen and to think things through with you.";

/// An LLM that is down: every call 503. With no retries and a breaker that
/// opens at the first failure, only the first call reaches it.
fn down_llm_env(services: &Services, llm: &FakeServer) -> Env {
    services
        .env()
        .openai(llm.base_url())
        .set("HEARTRULE__LLM__RESILIENCE__MAX_RETRIES", "0")
        .set(
            "HEARTRULE__LLM__RESILIENCE__BREAKER__FAILURE_THRESHOLD",
            "1",
        )
        .set("HEARTRULE__LLM__RESILIENCE__BREAKER__OPEN_FOR", "10m")
}

fn llm_component(ready: &Value) -> &Value {
    ready["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "llm")
        .unwrap_or_else(|| panic!("no llm component in {ready}"))
}

#[actix_web::test]
async fn with_scripted_degraded_mode_the_cbt_intake_completes_on_scripted_texts() {
    let services = Services::new().await;
    let llm = FakeServer::always(|| Reply::text(503, "down")).await;
    let env = down_llm_env(&services, &llm).set("HEARTRULE__LLM__DEGRADED_MODE", "scripted");
    let app = TestApp::start(&env).await;
    let script = app.script_id("cbt_intake").await;

    let created = app.create_session(&script).await;
    assert_eq!(created["aiMessage"], GREETING, "{created}");
    assert_eq!(created["executionStatus"], "waiting_input");
    let session = created["sessionId"].as_str().unwrap().to_owned();

    let mut last = created;
    let mut turns = 0;
    while last["sessionStatus"] != "completed" {
        turns += 1;
        assert!(turns < 40, "the intake did not complete: {last}");
        let answer = match last["position"]["actionId"].as_str() {
            Some("ask_name") => "叫我小明就好",
            Some("ask_episode") => "周一例会上被点名，我想我什么都做不好",
            _ => "好的",
        };
        last = app.send(&session, answer).await.ok();
    }
    assert_eq!(last["executionStatus"], "completed", "{last}");
    assert_eq!(
        llm.request_count(),
        1,
        "the open breaker answers every later call at once"
    );

    let history = app
        .get(&format!("/api/sessions/{session}/messages"))
        .await
        .ok();
    let ai: Vec<&Value> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "ai")
        .collect();
    let texts: Vec<&str> = ai.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts[0], GREETING);
    assert!(
        texts.contains(&"Ask how the client would like to be addressed during our conversations."),
        "{texts:?}"
    );
    assert_eq!(
        texts.last().copied(),
        Some("Thank you, 叫我小明就好. You did real work today. See you next time."),
    );
    assert!(
        ai.iter().all(|m| m["metadata"]["degraded"] == true),
        "{ai:?}"
    );

    let variables = app
        .get(&format!("/api/sessions/{session}/variables?scoped=true"))
        .await
        .ok();
    let name = &variables["session"]["user_name"];
    assert_eq!(name["value"], "叫我小明就好", "{variables}");
    assert_eq!(name["source"], "unextracted", "{variables}");
    assert_eq!(
        variables["session"]["hot_thought"]["value"],
        "周一例会上被点名，我想我什么都做不好"
    );

    let ready = app.get("/ready").await.ok();
    assert_eq!(ready["status"], "degraded", "{ready}");
    let component = llm_component(&ready);
    assert_eq!(component["status"], "degraded", "{ready}");
    assert!(
        component["detail"]
            .as_str()
            .unwrap()
            .contains("degraded mode"),
        "{ready}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn with_degraded_mode_off_an_unavailable_llm_still_answers_503() {
    let services = Services::new().await;
    let llm = FakeServer::always(|| Reply::text(503, "down")).await;
    let app = TestApp::start(&down_llm_env(&services, &llm)).await;
    let script = app.script_id("cbt_intake").await;

    for _ in 0..2 {
        app.post(
            "/api/sessions",
            &serde_json::json!({"userId": "e2e-user", "scriptId": script}),
        )
        .await
        .error(503, "LLM_SERVICE_ERROR");
    }
    assert_eq!(llm.request_count(), 1, "the second found the breaker open");
    let ready = app.get("/ready").await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text);
    assert_eq!(llm_component(&ready.json())["status"], "down");
    app.stop().await;
}
