//! Port traits the adapters implement (persistence, caches, clock, ids).
//! The LLM and engine ports live in [`crate::llm`] and [`crate::engine`].

use crate::error::ErrorCode;
use crate::ids::{AuditEventId, MessageId, ScriptId, SessionId, TurnId};
use crate::message::{HistoryEntry, Message};
use crate::project::{
    DraftFile, FileWrite, ProjectFile, ProjectFilter, ProjectPage, ProjectSummary, VersionBundle,
};
use crate::quota::{DailyUsage, TurnUsage, UsageTotals, UsageWindows};
use crate::script::{Script, ScriptStatus, ScriptType, ScriptVersion, WorkingDraft};
use crate::session::{Position, Session};
use crate::variables::{ValueType, VariableScope};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

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
    /// A turn's commit was refused because the turn no longer owns its
    /// session's lease (it expired and another turn claimed the session) or
    /// the session moved on; nothing of the turn was written.
    #[error("turn lease lost: {0}")]
    LeaseLost(String),
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
    /// Inserts the script together with its first published version: number
    /// `script.current_version`, the script's content, authored by
    /// `script.author`. Fails with [`RepositoryError::Conflict`] when the
    /// name is taken. The version's files become the draft's files.
    async fn insert(&self, script: &Script) -> Result<(), RepositoryError> {
        self.insert_with_version(script, &ScriptVersion::first_of(script))
            .await
    }
    /// [`Self::insert`] with the first version given (its author, note and
    /// warnings); `version` must carry the script's content and
    /// `current_version` number.
    async fn insert_with_version(
        &self,
        script: &Script,
        version: &ScriptVersion,
    ) -> Result<(), RepositoryError>;
    /// Replaces the script's metadata (name, type, status, author,
    /// description, tags, timestamps); [`RepositoryError::NotFound`] if
    /// absent. Content only changes by publishing a version: a `script`
    /// whose `content_hash` or `current_version` differs from the stored one
    /// fails with [`RepositoryError::Conflict`] and writes nothing.
    async fn update(&self, script: &Script) -> Result<(), RepositoryError>;
    /// Atomically stores `version` and makes it current: the script row
    /// becomes `script`, whose content, hash, document and
    /// `current_version` are the version's. [`RepositoryError::Conflict`]
    /// when the version number is taken (a concurrent publish) or the name
    /// is; [`RepositoryError::NotFound`] when the script is absent.
    async fn publish(
        &self,
        script: &Script,
        version: &ScriptVersion,
    ) -> Result<(), RepositoryError>;
    /// Makes the stored version `number` current (content, hash, document
    /// copied into the script row) and returns the script as stored.
    /// [`RepositoryError::NotFound`] when the script or the version is absent.
    async fn set_current_version(
        &self,
        id: ScriptId,
        number: u32,
        updated_at: DateTime<Utc>,
    ) -> Result<Script, RepositoryError>;
    /// Version `number` of script `id`; `None` when either is absent.
    async fn get_version(
        &self,
        id: ScriptId,
        number: u32,
    ) -> Result<Option<ScriptVersion>, RepositoryError>;
    /// The newest version of script `id` whose content hash is `content_hash`.
    async fn find_version_by_hash(
        &self,
        id: ScriptId,
        content_hash: &str,
    ) -> Result<Option<ScriptVersion>, RepositoryError>;
    /// The highest version number of the script (`None`: no such script).
    async fn latest_version_number(&self, id: ScriptId) -> Result<Option<u32>, RepositoryError>;
    /// Every version of the script, newest first (empty for an unknown script).
    async fn list_versions(&self, id: ScriptId) -> Result<Vec<ScriptVersion>, RepositoryError>;
    /// The script's draft; `None` when the script is absent.
    async fn get_draft(&self, id: ScriptId) -> Result<Option<WorkingDraft>, RepositoryError>;
    /// Saves the draft content and returns the draft as stored (revision one
    /// more than before). With `expected_revision`, a draft at another
    /// revision is left alone and the save fails with
    /// [`RepositoryError::Conflict`]; [`RepositoryError::NotFound`] when the
    /// script is absent.
    async fn save_draft(
        &self,
        id: ScriptId,
        content: &str,
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError>;
    async fn get(&self, id: ScriptId) -> Result<Option<Script>, RepositoryError>;
    async fn find_by_name(&self, name: &str) -> Result<Option<Script>, RepositoryError>;
    /// The technique script whose document declares `technique_id`.
    async fn find_technique(&self, technique_id: &str) -> Result<Option<Script>, RepositoryError>;
    /// Newest first.
    async fn list(&self, filter: &ScriptFilter) -> Result<Vec<Script>, RepositoryError>;
    /// The draft's files in path order (empty for an unknown script).
    async fn list_files(&self, id: ScriptId) -> Result<Vec<DraftFile>, RepositoryError>;
    /// Applies `write` to the draft's files and bumps the draft revision,
    /// atomically, returning the draft as stored. With `expected_revision`,
    /// a draft at another revision is left alone. Fails with
    /// [`RepositoryError::Conflict`] for a stale revision or a
    /// [`FileWrite::Create`] of a taken path, [`RepositoryError::NotFound`]
    /// for an absent script or a replaced or deleted file that is absent.
    async fn write_file(
        &self,
        id: ScriptId,
        write: &FileWrite,
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError>;
    /// Replaces the draft's content and all its files and bumps the
    /// revision, atomically (restoring a version, adding a template
    /// scheme). With `expected_revision`, a draft at another revision is
    /// left alone ([`RepositoryError::Conflict`]);
    /// [`RepositoryError::NotFound`] when the script is absent.
    async fn replace_draft(
        &self,
        id: ScriptId,
        content: &str,
        files: &[ProjectFile],
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError>;
    /// The project (any script type) with its deprecation and file count.
    async fn get_project(&self, id: ScriptId) -> Result<Option<ProjectSummary>, RepositoryError>;
    /// The session scripts passing `filter`, newest first, one page.
    async fn list_projects(&self, filter: &ProjectFilter) -> Result<ProjectPage, RepositoryError>;
    /// Deprecates the project (`Some(at)`) or makes it active again
    /// (`None`) and returns it as stored. [`RepositoryError::Conflict`]
    /// when it is already in that state, [`RepositoryError::NotFound`] when
    /// absent.
    async fn set_deprecated(
        &self,
        id: ScriptId,
        deprecated_at: Option<DateTime<Utc>>,
        updated_at: DateTime<Utc>,
    ) -> Result<ProjectSummary, RepositoryError>;
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
    /// The tokens the turn's LLM calls used, added to the session's and
    /// the user's totals of the UTC hour of `session.updated_at`.
    #[serde(default)]
    pub usage: TurnUsage,
    /// The turn's LLM exchanges, kept with the turn for replays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub llm_exchanges: Vec<LlmExchange>,
}

/// One LLM call of a committed turn as recorded for replays (the
/// `llm_exchanges` table): enough to give a replay the same answer for the
/// same prompt without asking the provider again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmExchange {
    /// The turn that made the call.
    pub turn_id: TurnId,
    /// The turn's number in its session: 1 for the opening turn, then the
    /// session's `turn_count` after each committed turn.
    pub turn_number: u64,
    /// The call's place among the turn's calls, from 0.
    pub call_index: u32,
    /// The action that made the call.
    pub action_id: String,
    /// What the call asked for (`ai_say`, `extract`, `guard_retry`, …).
    pub purpose: String,
    /// [`crate::LlmRequest::prompt_hash`] of the request as sent.
    pub prompt_hash: String,
    /// The prompt, sensitive values masked; kept only where content capture
    /// is allowed ([`crate::SessionManagerConfig::record_prompts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The provider's reply, as the engine read it.
    pub response: String,
    /// The clock reading the turn ran with (its prompts show that time).
    pub created_at: DateTime<Utc>,
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

/// What a turn asks for when it claims its session.
///
/// A claim never waits: it either takes the session's lease at once or
/// reports who holds it, so no connection or lock is held while the engine
/// (and the LLM) works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnClaim {
    pub session_id: SessionId,
    /// The turn's id; it becomes the lease owner and fences the commit.
    pub turn_id: TurnId,
    /// How long the lease lasts unless committed or released; a crashed
    /// owner's lease lapses after this.
    pub lease_duration: Duration,
    /// How many of the newest messages to load for the prompts.
    pub history_window: usize,
    /// The request's `Idempotency-Key`: when a committed turn stored a
    /// response for it, the claim returns that response instead.
    pub idempotency_key: Option<String>,
    /// Claim only a session of this user: another user's session is
    /// [`ClaimOutcome::NotFound`], exactly like an unknown id, and none of
    /// its stored responses is replayed. `None` claims any session (an
    /// administrator, or an embedding service that checked access itself).
    pub owner: Option<String>,
    /// Read the session's, its user's and the global token totals in these
    /// windows with the claim (for quota checks); `None` reads none.
    pub usage: Option<UsageWindows>,
}

/// The lease a claimed turn holds on its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnLease {
    pub session_id: SessionId,
    /// The owner: the id of the turn that claimed the session.
    pub turn_id: TurnId,
    /// `turn_count` as read at claim time; the commit applies only while the
    /// session still has it.
    pub turn_count: u64,
    /// `last_message_seq` as read at claim time; the turn's messages follow it.
    pub last_message_seq: i64,
    /// When the lease lapses unless the turn commits or releases it first.
    pub expires_at: DateTime<Utc>,
}

impl TurnLease {
    /// The lease `claim` took on `session` (as read by the claim), lapsing
    /// at `expires_at`.
    #[must_use]
    pub fn claimed(claim: &TurnClaim, session: &Session, expires_at: DateTime<Utc>) -> Self {
        Self {
            session_id: claim.session_id,
            turn_id: claim.turn_id,
            turn_count: session.turn_count,
            last_message_seq: session.last_message_seq,
            expires_at,
        }
    }
}

/// What a turn reads when its claim succeeds: everything the engine needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnContext {
    pub lease: TurnLease,
    /// The session as of the claim.
    pub session: Session,
    /// The newest messages as the engine sees them (at most the claim's
    /// `history_window`), oldest first.
    pub history: Vec<HistoryEntry>,
    /// The token totals, when the claim asked for them.
    pub usage: Option<UsageTotals>,
}

/// The answer to a [`TurnClaim`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The lease is this turn's: run the engine, then commit or release.
    Claimed(Box<TurnContext>),
    /// A committed turn already answered the claim's `Idempotency-Key`.
    Replay(IdempotentResponse),
    /// Another turn holds the lease (until the given time, when known).
    Busy {
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// No such session.
    NotFound,
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
    /// Claims the session's lease for one turn and reads the turn's context
    /// (the session, its recent messages, a stored idempotent response) in
    /// one go. Never waits for another turn: a held lease is
    /// [`ClaimOutcome::Busy`]; an expired one is taken over.
    async fn claim_turn(&self, claim: &TurnClaim) -> Result<ClaimOutcome, RepositoryError>;
    /// Writes the turn atomically and releases the lease, fenced: it applies
    /// only while `lease` still owns the session and the session's
    /// `turn_count` is the one read at claim time. Otherwise nothing is
    /// written and it fails with [`RepositoryError::LeaseLost`].
    async fn commit_turn(
        &self,
        lease: &TurnLease,
        record: &TurnRecord,
    ) -> Result<(), RepositoryError>;
    /// Ends a turn without applying it: records `failure` (when given; the
    /// session's `last_error` is set only while the lease is still owned)
    /// and releases the lease if this turn still owns it. Releasing a lease
    /// that was lost is not an error.
    async fn release_turn<'a>(
        &self,
        lease: &TurnLease,
        failure: Option<&'a FailedTurn>,
    ) -> Result<(), RepositoryError>;
    /// The user's token total of the UTC day and every user's total of the
    /// UTC hour of `windows` (`session_tokens` is 0): what a new session's
    /// quota check reads.
    async fn usage_totals(
        &self,
        user_id: &str,
        windows: &UsageWindows,
    ) -> Result<UsageTotals, RepositoryError>;
    /// The user's token usage per UTC day from `from` to `to` (inclusive),
    /// oldest first; days without usage are left out.
    async fn user_daily_usage(
        &self,
        user_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, RepositoryError>;
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
    /// The recorded LLM exchanges of a session, by turn number and call
    /// index (empty for a session that ran before recording existed).
    async fn list_llm_exchanges(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<LlmExchange>, RepositoryError>;
}

/// Parsed-version cache: the [`VersionBundle`] of a script's version by its
/// version hash. Implementations fail open: an unreachable cache is a miss,
/// never an error.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ScriptCache: Send + Sync {
    async fn get(&self, id: ScriptId, content_hash: &str) -> Option<VersionBundle>;
    async fn put(&self, id: ScriptId, content_hash: &str, bundle: &VersionBundle);
    async fn invalidate(&self, id: ScriptId);
}

/// Session-snapshot cache for reads of a session: filled on creation and on a
/// read miss, dropped when a turn commits or fails (the next read refills
/// it). Fails open like [`ScriptCache`].
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
    async fn get(&self, _id: ScriptId, _content_hash: &str) -> Option<VersionBundle> {
        None
    }
    async fn put(&self, _id: ScriptId, _content_hash: &str, _bundle: &VersionBundle) {}
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
    fn audit_event_id(&self) -> AuditEventId;
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
    fn audit_event_id(&self) -> AuditEventId {
        AuditEventId::new_random()
    }
}
