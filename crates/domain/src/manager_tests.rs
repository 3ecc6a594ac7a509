//! SessionManager against mockall mocks of every port: each failure returns
//! the right typed error and nothing is committed.

use super::*;
use crate::engine::MockScriptEngine;
use crate::engine::VariableChange;
use crate::error::ErrorCode;
use crate::llm::LlmError;
use crate::message::MessageRole;
use crate::ports::{
    MockMessageHistory, MockScriptRepository, MockSessionRepository, MockSessionTurn, NoCache,
    RandomIds, RepositoryError,
};
use crate::script::{
    Action, ActionKind, Phase, SayConfig, Script, ScriptStatus, ScriptType, Topic,
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
    type SessionCache = NoCache;
    type Engine = MockScriptEngine;
    type Clock = FixedClock;
    type Ids = RandomIds;
}

fn manager(
    scripts: MockScriptRepository,
    sessions: MockSessionRepository,
    engine: MockScriptEngine,
) -> SessionManager<MockPorts> {
    SessionManager::new(
        Adapters {
            scripts: Arc::new(scripts),
            sessions: Arc::new(sessions),
            history: Arc::new(MockMessageHistory::new()),
            script_cache: Arc::new(NoCache),
            session_cache: Arc::new(NoCache),
            engine: Arc::new(engine),
            clock: Arc::new(FixedClock),
            ids: Arc::new(RandomIds),
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
    }
}

fn scripts_returning(script: &Script) -> MockScriptRepository {
    let mut scripts = MockScriptRepository::new();
    let found = script.clone();
    scripts
        .expect_get()
        .returning(move |_| Ok(Some(found.clone())));
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
    scripts.expect_get().returning(|_| Ok(None));
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

/// A turn mock for a failing turn: never commits, rolls back once.
fn failing_turn(session: Session) -> MockSessionTurn {
    let mut turn = MockSessionTurn::new();
    turn.expect_session().return_const(session);
    turn.expect_recent_messages().returning(|_| Ok(vec![]));
    turn.expect_idempotent_response().returning(|_| Ok(None));
    turn.expect_commit().times(0);
    turn.expect_rollback().times(1).returning(|| Ok(()));
    turn
}

fn sessions_with_turn(turn: MockSessionTurn, failures: usize) -> MockSessionRepository {
    let mut sessions = MockSessionRepository::new();
    let slot = std::sync::Mutex::new(Some(turn));
    sessions.expect_begin_turn().times(1).returning(move |_| {
        let turn = slot.lock().unwrap().take().expect("one turn");
        Ok(Some(Box::new(turn) as Box<dyn SessionTurn>))
    });
    sessions
        .expect_record_failure()
        .times(failures)
        .returning(|_| Ok(()));
    sessions
}

#[tokio::test]
async fn input_reaches_engine_and_turn_commits_with_contiguous_seq() {
    let script = script();
    let session = stored_session(&script, 4);
    let mut turn = MockSessionTurn::new();
    turn.expect_session().return_const(session.clone());
    turn.expect_recent_messages().returning(|_| Ok(vec![]));
    turn.expect_commit()
        .times(1)
        .withf(|record| {
            let seqs: Vec<i64> = record.messages.iter().map(|m| m.seq).collect();
            seqs == vec![5, 6]
                && record.messages[0].role == MessageRole::User
                && record.messages[0].content == "小李"
                && record.session.last_message_seq == 6
                && record.session.turn_count == 2
                && record.session.status == SessionStatus::Completed
                && record.session.completed_at.is_some()
        })
        .returning(|_| Ok(()));
    turn.expect_rollback().times(0);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .withf(|r| r.user_input.as_deref() == Some("小李"))
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::Completed)));
    let m = manager(
        scripts_returning(&script),
        sessions_with_turn(turn, 0),
        engine,
    );
    let result = m.process_input(input(session.id, "小李")).await.unwrap();
    assert_eq!(result.messages.len(), 1);
    assert_eq!(result.messages[0].seq, 6);
    assert_eq!(result.session_status, SessionStatus::Completed);
    assert!(!result.replayed);
}

#[tokio::test]
async fn missing_session_is_session_not_found() {
    let mut sessions = MockSessionRepository::new();
    sessions.expect_begin_turn().returning(|_| Ok(None));
    sessions.expect_record_failure().times(0);
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
async fn engine_error_rolls_back_and_records_the_failure_with_the_input() {
    let script = script();
    let session = stored_session(&script, 2);
    let mut sessions = MockSessionRepository::new();
    let slot = std::sync::Mutex::new(Some(failing_turn(session.clone())));
    sessions.expect_begin_turn().returning(move |_| {
        Ok(Some(
            Box::new(slot.lock().unwrap().take().unwrap()) as Box<dyn SessionTurn>
        ))
    });
    sessions
        .expect_record_failure()
        .times(1)
        .withf(|f| {
            f.user_input.as_deref() == Some("my words")
                && f.error_code == ErrorCode::ActionExecutionError
                && f.position.action_id.as_deref() == Some("a1")
        })
        .returning(|_| Ok(()));
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
    let sessions = sessions_with_turn(failing_turn(session.clone()), 1);
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
async fn repository_error_on_commit_is_database_error() {
    let script = script();
    let session = stored_session(&script, 2);
    let mut turn = MockSessionTurn::new();
    turn.expect_session().return_const(session.clone());
    turn.expect_recent_messages().returning(|_| Ok(vec![]));
    turn.expect_commit()
        .times(1)
        .returning(|_| Err(RepositoryError::Unavailable("connection reset".into())));
    turn.expect_rollback().times(1).returning(|| Ok(()));
    let sessions = sessions_with_turn(turn, 1);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(scripts_returning(&script), sessions, engine);
    let err = m.process_input(input(session.id, "hi")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseError);
}

#[tokio::test]
async fn repository_error_on_lock_is_database_error() {
    let mut sessions = MockSessionRepository::new();
    sessions
        .expect_begin_turn()
        .returning(|_| Err(RepositoryError::Timeout("pool".into())));
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
    let make_turn = |response: Value, session: Session| {
        let mut turn = MockSessionTurn::new();
        turn.expect_session().return_const(session);
        turn.expect_idempotent_response().returning(move |key| {
            Ok(Some(IdempotentResponse {
                key: key.to_owned(),
                request_hash: "h1".into(),
                response: response.clone(),
            }))
        });
        turn.expect_commit().times(0);
        turn.expect_rollback().times(1).returning(|| Ok(()));
        turn
    };
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    let sessions = sessions_with_turn(make_turn(response.clone(), session.clone()), 0);
    let m = manager(MockScriptRepository::new(), sessions, engine);
    let mut request = input(session.id, "hi");
    request.idempotency = Some(IdempotencyKey {
        key: "k1".into(),
        request_hash: "h1".into(),
    });
    let replayed = m.process_input(request.clone()).await.unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.turn_id, stored.turn_id);

    // The same key with another body is a conflict.
    let sessions = sessions_with_turn(make_turn(response, session.clone()), 0);
    let m = manager(
        MockScriptRepository::new(),
        sessions,
        MockScriptEngine::new(),
    );
    request.idempotency = Some(IdempotencyKey {
        key: "k1".into(),
        request_hash: "other".into(),
    });
    let err = m.process_input(request).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
}

#[tokio::test]
async fn new_turn_stores_its_idempotent_response() {
    let script = script();
    let session = stored_session(&script, 0);
    let mut turn = MockSessionTurn::new();
    turn.expect_session().return_const(session.clone());
    turn.expect_recent_messages().returning(|_| Ok(vec![]));
    turn.expect_idempotent_response().returning(|_| Ok(None));
    turn.expect_commit()
        .times(1)
        .withf(|record| {
            record.idempotency.as_ref().is_some_and(|i| {
                i.key == "k2"
                    && i.request_hash == "h2"
                    && i.response["messages"][0]["content"] == "hello there"
            })
        })
        .returning(|_| Ok(()));
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = manager(
        scripts_returning(&script),
        sessions_with_turn(turn, 0),
        engine,
    );
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
