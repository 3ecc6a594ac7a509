//! SessionManager against mockall mocks of every port: each failure returns
//! the right typed error and nothing is committed.

use super::*;
use crate::engine::MockScriptEngine;
use crate::engine::VariableChange;
use crate::error::ErrorCode;
use crate::llm::LlmError;
use crate::message::MessageRole;
use crate::ports::{
    MockMessageHistory, MockScriptRepository, MockSessionCache, MockSessionRepository, NoCache,
    RandomIds, RepositoryError,
};
use crate::quota::{QuotaConfig, QuotaLimit, TurnUsage, UsageTotals, UsageWindows};
use crate::script::{
    Action, ActionKind, Phase, SayConfig, Script, ScriptStatus, ScriptType, ScriptVersion, Topic,
};
use chrono::TimeZone;
use serde_json::json;

struct FixedClock;
impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .single()
            .unwrap()
    }
}

struct MockPorts;
impl Ports for MockPorts {
    type Scripts = MockScriptRepository;
    type Sessions = MockSessionRepository;
    type History = MockMessageHistory;
    type ScriptCache = NoCache;
    type SessionCache = MockSessionCache;
    type Engine = MockScriptEngine;
    type Clock = FixedClock;
    type Ids = RandomIds;
    type Audit = crate::audit::MockAuditLog;
    type UserData = crate::privacy::MockUserDataStore;
    type CacheJanitor = NoCache;
}

fn manager(
    scripts: MockScriptRepository,
    sessions: MockSessionRepository,
    engine: MockScriptEngine,
) -> SessionManager<MockPorts> {
    let mut cache = MockSessionCache::new();
    cache.expect_get().returning(|_| None);
    cache.expect_put().returning(|_| ());
    cache.expect_invalidate().returning(|_| ());
    manager_with_cache(scripts, sessions, engine, cache)
}

fn manager_with_cache(
    scripts: MockScriptRepository,
    sessions: MockSessionRepository,
    engine: MockScriptEngine,
    session_cache: MockSessionCache,
) -> SessionManager<MockPorts> {
    SessionManager::new(
        Adapters {
            scripts: Arc::new(scripts),
            sessions: Arc::new(sessions),
            history: Arc::new(MockMessageHistory::new()),
            script_cache: Arc::new(NoCache),
            session_cache: Arc::new(session_cache),
            engine: Arc::new(engine),
            clock: Arc::new(FixedClock),
            ids: Arc::new(RandomIds),
            audit: Arc::new(crate::audit::MockAuditLog::new()),
            user_data: Arc::new(crate::privacy::MockUserDataStore::new()),
            cache_janitor: Arc::new(NoCache),
        },
        SessionManagerConfig::default(),
    )
}

fn script() -> Script {
    let document = ScriptDocument::Session(SessionScript {
        session_id: "hello".into(),
        session_name: None,
        description: None,
        version: None,
        template_scheme: None,
        safety: None,
        phases: vec![Phase {
            phase_id: "p1".into(),
            phase_name: None,
            phase_goal: None,
            description: None,
            topics: vec![Topic {
                topic_id: "t1".into(),
                topic_name: None,
                topic_goal: None,
                description: None,
                strategy: None,
                actions: vec![Action {
                    action_id: "a1".into(),
                    condition: None,
                    kind: ActionKind::Say(SayConfig {
                        content: "hi".into(),
                        tone: None,
                        max_rounds: None,
                        exit_criteria: None,
                        require_acknowledgment: true,
                        ai_role: None,
                    }),
                }],
            }],
        }],
    });
    Script {
        id: ScriptId::new_random(),
        name: "hello".into(),
        script_type: ScriptType::Session,
        status: ScriptStatus::Draft,
        content: "session: {}".into(),
        content_hash: "hash-1".into(),
        document,
        current_version: 1,
        version: "1.0.0".into(),
        author: "test".into(),
        description: String::new(),
        tags: vec![],
        created_at: FixedClock.now(),
        updated_at: FixedClock.now(),
    }
}

fn stored_session(script: &Script, last_seq: i64) -> Session {
    Session {
        id: SessionId::new_random(),
        user_id: "u1".into(),
        script_id: script.id,
        script_hash: script.content_hash.clone(),
        status: SessionStatus::Active,
        state: EngineState::initial(VariableStore::default()),
        turn_count: 1,
        last_message_seq: last_seq,
        last_error: None,
        created_at: FixedClock.now(),
        updated_at: FixedClock.now(),
        completed_at: None,
    }
}

fn ai_message(text: &str) -> NewMessage {
    NewMessage {
        role: MessageRole::Assistant,
        content: text.into(),
        action_id: Some("a1".into()),
        action_type: Some(crate::script::ActionType::AiSay),
        metadata: json!({}),
    }
}

fn outcome_from(request: &TurnRequest, status: ExecutionStatus) -> TurnOutcome {
    let mut state = request.state.clone();
    state.status = status;
    let now = request.now;
    state.variables.set(
        "name",
        VariableScope::Session,
        None,
        VariableValue::new(json!("Li"), "a1", VariableScope::Session, now),
    );
    TurnOutcome {
        state,
        user_message: request.user_input.clone().map(|text| NewMessage {
            role: MessageRole::User,
            content: text,
            action_id: Some("a1".into()),
            action_type: None,
            metadata: json!({}),
        }),
        messages: vec![ai_message("hello there")],
        variable_changes: vec![VariableChange {
            name: "name".into(),
            scope: VariableScope::Session,
            scope_key: None,
            value: json!("Li"),
            source: "a1".into(),
        }],
        llm_calls: vec![],
        safety_readings: vec![],
        repair: None,
    }
}

/// A store holding `script` as its current and only version.
fn scripts_returning(script: &Script) -> MockScriptRepository {
    let mut scripts = MockScriptRepository::new();
    let found = script.clone();
    scripts
        .expect_get()
        .returning(move |_| Ok(Some(found.clone())));
    let project = crate::project::ProjectSummary {
        script: script.clone(),
        deprecated_at: None,
        file_count: 0,
    };
    scripts
        .expect_get_project()
        .returning(move |_| Ok(Some(project.clone())));
    let version = ScriptVersion::first_of(script);
    let by_number = version.clone();
    scripts
        .expect_get_version()
        .returning(move |_, n| Ok((n == by_number.number).then(|| by_number.clone())));
    scripts
        .expect_find_version_by_hash()
        .returning(move |_, hash| Ok((hash == version.content_hash).then(|| version.clone())));
    scripts
}

fn input(session_id: SessionId, text: &str) -> ProcessInput {
    ProcessInput {
        session_id,
        content: text.into(),
        idempotency: None,
        sink: None,
    }
}

#[tokio::test]
async fn create_runs_first_turn_and_stores_it_atomically() {
    let script = script();
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .times(1)
        .withf(|r| r.user_input.is_none() && r.history.is_empty())
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let mut sessions = MockSessionRepository::new();
    sessions
        .expect_create()
        .times(1)
        .withf(|record| {
            record.messages.len() == 1
                && record.messages[0].seq == 1
                && record.session.last_message_seq == 1
                && record.session.turn_count == 1
                && record.variables.len() == 1
                && record.variables[0].value_type == ValueType::String
        })
        .returning(|_| Ok(()));
    let m = manager(scripts_returning(&script), sessions, engine);
    let mut initial = serde_json::Map::new();
    initial.insert("用户名".into(), json!("小明"));
    let result = m
        .create_session(CreateSession {
            user_id: "u1".into(),
            script_id: script.id,
            initial_variables: initial,
        })
        .await
        .unwrap();
    assert_eq!(result.last_ai_message(), "hello there");
    assert_eq!(result.execution_status, ExecutionStatus::WaitingInput);
    assert_eq!(result.session_status, SessionStatus::Active);
    assert_eq!(result.variables.session["用户名"].source, "initial");
}

#[tokio::test]
async fn create_with_missing_script_is_script_not_found_and_stores_nothing() {
    let mut scripts = MockScriptRepository::new();
    scripts.expect_get_project().returning(|_| Ok(None));
    let mut sessions = MockSessionRepository::new();
    sessions.expect_create().times(0);
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    let m = manager(scripts, sessions, engine);
    let err = m
        .create_session(CreateSession {
            user_id: "u1".into(),
            script_id: ScriptId::new_random(),
            initial_variables: serde_json::Map::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ScriptNotFound);
}

#[tokio::test]
async fn create_with_failing_engine_stores_nothing() {
    let script = script();
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().returning(|_| {
        Err(DomainError::from(LlmError::Timeout(
            std::time::Duration::from_secs(1),
        )))
    });
    let mut sessions = MockSessionRepository::new();
    sessions.expect_create().times(0);
    let m = manager(scripts_returning(&script), sessions, engine);
    let err = m
        .create_session(CreateSession {
            user_id: "u1".into(),
            script_id: script.id,
            initial_variables: serde_json::Map::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::LlmServiceError);
    assert_eq!(err.context.script_id, Some(script.id));
}

fn claimed(session: &Session, claim: &TurnClaim) -> ClaimOutcome {
    ClaimOutcome::Claimed(Box::new(TurnContext {
        lease: TurnLease::claimed(claim, session, FixedClock.now()),
        session: session.clone(),
        history: vec![],
        usage: claim.usage.map(|_| UsageTotals::default()),
    }))
}

/// A store whose claim of `session` succeeds `claims` times; each test says
/// what it expects of the commit and the release.
fn sessions_claiming(session: &Session, claims: usize) -> MockSessionRepository {
    let mut sessions = MockSessionRepository::new();
    let stored = session.clone();
    sessions
        .expect_claim_turn()
        .times(claims)
        .returning(move |claim| Ok(claimed(&stored, claim)));
    sessions
}

/// Expects every commit to succeed and keeps the committed records.
fn committed(sessions: &mut MockSessionRepository) -> Arc<std::sync::Mutex<Vec<TurnRecord>>> {
    let records = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&records);
    sessions.expect_commit_turn().returning(move |_, record| {
        kept.lock().unwrap().push(record.clone());
        Ok(())
    });
    records
}

/// Expects `times` releases, each answering Ok.
fn expect_releases(sessions: &mut MockSessionRepository, times: usize) {
    sessions
        .expect_release_turn()
        .times(times)
        .returning(|_, _| Ok(()));
}

#[tokio::test]
async fn input_reaches_engine_and_turn_commits_with_contiguous_seq() {
    let script = script();
    let session = stored_session(&script, 4);
    let mut sessions = MockSessionRepository::new();
    let claimed_turn = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = claimed_turn.clone();
    let stored = session.clone();
    sessions
        .expect_claim_turn()
        .times(1)
        .withf(|claim| claim.lease_duration == SessionManagerConfig::default().turn_lease)
        .returning(move |claim| {
            *seen.lock().unwrap() = Some(claim.turn_id);
            Ok(claimed(&stored, claim))
        });
    sessions.expect_release_turn().times(0);
    let fenced = claimed_turn.clone();
    sessions
        .expect_commit_turn()
        .times(1)
        .withf(move |lease, record| {
            let seqs: Vec<i64> = record.messages.iter().map(|m| m.seq).collect();
            Some(lease.turn_id) == *fenced.lock().unwrap()
                && record.turn_id == lease.turn_id
                && seqs == vec![5, 6]
                && record.messages[0].role == MessageRole::User
                && record.messages[0].content == "小李"
                && record.session.last_message_seq == 6
                && record.session.turn_count == 2
                && record.session.status == SessionStatus::Completed
                && record.session.completed_at.is_some()
        })
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .withf(|r| r.user_input.as_deref() == Some("小李"))
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::Completed)));
    let m = manager(scripts_returning(&script), sessions, engine);
    let result = m.process_input(input(session.id, "小李")).await.unwrap();
    assert_eq!(result.messages.len(), 1);
    assert_eq!(result.messages[0].seq, 6);
    assert_eq!(result.session_status, SessionStatus::Completed);
    assert!(!result.replayed);
    assert_eq!(Some(result.turn_id), *claimed_turn.lock().unwrap());
}

#[tokio::test]
async fn a_committed_turn_drops_the_cached_snapshot_instead_of_rewriting_it() {
    let script = script();
    let session = stored_session(&script, 4);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let mut sessions = sessions_claiming(&session, 1);
    sessions.expect_commit_turn().returning(|_, _| Ok(()));
    let mut cache = MockSessionCache::new();
    cache.expect_put().times(0);
    let id = session.id;
    cache
        .expect_invalidate()
        .withf(move |invalidated| *invalidated == id)
        .times(1)
        .returning(|_| ());
    let m = manager_with_cache(scripts_returning(&script), sessions, engine, cache);
    m.process_input(input(session.id, "好")).await.unwrap();
}

#[tokio::test]
async fn later_turns_reuse_the_parsed_script_without_fetching_it() {
    let script = script();
    let session = stored_session(&script, 4);
    let mut scripts = MockScriptRepository::new();
    let found = script.clone();
    scripts
        .expect_find_version_by_hash()
        .times(1)
        .returning(move |_, _| Ok(Some(ScriptVersion::first_of(&found))));
    scripts.expect_get().times(0);
    let mut sessions = sessions_claiming(&session, 3);
    sessions
        .expect_commit_turn()
        .times(3)
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .times(3)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts, sessions, engine);
    for text in ["one", "two", "three"] {
        m.process_input(input(session.id, text)).await.unwrap();
    }
}

#[tokio::test]
async fn missing_session_is_session_not_found() {
    let mut sessions = MockSessionRepository::new();
    sessions
        .expect_claim_turn()
        .returning(|_| Ok(ClaimOutcome::NotFound));
    sessions.expect_release_turn().times(0);
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    let m = manager(MockScriptRepository::new(), sessions, engine);
    let id = SessionId::new_random();
    let err = m.process_input(input(id, "hi")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SessionNotFound);
    assert_eq!(err.context.session_id, Some(id));
    assert!(!err.recovery().can_retry);
}

#[tokio::test]
async fn a_busy_session_is_turn_in_progress_at_once_and_nothing_runs() {
    let until = FixedClock.now();
    let mut sessions = MockSessionRepository::new();
    sessions.expect_claim_turn().times(1).returning(move |_| {
        Ok(ClaimOutcome::Busy {
            lease_expires_at: Some(until),
        })
    });
    sessions.expect_commit_turn().times(0);
    sessions.expect_release_turn().times(0);
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    let m = manager(MockScriptRepository::new(), sessions, engine);
    let id = SessionId::new_random();
    let err = m.process_input(input(id, "hi")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::TurnInProgress);
    assert_eq!(
        err.kind,
        ErrorKind::TurnInProgress {
            session_id: id,
            lease_expires_at: Some(until)
        }
    );
    assert!(err.recovery().can_retry);
}

#[tokio::test]
async fn engine_error_releases_the_lease_and_records_the_failure_with_the_input() {
    let script = script();
    let session = stored_session(&script, 2);
    let mut sessions = sessions_claiming(&session, 1);
    sessions.expect_commit_turn().times(0);
    sessions
        .expect_release_turn()
        .times(1)
        .withf(|lease, f| {
            f.is_some_and(|f| {
                f.turn_id == lease.turn_id
                    && f.user_input.as_deref() == Some("my words")
                    && f.error_code == ErrorCode::ActionExecutionError
                    && f.position.action_id.as_deref() == Some("a1")
            })
        })
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().returning(|_| {
        Err(DomainError::new(ErrorKind::ActionExecution {
            action_id: "a1".into(),
            message: "template missing".into(),
        })
        .with_position(Position {
            action_id: Some("a1".into()),
            ..Position::default()
        }))
    });
    let m = manager(scripts_returning(&script), sessions, engine);
    let err = m
        .process_input(input(session.id, "my words"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ActionExecutionError);
    assert_eq!(err.context.session_id, Some(session.id));
    assert_eq!(err.context.script_id, Some(script.id));
}

#[tokio::test]
async fn llm_error_is_llm_service_error_and_nothing_commits() {
    let script = script();
    let session = stored_session(&script, 2);
    let mut sessions = sessions_claiming(&session, 1);
    sessions.expect_commit_turn().times(0);
    expect_releases(&mut sessions, 1);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|_| Err(DomainError::from(LlmError::CircuitOpen)));
    let m = manager(scripts_returning(&script), sessions, engine);
    let err = m.process_input(input(session.id, "hi")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::LlmServiceError);
    assert!(err.recovery().can_retry);
}

#[tokio::test]
async fn repository_error_on_commit_is_database_error_and_releases() {
    let script = script();
    let session = stored_session(&script, 2);
    let mut sessions = sessions_claiming(&session, 1);
    expect_releases(&mut sessions, 1);
    sessions
        .expect_commit_turn()
        .times(1)
        .returning(|_, _| Err(RepositoryError::Unavailable("connection reset".into())));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts_returning(&script), sessions, engine);
    let err = m.process_input(input(session.id, "hi")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseError);
}

#[tokio::test]
async fn a_commit_refused_by_the_fence_is_a_retryable_conflict_and_keeps_the_words() {
    let script = script();
    let session = stored_session(&script, 2);
    let mut sessions = sessions_claiming(&session, 1);
    sessions
        .expect_commit_turn()
        .times(1)
        .returning(|_, _| Err(RepositoryError::LeaseLost("taken over".into())));
    sessions
        .expect_release_turn()
        .times(1)
        .withf(|_, f| f.is_some_and(|f| f.user_input.as_deref() == Some("late words")))
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts_returning(&script), sessions, engine);
    let err = m
        .process_input(input(session.id, "late words"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert!(err.recovery().can_retry);
}

#[tokio::test]
async fn repository_error_on_claim_is_database_error() {
    let mut sessions = MockSessionRepository::new();
    sessions
        .expect_claim_turn()
        .returning(|_| Err(RepositoryError::Timeout("pool".into())));
    sessions.expect_release_turn().times(0);
    let m = manager(
        MockScriptRepository::new(),
        sessions,
        MockScriptEngine::new(),
    );
    let err = m
        .process_input(input(SessionId::new_random(), "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseError);
}

#[tokio::test]
async fn idempotency_key_replays_the_stored_result_without_running() {
    let script = script();
    let session = stored_session(&script, 2);
    let stored = TurnResult {
        session_id: session.id,
        turn_id: TurnId::new_random(),
        script_id: script.id,
        session_status: SessionStatus::Active,
        execution_status: ExecutionStatus::WaitingInput,
        position: Position::default(),
        messages: vec![],
        variables: VariableStore::default(),
        llm_calls: vec![],
        created_at: FixedClock.now(),
        replayed: false,
    };
    let response = serde_json::to_value(&stored).unwrap();
    let replaying = |response: Value| {
        let mut sessions = MockSessionRepository::new();
        sessions
            .expect_claim_turn()
            .times(1)
            .withf(|claim| claim.idempotency_key.as_deref() == Some("k1"))
            .returning(move |claim| {
                Ok(ClaimOutcome::Replay(IdempotentResponse {
                    key: claim.idempotency_key.clone().unwrap(),
                    request_hash: "h1".into(),
                    response: response.clone(),
                }))
            });
        sessions.expect_commit_turn().times(0);
        sessions.expect_release_turn().times(0);
        sessions
    };
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    let m = manager(
        MockScriptRepository::new(),
        replaying(response.clone()),
        engine,
    );
    let mut request = input(session.id, "hi");
    request.idempotency = Some(IdempotencyKey {
        key: "k1".into(),
        request_hash: "h1".into(),
    });
    let replayed = m.process_input(request.clone()).await.unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.turn_id, stored.turn_id);

    // The same key with another body is a conflict.
    let m = manager(
        MockScriptRepository::new(),
        replaying(response),
        MockScriptEngine::new(),
    );
    request.idempotency = Some(IdempotencyKey {
        key: "k1".into(),
        request_hash: "other".into(),
    });
    let err = m.process_input(request).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert!(!err.recovery().can_retry);
}

#[tokio::test]
async fn new_turn_stores_its_idempotent_response() {
    let script = script();
    let session = stored_session(&script, 0);
    let mut sessions = sessions_claiming(&session, 1);
    expect_releases(&mut sessions, 0);
    sessions
        .expect_commit_turn()
        .times(1)
        .withf(|_, record| {
            record.idempotency.as_ref().is_some_and(|i| {
                i.key == "k2"
                    && i.request_hash == "h2"
                    && i.response["messages"][0]["content"] == "hello there"
            })
        })
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts_returning(&script), sessions, engine);
    let mut request = input(session.id, "hi");
    request.idempotency = Some(IdempotencyKey {
        key: "k2".into(),
        request_hash: "h2".into(),
    });
    m.process_input(request).await.unwrap();
}

#[tokio::test]
async fn reads_report_missing_sessions() {
    let mut sessions = MockSessionRepository::new();
    sessions.expect_get().returning(|_| Ok(None));
    let m = manager(
        MockScriptRepository::new(),
        sessions,
        MockScriptEngine::new(),
    );
    let id = SessionId::new_random();
    assert_eq!(
        m.variables(id).await.unwrap_err().code(),
        ErrorCode::SessionNotFound
    );
    assert_eq!(
        m.messages(id, 0, 10).await.unwrap_err().code(),
        ErrorCode::SessionNotFound
    );
}

#[tokio::test]
async fn technique_script_cannot_start_a_session() {
    let mut technique = script();
    technique.document = ScriptDocument::Technique(TechniqueScript {
        technique_id: "socratic".into(),
        name: None,
        input_parameters: vec![],
        output_variables: vec![],
        topic: match &script().document {
            ScriptDocument::Session(s) => s.phases[0].topics[0].clone(),
            ScriptDocument::Technique(_) => unreachable!(),
        },
    });
    let m = manager(
        scripts_returning(&technique),
        MockSessionRepository::new(),
        MockScriptEngine::new(),
    );
    let err = m
        .create_session(CreateSession {
            user_id: "u".into(),
            script_id: technique.id,
            initial_variables: serde_json::Map::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ScriptValidationError);
}

/// What the manager records matches its declarations (names and label
/// keys), with one sample per created session and per turn outcome.
#[tokio::test]
async fn sessions_and_turns_are_recorded_as_declared() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Thread-local, and a current-thread test runtime polls on this thread.
    let _recording = metrics::set_default_local_recorder(&recorder);

    // A session created: its first turn commits with it ...
    let script = script();
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let mut sessions = MockSessionRepository::new();
    sessions.expect_create().returning(|_| Ok(()));
    let m = manager(scripts_returning(&script), sessions, engine);
    m.create_session(CreateSession {
        user_id: "u1".into(),
        script_id: script.id,
        initial_variables: serde_json::Map::new(),
    })
    .await
    .unwrap();
    // ... and a turn on a session another turn holds.
    let mut sessions = MockSessionRepository::new();
    sessions.expect_claim_turn().returning(|_| {
        Ok(ClaimOutcome::Busy {
            lease_expires_at: None,
        })
    });
    let m = manager(
        MockScriptRepository::new(),
        sessions,
        MockScriptEngine::new(),
    );
    m.process_input(input(SessionId::new_random(), "hi"))
        .await
        .unwrap_err();

    let mut counters = Vec::new();
    let mut histograms = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        METRICS
            .check_series(key.name(), key.labels().map(metrics::Label::key))
            .unwrap_or_else(|problem| panic!("{problem}"));
        let labels: Vec<String> = key.labels().map(|l| l.value().to_owned()).collect();
        match value {
            DebugValue::Counter(count) => counters.push((key.name().to_owned(), labels, count)),
            DebugValue::Histogram(samples) => {
                histograms.push((key.name().to_owned(), samples.len()))
            }
            DebugValue::Gauge(_) => panic!("the manager records no gauge"),
        }
    }
    counters.sort();
    histograms.sort();
    assert_eq!(
        counters,
        vec![
            (SESSIONS_CREATED_TOTAL.to_owned(), vec![], 1),
            (TURNS_TOTAL.to_owned(), vec!["committed".to_owned()], 1),
            (TURNS_TOTAL.to_owned(), vec!["in_progress".to_owned()], 1),
        ]
    );
    assert_eq!(
        histograms,
        vec![
            (SESSION_LOCK_WAIT.to_owned(), 1),
            (TURN_DURATION.to_owned(), 1)
        ]
    );
}

// Authorisation through the inbound ports: the domain decides.

mod authorisation {
    use super::*;
    use crate::actor::Actor;
    use crate::catalog::{ScriptCatalog, ScriptDraft, ScriptImport};
    use crate::engine::LoadMode;
    use crate::ports::ScriptFilter;
    use crate::usecases::{Conversations, ScriptLibrary, StartedTurn};

    /// A store holding `session` (of user `u1`) that must not be claimed,
    /// released (a failed turn recorded) or listed.
    /// A store holding `session`, whose turns only its owner can claim.
    fn store_of(session: &Session) -> MockSessionRepository {
        let mut sessions = MockSessionRepository::new();
        let stored = session.clone();
        sessions
            .expect_get()
            .returning(move |_| Ok(Some(stored.clone())));
        let owner = session.user_id.clone();
        sessions
            .expect_claim_turn()
            .withf(move |claim| claim.owner.as_deref() != Some(owner.as_str()))
            .returning(|_| Ok(ClaimOutcome::NotFound));
        sessions.expect_release_turn().times(0);
        sessions.expect_list_for_user().times(0);
        sessions
    }

    fn engine_never_runs() -> MockScriptEngine {
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        engine
    }

    #[tokio::test]
    async fn another_users_session_is_not_found_and_its_claim_names_the_actor_as_owner() {
        let session = stored_session(&script(), 2);
        let id = session.id;
        let m = manager(
            MockScriptRepository::new(),
            store_of(&session),
            engine_never_runs(),
        );
        // The history mock has no expectations: reading it would panic. The
        // claim carries the actor as owner, which the store refuses as not
        // found: no lease is taken.
        for actor in [Actor::client("u2"), Actor::editor("u2")] {
            let errors = [
                Conversations::get_session(&m, &actor, id)
                    .await
                    .unwrap_err(),
                Conversations::messages(&m, &actor, id, 0, 10)
                    .await
                    .unwrap_err(),
                Conversations::variables(&m, &actor, id).await.unwrap_err(),
                Conversations::process_input(&m, &actor, input(id, "hi"))
                    .await
                    .unwrap_err(),
                Conversations::start_turn(&m, &actor, input(id, "hi"))
                    .await
                    .unwrap_err(),
            ];
            for error in errors {
                // Exactly what an unknown id answers.
                assert_eq!(error.code(), ErrorCode::SessionNotFound);
                assert_eq!(error.context.session_id, Some(id));
            }
        }
    }

    #[tokio::test]
    async fn the_owner_reads_its_session_and_its_turn_goes_on_to_the_claim() {
        let session = stored_session(&script(), 2);
        let id = session.id;
        let mut sessions = MockSessionRepository::new();
        let stored = session.clone();
        sessions
            .expect_get()
            .times(1)
            .returning(move |_| Ok(Some(stored.clone())));
        sessions
            .expect_claim_turn()
            .withf(|claim| claim.owner.as_deref() == Some("u1"))
            .times(2)
            .returning(|_| {
                Ok(ClaimOutcome::Busy {
                    lease_expires_at: Some(FixedClock.now()),
                })
            });
        let m = manager(MockScriptRepository::new(), sessions, engine_never_runs());
        let owner = Actor::client("u1");
        assert_eq!(
            Conversations::get_session(&m, &owner, id)
                .await
                .unwrap()
                .user_id,
            "u1"
        );
        let error = Conversations::process_input(&m, &owner, input(id, "hi"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::TurnInProgress);
        let error = Conversations::start_turn(&m, &owner, input(id, "hi"))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::TurnInProgress);
    }

    #[tokio::test]
    async fn administrators_reach_every_session_without_an_extra_read() {
        let mut sessions = MockSessionRepository::new();
        sessions.expect_get().times(0);
        sessions
            .expect_claim_turn()
            .withf(|claim| claim.owner.is_none())
            .times(1)
            .returning(|_| Ok(ClaimOutcome::NotFound));
        let m = manager(MockScriptRepository::new(), sessions, engine_never_runs());
        let id = SessionId::new_random();
        let error = Conversations::start_turn(&m, &Actor::admin("root"), input(id, "hi"))
            .await
            .map(|started| matches!(started, StartedTurn::Replayed(_)))
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::SessionNotFound);
    }

    #[tokio::test]
    async fn a_session_for_another_user_is_forbidden_to_non_admins() {
        let mut scripts = MockScriptRepository::new();
        // The owner (and the admin) get past the check to the script lookup.
        scripts
            .expect_get_project()
            .times(2)
            .returning(|_| Ok(None));
        let mut sessions = MockSessionRepository::new();
        sessions.expect_create().times(0);
        let m = manager(scripts, sessions, engine_never_runs());
        let request = |user: &str| CreateSession {
            user_id: user.into(),
            script_id: ScriptId::new_random(),
            initial_variables: serde_json::Map::new(),
        };
        for actor in [Actor::client("u2"), Actor::editor("ed")] {
            let error = Conversations::create_session(&m, &actor, request("u1"))
                .await
                .unwrap_err();
            assert_eq!(error.code(), ErrorCode::Forbidden);
        }
        for actor in [Actor::client("u1"), Actor::admin("root")] {
            let error = Conversations::create_session(&m, &actor, request("u1"))
                .await
                .unwrap_err();
            assert_eq!(error.code(), ErrorCode::ScriptNotFound);
        }
    }

    #[tokio::test]
    async fn another_users_session_list_is_empty_and_the_store_is_not_asked() {
        let session = stored_session(&script(), 2);
        let mut sessions = MockSessionRepository::new();
        let listed = session.clone();
        sessions
            .expect_list_for_user()
            .withf(|user, _| user == "u1")
            .times(2)
            .returning(move |_, _| Ok(vec![listed.clone()]));
        let m = manager(MockScriptRepository::new(), sessions, engine_never_runs());
        let others = Conversations::list_user_sessions(&m, &Actor::client("u2"), "u1")
            .await
            .unwrap();
        assert!(others.is_empty());
        for actor in [Actor::client("u1"), Actor::admin("root")] {
            let own = Conversations::list_user_sessions(&m, &actor, "u1")
                .await
                .unwrap();
            assert_eq!(own.len(), 1);
        }
    }

    fn catalog(
        scripts: MockScriptRepository,
        engine: MockScriptEngine,
    ) -> ScriptCatalog<MockPorts> {
        let mut cache = MockSessionCache::new();
        cache.expect_get().returning(|_| None);
        ScriptCatalog::new(Adapters {
            scripts: Arc::new(scripts),
            sessions: Arc::new(MockSessionRepository::new()),
            history: Arc::new(MockMessageHistory::new()),
            script_cache: Arc::new(NoCache),
            session_cache: Arc::new(cache),
            engine: Arc::new(engine),
            clock: Arc::new(FixedClock),
            ids: Arc::new(RandomIds),
            // A refused or unparsable write records nothing: no expectation.
            audit: Arc::new(crate::audit::MockAuditLog::new()),
            user_data: Arc::new(crate::privacy::MockUserDataStore::new()),
            cache_janitor: Arc::new(NoCache),
        })
    }

    #[tokio::test]
    async fn only_editors_and_admins_write_scripts_everyone_reads_them() {
        let mut scripts = MockScriptRepository::new();
        scripts.expect_insert().times(0);
        scripts.expect_find_by_name().times(0);
        scripts.expect_list().times(3).returning(|_| Ok(Vec::new()));
        let mut engine = MockScriptEngine::new();
        // Writers get past the check to the parse, which fails here.
        engine.expect_load().times(4).returning(|_, _| {
            Err(crate::engine::ScriptLoadError::Syntax {
                message: "not yaml".into(),
                line: 1,
                column: 1,
            })
        });
        let library = catalog(scripts, engine);
        let draft = ScriptDraft {
            name: "s".into(),
            script_type: None,
            content: "x".into(),
            author: "a".into(),
            description: String::new(),
            tags: vec![],
            mode: LoadMode::Compatible,
        };
        let import = ScriptImport {
            name: "s".into(),
            content: "x".into(),
            description: None,
            tags: vec![],
            mode: LoadMode::Compatible,
        };
        let client = Actor::client("u1");
        let refused = [
            ScriptLibrary::create(&library, &client, draft.clone())
                .await
                .unwrap_err(),
            ScriptLibrary::import(&library, &client, import.clone())
                .await
                .unwrap_err(),
        ];
        for error in refused {
            assert_eq!(error.code(), ErrorCode::Forbidden);
        }
        for writer in [Actor::editor("ed"), Actor::admin("root")] {
            let parsed = [
                ScriptLibrary::create(&library, &writer, draft.clone())
                    .await
                    .unwrap_err(),
                ScriptLibrary::import(&library, &writer, import.clone())
                    .await
                    .unwrap_err(),
            ];
            for error in parsed {
                assert_eq!(error.code(), ErrorCode::ScriptParseError);
            }
        }
        for reader in [client, Actor::editor("ed"), Actor::admin("root")] {
            ScriptLibrary::list(&library, &reader, &ScriptFilter::default())
                .await
                .unwrap();
        }
    }
}

// The crisis protocol: decided in the domain, around the engine.

mod safety_protocol {
    use super::*;
    use crate::actor::Actor;
    use crate::safety::{
        Handoff, Hotline, LocaleResponse, MockSafetyNotifier, RiskLevel, SafetyAlert, SafetyPolicy,
        SignalSource,
    };
    use crate::usecases::Conversations;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    fn policy(cooldown: Option<Duration>) -> SafetyPolicy {
        let mut locales = BTreeMap::new();
        for (locale, number) in [("zh", "400-161-9995"), ("en", "988")] {
            locales.insert(
                locale.to_owned(),
                LocaleResponse {
                    response: "CRISIS {hotlines}".into(),
                    holding_response: "HOLD {hotlines}".into(),
                    hotlines: vec![Hotline {
                        name: "line".into(),
                        number: number.into(),
                    }],
                },
            );
        }
        SafetyPolicy {
            enabled: true,
            threshold: RiskLevel::High,
            default_locale: "zh".into(),
            locales,
            handoff_cooldown: cooldown,
            rules: crate::safety::DetectorRules::default(),
        }
    }

    /// A notifier that keeps what it was given.
    fn notifier(alerts: &Arc<Mutex<Vec<SafetyAlert>>>) -> MockSafetyNotifier {
        let mut notifier = MockSafetyNotifier::new();
        let kept = Arc::clone(alerts);
        notifier
            .expect_notify()
            .returning(move |alert| kept.lock().unwrap().push(alert));
        notifier
    }

    fn protected(
        scripts: MockScriptRepository,
        sessions: MockSessionRepository,
        engine: MockScriptEngine,
        notifier: MockSafetyNotifier,
        cooldown: Option<Duration>,
    ) -> SessionManager<MockPorts> {
        manager(scripts, sessions, engine)
            .with_safety(SafetyProtocol::new(policy(cooldown), Arc::new(notifier)))
    }

    /// A session waiting for input at `a1`.
    fn waiting(script: &Script) -> Session {
        let mut session = stored_session(script, 2);
        session.state.status = ExecutionStatus::WaitingInput;
        session.state.pending_action = Some(crate::engine::PendingAction {
            action_id: "a1".into(),
            action_type: crate::script::ActionType::AiAsk,
            round: 1,
            max_rounds: 3,
            data: json!({}),
        });
        session
    }

    #[tokio::test]
    async fn a_local_detection_replaces_the_script_holds_the_session_and_alerts_after_the_commit() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _recording = metrics::set_default_local_recorder(&recorder);

        let script = script();
        let session = waiting(&script);
        let mut sessions = sessions_claiming(&session, 1);
        sessions.expect_release_turn().times(0);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        let alerts = Arc::new(Mutex::new(Vec::new()));
        // The alert goes out only once the turn is committed.
        let mut notifier = MockSafetyNotifier::new();
        let kept = Arc::clone(&alerts);
        let commits = Arc::clone(&records);
        notifier.expect_notify().times(1).returning(move |alert| {
            assert_eq!(
                commits.lock().unwrap().len(),
                1,
                "notified before the commit"
            );
            kept.lock().unwrap().push(alert);
        });
        let m = protected(scripts_returning(&script), sessions, engine, notifier, None);

        let result = m
            .process_input(input(session.id, "我真的不想活了"))
            .await
            .unwrap();
        assert_eq!(result.session_status, SessionStatus::Handoff);
        assert_eq!(result.execution_status, ExecutionStatus::Paused);
        assert_eq!(result.last_ai_message(), "CRISIS - line: 400-161-9995");
        let record = records.lock().unwrap()[0].clone();
        assert_eq!(record.messages[0].role, MessageRole::User);
        assert_eq!(record.messages[0].content, "我真的不想活了");
        assert_eq!(record.messages[0].action_id.as_deref(), Some("a1"));
        assert_eq!(record.messages[1].role, MessageRole::Assistant);
        let safety = &record.session.state.safety;
        assert_eq!(safety.risk_level, RiskLevel::High);
        assert_eq!(safety.risk_events[0].evidence, "我真的不想活了");
        assert_eq!(safety.risk_events[0].source, SignalSource::Local);
        assert_eq!(
            safety.handoff.as_ref().map(|h| h.resume_status),
            Some(ExecutionStatus::WaitingInput)
        );
        // The script did not move.
        assert_eq!(
            record.session.state.pending_action,
            session.state.pending_action
        );

        let alert = alerts.lock().unwrap()[0].clone();
        assert_eq!(alert.alert_id, result.turn_id);
        assert_eq!(alert.session_id, session.id);
        assert_eq!(alert.user_id, "u1");
        assert_eq!(alert.level, RiskLevel::High);
        assert_eq!(alert.pattern_ids, ["zh.not_live"]);
        assert!(alert.handoff);

        let events: Vec<(String, Vec<String>, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, _, _, _)| key.key().name() == SAFETY_EVENTS_TOTAL)
            .map(|(key, _, _, value)| {
                METRICS
                    .check_series(
                        key.key().name(),
                        key.key().labels().map(metrics::Label::key),
                    )
                    .unwrap();
                let labels = key.key().labels().map(|l| l.value().to_owned()).collect();
                match value {
                    DebugValue::Counter(n) => (key.key().name().to_owned(), labels, n),
                    _ => panic!("a counter"),
                }
            })
            .collect();
        assert_eq!(
            events,
            [(
                SAFETY_EVENTS_TOTAL.to_owned(),
                vec!["local".to_owned(), "high".to_owned()],
                1
            )]
        );
    }

    #[tokio::test]
    async fn the_llm_signal_drops_the_scripts_outcome_for_the_protocol() {
        let script = script();
        let session = waiting(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(1).returning(|r| {
            let mut outcome = outcome_from(&r, ExecutionStatus::Completed);
            outcome.safety_readings = vec![json!({"crisis_signal": true})];
            Ok(outcome)
        });
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let m = protected(
            scripts_returning(&script),
            sessions,
            engine,
            notifier(&alerts),
            None,
        );
        let result = m
            .process_input(input(session.id, "I will give my things away"))
            .await
            .unwrap();
        assert_eq!(result.session_status, SessionStatus::Handoff);
        assert_eq!(result.last_ai_message(), "CRISIS - line: 988");
        let record = records.lock().unwrap()[0].clone();
        assert!(
            record.variables.is_empty(),
            "the script's writes are dropped"
        );
        assert_eq!(record.session.state.variables, session.state.variables);
        assert_eq!(
            record.session.state.safety.risk_events[0].source,
            SignalSource::Llm
        );
        assert_eq!(alerts.lock().unwrap()[0].sources, [SignalSource::Llm]);
    }

    #[tokio::test]
    async fn below_the_threshold_the_script_runs_and_the_signal_is_only_recorded() {
        let script = script();
        let session = waiting(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(1).returning(|r| {
            let mut outcome = outcome_from(&r, ExecutionStatus::WaitingInput);
            outcome.safety_readings = vec![json!({"crisis_signal": false})];
            Ok(outcome)
        });
        let mut notifier = MockSafetyNotifier::new();
        notifier.expect_notify().times(0);
        let m = protected(scripts_returning(&script), sessions, engine, notifier, None);
        let result = m
            .process_input(input(session.id, "活着没意思"))
            .await
            .unwrap();
        assert_eq!(result.session_status, SessionStatus::Active);
        assert_eq!(result.last_ai_message(), "hello there");
        let safety = records.lock().unwrap()[0].session.state.safety.clone();
        assert_eq!(safety.risk_level, RiskLevel::Medium);
        assert!(!safety.risk_events[0].protocol);
        assert!(safety.handoff.is_none());
    }

    #[tokio::test]
    async fn the_scripts_safety_section_sets_reply_threshold_and_continuation() {
        let mut script = script();
        if let ScriptDocument::Session(s) = &mut script.document {
            s.safety = Some(crate::safety::ScriptSafety {
                response: Some("Script says: {hotlines}".into()),
                threshold: Some(RiskLevel::Medium),
                continue_after_acknowledgement: true,
            });
        }
        let session = waiting(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let m = protected(
            scripts_returning(&script),
            sessions,
            engine,
            notifier(&alerts),
            None,
        );
        // Medium reaches this script's threshold.
        let result = m
            .process_input(input(session.id, "I just can't go on"))
            .await
            .unwrap();
        assert_eq!(result.last_ai_message(), "Script says: - line: 988");
        // It continues after acknowledgement: no handoff.
        assert_eq!(result.session_status, SessionStatus::Active);
        let record = records.lock().unwrap()[0].clone();
        assert!(record.session.state.safety.handoff.is_none());
        assert_eq!(record.session.state.status, ExecutionStatus::WaitingInput);
        assert!(!alerts.lock().unwrap()[0].handoff);
    }

    fn in_handoff(script: &Script, since: DateTime<Utc>) -> Session {
        let mut session = waiting(script);
        session.status = SessionStatus::Handoff;
        session.state.status = ExecutionStatus::Paused;
        session.state.safety.risk_level = RiskLevel::High;
        session.state.safety.handoff = Some(Handoff {
            since,
            level: RiskLevel::High,
            resume_status: ExecutionStatus::WaitingInput,
            reason: crate::safety::HandoffReason::Crisis,
        });
        session
    }

    #[tokio::test]
    async fn a_session_in_handoff_gets_the_holding_reply_and_the_script_waits() {
        let script = script();
        let session = in_handoff(&script, FixedClock.now());
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        let mut notifier = MockSafetyNotifier::new();
        notifier.expect_notify().times(0);
        let m = protected(
            scripts_returning(&script),
            sessions,
            engine,
            notifier,
            Some(Duration::from_secs(3600)),
        );
        let result = m.process_input(input(session.id, "好的")).await.unwrap();
        assert_eq!(result.session_status, SessionStatus::Handoff);
        assert_eq!(result.last_ai_message(), "HOLD - line: 400-161-9995");
        let record = records.lock().unwrap()[0].clone();
        assert_eq!(record.messages.len(), 2);
        assert_eq!(
            record.session.state.pending_action,
            session.state.pending_action
        );
    }

    #[tokio::test]
    async fn after_the_cooldown_the_next_message_runs_the_script_again() {
        let script = script();
        let since = FixedClock.now() - chrono::Duration::hours(2);
        let session = in_handoff(&script, since);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine
            .expect_run_turn()
            .times(1)
            .withf(|r| r.state.status == ExecutionStatus::WaitingInput)
            .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
        let mut notifier = MockSafetyNotifier::new();
        notifier.expect_notify().times(0);
        let m = protected(
            scripts_returning(&script),
            sessions,
            engine,
            notifier,
            Some(Duration::from_secs(3600)),
        );
        let result = m.process_input(input(session.id, "小明")).await.unwrap();
        assert_eq!(result.session_status, SessionStatus::Active);
        let record = records.lock().unwrap()[0].clone();
        assert!(record.session.state.safety.handoff.is_none());
        assert_eq!(record.session.state.safety.risk_level, RiskLevel::High);
    }

    #[tokio::test]
    async fn a_finished_script_held_by_the_protocol_is_finished_again_when_released() {
        let script = script();
        let mut session = in_handoff(&script, FixedClock.now());
        session.state.pending_action = None;
        if let Some(handoff) = session.state.safety.handoff.as_mut() {
            handoff.resume_status = ExecutionStatus::Completed;
        }
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let m = protected(
            scripts_returning(&script),
            sessions,
            MockScriptEngine::new(),
            MockSafetyNotifier::new(),
            None,
        );
        let result = Conversations::release_handoff(&m, &Actor::admin("root"), session.id)
            .await
            .unwrap();
        assert_eq!(result.session_status, SessionStatus::Completed);
        assert_eq!(result.execution_status, ExecutionStatus::Completed);
        assert!(records.lock().unwrap()[0].session.completed_at.is_some());
    }

    #[tokio::test]
    async fn a_release_is_not_refused_by_the_users_spent_token_quota() {
        let script = script();
        let session = in_handoff(&script, FixedClock.now());
        let mut sessions = MockSessionRepository::new();
        let stored = session.clone();
        // A release calls no LLM: its claim reads no totals, so a spent
        // quota cannot keep the session in handoff.
        sessions
            .expect_claim_turn()
            .times(1)
            .withf(|claim| claim.usage.is_none())
            .returning(move |claim| Ok(claimed(&stored, claim)));
        let records = committed(&mut sessions);
        let quotas = QuotaConfig {
            session_max_tokens: Some(1),
            ..QuotaConfig::default()
        };
        let m = quota_manager(
            scripts_returning(&script),
            sessions,
            MockScriptEngine::new(),
            quotas,
        )
        .with_safety(SafetyProtocol::new(
            policy(None),
            Arc::new(MockSafetyNotifier::new()),
        ));
        Conversations::release_handoff(&m, &Actor::admin("root"), session.id)
            .await
            .unwrap();
        assert_eq!(records.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn only_editors_and_admins_release_and_only_a_session_in_handoff() {
        let script = script();
        let session = in_handoff(&script, FixedClock.now());
        // A client is refused before anything is claimed.
        let mut sessions = MockSessionRepository::new();
        sessions.expect_claim_turn().times(0);
        let m = protected(
            MockScriptRepository::new(),
            sessions,
            MockScriptEngine::new(),
            MockSafetyNotifier::new(),
            None,
        );
        let err = Conversations::release_handoff(&m, &Actor::client("u1"), session.id)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Forbidden);

        // An editor releases it: active again, where it stood, noted.
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let m = protected(
            scripts_returning(&script),
            sessions,
            MockScriptEngine::new(),
            MockSafetyNotifier::new(),
            None,
        );
        let result = Conversations::release_handoff(&m, &Actor::editor("ed"), session.id)
            .await
            .unwrap();
        assert_eq!(result.session_status, SessionStatus::Active);
        assert_eq!(result.execution_status, ExecutionStatus::WaitingInput);
        let record = records.lock().unwrap()[0].clone();
        assert_eq!(record.messages[0].role, MessageRole::System);
        assert!(record.messages[0].content.contains("ed"));
        assert!(record.session.state.safety.handoff.is_none());

        // A session that is not in handoff: a conflict, and the lease freed.
        let active = waiting(&script);
        let mut sessions = sessions_claiming(&active, 1);
        expect_releases(&mut sessions, 1);
        sessions.expect_commit_turn().times(0);
        let m = protected(
            scripts_returning(&script),
            sessions,
            MockScriptEngine::new(),
            MockSafetyNotifier::new(),
            None,
        );
        let err = Conversations::release_handoff(&m, &Actor::admin("root"), active.id)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict);
    }
}

// ------------------------------------------------------------------ quotas

fn quota_manager(
    scripts: MockScriptRepository,
    sessions: MockSessionRepository,
    engine: MockScriptEngine,
    quotas: QuotaConfig,
) -> SessionManager<MockPorts> {
    let mut cache = MockSessionCache::new();
    cache.expect_get().returning(|_| None);
    cache.expect_put().returning(|_| ());
    cache.expect_invalidate().returning(|_| ());
    let plain = manager_with_cache(scripts, sessions, engine, cache);
    SessionManager::new(
        plain.adapters.clone(),
        SessionManagerConfig {
            quotas,
            ..SessionManagerConfig::default()
        },
    )
}

/// A store whose one claim reads `totals`; the refused turn must release
/// its lease without a failure record and never commit.
fn sessions_refusing(session: &Session, totals: UsageTotals) -> MockSessionRepository {
    let mut sessions = MockSessionRepository::new();
    let stored = session.clone();
    sessions
        .expect_claim_turn()
        .times(1)
        .withf(|claim| claim.usage == Some(UsageWindows::at(FixedClock.now())))
        .returning(move |claim| {
            Ok(ClaimOutcome::Claimed(Box::new(TurnContext {
                lease: TurnLease::claimed(claim, &stored, FixedClock.now()),
                session: stored.clone(),
                history: vec![],
                usage: Some(totals),
            })))
        });
    sessions
        .expect_release_turn()
        .times(1)
        .withf(|_, failure| failure.is_none())
        .returning(|_, _| Ok(()));
    sessions.expect_commit_turn().times(0);
    sessions
}

fn engine_never_runs() -> MockScriptEngine {
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    engine
}

fn quota_refusal(error: &DomainError) -> crate::quota::QuotaExceeded {
    assert_eq!(error.code(), ErrorCode::QuotaExceeded);
    match &error.kind {
        ErrorKind::QuotaExceeded(refused) => *refused,
        other => panic!("not a quota refusal: {other:?}"),
    }
}

#[tokio::test]
async fn a_spent_session_budget_refuses_the_turn_before_the_engine_without_reset() {
    let script = script();
    let session = stored_session(&script, 4);
    let totals = UsageTotals {
        session_tokens: 500,
        ..UsageTotals::default()
    };
    let quotas = QuotaConfig {
        session_max_tokens: Some(500),
        ..QuotaConfig::default()
    };
    let m = quota_manager(
        scripts_returning(&script),
        sessions_refusing(&session, totals),
        engine_never_runs(),
        quotas,
    );
    let error = m.process_input(input(session.id, "hi")).await.unwrap_err();
    let refused = quota_refusal(&error);
    assert_eq!(refused.limit, QuotaLimit::Session);
    assert_eq!((refused.used, refused.limit_tokens), (500, 500));
    assert_eq!(refused.reset_at, None);
    assert!(!error.recovery().can_retry, "a spent session never resets");
    assert_eq!(error.context.session_id, Some(session.id));
}

#[tokio::test]
async fn a_spent_daily_quota_refuses_the_turn_until_utc_midnight() {
    let script = script();
    let session = stored_session(&script, 4);
    let totals = UsageTotals {
        session_tokens: 10,
        user_day_tokens: 1_001,
        global_hour_tokens: 1_001,
    };
    let quotas = QuotaConfig {
        session_max_tokens: Some(500),
        user_daily_tokens: Some(1_000),
        global_hourly_tokens: Some(100_000),
        ..QuotaConfig::default()
    };
    let m = quota_manager(
        scripts_returning(&script),
        sessions_refusing(&session, totals),
        engine_never_runs(),
        quotas,
    );
    let error = m.process_input(input(session.id, "hi")).await.unwrap_err();
    let refused = quota_refusal(&error);
    assert_eq!(refused.limit, QuotaLimit::UserDaily);
    assert_eq!((refused.used, refused.limit_tokens), (1_001, 1_000));
    assert_eq!(
        refused.reset_at,
        Some(Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap())
    );
    assert!(error.recovery().can_retry);
}

#[tokio::test]
async fn a_spent_global_budget_refuses_the_turn_until_the_next_hour() {
    let script = script();
    let session = stored_session(&script, 4);
    let totals = UsageTotals {
        global_hour_tokens: 7_000,
        ..UsageTotals::default()
    };
    let quotas = QuotaConfig {
        global_hourly_tokens: Some(7_000),
        ..QuotaConfig::default()
    };
    let m = quota_manager(
        scripts_returning(&script),
        sessions_refusing(&session, totals),
        engine_never_runs(),
        quotas,
    );
    let error = m.process_input(input(session.id, "hi")).await.unwrap_err();
    let refused = quota_refusal(&error);
    assert_eq!(refused.limit, QuotaLimit::GlobalHourly);
    assert_eq!(
        refused.reset_at,
        Some(Utc.with_ymd_and_hms(2026, 11, 27, 13, 0, 0).unwrap())
    );
}

fn call_record(prompt: &str, response: &str, usage: crate::llm::TokenUsage) -> LlmCallRecord {
    LlmCallRecord {
        action_id: "a1".into(),
        purpose: "ai_say".into(),
        prompt: prompt.into(),
        response: response.into(),
        provider: "mock".into(),
        model: "m".into(),
        temperature: 0.7,
        max_tokens: 100,
        usage,
        started_at: FixedClock.now(),
        prompt_hash: format!("hash of {prompt}"),
        reused: false,
        response_masked: false,
    }
}

#[tokio::test]
async fn a_turn_below_its_limits_runs_and_commits_its_tokens() {
    let script = script();
    let session = stored_session(&script, 4);
    let quotas = QuotaConfig {
        session_max_tokens: Some(500),
        user_daily_tokens: Some(1_000),
        global_hourly_tokens: Some(100_000),
        ..QuotaConfig::default()
    };
    let mut sessions = sessions_claiming(&session, 1);
    sessions.expect_release_turn().times(0);
    sessions
        .expect_commit_turn()
        .times(1)
        .withf(|_, record| {
            // 10 + 5 reported; "abcdefgh" → 2 and "你好" → 2 estimated.
            record.usage
                == TurnUsage {
                    prompt_tokens: 12,
                    completion_tokens: 7,
                    total_tokens: 19,
                    llm_calls: 2,
                }
        })
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(1).returning(|r| {
        let mut outcome = outcome_from(&r, ExecutionStatus::WaitingInput);
        outcome.llm_calls = vec![
            call_record(
                "p",
                "r",
                crate::llm::TokenUsage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    total_tokens: 15,
                },
            ),
            call_record("abcdefgh", "你好", crate::llm::TokenUsage::default()),
        ];
        Ok(outcome)
    });
    let m = quota_manager(scripts_returning(&script), sessions, engine, quotas);
    m.process_input(input(session.id, "hi")).await.unwrap();
}

#[tokio::test]
async fn a_spent_quota_with_when_exceeded_scripted_runs_the_turn_without_the_llm() {
    let script = script();
    let session = stored_session(&script, 4);
    let quotas = QuotaConfig {
        session_max_tokens: Some(500),
        when_exceeded: QuotaAction::Scripted,
        ..QuotaConfig::default()
    };
    let mut sessions = MockSessionRepository::new();
    let stored = session.clone();
    sessions
        .expect_claim_turn()
        .times(1)
        .returning(move |claim| {
            Ok(ClaimOutcome::Claimed(Box::new(TurnContext {
                lease: TurnLease::claimed(claim, &stored, FixedClock.now()),
                session: stored.clone(),
                history: vec![],
                usage: Some(UsageTotals {
                    session_tokens: 500,
                    ..UsageTotals::default()
                }),
            })))
        });
    sessions.expect_release_turn().times(0);
    sessions
        .expect_commit_turn()
        .times(1)
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .withf(|r| r.llm_withheld)
        .times(1)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = quota_manager(scripts_returning(&script), sessions, engine, quotas);
    m.process_input(input(session.id, "hi")).await.unwrap();
}

#[tokio::test]
async fn a_spent_daily_quota_with_when_exceeded_scripted_starts_the_session_without_the_llm() {
    let script = script();
    let mut sessions = MockSessionRepository::new();
    sessions.expect_usage_totals().times(1).returning(|_, _| {
        Ok(UsageTotals {
            user_day_tokens: 2_000,
            ..UsageTotals::default()
        })
    });
    sessions.expect_create().times(1).returning(|_| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .withf(|r| r.llm_withheld)
        .times(1)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let quotas = QuotaConfig {
        user_daily_tokens: Some(2_000),
        when_exceeded: QuotaAction::Scripted,
        ..QuotaConfig::default()
    };
    let m = quota_manager(scripts_returning(&script), sessions, engine, quotas);
    m.create_session(CreateSession {
        user_id: "u1".into(),
        script_id: script.id,
        initial_variables: serde_json::Map::new(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_quotas_no_totals_are_read() {
    let script = script();
    let session = stored_session(&script, 4);
    let mut sessions = MockSessionRepository::new();
    let stored = session.clone();
    sessions
        .expect_claim_turn()
        .times(1)
        .withf(|claim| claim.usage.is_none())
        .returning(move |claim| Ok(claimed(&stored, claim)));
    sessions.expect_usage_totals().times(0);
    sessions
        .expect_commit_turn()
        .times(1)
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts_returning(&script), sessions, engine);
    m.process_input(input(session.id, "hi")).await.unwrap();
}

#[tokio::test]
async fn a_spent_daily_quota_refuses_a_new_session_before_its_first_turn() {
    let script = script();
    let mut sessions = MockSessionRepository::new();
    sessions
        .expect_usage_totals()
        .times(1)
        .withf(|user, windows| user == "u1" && *windows == UsageWindows::at(FixedClock.now()))
        .returning(|_, _| {
            Ok(UsageTotals {
                session_tokens: 0,
                user_day_tokens: 2_000,
                global_hour_tokens: 2_000,
            })
        });
    sessions.expect_create().times(0);
    let quotas = QuotaConfig {
        user_daily_tokens: Some(2_000),
        ..QuotaConfig::default()
    };
    let m = quota_manager(
        scripts_returning(&script),
        sessions,
        engine_never_runs(),
        quotas,
    );
    let error = m
        .create_session(CreateSession {
            user_id: "u1".into(),
            script_id: script.id,
            initial_variables: serde_json::Map::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(quota_refusal(&error).limit, QuotaLimit::UserDaily);
}

/// The quota metrics as declared: tokens of a committed turn by kind, a
/// refusal by limit, and the global budget's spend ratio.
#[tokio::test]
async fn token_and_quota_metrics_are_recorded_as_declared() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);

    let script = script();
    let session = stored_session(&script, 4);
    let quotas = QuotaConfig {
        global_hourly_tokens: Some(4_000),
        ..QuotaConfig::default()
    };
    // A turn below the budget commits 10 + 5 tokens ...
    let mut sessions = MockSessionRepository::new();
    let stored = session.clone();
    sessions
        .expect_claim_turn()
        .times(1)
        .returning(move |claim| {
            Ok(ClaimOutcome::Claimed(Box::new(TurnContext {
                lease: TurnLease::claimed(claim, &stored, FixedClock.now()),
                session: stored.clone(),
                history: vec![],
                usage: Some(UsageTotals {
                    global_hour_tokens: 1_000,
                    ..UsageTotals::default()
                }),
            })))
        });
    sessions.expect_commit_turn().returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().returning(|r| {
        let mut outcome = outcome_from(&r, ExecutionStatus::WaitingInput);
        outcome.llm_calls = vec![call_record(
            "p",
            "r",
            crate::llm::TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
            },
        )];
        Ok(outcome)
    });
    let m = quota_manager(scripts_returning(&script), sessions, engine, quotas);
    m.process_input(input(session.id, "hi")).await.unwrap();
    // ... then one over it is refused.
    let m = quota_manager(
        scripts_returning(&script),
        sessions_refusing(
            &session,
            UsageTotals {
                global_hour_tokens: 4_000,
                ..UsageTotals::default()
            },
        ),
        engine_never_runs(),
        quotas,
    );
    m.process_input(input(session.id, "hi")).await.unwrap_err();

    let mut counters = Vec::new();
    let mut gauges = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        METRICS
            .check_series(key.name(), key.labels().map(metrics::Label::key))
            .unwrap_or_else(|problem| panic!("{problem}"));
        let labels: Vec<String> = key.labels().map(|l| l.value().to_owned()).collect();
        match value {
            DebugValue::Counter(count) if key.name() != TURNS_TOTAL => {
                counters.push((key.name().to_owned(), labels, count));
            }
            DebugValue::Gauge(value) => gauges.push((key.name().to_owned(), labels, value)),
            _ => {}
        }
    }
    counters.sort();
    assert_eq!(
        counters,
        vec![
            (
                LLM_TOKENS_TOTAL.to_owned(),
                vec!["completion".to_owned()],
                5
            ),
            (LLM_TOKENS_TOTAL.to_owned(), vec!["prompt".to_owned()], 10),
            (
                QUOTA_EXCEEDED_TOTAL.to_owned(),
                vec!["global_hourly".to_owned(), "refuse".to_owned()],
                1
            ),
        ]
    );
    assert_eq!(gauges.len(), 1, "{gauges:?}");
    assert_eq!(gauges[0].0, BUDGET_USED_RATIO);
    assert_eq!(gauges[0].1, ["global_hourly"]);
    // The last check read the spent budget.
    assert!((gauges[0].2.into_inner() - 1.0).abs() < f64::EPSILON);
}

#[path = "manager_repair_tests.rs"]
mod repair_intents;

/// `script` republished as version 2: another hash, another session id.
fn version_two_of(script: &Script) -> Script {
    let mut current = script.clone();
    current.content_hash = "hash-2".into();
    current.current_version = 2;
    if let ScriptDocument::Session(session) = &mut current.document {
        session.session_id = "hello_v2".into();
    }
    current
}

#[tokio::test]
async fn a_running_session_runs_on_the_version_it_started_on_not_the_current_one() {
    let v1 = script();
    let session = stored_session(&v1, 4);
    let mut scripts = MockScriptRepository::new();
    scripts.expect_get().times(0);
    let pinned = ScriptVersion::first_of(&v1);
    scripts
        .expect_find_version_by_hash()
        .withf(|_, hash| hash == "hash-1")
        .times(1)
        .returning(move |_, _| Ok(Some(pinned.clone())));
    let mut sessions = sessions_claiming(&session, 1);
    sessions
        .expect_commit_turn()
        .withf(|_, record| record.session.script_hash == "hash-1")
        .times(1)
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .withf(|r| r.script.session_id == "hello")
        .times(1)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts, sessions, engine);
    m.process_input(input(session.id, "好")).await.unwrap();
}

#[tokio::test]
async fn a_session_whose_version_is_gone_continues_on_the_current_one() {
    let v1 = script();
    let current = version_two_of(&v1);
    let session = stored_session(&v1, 4);
    let mut scripts = MockScriptRepository::new();
    scripts
        .expect_find_version_by_hash()
        .times(1)
        .returning(|_, _| Ok(None));
    scripts
        .expect_get()
        .times(1)
        .returning(move |_| Ok(Some(current.clone())));
    let mut sessions = sessions_claiming(&session, 1);
    sessions
        .expect_commit_turn()
        .withf(|_, record| record.session.script_hash == "hash-2")
        .times(1)
        .returning(|_, _| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .withf(|r| r.script.session_id == "hello_v2")
        .times(1)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts, sessions, engine);
    m.process_input(input(session.id, "好")).await.unwrap();
}

/// `script` as a project: deprecated at `deprecated_at`, its current
/// version (hash `hash`) carrying `files`.
fn project_with_files(
    script: &Script,
    hash: &str,
    files: Vec<crate::project::ProjectFile>,
    deprecated_at: Option<DateTime<Utc>>,
) -> MockScriptRepository {
    let mut current = script.clone();
    current.content_hash = hash.to_owned();
    let version = ScriptVersion {
        files,
        ..ScriptVersion::first_of(&current)
    };
    let project = crate::project::ProjectSummary {
        script: current,
        deprecated_at,
        file_count: version.files.len(),
    };
    let mut scripts = MockScriptRepository::new();
    scripts
        .expect_get_project()
        .returning(move |_| Ok(Some(project.clone())));
    scripts
        .expect_get_version()
        .returning(move |_, n| Ok((n == version.number).then(|| version.clone())));
    scripts
}

#[tokio::test]
async fn a_new_session_runs_with_the_current_versions_template_files() {
    let script = script();
    let template = crate::project::ProjectFile {
        path: "_system/config/custom/warm/ai_say_v1.md".into(),
        file_type: crate::project::FileType::Template,
        content: "WARM".into(),
    };
    let scripts = project_with_files(&script, "with-files", vec![template], None);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .times(1)
        .withf(|r| {
            r.templates
                .get("custom/warm/ai_say_v1.md")
                .map(String::as_str)
                == Some("WARM")
                && r.templates.len() == 1
        })
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let mut sessions = MockSessionRepository::new();
    sessions
        .expect_create()
        .times(1)
        .withf(|record| record.session.script_hash == "with-files")
        .returning(|_| Ok(()));
    let m = manager(scripts, sessions, engine);
    m.create_session(CreateSession {
        user_id: "u1".into(),
        script_id: script.id,
        initial_variables: serde_json::Map::new(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_deprecated_project_starts_no_session() {
    let script = script();
    let scripts = project_with_files(&script, "h", vec![], Some(FixedClock.now()));
    let mut sessions = MockSessionRepository::new();
    sessions.expect_create().times(0);
    let m = manager(scripts, sessions, engine_never_runs());
    let error = m
        .create_session(CreateSession {
            user_id: "u1".into(),
            script_id: script.id,
            initial_variables: serde_json::Map::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Conflict);
    assert!(error.to_string().contains("deprecated"), "{error}");
}
