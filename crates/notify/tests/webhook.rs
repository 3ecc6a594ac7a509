//! The webhook notifier against an in-test receiver: signed bodies, retries
//! with backoff, every attempt recorded in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_domain::{
    DeliveryOutcome, RiskLevel, SafetyAlert, SafetyDeliveryLog, SafetyNotifier, ScriptRepository,
    SessionId, SessionRepository, SignalSource, TurnId,
};
use heartrule_notify::{verify, WebhookConfig, WebhookNotifier, ALERT_ID_HEADER, SIGNATURE_HEADER};
use heartrule_persistence::MemoryStore;
use heartrule_testkit::fixtures::{first_turn, new_session, now, session_script};
use heartrule_testkit::webhook::WebhookReceiver;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "on-call-secret";

async fn store_with_session() -> (MemoryStore, SessionId) {
    let store = MemoryStore::new();
    let script = session_script("safety-webhook");
    store.insert(&script).await.unwrap();
    let record = first_turn(new_session(script.id, "user-1"));
    store.create(&record).await.unwrap();
    (store, record.session.id)
}

fn alert(session_id: SessionId) -> SafetyAlert {
    SafetyAlert {
        kind: heartrule_domain::safety::AlertKind::Crisis,
        alert_id: TurnId::new_random(),
        session_id,
        user_id: "user-1".into(),
        script_id: heartrule_domain::ScriptId::new_random(),
        level: RiskLevel::High,
        sources: vec![SignalSource::Local],
        pattern_ids: vec!["en.want_to_die".into()],
        handoff: true,
        occurred_at: now(),
    }
}

fn notifier(url: &str, retries: u32, store: &MemoryStore) -> WebhookNotifier {
    WebhookNotifier::new(
        WebhookConfig {
            url: url.to_owned(),
            secret: SECRET.to_owned().into(),
            retries,
            timeout: Duration::from_secs(2),
            backoff: Duration::from_millis(10),
        },
        Arc::new(store.clone()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_until_it_accepts_and_every_attempt_is_recorded() {
    let (store, session_id) = store_with_session().await;
    let receiver = WebhookReceiver::start(&[503, 500]).await;
    let alert = alert(session_id);
    let outcome = notifier(receiver.url(), 3, &store).deliver(&alert).await;
    assert_eq!(outcome, DeliveryOutcome::Delivered);

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for hook in &received {
        let sig = &hook.headers[SIGNATURE_HEADER];
        assert!(verify(SECRET.as_bytes(), &hook.body, sig), "bad signature");
        assert!(!verify(b"wrong", &hook.body, sig));
        assert_eq!(hook.headers[ALERT_ID_HEADER], alert.alert_id.to_string());
        assert_eq!(hook.headers["content-type"], "application/json");
    }
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["type"], "safety.crisis");
    assert_eq!(body["sessionId"], session_id.to_string());
    assert_eq!(body["level"], "high");
    assert_eq!(body["patternIds"][0], "en.want_to_die");

    let attempts = store.list_deliveries(session_id).await.unwrap();
    let summary: Vec<(u32, DeliveryOutcome, Option<u16>)> = attempts
        .iter()
        .map(|a| (a.attempt, a.outcome, a.http_status))
        .collect();
    assert_eq!(
        summary,
        [
            (1, DeliveryOutcome::Failed, Some(503)),
            (2, DeliveryOutcome::Failed, Some(500)),
            (3, DeliveryOutcome::Delivered, Some(200)),
        ]
    );
    assert!(attempts.iter().all(|a| a.alert_id == alert.alert_id));
}

#[tokio::test]
async fn attempts_end_after_the_retries_and_a_refused_connection_is_recorded() {
    let (store, session_id) = store_with_session().await;
    let receiver = WebhookReceiver::start(&[500, 500, 500]).await;
    let outcome = notifier(receiver.url(), 1, &store)
        .deliver(&alert(session_id))
        .await;
    assert_eq!(outcome, DeliveryOutcome::Failed);
    assert_eq!(receiver.received().len(), 2);

    let url = format!("http://127.0.0.1:{}/hook", heartrule_testkit::closed_port());
    let outcome = notifier(&url, 0, &store).deliver(&alert(session_id)).await;
    assert_eq!(outcome, DeliveryOutcome::Failed);
    let attempts = store.list_deliveries(session_id).await.unwrap();
    assert_eq!(attempts.len(), 3);
    let refused = &attempts[2];
    assert_eq!(refused.http_status, None);
    assert!(refused.error.is_some());
}

#[tokio::test]
async fn notify_returns_at_once_and_delivers_in_the_background() {
    let (store, session_id) = store_with_session().await;
    let receiver = WebhookReceiver::start(&[]).await;
    notifier(receiver.url(), 0, &store).notify(alert(session_id));
    assert_eq!(receiver.wait_for(1).await.len(), 1);
}

#[test]
fn only_http_urls_are_accepted() {
    let store = MemoryStore::new();
    let err = WebhookNotifier::new(
        WebhookConfig {
            url: "ftp://example".into(),
            secret: SECRET.to_owned().into(),
            retries: 0,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(1),
        },
        Arc::new(store),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ftp://example"));
}

#[tokio::test]
async fn a_request_for_a_person_is_sent_with_its_own_type() {
    let (store, session_id) = store_with_session().await;
    let receiver = WebhookReceiver::start(&[]).await;
    let alert = SafetyAlert {
        kind: heartrule_domain::safety::AlertKind::HumanRequest,
        level: RiskLevel::None,
        pattern_ids: vec!["en.human".into()],
        ..alert(session_id)
    };
    let outcome = notifier(receiver.url(), 0, &store).deliver(&alert).await;
    assert_eq!(outcome, DeliveryOutcome::Delivered);
    let body: serde_json::Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(body["type"], "repair.human_request");
    assert_eq!(body["level"], "none");
    assert!(body.get("kind").is_none(), "{body}");
}
