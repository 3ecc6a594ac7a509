//! The script-engine port: loading scripts and running one turn.
//!
//! A turn is a pure function of (script, state, input, LLM replies): the
//! engine gets everything it needs in a [`TurnRequest`] (including the clock
//! reading) and returns everything it changed in a [`TurnOutcome`].

use crate::error::{DomainError, ErrorKind};
use crate::llm::TokenUsage;
use crate::message::{HistoryEntry, NewMessage};
use crate::repair::{IntentReading, RepairIntent};
use crate::safety::SafetyState;
use crate::script::{ActionType, ScriptDocument, SessionScript, TechniqueScript};
use crate::session::{ExecutionStatus, Position};
use crate::variables::{VariableScope, VariableStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Version of the serialized [`EngineState`]; bump on incompatible change.
pub const ENGINE_STATE_VERSION: u32 = 1;

/// How strictly a script is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// The closed schema, for editors: deprecated and runtime-only fields fail.
    Strict,
    /// Deprecated and runtime-only fields are normalised, each with a warning.
    Compatible,
}

/// Error families of script validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationErrorType {
    SyntaxError,
    TypeError,
    RequiredFieldMissing,
    EnumValueInvalid,
    ConstraintViolation,
    StructureError,
}

/// One validation problem, located by path
/// (`session.phases[0].topics[1].actions[0].config.content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationIssue {
    pub path: String,
    pub error_type: ValidationErrorType,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// 1-based line and column, for YAML syntax errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// A field compatible mode accepted and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadWarning {
    pub path: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// Why a script could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ScriptLoadError {
    #[error("YAML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("unsupported legacy format at `{path}`: convert the `sessions:` list to a single `session:` root")]
    UnsupportedLegacyFormat { path: String },
    #[error("script failed validation with {} error(s)", issues.len())]
    Invalid { issues: Vec<ValidationIssue> },
}

impl ScriptLoadError {
    /// All problems as validation issues (syntax errors become one issue).
    #[must_use]
    pub fn issues(&self) -> Vec<ValidationIssue> {
        match self {
            Self::Syntax {
                message,
                line,
                column,
            } => vec![ValidationIssue {
                path: "root".into(),
                error_type: ValidationErrorType::SyntaxError,
                message: message.clone(),
                expected: None,
                actual: None,
                suggestion: Some("Fix the YAML syntax at the given line and column".into()),
                line: Some(*line),
                column: Some(*column),
            }],
            Self::UnsupportedLegacyFormat { path } => vec![ValidationIssue {
                path: path.clone(),
                error_type: ValidationErrorType::StructureError,
                message: self.to_string(),
                expected: Some("a `session` or `topic` root".into()),
                actual: Some("a legacy `sessions` list".into()),
                suggestion: Some("Rewrite the script with a single `session:` root".into()),
                line: None,
                column: None,
            }],
            Self::Invalid { issues } => issues.clone(),
        }
    }
}

impl From<ScriptLoadError> for DomainError {
    fn from(value: ScriptLoadError) -> Self {
        match value {
            ScriptLoadError::Invalid { issues } => Self::new(ErrorKind::ScriptValidation(issues)),
            other => Self::new(ErrorKind::ScriptParse(other)),
        }
    }
}

/// A loaded script and the warnings compatible mode produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedScript {
    pub document: ScriptDocument,
    pub warnings: Vec<LoadWarning>,
}

/// The action waiting for user input, with its round counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAction {
    pub action_id: String,
    pub action_type: ActionType,
    pub round: u32,
    pub max_rounds: u32,
    /// Action-specific progress, owned by the engine.
    #[serde(default)]
    pub data: Value,
}

/// A technique running as a sub-flow of `use_skill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillFrame {
    /// The `use_skill` action of the caller.
    pub caller_action_id: String,
    pub technique_id: String,
    /// Cursor inside the technique's topic (phase index is always 0).
    pub position: Position,
    /// The technique's own variables (its inputs and what it extracts).
    pub variables: VariableStore,
}

/// Everything the engine remembers between turns. Versioned serde type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineState {
    pub version: u32,
    pub status: ExecutionStatus,
    pub position: Position,
    pub variables: VariableStore,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_action: Option<PendingAction>,
    /// Fixed on the first turn so later script edits don't change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_scheme: Option<String>,
    /// Innermost last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skill_frames: Vec<SkillFrame>,
    /// Engine bookkeeping (round info, exit decisions, metrics history).
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
    /// The session's risk level, risk events and handoff, kept by the
    /// session manager's crisis protocol (the engine carries it unchanged).
    #[serde(default, skip_serializing_if = "SafetyState::is_clear")]
    pub safety: SafetyState,
}

impl EngineState {
    /// The state of a session that has not run yet.
    #[must_use]
    pub fn initial(variables: VariableStore) -> Self {
        Self {
            version: ENGINE_STATE_VERSION,
            status: ExecutionStatus::Running,
            position: Position::default(),
            variables,
            pending_action: None,
            template_scheme: None,
            skill_frames: Vec::new(),
            metadata: BTreeMap::new(),
            safety: SafetyState::default(),
        }
    }
}

/// Receives the text of AI messages as the LLM produces it (streaming).
///
/// The engine's output guard releases text sentence by sentence, only once
/// it has passed the guard's scan; a reply the guard withdraws after some of
/// it was released is followed by [`ContentSink::retract`], then by the text
/// that replaces it (a regenerated reply, or the action's scripted text).
pub trait ContentSink: Send + Sync {
    /// More text of the AI message of `action_id`, to append to what the
    /// client shows of it.
    fn delta(&self, action_id: &str, text: &str);

    /// The text sent so far for the AI message of `action_id` is withdrawn:
    /// the client discards what it shows of that message; the deltas that
    /// follow are its replacement. The default does nothing, for sinks whose
    /// client cannot take text back (they only ever show released text).
    fn retract(&self, action_id: &str) {
        let _ = action_id;
    }
}

/// One turn's input.
#[derive(Clone)]
pub struct TurnRequest {
    pub script: Arc<SessionScript>,
    /// Techniques `use_skill` may run, by technique id.
    pub techniques: Arc<BTreeMap<String, TechniqueScript>>,
    /// The session's version's own prompt templates by the engine's
    /// relative template path (`default/ai_ask_v1.md`,
    /// `custom/<scheme>/ai_ask_v1.md`): each overrides the engine's
    /// template at the same path. Empty: the engine's templates only.
    pub templates: Arc<BTreeMap<String, String>>,
    pub state: EngineState,
    /// `None` for the first run of a new session.
    pub user_input: Option<String>,
    /// The most recent stored messages, oldest first.
    pub history: Vec<HistoryEntry>,
    pub now: DateTime<Utc>,
    pub sink: Option<Arc<dyn ContentSink>>,
    /// The local detector's repair intent of `user_input` (see
    /// [`crate::repair`]). The engine acts on [`RepairIntent::Skip`] when the
    /// pending action is an `ai_ask`: the question is completed with its
    /// variables declined and the turn moves on. The session manager
    /// handles stop and human itself.
    pub intent: Option<RepairIntent>,
    /// Whether the engine acts on the LLM's reading of the answer to an
    /// `ai_ask` (`metadata.user_intent`): a skip is applied like a local
    /// one, a stop or human request is reported in
    /// [`TurnOutcome::repair`] for the session manager.
    pub llm_intents: bool,
    /// The LLM must not be called this turn (a spent token quota with
    /// [`crate::quota::QuotaAction::Scripted`]): every action runs on its
    /// scripted text as in degraded mode, whatever the engine's own degraded
    /// setting.
    pub llm_withheld: bool,
    /// Responses recorded by an earlier run of the conversation (a replay):
    /// an LLM call whose [`crate::LlmRequest::prompt_hash`] has one gets it
    /// without asking the provider (a streaming sink still receives its
    /// text) and its [`LlmCallRecord::reused`] is set. `None` for live turns.
    pub recorded: Option<Arc<dyn RecordedExchanges>>,
}

/// Responses recorded for LLM calls, by prompt hash, for a replay.
pub trait RecordedExchanges: Send + Sync {
    /// The next unused response recorded for a call with `prompt_hash`,
    /// taken so that a prompt asked twice gets its two answers in the order
    /// they were recorded; `None` when none is left.
    fn take(&self, prompt_hash: &str) -> Option<String>;
}

impl std::fmt::Debug for TurnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRequest")
            .field("session_id", &self.script.session_id)
            .field("position", &self.state.position)
            .field("has_input", &self.user_input.is_some())
            .field("history_len", &self.history.len())
            .field("intent", &self.intent)
            .finish_non_exhaustive()
    }
}

/// A variable written during a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableChange {
    pub name: String,
    pub scope: VariableScope,
    /// Phase or topic id for those scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_key: Option<String>,
    pub value: Value,
    pub source: String,
}

/// One LLM call made during a turn (kept as debug info).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmCallRecord {
    pub action_id: String,
    pub purpose: String,
    pub prompt: String,
    pub response: String,
    pub provider: String,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub usage: TokenUsage,
    pub started_at: DateTime<Utc>,
    /// [`crate::LlmRequest::prompt_hash`] of the request as sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt_hash: String,
    /// The response is a recorded one reused by a replay: no provider was
    /// asked and no token spent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// `response` had sensitive values masked, so it is not the reply the
    /// provider gave and cannot stand in for it in a replay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub response_masked: bool,
}

/// What a successful turn produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnOutcome {
    pub state: EngineState,
    /// The user's input as it enters the history (None on a first run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message: Option<NewMessage>,
    /// AI messages, in order.
    pub messages: Vec<NewMessage>,
    pub variable_changes: Vec<VariableChange>,
    pub llm_calls: Vec<LlmCallRecord>,
    /// The LLM's safety reading of each action that asked for one, whether
    /// or not the action produced a message (a finished `ai_ask` does not):
    /// objects with `crisis_signal` and/or `safety_risk` as the LLM gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety_readings: Vec<Value>,
    /// The repair intent the turn met on the answer to an `ai_ask`: a skip
    /// the engine applied (local or LLM), or a stop or human request the
    /// LLM read, which the session manager acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<IntentReading>,
}

/// The engine port.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ScriptEngine: Send + Sync {
    /// Parses and validates YAML into the typed document.
    fn load(&self, yaml: &str, mode: LoadMode) -> Result<ParsedScript, ScriptLoadError>;

    /// Runs one turn. On error nothing of the turn may be kept: the error
    /// carries the position where the failing action stands.
    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutcome, DomainError>;

    /// The engine's own default-layer prompt templates, by file name
    /// (`ai_ask_v1.md` → text): what a project's new template scheme
    /// starts from when the project has no default templates of its own.
    fn default_templates(&self) -> BTreeMap<String, String>;
}
