//! HeartRule's domain: the entities a counseling session is made of, the typed
//! errors every layer speaks, the port traits adapters implement, and the
//! [`SessionManager`] / [`ScriptCatalog`] services that drive a conversation,
//! offered to adapters as the use-case traits of [`usecases`] (inbound
//! ports), which take the [`Actor`] asking and decide what it may do.
//!
//! This crate performs no I/O and depends on no crate of the workspace.
//!
//! # Embedding the engine
//!
//! A Rust service runs conversations in process with four pieces:
//!
//! 1. A [`ScriptEngine`] — `heartrule_script_engine::runtime::HeartRuleEngine`,
//!    built over an [`LlmProvider`] (the offline mock, or the OpenAI-compatible
//!    stack of `heartrule_llm::build`) and a source of prompt templates.
//! 2. [`Adapters`] for a [`Ports`] type naming every storage, cache, clock and
//!    id adapter. `heartrule_persistence::MemoryStore::adapters(engine)` gives
//!    the in-memory set (nothing survives a restart); the server wires
//!    PostgreSQL and Redis instead.
//! 3. A [`ScriptCatalog`] over those adapters to store scripts
//!    ([`ScriptCatalog::import`] with the [`Actor`] storing them, e.g.
//!    [`Actor::local_operator`]).
//! 4. A [`SessionManager`] over the same adapters:
//!    [`SessionManager::create_session`] runs a session's first turn and
//!    [`SessionManager::process_input`] each user message, returning a
//!    [`TurnResult`] with the AI messages, the position and the variables.
//!    Turns of one session are serialised by a lease: a second message while
//!    one runs fails with [`ErrorCode::TurnInProgress`].
//!
//! `crates/server/examples/embed.rs` does all of it in a few dozen lines
//! (`cargo run --example embed -p heartrule-server`); the conversation-test
//! runner (`heartrule test`) embeds the engine the same way.

pub mod actor;
pub mod audit;
pub mod catalog;
pub mod engine;
pub mod error;
pub mod ids;
pub mod llm;
pub mod manager;
pub mod message;
pub mod metric;
pub mod ports;
pub mod ports_bundle;
pub mod privacy;
pub mod project;
pub mod quota;
pub mod rate_limit;
pub mod repair;
pub mod replay;
pub mod retention;
pub mod safety;
pub mod script;
pub mod script_tests;
pub mod sensitive;
pub mod session;
pub mod usecases;
pub mod variables;

pub use actor::{Actor, Role, UnknownRole, LOCAL_OPERATOR_SUBJECT};
pub use audit::{
    AuditAction, AuditEvent, AuditFilter, AuditLog, AuditTargetType, UnknownAuditName,
    AUDIT_LOG_TARGET,
};
pub use catalog::{
    content_hash, DiffTarget, FileWritten, NewProject, ProjectDetails, ProjectUpdate, PublishDraft,
    Published, ScriptCatalog, ScriptDraft, ScriptImport, StoredScript, VersionDiff, SAMPLE_SESSION,
};
pub use engine::{
    ContentSink, EngineState, LlmCallRecord, LoadMode, LoadWarning, ParsedScript, PendingAction,
    RecordedExchanges, ScriptEngine, ScriptLoadError, SkillFrame, TurnOutcome, TurnRequest,
    ValidationErrorType, ValidationIssue, VariableChange, ENGINE_STATE_VERSION,
};
pub use error::{DomainError, ErrorCode, ErrorContext, ErrorKind, ErrorType, Recovery};
pub use ids::{AuditEventId, MessageId, ScriptId, SessionId, TurnId};
pub use llm::{
    DegradedMode, LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream, TokenUsage,
    DEGRADED_METADATA_KEY, UNEXTRACTED_SOURCE,
};
pub use manager::{
    ClaimedTurn, CreateSession, IdempotencyKey, ProcessInput, RepairProtocol, SafetyProtocol,
    SessionManager, SessionManagerConfig, TurnResult, TurnStart, METRICS, REPAIR_EVENT_TARGET,
    REPAIR_INTENTS_TOTAL, SAFETY_EVENTS_TOTAL, SAFETY_EVENT_TARGET,
};
pub use message::{HistoryEntry, Message, MessageRole, NewMessage, LLM_RAW_OUTPUT};
pub use metric::{MetricDecl, MetricKind, MetricSet};
pub use ports::{
    ClaimOutcome, Clock, FailedTurn, IdGenerator, IdempotentResponse, LlmExchange, MessageHistory,
    NoCache, RandomIds, RepositoryError, ScriptCache, ScriptFilter, ScriptRepository, SessionCache,
    SessionRepository, SystemClock, TurnClaim, TurnContext, TurnLease, TurnRecord,
    VariableSnapshot,
};
pub use ports_bundle::{Adapters, Ports};
pub use privacy::{ErasedCounts, ErasedUser, SessionData, UserData, UserDataStore, UserExport};
pub use project::{
    check_file_path, template_key, template_scheme, version_hash, DraftFile, FileType, FileWrite,
    ProjectFile, ProjectFilter, ProjectPage, ProjectStatus, ProjectSummary, VersionBundle,
    DEFAULT_SCHEME, MAX_FILE_PATH_LEN, TEMPLATE_ROOT,
};
pub use quota::{
    estimate_tokens, DailyUsage, QuotaAction, QuotaConfig, QuotaExceeded, QuotaLimit, QuotaState,
    TurnUsage, UsageTotals, UsageWindows, UserUsage,
};
pub use rate_limit::{RateDecision, RateLimit, RateLimitError, RateLimiter};
pub use repair::{
    IntentDetector, IntentPattern, IntentReading, IntentRules, RepairIntent, RepairPolicy,
    RepairReplies, DECLINED_SOURCE,
};
pub use replay::{
    Divergence, DivergenceAspect, RecordedResponses, ReplayReport, VariableDifference,
};
pub use retention::{
    CacheCleanupError, CacheJanitor, CacheScanPage, PurgedSessions, RetentionAges, RetentionCounts,
    RetentionStore,
};
pub use safety::{
    AlertKind, DeliveryAttempt, DeliveryOutcome, Handoff, HandoffReason, Hotline, LocalDetector,
    LocaleResponse, NoNotifier, RiskEvent, RiskLevel, RiskSignal, SafetyAlert, SafetyDeliveryLog,
    SafetyNotifier, SafetyPolicy, SafetyState, ScriptSafety, SignalSource,
};
pub use script::{
    Action, ActionKind, ActionType, AskConfig, CustomCondition, ExitCriteria, OutputField, Phase,
    SayConfig, Script, ScriptDocument, ScriptStatus, ScriptType, ScriptVersion, SessionScript,
    SkillBinding, SkillConfig, TechniqueParameter, TechniqueScript, ThinkConfig, Topic,
    WorkingDraft,
};
pub use script_tests::{
    ScriptTestFile, ScriptTestReport, ScriptTester, TestCaseReport, TestCoverage, TestFailure,
    TestFileReport, TestSubject,
};
pub use sensitive::{SensitiveValues, SENSITIVE_MASK};
pub use session::{ExecutionStatus, Position, Session, SessionStatus};
pub use usecases::{
    AdminService, Administration, Conversations, PendingTurn, ScriptLibrary, StartedTurn,
    UserErasure,
};
pub use variables::{ValueType, VariableScope, VariableStore, VariableValue};
