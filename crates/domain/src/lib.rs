//! HeartRule's domain: the entities a counseling session is made of, the typed
//! errors every layer speaks, the port traits adapters implement, and the
//! [`SessionManager`] / [`ScriptCatalog`] services that drive a conversation,
//! offered to adapters as the use-case traits of [`usecases`] (inbound
//! ports), which take the [`Actor`] asking and decide what it may do.
//!
//! This crate performs no I/O and depends on no crate of the workspace.

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
pub mod rate_limit;
pub mod retention;
pub mod safety;
pub mod script;
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
    content_hash, DiffTarget, PublishDraft, Published, ScriptCatalog, ScriptDraft, ScriptImport,
    StoredScript, VersionDiff,
};
pub use engine::{
    ContentSink, EngineState, LlmCallRecord, LoadMode, LoadWarning, ParsedScript, PendingAction,
    ScriptEngine, ScriptLoadError, SkillFrame, TurnOutcome, TurnRequest, ValidationErrorType,
    ValidationIssue, VariableChange, ENGINE_STATE_VERSION,
};
pub use error::{DomainError, ErrorCode, ErrorContext, ErrorKind, ErrorType, Recovery};
pub use ids::{AuditEventId, MessageId, ScriptId, SessionId, TurnId};
pub use llm::{LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream, TokenUsage};
pub use manager::{
    ClaimedTurn, CreateSession, IdempotencyKey, ProcessInput, SafetyProtocol, SessionManager,
    SessionManagerConfig, TurnResult, TurnStart, METRICS, SAFETY_EVENTS_TOTAL, SAFETY_EVENT_TARGET,
};
pub use message::{HistoryEntry, Message, MessageRole, NewMessage, LLM_RAW_OUTPUT};
pub use metric::{MetricDecl, MetricKind, MetricSet};
pub use ports::{
    ClaimOutcome, Clock, FailedTurn, IdGenerator, IdempotentResponse, MessageHistory, NoCache,
    RandomIds, RepositoryError, ScriptCache, ScriptFilter, ScriptRepository, SessionCache,
    SessionRepository, SystemClock, TurnClaim, TurnContext, TurnLease, TurnRecord,
    VariableSnapshot,
};
pub use ports_bundle::{Adapters, Ports};
pub use privacy::{ErasedCounts, ErasedUser, SessionData, UserData, UserDataStore, UserExport};
pub use rate_limit::{RateDecision, RateLimit, RateLimitError, RateLimiter};
pub use retention::{
    CacheCleanupError, CacheJanitor, CacheScanPage, PurgedSessions, RetentionAges, RetentionCounts,
    RetentionStore,
};
pub use safety::{
    DeliveryAttempt, DeliveryOutcome, Handoff, Hotline, LocalDetector, LocaleResponse, NoNotifier,
    RiskEvent, RiskLevel, RiskSignal, SafetyAlert, SafetyDeliveryLog, SafetyNotifier, SafetyPolicy,
    SafetyState, ScriptSafety, SignalSource,
};
pub use script::{
    Action, ActionKind, ActionType, AskConfig, CustomCondition, ExitCriteria, OutputField, Phase,
    SayConfig, Script, ScriptDocument, ScriptStatus, ScriptType, ScriptVersion, SessionScript,
    SkillBinding, SkillConfig, TechniqueParameter, TechniqueScript, ThinkConfig, Topic,
    WorkingDraft,
};
pub use sensitive::{SensitiveValues, SENSITIVE_MASK};
pub use session::{ExecutionStatus, Position, Session, SessionStatus};
pub use usecases::{
    AdminService, Administration, Conversations, PendingTurn, ScriptLibrary, StartedTurn,
    UserErasure,
};
pub use variables::{ValueType, VariableScope, VariableStore, VariableValue};
