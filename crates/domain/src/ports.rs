//! Port traits the adapters implement (persistence, caches, clock, ids).
//! The LLM and engine ports live in [`crate::llm`] and [`crate::engine`].

use crate::error::ErrorCode;
use crate::ids::{MessageId, ScriptId, SessionId, TurnId};
use crate::message::Message;
use crate::script::{Script, ScriptDocument, ScriptStatus, ScriptType};
use crate::session::{Position, Session};
use crate::variables::{ValueType, VariableScope};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Failures of a storage adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RepositoryError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage timed out: {0}")]
    Timeout(String),
    #[error("query failed: {0}")]
    Query(String),
    /// Stored data could not be decoded (unknown enum value, bad JSON, …).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Filters of the script list; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptFilter {
    pub script_type: Option<ScriptType>,
    pub status: Option<ScriptStatus>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ScriptRepository: Send + Sync {
    /// Fails with [`RepositoryError::Conflict`] when the name is taken.
    async fn insert(&self, script: &Script) -> Result<(), RepositoryError>;
    /// Replaces the script with the same id; [`RepositoryError::NotFound`] if absent.
    async fn update(&self, script: &Script) -> Result<(), RepositoryError>;
    async fn get(&self, id: ScriptId) -> Result<Option<Script>, RepositoryError>;
    async fn find_by_name(&self, name: &str) -> Result<Option<Script>, RepositoryError>;
    /// The technique script whose document declares `technique_id`.
    async fn find_technique(&self, technique_id: &str) -> Result<Option<Script>, RepositoryError>;
    /// Newest first.
    async fn list(&self, filter: &ScriptFilter) -> Result<Vec<Script>, RepositoryError>;
}

/// A variable value as written by one turn (the `variables` snapshot table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableSnapshot {
    pub session_id: SessionId,
    pub turn_id: TurnId,
    pub name: String,
    pub scope: VariableScope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_key: Option<String>,
    pub value: Value,
    pub value_type: ValueType,
    pub source: String,
    pub created_at: DateTime<Utc>,
}

/// Everything one turn writes, atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnRecord {
    pub turn_id: TurnId,
    /// The session after the turn (state, status, counters, timestamps).
    pub session: Session,
    /// The user message (if any) and the AI messages, `seq` already assigned.
    pub messages: Vec<Message>,
    pub variables: Vec<VariableSnapshot>,
    /// `Idempotency-Key` and the response to replay for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotentResponse>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdempotentResponse {
    pub key: String,
    /// Hash of the request body, so a reused key with another body is caught.
    pub request_hash: String,
    pub response: Value,
}

/// A turn that failed: nothing of it was applied, but it is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedTurn {
    pub turn_id: TurnId,
    pub session_id: SessionId,
    /// The user's words, kept so they are not lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input: Option<String>,
    pub error_code: ErrorCode,
    pub error_message: String,
    pub position: Position,
    pub failed_at: DateTime<Utc>,
}

/// An open turn: the session row is locked until commit or rollback, so
/// concurrent turns on one session serialise.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SessionTurn: Send {
    /// The session as locked.
    fn session(&self) -> &Session;
    /// The last `limit` messages, oldest first.
    async fn recent_messages(&mut self, limit: usize) -> Result<Vec<Message>, RepositoryError>;
    /// The stored response for an `Idempotency-Key`, if that key was used.
    async fn idempotent_response(
        &mut self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, RepositoryError>;
    /// Writes the turn and releases the lock. Call at most once.
    async fn commit(&mut self, record: &TurnRecord) -> Result<(), RepositoryError>;
    /// Releases the lock without writing.
    async fn rollback(&mut self) -> Result<(), RepositoryError>;
}

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SessionRepository: Send + Sync {
    /// Inserts a new session together with its first turn.
    async fn create(&self, first_turn: &TurnRecord) -> Result<(), RepositoryError>;
    async fn get(&self, id: SessionId) -> Result<Option<Session>, RepositoryError>;
    /// Newest first.
    async fn list_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Session>, RepositoryError>;
    /// Locks the session for one turn; `None` when it does not exist.
    async fn begin_turn(
        &self,
        id: SessionId,
    ) -> Result<Option<Box<dyn SessionTurn>>, RepositoryError>;
    /// Records a failed turn without touching the session's state.
    async fn record_failure(&self, failure: &FailedTurn) -> Result<(), RepositoryError>;
}

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MessageHistory: Send + Sync {
    /// Messages with `seq > after_seq`, oldest first, at most `limit`.
    async fn list_messages(
        &self,
        session_id: SessionId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Message>, RepositoryError>;
    /// Variable snapshots of a session, oldest first.
    async fn list_variable_snapshots(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<VariableSnapshot>, RepositoryError>;
}

/// Parsed-script cache. Implementations fail open: an unreachable cache is a
/// miss, never an error.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ScriptCache: Send + Sync {
    async fn get(&self, id: ScriptId, content_hash: &str) -> Option<ScriptDocument>;
    async fn put(&self, id: ScriptId, content_hash: &str, document: &ScriptDocument);
    async fn invalidate(&self, id: ScriptId);
}

/// Session-snapshot cache, written after commit. Fails open like [`ScriptCache`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SessionCache: Send + Sync {
    async fn get(&self, id: SessionId) -> Option<Session>;
    async fn put(&self, session: &Session);
    async fn invalidate(&self, id: SessionId);
}

/// A cache that stores nothing: used when no cache is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

#[async_trait]
impl ScriptCache for NoCache {
    async fn get(&self, _id: ScriptId, _content_hash: &str) -> Option<ScriptDocument> {
        None
    }
    async fn put(&self, _id: ScriptId, _content_hash: &str, _document: &ScriptDocument) {}
    async fn invalidate(&self, _id: ScriptId) {}
}

#[async_trait]
impl SessionCache for NoCache {
    async fn get(&self, _id: SessionId) -> Option<Session> {
        None
    }
    async fn put(&self, _session: &Session) {}
    async fn invalidate(&self, _id: SessionId) {}
}

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait IdGenerator: Send + Sync {
    fn session_id(&self) -> SessionId;
    fn script_id(&self) -> ScriptId;
    fn turn_id(&self) -> TurnId;
    fn message_id(&self) -> MessageId;
}

/// Random (v4) UUIDs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn session_id(&self) -> SessionId {
        SessionId::new_random()
    }
    fn script_id(&self) -> ScriptId {
        ScriptId::new_random()
    }
    fn turn_id(&self) -> TurnId {
        TurnId::new_random()
    }
    fn message_id(&self) -> MessageId {
        MessageId::new_random()
    }
}
