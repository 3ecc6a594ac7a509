//! AdminService against mockall mocks: the admin role is required before any
//! port is touched, exports mask sensitive values unless asked, and every
//! export and erasure leaves exactly one audit event, after the fact.

use super::*;
use crate::audit::{AuditTargetType, MockAuditLog};
use crate::engine::{EngineState, MockScriptEngine};
use crate::error::ErrorCode;
use crate::ids::{MessageId, SessionId, TurnId};
use crate::message::{Message, MessageRole};
use crate::ports::{
    LlmExchange, MockMessageHistory, MockScriptRepository, MockSessionRepository, NoCache,
    RandomIds, SystemClock, VariableSnapshot,
};
use crate::privacy::{ErasedUser, MockUserDataStore, SessionData, UserData};
use crate::retention::{CacheCleanupError, MockCacheJanitor};
use crate::script::fixtures::one_topic_script;
use crate::script::{Action, ActionKind, AskConfig, OutputField, Script, ScriptStatus, ScriptType};
use crate::session::{Session, SessionStatus};
use crate::variables::{ValueType, VariableScope, VariableStore, VariableValue};
use crate::{Ports, SENSITIVE_MASK};
use chrono::Utc;
use serde_json::json;
use std::sync::{Arc, Mutex};

const SECRET: &str = "SSN-123-45-6789";

struct AdminPorts;
impl Ports for AdminPorts {
    type Scripts = MockScriptRepository;
    type Sessions = MockSessionRepository;
    type History = MockMessageHistory;
    type ScriptCache = NoCache;
    type SessionCache = NoCache;
    type Engine = MockScriptEngine;
    type Clock = SystemClock;
    type Ids = RandomIds;
    type Audit = MockAuditLog;
    type UserData = MockUserDataStore;
    type CacheJanitor = MockCacheJanitor;
}

struct Mocks {
    scripts: MockScriptRepository,
    sessions: MockSessionRepository,
    audit: MockAuditLog,
    user_data: MockUserDataStore,
    janitor: MockCacheJanitor,
}

impl Mocks {
    /// Mocks that expect no call at all.
    fn untouched() -> Self {
        Self {
            scripts: MockScriptRepository::new(),
            sessions: MockSessionRepository::new(),
            audit: MockAuditLog::new(),
            user_data: MockUserDataStore::new(),
            janitor: MockCacheJanitor::new(),
        }
    }

    fn service(self) -> AdminService<AdminPorts> {
        AdminService::new(Adapters {
            scripts: Arc::new(self.scripts),
            sessions: Arc::new(self.sessions),
            history: Arc::new(MockMessageHistory::new()),
            script_cache: Arc::new(NoCache),
            session_cache: Arc::new(NoCache),
            engine: Arc::new(MockScriptEngine::new()),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            audit: Arc::new(self.audit),
            user_data: Arc::new(self.user_data),
            cache_janitor: Arc::new(self.janitor),
        })
    }
}

/// Collects what the audit mock is asked to record.
fn recording_audit() -> (MockAuditLog, Arc<Mutex<Vec<AuditEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let mut audit = MockAuditLog::new();
    audit.expect_record().returning(move |event| {
        sink.lock().unwrap().push(event.clone());
        Ok(())
    });
    (audit, events)
}

fn script() -> Script {
    let document = ScriptDocument::Session(one_topic_script(
        "intake",
        vec![Action {
            action_id: "ask".into(),
            condition: None,
            kind: ActionKind::Ask(AskConfig {
                content: "Your id?".into(),
                tone: None,
                exit: None,
                output: vec![
                    OutputField {
                        get: "national_id".into(),
                        define: None,
                        scope: None,
                        sensitive: true,
                    },
                    OutputField {
                        get: "name".into(),
                        define: None,
                        scope: None,
                        sensitive: false,
                    },
                ],
                max_rounds: None,
                target_variable: None,
                ai_role: None,
            }),
        }],
    ));
    let now = Utc::now();
    Script {
        id: ScriptId::new_random(),
        name: "intake".into(),
        script_type: ScriptType::Session,
        status: ScriptStatus::Draft,
        content: "session: {}".into(),
        content_hash: "h".into(),
        document,
        current_version: 1,
        version: "1.0.0".into(),
        author: "t".into(),
        description: String::new(),
        tags: vec![],
        created_at: now,
        updated_at: now,
    }
}

fn session_data(script: &Script, user: &str) -> SessionData {
    let now = Utc::now();
    let mut variables = VariableStore::default();
    for (name, value) in [("national_id", SECRET), ("name", "Ann")] {
        variables.set(
            name,
            VariableScope::Session,
            None,
            VariableValue::new(json!(value), "ask", VariableScope::Session, now),
        );
    }
    let session_id = SessionId::new_random();
    let turn_id = TurnId::new_random();
    SessionData {
        session: Session {
            id: session_id,
            user_id: user.into(),
            script_id: script.id,
            script_hash: script.content_hash.clone(),
            status: SessionStatus::Active,
            state: EngineState::initial(variables),
            turn_count: 1,
            last_message_seq: 1,
            last_error: None,
            created_at: now,
            updated_at: now,
            completed_at: None,
        },
        messages: vec![Message {
            id: MessageId::new_random(),
            session_id,
            seq: 1,
            turn_id,
            role: MessageRole::User,
            content: format!("mine is {SECRET}, call me Ann"),
            action_id: None,
            action_type: None,
            metadata: json!({"llmRawOutput": format!("{{\"national_id\":\"{SECRET}\"}}")}),
            created_at: now,
        }],
        variable_history: vec![VariableSnapshot {
            session_id,
            turn_id,
            name: "national_id".into(),
            scope: VariableScope::Session,
            scope_key: None,
            value: json!(SECRET),
            value_type: ValueType::String,
            source: "ask".into(),
            created_at: now,
        }],
        failed_turns: vec![],
        llm_exchanges: vec![LlmExchange {
            turn_id,
            turn_number: 1,
            call_index: 0,
            action_id: "ask".into(),
            purpose: "ai_ask".into(),
            prompt_hash: "h".into(),
            prompt: Some(format!("the visitor said: mine is {SECRET}")),
            response: format!("{{\"national_id\":\"{SECRET}\"}}"),
            created_at: now,
        }],
    }
}

#[tokio::test]
async fn every_operation_needs_the_admin_role_before_touching_a_port() {
    let service = Mocks::untouched().service();
    for actor in [Actor::client("alice"), Actor::editor("ed")] {
        let forbidden = |r: Result<(), DomainError>| r.map_err(|e| e.code());
        assert_eq!(
            forbidden(
                service
                    .audit_events(&actor, &AuditFilter::default())
                    .await
                    .map(drop)
            ),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(
            forbidden(service.export_user(&actor, "alice", true).await.map(drop)),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(
            forbidden(service.erase_user(&actor, "alice").await.map(drop)),
            Err(ErrorCode::Forbidden)
        );
    }
}

#[tokio::test]
async fn audit_events_are_listed_with_the_callers_filter() {
    let mut mocks = Mocks::untouched();
    let filter = AuditFilter {
        action: Some(AuditAction::UserErase),
        limit: 5,
        ..AuditFilter::default()
    };
    let expected = filter.clone();
    mocks
        .audit
        .expect_list_events()
        .withf(move |f| *f == expected)
        .times(1)
        .returning(|_| Ok(vec![]));
    let listed = mocks
        .service()
        .audit_events(&Actor::admin("root"), &filter)
        .await
        .unwrap();
    assert!(listed.is_empty());
}

#[tokio::test]
async fn an_export_masks_sensitive_values_everywhere_and_is_audited() {
    let script = script();
    let data = session_data(&script, "alice");
    let mut mocks = Mocks::untouched();
    let (audit, events) = recording_audit();
    mocks.audit = audit;
    let stored = script.clone();
    mocks
        .scripts
        .expect_get()
        .times(1)
        .returning(move |_| Ok(Some(stored.clone())));
    let returned = data.clone();
    mocks
        .user_data
        .expect_export_user()
        .withf(|user| user == "alice")
        .returning(move |_| {
            Ok(UserData {
                user_id: "alice".into(),
                sessions: vec![returned.clone()],
            })
        });
    let export = mocks
        .service()
        .export_user(&Actor::admin("root"), "alice", false)
        .await
        .unwrap();

    assert!(!export.sensitive_included);
    let text = serde_json::to_string(&export).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains(SENSITIVE_MASK));
    assert!(text.contains("Ann"), "non-sensitive values stay: {text}");
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.action, AuditAction::UserExport);
    assert_eq!(event.target_type, AuditTargetType::User);
    assert_eq!(event.target_id, "alice");
    assert_eq!(event.actor_subject, "root");
    assert_eq!(
        event.after_hash.as_deref(),
        Some(content_hash(&text).as_str())
    );
    assert_eq!(event.details["includeSensitive"], false);
    assert!(!event.details.to_string().contains(SECRET));
}

#[tokio::test]
async fn an_export_asked_with_sensitive_values_shows_them() {
    let script = script();
    let data = session_data(&script, "alice");
    let mut mocks = Mocks::untouched();
    let (audit, events) = recording_audit();
    mocks.audit = audit;
    mocks.user_data.expect_export_user().returning(move |_| {
        Ok(UserData {
            user_id: "alice".into(),
            sessions: vec![data.clone()],
        })
    });
    let export = mocks
        .service()
        .export_user(&Actor::admin("root"), "alice", true)
        .await
        .unwrap();
    assert!(export.sensitive_included);
    assert!(serde_json::to_string(&export).unwrap().contains(SECRET));
    assert_eq!(events.lock().unwrap()[0].details["includeSensitive"], true);
}

#[tokio::test]
async fn an_export_whose_audit_record_fails_hands_out_nothing() {
    let mut mocks = Mocks::untouched();
    mocks.user_data.expect_export_user().returning(|_| {
        Ok(UserData {
            user_id: "alice".into(),
            sessions: vec![],
        })
    });
    mocks
        .audit
        .expect_record()
        .returning(|_| Err(RepositoryError::Unavailable("down".into())));
    let result = mocks
        .service()
        .export_user(&Actor::admin("root"), "alice", true)
        .await;
    assert_eq!(
        result.map(drop).map_err(|e| e.code()),
        Err(ErrorCode::DatabaseError)
    );
}

fn erasing_mocks(user_sessions: Vec<SessionId>) -> Mocks {
    let mut mocks = Mocks::untouched();
    let listed = user_sessions.clone();
    mocks
        .sessions
        .expect_list_for_user()
        .withf(|user, _| user == "alice")
        .returning(move |_, _| {
            Ok(listed
                .iter()
                .map(|id| {
                    let mut s = session_data(&script(), "alice").session;
                    s.id = *id;
                    s
                })
                .collect())
        });
    mocks.user_data.expect_erase_user().returning(move |_| {
        Ok(ErasedUser {
            sessions: user_sessions.clone(),
            counts: ErasedCounts {
                sessions: user_sessions.len() as u64,
                messages: 4,
                variable_snapshots: 2,
                idempotency_keys: 1,
                failed_turns: 1,
                cache_keys: 0,
            },
        })
    });
    mocks
}

#[tokio::test]
async fn an_erasure_clears_store_and_cache_then_records_itself() {
    let ids = vec![SessionId::new_random(), SessionId::new_random()];
    let mut mocks = erasing_mocks(ids.clone());
    let (audit, events) = recording_audit();
    mocks.audit = audit;
    let expected = ids.clone();
    mocks
        .janitor
        .expect_evict_session_snapshots()
        .withf(move |evicted| evicted == expected.as_slice())
        .times(2)
        .returning(|evicted| Ok(if evicted.is_empty() { 0 } else { 1 }));
    let erasure = mocks
        .service()
        .erase_user(&Actor::admin("root"), "alice")
        .await
        .unwrap();
    assert_eq!(erasure.erased.sessions, 2);
    assert_eq!(erasure.erased.messages, 4);
    assert_eq!(erasure.erased.cache_keys, 2);
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, erasure.audit_event_id);
    assert_eq!(events[0].action, AuditAction::UserErase);
    assert_eq!(events[0].target_id, "alice");
    assert_eq!(events[0].details["erased"]["messages"], 4);
    assert_eq!(events[0].details["cacheEvicted"], true);
    for id in &ids {
        assert!(
            !events[0].details.to_string().contains(&id.to_string()),
            "the audit record must not keep the erased session ids"
        );
    }
}

#[tokio::test]
async fn an_unreachable_cache_stops_an_erasure_before_anything_is_deleted() {
    let mut mocks = Mocks::untouched();
    mocks
        .sessions
        .expect_list_for_user()
        .returning(|_, _| Ok(vec![]));
    mocks
        .janitor
        .expect_evict_session_snapshots()
        .times(1)
        .returning(|_| Err(CacheCleanupError("Redis DEL timed out".into())));
    // No erase_user and no record expectation: either call would panic.
    let result = mocks
        .service()
        .erase_user(&Actor::admin("root"), "alice")
        .await;
    assert_eq!(
        result.map(drop).map_err(|e| e.code()),
        Err(ErrorCode::DatabaseError)
    );
}

#[tokio::test]
async fn a_failed_store_erasure_records_nothing() {
    let mut mocks = Mocks::untouched();
    mocks
        .sessions
        .expect_list_for_user()
        .returning(|_, _| Ok(vec![]));
    mocks
        .janitor
        .expect_evict_session_snapshots()
        .returning(|_| Ok(0));
    mocks
        .user_data
        .expect_erase_user()
        .returning(|_| Err(RepositoryError::Unavailable("down".into())));
    let result = mocks
        .service()
        .erase_user(&Actor::admin("root"), "alice")
        .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn a_cache_failure_after_the_erasure_is_recorded_and_reported() {
    let ids = vec![SessionId::new_random()];
    let mut mocks = erasing_mocks(ids);
    let (audit, events) = recording_audit();
    mocks.audit = audit;
    let mut calls = 0;
    mocks
        .janitor
        .expect_evict_session_snapshots()
        .times(2)
        .returning(move |_| {
            calls += 1;
            if calls == 1 {
                Ok(1)
            } else {
                Err(CacheCleanupError("Redis DEL failed".into()))
            }
        });
    let result = mocks
        .service()
        .erase_user(&Actor::admin("root"), "alice")
        .await;
    assert!(result.is_err());
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "the erasure happened and is on record");
    assert_eq!(events[0].details["cacheEvicted"], false);
}
