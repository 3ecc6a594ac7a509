//! Token quotas through the whole server on PostgreSQL: the first turn's
//! tokens are stored with it, the spent session budget refuses the next
//! message with `429 QUOTA_EXCEEDED`, and the usage report shows it.

use crate::support::{rows, Services, TestApp};

#[actix_web::test]
async fn a_spent_session_budget_refuses_the_next_turn_and_the_usage_shows_the_spend() {
    let services = Services::new().await;
    let app = TestApp::start(
        &services
            .env()
            .set("HEARTRULE__QUOTAS__SESSION_MAX_TOKENS", "1"),
    )
    .await;
    let script = app.script_id("cbt_intake").await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap().to_owned();

    let stored = rows(
        &services.db,
        "SELECT user_id, total_tokens, prompt_tokens + completion_tokens AS sum, llm_calls \
         FROM token_usage",
    )
    .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["user_id"], "e2e-user");
    let total = stored[0]["total_tokens"].as_i64().unwrap();
    assert!(total > 0, "{stored:?}");
    assert_eq!(stored[0]["sum"].as_i64(), Some(total));

    let refused = app.send(&session, "你好").await;
    let body = refused.error(429, "QUOTA_EXCEEDED");
    assert_eq!(
        refused.header("retry-after"),
        None,
        "the session limit never resets"
    );
    assert_eq!(body["error"]["recovery"]["canRetry"], false);
    let details = body["error"]["details"].as_str().unwrap();
    assert!(details.contains("limit session"), "{details}");
    // Nothing of the refused turn was kept, and no failed turn recorded.
    let messages = rows(
        &services.db,
        "SELECT content FROM messages WHERE role = 'user'",
    )
    .await;
    assert!(messages.is_empty(), "{messages:?}");
    assert!(rows(&services.db, "SELECT id FROM failed_turns")
        .await
        .is_empty());
    let lease = rows(&services.db, "SELECT lease_owner FROM sessions").await;
    assert!(lease[0]["lease_owner"].is_null(), "the lease is given back");

    let usage = app.get("/api/users/e2e-user/usage").await.ok();
    assert_eq!(
        usage["days"][0]["totalTokens"].as_i64(),
        Some(total),
        "{usage}"
    );
    assert_eq!(usage["days"][0]["sessions"], 1);
    assert_eq!(usage["quota"]["sessionMaxTokens"], 1);
    assert_eq!(usage["quota"]["userDayTokens"].as_i64(), Some(total));

    app.stop().await;
}
