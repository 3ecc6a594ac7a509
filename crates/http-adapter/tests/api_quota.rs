//! Token quotas over HTTP: a spent daily quota answers `429
//! QUOTA_EXCEEDED` with `Retry-After` and takes nothing of the turn, and
//! `GET /api/users/{userId}/usage` reports the spend to administrators.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test::TestRequest;
use heartrule_domain::{Actor, QuotaAction, QuotaConfig, SessionManagerConfig};
use heartrule_http_adapter::auth::{AuthFailure, Authenticator};
use heartrule_http_adapter::HttpConfig;
use serde_json::json;
use std::sync::Arc;
use support::*;

/// The quota of `user-1`: the first turn of a session spends it.
const DAILY_TOKENS: u64 = 20;

fn harness() -> Harness {
    Harness::with_manager(
        HttpConfig::default(),
        SessionManagerConfig {
            quotas: QuotaConfig {
                user_daily_tokens: Some(DAILY_TOKENS),
                ..QuotaConfig::default()
            },
            ..SessionManagerConfig::default()
        },
    )
}

#[actix_web::test]
async fn a_spent_daily_quota_answers_429_with_retry_after_and_keeps_nothing() {
    let h = harness();
    let app = h.service().await;
    let script = create_script(&app, "quota", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);
    let created = create_session(&app, &script).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let session = created.body["sessionId"].as_str().unwrap().to_owned();

    let refused = post(
        &app,
        &format!("/api/sessions/{session}/messages"),
        json!({"content": "小王"}),
    )
    .await;
    let error = refused.error(429, "QUOTA_EXCEEDED");
    let details = error["details"].as_str().unwrap();
    assert!(details.contains("user_daily"), "{details}");
    assert!(
        details.contains(&format!("of {DAILY_TOKENS} tokens")),
        "{details}"
    );
    assert!(details.contains("resetAt"), "{details}");
    assert_eq!(error["recovery"]["canRetry"], true);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(
        h.llm.calls().len(),
        2,
        "the refused turn asked the LLM nothing"
    );

    // Nothing of the refused turn was kept, and the lease is free again.
    let messages = get(&app, &format!("/api/sessions/{session}/messages")).await;
    assert_eq!(messages.status, 200, "{}", messages.text);
    let text = messages.text;
    assert!(!text.contains("小王"), "{text}");
    let again = post(
        &app,
        &format!("/api/sessions/{session}/messages"),
        json!({"content": "小王"}),
    )
    .await;
    again.error(429, "QUOTA_EXCEEDED");

    // A new session of the same user is refused before its first turn too.
    create_session(&app, &script)
        .await
        .error(429, "QUOTA_EXCEEDED");
}

#[actix_web::test]
async fn the_usage_report_shows_the_days_and_the_quota_to_an_admin() {
    let h = harness();
    let app = h.service().await;
    let script = create_script(&app, "quota", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);
    assert_eq!(create_session(&app, &script).await.status, 200);

    let today = chrono::Utc::now().date_naive();
    let report = get(&app, "/api/users/user-1/usage").await;
    assert_eq!(report.status, 200, "{}", report.text);
    let body = &report.body;
    assert_eq!(body["userId"], "user-1");
    assert_eq!(body["to"], today.to_string());
    let days = body["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{}", report.text);
    assert_eq!(days[0]["day"], today.to_string());
    assert_eq!(days[0]["llmCalls"], 2);
    assert_eq!(days[0]["sessions"], 1);
    let total = days[0]["totalTokens"].as_u64().unwrap();
    assert!(total >= DAILY_TOKENS, "{}", report.text);
    assert_eq!(
        total,
        days[0]["promptTokens"].as_u64().unwrap() + days[0]["completionTokens"].as_u64().unwrap()
    );
    let quota = &body["quota"];
    assert_eq!(quota["userDailyTokens"], DAILY_TOKENS);
    assert_eq!(quota["userDayTokens"], total);
    assert_eq!(quota["userDayRemaining"], 0);
    assert!(quota["sessionMaxTokens"].is_null());
    assert!(quota["globalHourlyTokens"].is_null());
    assert!(quota["globalHourRemaining"].is_null());
    assert_eq!(quota["globalHourTokens"], total);

    // Another user, or a range without usage: no days.
    let other = get(&app, "/api/users/someone-else/usage").await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert_eq!(other.body["days"], json!([]));
    assert_eq!(other.body["quota"]["userDayTokens"], 0);
    let old = get(
        &app,
        "/api/users/user-1/usage?from=2020-01-01&to=2020-01-31",
    )
    .await;
    assert_eq!(old.status, 200, "{}", old.text);
    assert_eq!(old.body["days"], json!([]));
    assert_eq!(old.body["from"], "2020-01-01");
    // A reversed range is empty, not an error.
    let reversed = get(
        &app,
        "/api/users/user-1/usage?from=2030-01-01&to=2020-01-01",
    )
    .await;
    assert_eq!(reversed.status, 200, "{}", reversed.text);
    assert_eq!(reversed.body["days"], json!([]));
}

/// Every request acts as the client `user-1`.
struct ClientUser;

impl Authenticator for ClientUser {
    fn authenticate(&self, _authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        Ok(Actor::client("user-1"))
    }
}

#[actix_web::test]
async fn the_usage_report_is_forbidden_to_the_user_themself() {
    let mut h = harness();
    h.state = h.state.clone().with_authenticator(Arc::new(ClientUser));
    let app = h.service().await;
    call(&app, TestRequest::get().uri("/api/users/user-1/usage"))
        .await
        .error(403, "FORBIDDEN");
}

#[actix_web::test]
async fn with_when_exceeded_scripted_a_spent_quota_goes_on_without_the_llm() {
    let h = Harness::with_manager(
        HttpConfig::default(),
        SessionManagerConfig {
            quotas: QuotaConfig {
                user_daily_tokens: Some(DAILY_TOKENS),
                when_exceeded: QuotaAction::Scripted,
                ..QuotaConfig::default()
            },
            ..SessionManagerConfig::default()
        },
    );
    let app = h.service().await;
    let script = create_script(&app, "quota-scripted", DEBUG_SCRIPT).await;
    queue_debug_first_turn(&h.llm);
    let created = create_session(&app, &script).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let session = created.body["sessionId"].as_str().unwrap().to_owned();

    // The quota is spent: the answer is taken as it is, without the LLM.
    let answered = post(
        &app,
        &format!("/api/sessions/{session}/messages"),
        json!({"content": "小王"}),
    )
    .await;
    assert_eq!(answered.status, 200, "{}", answered.text);
    let variables = get(&app, &format!("/api/sessions/{session}/variables")).await;
    assert!(variables.text.contains("小王"), "{}", variables.text);

    // A new session starts on the scripted texts, flagged degraded.
    let second = create_session(&app, &script).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert!(
        second.text.contains("您好，这里是练习用的咨询会话"),
        "{}",
        second.text
    );
    assert!(
        second.text.contains("请问该怎么称呼您？"),
        "{}",
        second.text
    );
    assert_eq!(h.llm.calls().len(), 2, "only the first turn asked the LLM");
    let second_id = second.body["sessionId"].as_str().unwrap();
    let messages = get(&app, &format!("/api/sessions/{second_id}/messages")).await;
    assert!(
        messages.text.contains("\"degraded\":true"),
        "{}",
        messages.text
    );
}
