//! Losing Redis degrades the service; losing PostgreSQL makes it unready.

use crate::support::counselor::counselor_server;
use crate::support::{closed_port, Env, Services, TestApp, TestDb};
use serde_json::Value;

fn component<'a>(ready: &'a Value, name: &str) -> &'a Value {
    ready["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} component in {ready}"))
}

#[actix_web::test]
async fn with_redis_unreachable_every_request_succeeds_and_ready_says_degraded() {
    let services = Services::new().await;
    let llm = counselor_server().await;
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let env = Env::base()
        .database(&services.db)
        .redis(&redis, &services.redis_prefix)
        .openai(llm.base_url());
    let app = TestApp::start(&env).await;

    let script = app.script_id("hello").await;
    app.get(&format!("/api/scripts/{script}")).await.ok();
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap();
    let turn = app.send(session, "小明").await.ok();
    assert_eq!(turn["executionStatus"], "completed");
    let stored = app.get(&format!("/api/sessions/{session}")).await.ok();
    assert_eq!(stored["status"], "completed");
    assert_eq!(
        app.get(&format!("/api/sessions/{session}/messages"))
            .await
            .ok()["data"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "welcome, question, answer, goodbye"
    );
    assert_eq!(
        app.get(&format!("/api/sessions/{session}/variables"))
            .await
            .ok()["visitor_name"],
        "小明"
    );
    assert_eq!(
        app.get("/api/users/e2e-user/sessions")
            .await
            .ok()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let ready = app.get("/ready").await.ok();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(component(&ready, "redis")["status"], "down");
    assert_eq!(component(&ready, "redis")["critical"], false);
    assert_eq!(component(&ready, "postgres")["status"], "up");
    app.stop().await;
}

#[actix_web::test]
async fn with_postgres_gone_ready_is_503() {
    let db = TestDb::new().await;
    let app = TestApp::start(&Env::base().database(&db)).await;
    let ready = app.get("/ready").await.ok();
    assert_eq!(ready["status"], "ok", "{ready}");

    // Drops the database and kills its connections.
    drop(db);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text);
    let body = ready.json();
    assert_eq!(body["status"], "down");
    assert_eq!(component(&body, "postgres")["status"], "down");
    app.stop().await;
}
