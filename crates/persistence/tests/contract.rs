//! One contract suite for both storage adapters: every test is a generic
//! async fn over the ports, run on `MemoryStore` and on `PgStore` (a fresh
//! PostgreSQL database per test), once direct and once in transaction
//! pooling mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::Duration;
use heartrule_domain::{
    Actor, AuditAction, AuditEvent, AuditEventId, AuditFilter, AuditLog, AuditTargetType,
    ClaimOutcome, DeliveryAttempt, DeliveryOutcome, ErrorCode, ExecutionStatus, FailedTurn,
    Handoff, HistoryEntry, Message, MessageHistory, MessageRole, RepositoryError, RiskEvent,
    RiskLevel, SafetyDeliveryLog, ScriptFilter, ScriptRepository, ScriptStatus, ScriptType,
    SessionId, SessionRepository, SessionStatus, SignalSource, TurnClaim, TurnId, UserDataStore,
};
use heartrule_persistence::{MemoryStore, PgStore};
use support::fixtures::*;

/// The failed-turn log, which both stores expose outside the ports.
#[async_trait::async_trait]
trait FailedTurnLog {
    async fn failed(&self, session_id: SessionId) -> Vec<FailedTurn>;
}

#[async_trait::async_trait]
impl FailedTurnLog for MemoryStore {
    async fn failed(&self, session_id: SessionId) -> Vec<FailedTurn> {
        self.failed_turns(session_id).await.unwrap()
    }
}

#[async_trait::async_trait]
impl FailedTurnLog for PgStore {
    async fn failed(&self, session_id: SessionId) -> Vec<FailedTurn> {
        self.failed_turns(session_id).await.unwrap()
    }
}

trait Store:
    ScriptRepository
    + SessionRepository
    + MessageHistory
    + FailedTurnLog
    + AuditLog
    + UserDataStore
    + SafetyDeliveryLog
{
}
impl<
        T: ScriptRepository
            + SessionRepository
            + MessageHistory
            + FailedTurnLog
            + AuditLog
            + UserDataStore
            + SafetyDeliveryLog,
    > Store for T
{
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&heartrule_persistence::MemoryStore::new()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::support::TestDb::new().await;
                    let store = db.store().await;
                    super::$name(&store).await;
                }
            )*
        }
        /// As behind PgBouncer's transaction pooling: every operation in
        /// its own explicit transaction.
        mod postgres_transaction_pooling {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::support::TestDb::new().await;
                    let mut config = db.config();
                    config.transaction_pooling = true;
                    let store = db.store_with(config).await;
                    super::$name(&store).await;
                }
            )*
        }
    };
}

contract!(
    scripts_are_stored_and_found_by_id_name_and_technique,
    taken_script_names_and_technique_ids_conflict,
    script_update_replaces_the_metadata,
    script_list_filters_and_pages_newest_first,
    session_is_created_with_its_first_turn,
    session_create_checks_script_and_id,
    sessions_are_listed_per_user_newest_first,
    turn_commit_writes_messages_variables_and_state,
    idempotent_response_is_stored_and_replayed,
    failure_is_recorded_and_state_untouched,
    recent_messages_are_the_last_n_in_order,
    release_frees_the_session_and_writes_nothing,
    commit_rejects_a_record_out_of_sequence,
    missing_sessions_have_no_turn,
    a_held_lease_makes_other_claims_busy_at_once,
    a_lapsed_lease_is_taken_over_and_the_late_commit_is_fenced,
    concurrent_claims_on_one_session_grant_exactly_one,
    audit_events_are_kept_and_listed_newest_first_by_filter_and_page,
    a_users_data_is_exported_whole_then_erased_without_touching_others,
    erasing_a_user_without_data_removes_nothing,
    a_claim_with_an_owner_reaches_only_that_users_session,
    a_session_in_handoff_keeps_its_safety_record,
    safety_deliveries_are_recorded_per_attempt_and_listed_in_order,
    token_usage_is_summed_per_session_user_day_and_hour,
    token_usage_totals_come_with_the_claim_only_when_asked,
    llm_exchanges_are_written_with_their_turn_and_go_with_the_session,
);

async fn create_session<S: Store>(store: &S, user: &str) -> heartrule_domain::Session {
    let script = session_script(&format!("script-{}", SessionId::new_random()));
    store.insert(&script).await.unwrap();
    let record = first_turn(new_session(script.id, user));
    store.create(&record).await.unwrap();
    record.session
}

/// Commits `next_turn` and returns the session after it.
async fn commit_turn<S: Store>(
    store: &S,
    session: &heartrule_domain::Session,
    text: &str,
) -> heartrule_domain::Session {
    let turn = claim(store, session.id).await;
    let record = next_turn(&turn.session, text, &["ok"]);
    store.commit_turn(&turn.lease, &record).await.unwrap();
    SessionRepository::get(store, session.id)
        .await
        .unwrap()
        .unwrap()
}

async fn scripts_are_stored_and_found_by_id_name_and_technique<S: Store>(store: &S) {
    let session = session_script("intake");
    let technique = technique_script("reframing", "cognitive_reframe");
    store.insert(&session).await.unwrap();
    store.insert(&technique).await.unwrap();

    assert_eq!(
        ScriptRepository::get(store, session.id).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store.find_by_name("reframing").await.unwrap(),
        Some(technique.clone())
    );
    assert_eq!(
        store.find_technique("cognitive_reframe").await.unwrap(),
        Some(technique.clone())
    );
    assert_eq!(store.find_technique("intake").await.unwrap(), None);
    assert_eq!(store.find_by_name("nope").await.unwrap(), None);
    assert_eq!(
        ScriptRepository::get(store, heartrule_domain::ScriptId::new_random())
            .await
            .unwrap(),
        None
    );
}

async fn taken_script_names_and_technique_ids_conflict<S: Store>(store: &S) {
    let first = session_script("intake");
    store.insert(&first).await.unwrap();
    let same_name = session_script("intake");
    assert!(matches!(
        store.insert(&same_name).await,
        Err(RepositoryError::Conflict(_))
    ));

    let technique = technique_script("reframing", "cognitive_reframe");
    store.insert(&technique).await.unwrap();
    let same_technique = technique_script("reframing-2", "cognitive_reframe");
    assert!(matches!(
        store.insert(&same_technique).await,
        Err(RepositoryError::Conflict(_))
    ));
    assert!(matches!(
        store.insert(&first).await,
        Err(RepositoryError::Conflict(_))
    ));

    // Nothing of the rejected scripts was stored.
    assert_eq!(store.list(&ScriptFilter::default()).await.unwrap().len(), 2);
    assert_eq!(
        ScriptRepository::get(store, same_name.id).await.unwrap(),
        None
    );
}

async fn script_update_replaces_the_metadata<S: Store>(store: &S) {
    let mut script = session_script("intake");
    store.insert(&script).await.unwrap();
    store.insert(&session_script("other")).await.unwrap();

    // Metadata only: content changes by publishing a version (versions.rs).
    script.description = "intake, revised".into();
    script.status = ScriptStatus::Published;
    script.tags = vec!["revised".into(), "cbt".into()];
    script.updated_at += Duration::seconds(5);
    store.update(&script).await.unwrap();
    assert_eq!(
        ScriptRepository::get(store, script.id).await.unwrap(),
        Some(script.clone())
    );

    let mut renamed = script.clone();
    renamed.name = "other".into();
    assert!(matches!(
        store.update(&renamed).await,
        Err(RepositoryError::Conflict(_))
    ));

    let unknown = session_script("ghost");
    assert!(matches!(
        store.update(&unknown).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(
        ScriptRepository::get(store, script.id).await.unwrap(),
        Some(script)
    );
}

async fn script_list_filters_and_pages_newest_first<S: Store>(store: &S) {
    let base = now() - Duration::hours(1);
    let mut names = Vec::new();
    for i in 0..5 {
        let mut script = session_script_at(&format!("s{i}"), base + Duration::seconds(i));
        if i % 2 == 0 {
            script.status = ScriptStatus::Published;
        }
        store.insert(&script).await.unwrap();
        names.push(script.name);
    }
    let mut technique = technique_script("t", "technique_t");
    technique.created_at = base + Duration::seconds(10);
    store.insert(&technique).await.unwrap();

    let all = store.list(&ScriptFilter::default()).await.unwrap();
    let listed: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(listed, ["t", "s4", "s3", "s2", "s1", "s0"]);

    let sessions = ScriptFilter {
        script_type: Some(ScriptType::Session),
        ..ScriptFilter::default()
    };
    assert_eq!(store.list(&sessions).await.unwrap().len(), 5);

    let published_sessions = ScriptFilter {
        status: Some(ScriptStatus::Published),
        ..sessions.clone()
    };
    let listed: Vec<String> = store
        .list(&published_sessions)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, ["s4", "s2", "s0"]);

    let page = ScriptFilter {
        limit: Some(2),
        offset: Some(1),
        ..sessions
    };
    let listed: Vec<String> = store
        .list(&page)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, ["s3", "s2"]);

    let beyond = ScriptFilter {
        offset: Some(50),
        ..ScriptFilter::default()
    };
    assert!(store.list(&beyond).await.unwrap().is_empty());
    let archived = ScriptFilter {
        status: Some(ScriptStatus::Archived),
        ..ScriptFilter::default()
    };
    assert!(store.list(&archived).await.unwrap().is_empty());
}

async fn session_is_created_with_its_first_turn<S: Store>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let record = first_turn(new_session(script.id, "user-1"));
    store.create(&record).await.unwrap();

    let stored = SessionRepository::get(store, record.session.id)
        .await
        .unwrap();
    assert_eq!(stored, Some(record.session.clone()));
    let messages = store.list_messages(record.session.id, 0, 10).await.unwrap();
    assert_eq!(messages, record.messages);
    assert!(store
        .list_variable_snapshots(record.session.id)
        .await
        .unwrap()
        .is_empty());
}

async fn session_create_checks_script_and_id<S: Store>(store: &S) {
    let orphan = first_turn(new_session(
        heartrule_domain::ScriptId::new_random(),
        "user-1",
    ));
    assert!(matches!(
        store.create(&orphan).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(
        SessionRepository::get(store, orphan.session.id)
            .await
            .unwrap(),
        None
    );

    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let record = first_turn(new_session(script.id, "user-1"));
    store.create(&record).await.unwrap();
    let mut again = first_turn(record.session.clone());
    again.messages[0].id = heartrule_domain::MessageId::new_random();
    assert!(matches!(
        store.create(&again).await,
        Err(RepositoryError::Conflict(_))
    ));
    assert_eq!(
        store
            .list_messages(record.session.id, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn sessions_are_listed_per_user_newest_first<S: Store>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let base = now() - Duration::hours(1);
    let mut ids = Vec::new();
    for i in 0..4 {
        let session = new_session_at(script.id, "alice", base + Duration::seconds(i));
        ids.push(session.id);
        store.create(&silent_first_turn(session)).await.unwrap();
    }
    store
        .create(&silent_first_turn(new_session(script.id, "bob")))
        .await
        .unwrap();

    let listed: Vec<SessionId> = store
        .list_for_user("alice", 3)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, [ids[3], ids[2], ids[1]]);
    assert_eq!(store.list_for_user("bob", 10).await.unwrap().len(), 1);
    assert!(store.list_for_user("carol", 10).await.unwrap().is_empty());
}

async fn turn_commit_writes_messages_variables_and_state<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let turn = claim(store, session.id).await;
    assert_eq!(turn.session, session);
    assert_eq!(turn.lease.turn_count, session.turn_count);
    assert_eq!(turn.lease.last_message_seq, session.last_message_seq);
    assert!(turn.lease.expires_at > now());

    let mut record = next_turn(
        &turn.session,
        "I feel tense",
        &["I hear you.", "Tell me more?"],
    );
    record.session.state.status = ExecutionStatus::Completed;
    record.session.status = SessionStatus::Completed;
    record.session.completed_at = Some(record.session.updated_at);
    record.session.script_hash = "hash-v2".into();
    store.commit_turn(&turn.lease, &record).await.unwrap();

    let stored = SessionRepository::get(store, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, record.session);
    assert_eq!(stored.turn_count, 2);
    assert_eq!(stored.last_message_seq, 4);
    assert_eq!(stored.execution_status(), ExecutionStatus::Completed);
    assert_eq!(counter(&stored), 1);

    let messages = store.list_messages(session.id, 0, 100).await.unwrap();
    let roles: Vec<MessageRole> = messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            MessageRole::Assistant,
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Assistant
        ]
    );
    assert_eq!(&messages[1..], record.messages.as_slice());

    let snapshots = store.list_variable_snapshots(session.id).await.unwrap();
    assert_eq!(snapshots, record.variables);

    // The commit released the lease: the next turn claims at once, appends,
    // and snapshots stay in write order.
    let after = commit_turn(store, &stored, "second").await;
    assert_eq!(after.turn_count, 3);
    let snapshots = store.list_variable_snapshots(session.id).await.unwrap();
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[1].value["said"], "second");
    assert_eq!(
        store.list_messages(session.id, 0, 100).await.unwrap().len(),
        6
    );

    // A committed lease cannot commit again.
    let again = next_turn(&turn.session, "again", &["no"]);
    assert!(matches!(
        store.commit_turn(&turn.lease, &again).await,
        Err(RepositoryError::LeaseLost(_))
    ));
}

async fn idempotent_response_is_stored_and_replayed<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let mut with_key = turn_claim(session.id, 20);
    with_key.idempotency_key = Some("key-1".into());
    let turn = claim_with(store, &with_key).await;
    let record = with_idempotency(next_turn(&turn.session, "hello", &["hi"]), "key-1");
    store.commit_turn(&turn.lease, &record).await.unwrap();

    // The key again: the stored response, and no lease is taken.
    let mut retry = turn_claim(session.id, 20);
    retry.idempotency_key = Some("key-1".into());
    assert_eq!(
        store.claim_turn(&retry).await.unwrap(),
        ClaimOutcome::Replay(record.idempotency.clone().unwrap())
    );
    // Even while another turn holds the lease, a committed key replays.
    let running = claim(store, session.id).await;
    assert_eq!(
        store.claim_turn(&retry).await.unwrap(),
        ClaimOutcome::Replay(record.idempotency.clone().unwrap())
    );
    // A key not yet committed is busy like any other claim.
    let mut other_key = turn_claim(session.id, 20);
    other_key.idempotency_key = Some("key-2".into());
    assert!(matches!(
        store.claim_turn(&other_key).await.unwrap(),
        ClaimOutcome::Busy { .. }
    ));

    // The same key again in a commit is a conflict, and nothing of it lands.
    let reused = with_idempotency(next_turn(&running.session, "hello", &["hi"]), "key-1");
    assert!(matches!(
        store.commit_turn(&running.lease, &reused).await,
        Err(RepositoryError::Conflict(_))
    ));
    store.release_turn(&running.lease, None).await.unwrap();
    let stored = SessionRepository::get(store, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, record.session);
    assert_eq!(
        store.list_messages(session.id, 0, 100).await.unwrap().len(),
        3
    );

    // Keys are per session.
    let other = create_session(store, "user-2").await;
    let mut on_other = turn_claim(other.id, 20);
    on_other.idempotency_key = Some("key-1".into());
    let turn = claim_with(store, &on_other).await;
    let record = with_idempotency(next_turn(&turn.session, "hello", &["hi"]), "key-1");
    store.commit_turn(&turn.lease, &record).await.unwrap();
}

async fn failure_is_recorded_and_state_untouched<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let turn = claim(store, session.id).await;
    let failed = failure(&session, "my words must not be lost");
    store
        .release_turn(&turn.lease, Some(&failed))
        .await
        .unwrap();

    let stored = SessionRepository::get(store, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.last_error.as_deref(),
        Some(ErrorCode::LlmServiceError.as_str())
    );
    assert_eq!(stored.updated_at, failed.failed_at);
    assert_eq!(stored.state, session.state);
    assert_eq!(stored.turn_count, session.turn_count);
    assert_eq!(stored.last_message_seq, session.last_message_seq);
    assert_eq!(store.failed(session.id).await, vec![failed.clone()]);
    assert_eq!(
        store.list_messages(session.id, 0, 100).await.unwrap().len(),
        1
    );

    // The same turn id twice is a conflict; an unknown session is not found.
    let turn = claim(store, session.id).await;
    assert!(matches!(
        store.release_turn(&turn.lease, Some(&failed)).await,
        Err(RepositoryError::Conflict(_))
    ));
    store.release_turn(&turn.lease, None).await.unwrap();
    let mut ghost_lease = turn.lease.clone();
    ghost_lease.session_id = SessionId::new_random();
    let mut ghost = failed.clone();
    ghost.turn_id = TurnId::new_random();
    ghost.session_id = ghost_lease.session_id;
    assert!(matches!(
        store.release_turn(&ghost_lease, Some(&ghost)).await,
        Err(RepositoryError::NotFound(_))
    ));

    // The next committed turn clears the marker.
    let after = commit_turn(store, &stored, "retry").await;
    assert_eq!(after.last_error, None);
    assert_eq!(store.failed(session.id).await.len(), 1);
}

async fn recent_messages_are_the_last_n_in_order<S: Store>(store: &S) {
    let mut session = create_session(store, "user-1").await;
    for i in 0..3 {
        session = commit_turn(store, &session, &format!("turn {i}")).await;
    }
    assert_eq!(session.last_message_seq, 7);

    let stored = store.list_messages(session.id, 0, 100).await.unwrap();
    assert_eq!(stored.len(), 7);
    for window in [3, 100, 0] {
        let turn = claim_with(store, &turn_claim(session.id, window)).await;
        let expected: Vec<HistoryEntry> = stored[stored.len().saturating_sub(window)..]
            .iter()
            .map(Message::to_history)
            .collect();
        assert_eq!(turn.history, expected, "window {window}");
        if window == 3 {
            // Oldest first: AI reply, the user's words, AI reply.
            let entry = &turn.history[1];
            assert_eq!(
                (entry.role, entry.content.as_str()),
                (MessageRole::User, "turn 2")
            );
            assert_eq!(entry.llm_raw_output, None);
            let reply = &turn.history[2];
            assert_eq!(reply.role, MessageRole::Assistant);
            assert_eq!(
                reply.llm_raw_output,
                Some(serde_json::Value::from(reply.content.as_str()))
            );
        }
        store.release_turn(&turn.lease, None).await.unwrap();
    }

    let page: Vec<i64> = store
        .list_messages(session.id, 2, 3)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(page, [3, 4, 5]);
    assert!(store
        .list_messages(session.id, 7, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn release_frees_the_session_and_writes_nothing<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;

    let turn = claim(store, session.id).await;
    let record = next_turn(&turn.session, "released", &["never stored"]);
    store.release_turn(&turn.lease, None).await.unwrap();
    // A released lease is lost: its commit is refused and writes nothing.
    assert!(matches!(
        store.commit_turn(&turn.lease, &record).await,
        Err(RepositoryError::LeaseLost(_))
    ));
    store
        .release_turn(&turn.lease, None)
        .await
        .expect("a second release is harmless");

    // The next turn claims at once and commits.
    let turn = claim(store, session.id).await;
    assert_eq!(turn.session, session);
    let record = next_turn(&turn.session, "kept", &["stored"]);
    store.commit_turn(&turn.lease, &record).await.unwrap();

    let messages = store.list_messages(session.id, 0, 100).await.unwrap();
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["Welcome.", "kept", "stored"]);
    assert_eq!(
        store
            .list_variable_snapshots(session.id)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn commit_rejects_a_record_out_of_sequence<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let turn = claim(store, session.id).await;

    let mut gap = next_turn(&turn.session, "hello", &["hi"]);
    gap.messages[1].seq += 1;
    gap.session.last_message_seq += 1;
    assert!(matches!(
        store.commit_turn(&turn.lease, &gap).await,
        Err(RepositoryError::Conflict(_))
    ));

    let mut stale = next_turn(&turn.session, "hello", &["hi"]);
    for m in &mut stale.messages {
        m.seq -= 1;
    }
    stale.session.last_message_seq -= 1;
    assert!(matches!(
        store.commit_turn(&turn.lease, &stale).await,
        Err(RepositoryError::Conflict(_))
    ));

    // Rejected records keep the lease; the valid one then commits.
    let good = next_turn(&turn.session, "hello", &["hi"]);
    store.commit_turn(&turn.lease, &good).await.unwrap();
    let seqs: Vec<i64> = store
        .list_messages(session.id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

async fn missing_sessions_have_no_turn<S: Store>(store: &S) {
    let id = SessionId::new_random();
    assert_eq!(
        store.claim_turn(&turn_claim(id, 10)).await.unwrap(),
        ClaimOutcome::NotFound
    );
    assert_eq!(SessionRepository::get(store, id).await.unwrap(), None);
    assert!(store.list_messages(id, 0, 10).await.unwrap().is_empty());
    assert!(store.list_variable_snapshots(id).await.unwrap().is_empty());
}

async fn a_claim_with_an_owner_reaches_only_that_users_session<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let mut keyed = turn_claim(session.id, 20);
    keyed.idempotency_key = Some("key-1".into());
    keyed.owner = Some("user-1".into());
    let turn = claim_with(store, &keyed).await;
    let record = with_idempotency(next_turn(&turn.session, "hello", &["hi"]), "key-1");
    store.commit_turn(&turn.lease, &record).await.unwrap();

    // Another user: exactly what an unknown id answers, whether the session
    // is free, holds a stored response for the key, or is leased.
    let mut stranger = turn_claim(session.id, 20);
    stranger.owner = Some("user-2".into());
    assert_eq!(
        store.claim_turn(&stranger).await.unwrap(),
        ClaimOutcome::NotFound
    );
    stranger.idempotency_key = Some("key-1".into());
    assert_eq!(
        store.claim_turn(&stranger).await.unwrap(),
        ClaimOutcome::NotFound,
        "another user's stored response is never replayed"
    );
    let running = claim(store, session.id).await;
    stranger.idempotency_key = None;
    assert_eq!(
        store.claim_turn(&stranger).await.unwrap(),
        ClaimOutcome::NotFound,
        "a busy session of another user is not found either"
    );
    store.release_turn(&running.lease, None).await.unwrap();

    // The owner's key replays; the owner's next turn claims.
    assert_eq!(
        store.claim_turn(&keyed).await.unwrap(),
        ClaimOutcome::Replay(record.idempotency.clone().unwrap())
    );
    let mut owner = turn_claim(session.id, 20);
    owner.owner = Some("user-1".into());
    let turn = claim_with(store, &owner).await;
    assert_eq!(turn.session, record.session);
    store.release_turn(&turn.lease, None).await.unwrap();
}

async fn a_held_lease_makes_other_claims_busy_at_once<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let turn = claim(store, session.id).await;

    let started = std::time::Instant::now();
    let second = store.claim_turn(&turn_claim(session.id, 20)).await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a busy claim answers at once"
    );
    assert_eq!(
        second,
        ClaimOutcome::Busy {
            lease_expires_at: Some(turn.lease.expires_at)
        }
    );
    // The losing claim changed nothing: the holder still commits.
    let record = next_turn(&turn.session, "mine", &["yes"]);
    store.commit_turn(&turn.lease, &record).await.unwrap();

    // Another session is never blocked by this one.
    let other = create_session(store, "user-2").await;
    let held = claim(store, session.id).await;
    let free = claim(store, other.id).await;
    store.release_turn(&free.lease, None).await.unwrap();
    store.release_turn(&held.lease, None).await.unwrap();
}

async fn a_lapsed_lease_is_taken_over_and_the_late_commit_is_fenced<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let mut short = turn_claim(session.id, 20);
    short.lease_duration = std::time::Duration::from_millis(200);
    let dead = claim_with(store, &short).await;
    assert!(matches!(
        store.claim_turn(&turn_claim(session.id, 20)).await.unwrap(),
        ClaimOutcome::Busy { .. }
    ));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    // The owner is presumed dead: another turn takes the session over.
    let next = claim(store, session.id).await;
    assert_eq!(next.session, session);

    // The dead turn's late commit is refused and writes nothing; its late
    // release keeps its words but does not free the new owner's lease.
    let late = next_turn(&dead.session, "late", &["too late"]);
    assert!(matches!(
        store.commit_turn(&dead.lease, &late).await,
        Err(RepositoryError::LeaseLost(_))
    ));
    let failed = failure(&session, "late words");
    store
        .release_turn(&dead.lease, Some(&failed))
        .await
        .unwrap();
    assert_eq!(store.failed(session.id).await, vec![failed]);
    assert!(matches!(
        store.claim_turn(&turn_claim(session.id, 20)).await.unwrap(),
        ClaimOutcome::Busy { .. }
    ));
    let stored = SessionRepository::get(store, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_error, None, "not the dead turn's to mark");

    let record = next_turn(&next.session, "on time", &["ok"]);
    store.commit_turn(&next.lease, &record).await.unwrap();
    let contents: Vec<String> = store
        .list_messages(session.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(contents, ["Welcome.", "on time", "ok"]);
}

async fn concurrent_claims_on_one_session_grant_exactly_one<S: Store>(store: &S) {
    let session = create_session(store, "user-1").await;
    let claims: Vec<TurnClaim> = (0..20).map(|_| turn_claim(session.id, 20)).collect();
    let outcomes =
        futures::future::join_all(claims.iter().map(|claim| store.claim_turn(claim))).await;
    let mut winners = Vec::new();
    for outcome in outcomes {
        match outcome.unwrap() {
            ClaimOutcome::Claimed(turn) => winners.push(*turn),
            ClaimOutcome::Busy { .. } => {}
            other => panic!("unexpected claim outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    let turn = winners.pop().unwrap();
    let record = next_turn(&turn.session, "the one", &["answer"]);
    store.commit_turn(&turn.lease, &record).await.unwrap();
    assert_eq!(
        store.list_messages(session.id, 0, 100).await.unwrap().len(),
        3
    );
}

fn audit_event(
    actor: &Actor,
    action: AuditAction,
    target: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> AuditEvent {
    AuditEvent::new(AuditEventId::new_random(), at, actor, action, target)
        .with_hashes(Some("before".into()), Some("after".into()))
        .with_details(serde_json::json!({"scriptName": "intake", "n": 1}))
}

async fn audit_events_are_kept_and_listed_newest_first_by_filter_and_page<S: Store>(store: &S) {
    let t0 = now();
    let root = Actor::admin("root");
    let ed = Actor::editor("ed");
    let created = audit_event(&ed, AuditAction::ScriptCreate, "s1", t0);
    let updated = audit_event(
        &ed,
        AuditAction::ScriptUpdate,
        "s1",
        t0 + Duration::seconds(1),
    );
    let exported = audit_event(
        &root,
        AuditAction::UserExport,
        "alice",
        t0 + Duration::seconds(2),
    );
    let erased = audit_event(
        &root,
        AuditAction::UserErase,
        "alice",
        t0 + Duration::seconds(3),
    );
    for event in [&created, &updated, &exported, &erased] {
        store.record(event).await.unwrap();
    }
    // Ids are unique.
    assert!(matches!(
        store.record(&created).await,
        Err(RepositoryError::Conflict(_))
    ));

    let ids = |events: Vec<AuditEvent>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let all = store.list_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(all[0], erased, "every field round-trips");
    assert_eq!(
        ids(all),
        vec![erased.id, exported.id, updated.id, created.id]
    );
    let by = |filter: AuditFilter| async move { ids(store.list_events(&filter).await.unwrap()) };
    assert_eq!(
        by(AuditFilter {
            action: Some(AuditAction::ScriptUpdate),
            ..AuditFilter::default()
        })
        .await,
        vec![updated.id]
    );
    assert_eq!(
        by(AuditFilter {
            actor_subject: Some("root".into()),
            ..AuditFilter::default()
        })
        .await,
        vec![erased.id, exported.id]
    );
    assert_eq!(
        by(AuditFilter {
            target_type: Some(AuditTargetType::Script),
            target_id: Some("s1".into()),
            ..AuditFilter::default()
        })
        .await,
        vec![updated.id, created.id]
    );
    assert_eq!(
        by(AuditFilter {
            since: Some(t0 + Duration::seconds(1)),
            until: Some(t0 + Duration::seconds(3)),
            ..AuditFilter::default()
        })
        .await,
        vec![exported.id, updated.id]
    );
    assert_eq!(
        by(AuditFilter {
            limit: 2,
            offset: 1,
            ..AuditFilter::default()
        })
        .await,
        vec![exported.id, updated.id]
    );
    assert!(by(AuditFilter {
        target_id: Some("nobody".into()),
        ..AuditFilter::default()
    })
    .await
    .is_empty());
}

async fn a_users_data_is_exported_whole_then_erased_without_touching_others<S: Store>(store: &S) {
    let first = create_session(store, "alice").await;
    let first = commit_turn(store, &first, "my words").await;
    let turn = claim(store, first.id).await;
    let recorded = with_exchanges(
        next_turn(&turn.session, "more", &["ok"]),
        &["a", "b"],
        false,
    );
    store.commit_turn(&turn.lease, &recorded).await.unwrap();
    let first = SessionRepository::get(store, first.id)
        .await
        .unwrap()
        .unwrap();
    // A turn with an Idempotency-Key, and a failed turn.
    let turn = claim(store, first.id).await;
    let keyed = with_idempotency(next_turn(&turn.session, "again", &["ok"]), "key-1");
    store.commit_turn(&turn.lease, &keyed).await.unwrap();
    let turn = claim(store, first.id).await;
    let failed = failure(&keyed.session, "lost words");
    store
        .release_turn(&turn.lease, Some(&failed))
        .await
        .unwrap();
    let second = create_session(store, "alice").await;
    let bob = create_session(store, "bob").await;
    let bob = commit_turn(store, &bob, "bob's words").await;

    let export = store.export_user("alice").await.unwrap();
    assert_eq!(export.user_id, "alice");
    let ids: Vec<SessionId> = export.sessions.iter().map(|s| s.session.id).collect();
    assert_eq!(ids, vec![first.id, second.id], "oldest first");
    let data = &export.sessions[0];
    assert_eq!(
        data.session,
        SessionRepository::get(store, first.id)
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(
        data.messages,
        store.list_messages(first.id, 0, 100).await.unwrap()
    );
    assert_eq!(data.messages.len(), 7);
    assert_eq!(
        data.variable_history,
        store.list_variable_snapshots(first.id).await.unwrap()
    );
    assert_eq!(data.failed_turns, vec![failed.clone()]);
    assert_eq!(data.llm_exchanges, recorded.llm_exchanges);
    assert_eq!(export.sessions[1].messages.len(), 1);

    let erased = store.erase_user("alice").await.unwrap();
    let mut erased_ids = erased.sessions.clone();
    erased_ids.sort();
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(erased_ids, expected);
    let counts = &erased.counts;
    assert_eq!(counts.sessions, 2);
    assert_eq!(counts.messages, 8);
    assert_eq!(counts.variable_snapshots, 3);
    assert_eq!(counts.idempotency_keys, 1);
    assert_eq!(counts.failed_turns, 1);
    assert_eq!(counts.cache_keys, 0);

    // Nothing of alice is left to read or to claim.
    assert!(store
        .export_user("alice")
        .await
        .unwrap()
        .sessions
        .is_empty());
    assert!(store.list_for_user("alice", 10).await.unwrap().is_empty());
    for id in [first.id, second.id] {
        assert_eq!(SessionRepository::get(store, id).await.unwrap(), None);
        assert!(store.list_messages(id, 0, 100).await.unwrap().is_empty());
        assert!(store.list_variable_snapshots(id).await.unwrap().is_empty());
        assert!(store.list_llm_exchanges(id).await.unwrap().is_empty());
        assert!(store.failed(id).await.is_empty());
        assert_eq!(
            store.claim_turn(&turn_claim(id, 20)).await.unwrap(),
            ClaimOutcome::NotFound
        );
    }
    // Bob is untouched.
    let bobs = store.export_user("bob").await.unwrap();
    assert_eq!(bobs.sessions.len(), 1);
    assert_eq!(bobs.sessions[0].session, bob);
    assert_eq!(bobs.sessions[0].messages.len(), 3);
}

async fn llm_exchanges_are_written_with_their_turn_and_go_with_the_session<S: Store>(store: &S) {
    let script = session_script("recorded");
    store.insert(&script).await.unwrap();
    let opening = with_exchanges(first_turn(new_session(script.id, "carol")), &["hi"], false);
    store.create(&opening).await.unwrap();
    let id = opening.session.id;
    assert_eq!(
        store.list_llm_exchanges(id).await.unwrap(),
        opening.llm_exchanges,
        "the opening turn's exchanges are stored with the session"
    );

    let turn = claim(store, id).await;
    let next = with_exchanges(
        next_turn(&turn.session, "words", &["ok"]),
        &["a", "b"],
        true,
    );
    store.commit_turn(&turn.lease, &next).await.unwrap();
    let stored = store.list_llm_exchanges(id).await.unwrap();
    let expected: Vec<_> = opening
        .llm_exchanges
        .iter()
        .chain(&next.llm_exchanges)
        .cloned()
        .collect();
    assert_eq!(
        stored, expected,
        "by turn number and call index, every field kept"
    );
    assert_eq!(stored[0].prompt, None);
    assert_eq!(stored[2].prompt.as_deref(), Some("prompt 2.1"));

    // A commit whose lease is gone writes none of its exchanges.
    // (the same turn again: its lease was released by the commit)
    let late = with_exchanges(next_turn(&turn.session, "late", &["no"]), &["lost"], true);
    assert!(matches!(
        store.commit_turn(&turn.lease, &late).await,
        Err(RepositoryError::LeaseLost(_))
    ));
    assert_eq!(store.list_llm_exchanges(id).await.unwrap().len(), 3);
    assert!(store
        .list_llm_exchanges(SessionId::new_random())
        .await
        .unwrap()
        .is_empty());

    store.erase_user("carol").await.unwrap();
    assert!(
        store.list_llm_exchanges(id).await.unwrap().is_empty(),
        "erased with the session"
    );
}

async fn erasing_a_user_without_data_removes_nothing<S: Store>(store: &S) {
    let kept = create_session(store, "bob").await;
    let erased = store.erase_user("nobody").await.unwrap();
    assert!(erased.sessions.is_empty());
    assert_eq!(erased.counts, heartrule_domain::ErasedCounts::default());
    assert!(store
        .export_user("nobody")
        .await
        .unwrap()
        .sessions
        .is_empty());
    assert!(SessionRepository::get(store, kept.id)
        .await
        .unwrap()
        .is_some());
}

async fn a_session_in_handoff_keeps_its_safety_record<S: Store>(store: &S) {
    let session = create_session(store, "user-safety").await;
    let turn = claim(store, session.id).await;
    let mut record = next_turn(&turn.session, "I want to die", &["Please call 988."]);
    let at = record.session.updated_at;
    record.session.status = SessionStatus::Handoff;
    record.session.state.status = ExecutionStatus::Paused;
    record.session.state.safety.risk_level = RiskLevel::High;
    record.session.state.safety.risk_events.push(RiskEvent {
        turn_id: turn.lease.turn_id,
        at,
        source: SignalSource::Local,
        level: RiskLevel::High,
        pattern_ids: vec!["en.want_to_die".into()],
        evidence: "I want to die".into(),
        protocol: true,
    });
    record.session.state.safety.handoff = Some(Handoff {
        since: at,
        level: RiskLevel::High,
        resume_status: ExecutionStatus::WaitingInput,
        reason: heartrule_domain::safety::HandoffReason::Crisis,
    });
    store.commit_turn(&turn.lease, &record).await.unwrap();
    let stored = SessionRepository::get(store, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, SessionStatus::Handoff);
    assert_eq!(stored.state.safety, record.session.state.safety);
    assert_eq!(stored, record.session);
}

async fn safety_deliveries_are_recorded_per_attempt_and_listed_in_order<S: Store>(store: &S) {
    let session = create_session(store, "user-deliveries").await;
    let alert_id = TurnId::new_random();
    let first = DeliveryAttempt {
        alert_id,
        session_id: session.id,
        attempt: 1,
        outcome: DeliveryOutcome::Failed,
        http_status: Some(503),
        error: Some("503 Service Unavailable".into()),
        attempted_at: now(),
    };
    let second = DeliveryAttempt {
        attempt: 2,
        outcome: DeliveryOutcome::Delivered,
        http_status: Some(200),
        error: None,
        attempted_at: now() + Duration::milliseconds(5),
        ..first.clone()
    };
    store.record_delivery(&second).await.unwrap();
    store.record_delivery(&first).await.unwrap();
    let listed = store.list_deliveries(session.id).await.unwrap();
    assert_eq!(listed, [first.clone(), second]);

    assert!(matches!(
        store.record_delivery(&first).await,
        Err(RepositoryError::Conflict(_))
    ));
    let unknown = DeliveryAttempt {
        session_id: SessionId::new_random(),
        alert_id: TurnId::new_random(),
        ..first
    };
    assert!(matches!(
        store.record_delivery(&unknown).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert!(store
        .list_deliveries(SessionId::new_random())
        .await
        .unwrap()
        .is_empty());
}

/// A UTC time on 2026-12-`day`.
fn utc(day: u32, hour: u32, minute: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(2026, 12, day, hour, minute, 0)
        .single()
        .unwrap()
}

/// Creates a session of `user` at `at` whose first turn used `usage`
/// (prompt, completion, calls).
async fn create_session_at<S: Store>(
    store: &S,
    user: &str,
    at: chrono::DateTime<chrono::Utc>,
    usage: (u64, u64, u64),
) -> heartrule_domain::Session {
    let script = session_script(&format!("script-{}", SessionId::new_random()));
    store.insert(&script).await.unwrap();
    let mut session = new_session(script.id, user);
    session.created_at = at;
    session.updated_at = at;
    let record = with_usage(first_turn(session), usage.0, usage.1, usage.2);
    store.create(&record).await.unwrap();
    record.session
}

/// Commits a turn at `at` that used `usage` (prompt, completion, calls).
async fn commit_turn_at<S: Store>(
    store: &S,
    session: &heartrule_domain::Session,
    at: chrono::DateTime<chrono::Utc>,
    usage: (u64, u64, u64),
) {
    let turn = claim(store, session.id).await;
    let mut record = next_turn(&turn.session, "hi", &["ok"]);
    record.session.updated_at = at;
    let record = with_usage(record, usage.0, usage.1, usage.2);
    store.commit_turn(&turn.lease, &record).await.unwrap();
}

async fn token_usage_is_summed_per_session_user_day_and_hour<S: Store>(store: &S) {
    use heartrule_domain::{DailyUsage, UsageTotals, UsageWindows};
    let day_before = utc(3, 23, 30);
    let at = utc(4, 10, 20);
    let ana = create_session_at(store, "ana", day_before, (10, 5, 1)).await;
    commit_turn_at(store, &ana, at, (100, 50, 2)).await;
    // The same hour again: added to the hour's row.
    commit_turn_at(store, &ana, at + Duration::minutes(5), (1, 1, 1)).await;
    // A first turn without LLM calls stores no usage.
    let ana_2 = create_session_at(store, "ana", at, (0, 0, 0)).await;
    commit_turn_at(store, &ana_2, at, (7, 3, 1)).await;
    let bob = create_session_at(store, "bob", at, (1_000, 0, 1)).await;
    // Another hour of the same day.
    commit_turn_at(store, &bob, utc(4, 9, 59), (20, 0, 1)).await;

    let windows = UsageWindows::at(at);
    assert_eq!(
        store.usage_totals("ana", &windows).await.unwrap(),
        UsageTotals {
            session_tokens: 0,
            user_day_tokens: 150 + 2 + 10,
            global_hour_tokens: 162 + 1_000,
        }
    );
    assert_eq!(
        store.usage_totals("nobody", &windows).await.unwrap(),
        UsageTotals {
            session_tokens: 0,
            user_day_tokens: 0,
            global_hour_tokens: 1_162,
        }
    );
    let mut claim_ana = turn_claim(ana.id, 20);
    claim_ana.usage = Some(windows);
    let turn = claim_with(store, &claim_ana).await;
    assert_eq!(
        turn.usage,
        Some(UsageTotals {
            session_tokens: 15 + 150 + 2,
            user_day_tokens: 162,
            global_hour_tokens: 1_162,
        })
    );
    // A released (refused) turn adds nothing.
    store.release_turn(&turn.lease, None).await.unwrap();
    assert_eq!(
        store
            .usage_totals("ana", &windows)
            .await
            .unwrap()
            .user_day_tokens,
        162
    );

    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
    assert_eq!(
        store.user_daily_usage("ana", day(1), day(4)).await.unwrap(),
        vec![
            DailyUsage {
                day: day(3),
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
                llm_calls: 1,
                sessions: 1,
            },
            DailyUsage {
                day: day(4),
                prompt_tokens: 108,
                completion_tokens: 54,
                total_tokens: 162,
                llm_calls: 4,
                sessions: 2,
            },
        ]
    );
    assert_eq!(
        store
            .user_daily_usage("ana", day(4), day(4))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.user_daily_usage("bob", day(4), day(4)).await.unwrap(),
        vec![DailyUsage {
            day: day(4),
            prompt_tokens: 1_020,
            completion_tokens: 0,
            total_tokens: 1_020,
            llm_calls: 2,
            sessions: 1,
        }]
    );
    assert!(store
        .user_daily_usage("ana", day(5), day(9))
        .await
        .unwrap()
        .is_empty());

    // Usage goes with the user's sessions when they are erased.
    store.erase_user("ana").await.unwrap();
    assert!(store
        .user_daily_usage("ana", day(1), day(4))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.usage_totals("ana", &windows).await.unwrap(),
        UsageTotals {
            session_tokens: 0,
            user_day_tokens: 0,
            global_hour_tokens: 1_000,
        }
    );
}

async fn token_usage_totals_come_with_the_claim_only_when_asked<S: Store>(store: &S) {
    use heartrule_domain::{UsageTotals, UsageWindows};
    let at = utc(4, 10, 20);
    let session = create_session_at(store, "ana", at, (3, 4, 1)).await;
    let plain = claim(store, session.id).await;
    assert_eq!(plain.usage, None);
    store.release_turn(&plain.lease, None).await.unwrap();

    // Another owner's claim finds nothing and reads no totals.
    let mut foreign = turn_claim(session.id, 20);
    foreign.owner = Some("mallory".into());
    foreign.usage = Some(UsageWindows::at(at));
    assert_eq!(
        store.claim_turn(&foreign).await.unwrap(),
        ClaimOutcome::NotFound
    );

    let mut asked = turn_claim(session.id, 20);
    asked.owner = Some("ana".into());
    asked.usage = Some(UsageWindows::at(at + Duration::days(1)));
    let turn = claim_with(store, &asked).await;
    // The next day: the session keeps its total, the day and hour are new.
    assert_eq!(
        turn.usage,
        Some(UsageTotals {
            session_tokens: 7,
            user_day_tokens: 0,
            global_hour_tokens: 0,
        })
    );
}
