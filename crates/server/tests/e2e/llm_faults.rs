//! The LLM misbehaving behind the real `openai` provider: retries, the
//! circuit breaker, the fallback provider, and what a failed turn leaves.

use crate::support::counselor::{counselor, prompt_of};
use crate::support::{FakeServer, Reply, Services, TestApp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The counselor while `healthy`, else 500s.
async fn switchable() -> (FakeServer, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    let server = FakeServer::start(move |_, request| {
        if flag.load(Ordering::SeqCst) {
            counselor(request)
        } else {
            Reply::text(500, "{\"error\":{\"message\":\"upstream exploded\"}}")
        }
    })
    .await;
    (server, healthy)
}

#[actix_web::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let services = Services::new().await;
    let llm = FakeServer::start(|index, request| match index {
        0 => Reply::text(429, "slow down").header("retry-after", "1"),
        1 => Reply::text(500, "oops"),
        _ => counselor(request),
    })
    .await;
    let env = services
        .env()
        .openai(llm.base_url())
        .set("HEARTRULE__LLM__RESILIENCE__MAX_BACKOFF", "300ms");
    let app = TestApp::start(&env).await;
    let script = app.script_id("hello").await;
    let started = Instant::now();
    let created = app.create_session(&script).await;
    // Retry-After: 1 (capped at max_backoff 300ms) instead of the 5ms backoff.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(created["executionStatus"], "waiting_input");
    let requests = llm.requests();
    // rewrite ×3 (429, 500, ok), then the question.
    assert_eq!(requests.len(), 4);
    assert_eq!(prompt_of(&requests[0]), prompt_of(&requests[2]));
    app.stop().await;
}

#[actix_web::test]
async fn a_call_hanging_past_the_timeout_is_abandoned_and_retried() {
    let services = Services::new().await;
    let llm = FakeServer::start(|index, request| match index {
        0 => Reply::hang(),
        _ => counselor(request),
    })
    .await;
    let env = services
        .env()
        .openai(llm.base_url())
        .set("HEARTRULE__LLM__OPENAI__TIMEOUT", "300ms");
    let app = TestApp::start(&env).await;
    let script = app.script_id("hello").await;
    let started = Instant::now();
    let created = app.create_session(&script).await;
    assert_eq!(created["executionStatus"], "waiting_input");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let requests = llm.requests();
    assert_eq!(requests.len(), 3, "hang, retry, question");
    assert_eq!(prompt_of(&requests[0]), prompt_of(&requests[1]));
    app.stop().await;
}

#[actix_web::test]
async fn a_failed_turn_stores_only_the_failure_and_a_retry_succeeds() {
    let services = Services::new().await;
    let (llm, healthy) = switchable().await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let script = app.script_id("hello").await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap();
    let db = &services.db;
    let in_session = format!("session_id = '{session}'");
    let messages_before = db.count("messages", &in_session).await;
    let session_row = format!(
        "SELECT turn_count, last_message_seq, position FROM sessions WHERE id = '{session}'"
    );
    let session_before = crate::support::rows(db, &session_row).await;
    let variables_before = db.count("variables", &in_session).await;

    healthy.store(false, Ordering::SeqCst);
    let before = llm.request_count();
    let failed = app.send(session, "叫我小明").await;
    let body = failed.error(503, "LLM_SERVICE_ERROR");
    assert_eq!(body["error"]["recovery"]["canRetry"], true, "{body}");
    assert_eq!(llm.request_count() - before, 3, "one call, two retries");

    assert_eq!(db.count("messages", &in_session).await, messages_before);
    assert_eq!(db.count("variables", &in_session).await, variables_before);
    assert_eq!(crate::support::rows(db, &session_row).await, session_before);
    let failures = crate::support::rows(
        db,
        &format!("SELECT user_input, error_code FROM failed_turns WHERE {in_session}"),
    )
    .await;
    assert_eq!(
        failures,
        vec![serde_json::json!({"user_input": "叫我小明", "error_code": "LLM_SERVICE_ERROR"})]
    );
    let stored = app.get(&format!("/api/sessions/{session}")).await.ok();
    assert_eq!(stored["lastError"], "LLM_SERVICE_ERROR");
    assert_eq!(stored["executionStatus"], "waiting_input");

    healthy.store(true, Ordering::SeqCst);
    let retried = app.send(session, "叫我小明").await.ok();
    assert_eq!(retried["executionStatus"], "completed", "{retried}");
    assert_eq!(retried["variables"]["visitor_name"], "小明");
    assert_eq!(
        db.count("messages", &format!("{in_session} AND role = 'user'"))
            .await,
        1
    );
    let stored = app.get(&format!("/api/sessions/{session}")).await.ok();
    assert!(stored["lastError"].is_null(), "{stored}");
    app.stop().await;
}

#[actix_web::test]
async fn the_breaker_opens_fails_fast_and_closes_after_open_for() {
    let services = Services::new().await;
    let (llm, healthy) = switchable().await;
    let env = services
        .env()
        .openai(llm.base_url())
        .set("HEARTRULE__LLM__RESILIENCE__MAX_RETRIES", "0")
        .set(
            "HEARTRULE__LLM__RESILIENCE__BREAKER__FAILURE_THRESHOLD",
            "2",
        )
        .set("HEARTRULE__LLM__RESILIENCE__BREAKER__OPEN_FOR", "500ms");
    let app = TestApp::start(&env).await;
    let script = app.script_id("hello").await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap();

    healthy.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        app.send(session, "小明")
            .await
            .error(503, "LLM_SERVICE_ERROR");
    }
    let reached = llm.request_count();
    let started = Instant::now();
    let fast = app.send(session, "小明").await;
    let body = fast.error(503, "LLM_SERVICE_ERROR");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        llm.request_count(),
        reached,
        "an open breaker sends nothing"
    );
    assert_eq!(body["error"]["recovery"]["canRetry"], true, "{body}");
    assert!(
        body["error"]["recovery"]["suggestion"].is_string(),
        "{body}"
    );
    let ready = app.get("/ready").await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text);

    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let turn = app.send(session, "小明").await.ok();
    assert_eq!(turn["executionStatus"], "completed");
    let ready = app.get("/ready").await.ok();
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(services.db.count("failed_turns", "true").await, 3);
    app.stop().await;
}

#[actix_web::test]
async fn the_fallback_provider_answers_when_the_primary_is_down() {
    let services = Services::new().await;
    let llm = FakeServer::always(|| Reply::text(503, "down")).await;
    let env = services
        .env()
        .openai(llm.base_url())
        .set("HEARTRULE__LLM__RESILIENCE__MAX_RETRIES", "0")
        .set("HEARTRULE__LLM__FALLBACK__PROVIDER", "mock");
    let app = TestApp::start(&env).await;
    let script = app.script_id("hello").await;
    let created = app.create_session(&script).await;
    assert_eq!(created["executionStatus"], "waiting_input", "{created}");
    assert!(llm.request_count() >= 1, "the primary was tried first");
    let calls = created["debugInfo"].as_array().expect("debugInfo");
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|c| c["provider"] == "mock"), "{calls:?}");
    let session = created["sessionId"].as_str().unwrap();
    let turn = app.send(session, "小明").await.ok();
    assert_eq!(turn["executionStatus"], "completed");
    app.stop().await;
}
