//! Typed errors. Every failure the engine can report is an
//! [`ErrorKind`]; its code, type, public message and recovery advice are
//! derived from the variant, never from message text.

use crate::engine::{ScriptLoadError, ValidationIssue};
use crate::ids::{ScriptId, SessionId};
use crate::llm::LlmError;
use crate::ports::RepositoryError;
use crate::quota::{QuotaExceeded, QuotaLimit};
use crate::script_tests::ScriptTestReport;
use crate::session::Position;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ScriptNotFound,
    ScriptParseError,
    ScriptValidationError,
    SessionNotFound,
    SessionExecutionError,
    ActionExecutionError,
    LlmServiceError,
    VariableExtractionError,
    DatabaseError,
    InternalServerError,
    /// Addition to the original codes: the request conflicts with stored
    /// state (a taken script name, an `Idempotency-Key` reused for another
    /// body, a turn that lost its session's lease).
    Conflict,
    /// Addition to the original codes: another turn of the same session is
    /// running; this message was not taken and can be sent again shortly.
    TurnInProgress,
    /// Addition to the original codes: the actor is known but lacks the role
    /// the operation needs. (Another user's session answers `SESSION_NOT_FOUND`
    /// instead, so ids cannot be probed.)
    Forbidden,
    /// Addition to the original codes: a token budget is spent (the
    /// session's, the user's daily one or the global hourly one); the turn
    /// was refused before any LLM call and nothing of it was applied.
    QuotaExceeded,
    /// Addition to the original codes: the script has no version with the
    /// requested number.
    VersionNotFound,
    /// Addition to the original codes: the draft cannot be published; the
    /// validation issues say why.
    DraftInvalid,
    /// Addition to the original codes: publishing needs the project's
    /// conversation tests to pass (`scripts.require_tests_to_publish`) and
    /// they did not, or there are none; the report says which case failed.
    TestsFailed,
}

impl ErrorCode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScriptNotFound => "SCRIPT_NOT_FOUND",
            Self::ScriptParseError => "SCRIPT_PARSE_ERROR",
            Self::ScriptValidationError => "SCRIPT_VALIDATION_ERROR",
            Self::SessionNotFound => "SESSION_NOT_FOUND",
            Self::SessionExecutionError => "SESSION_EXECUTION_ERROR",
            Self::ActionExecutionError => "ACTION_EXECUTION_ERROR",
            Self::LlmServiceError => "LLM_SERVICE_ERROR",
            Self::VariableExtractionError => "VARIABLE_EXTRACTION_ERROR",
            Self::DatabaseError => "DATABASE_ERROR",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
            Self::Conflict => "CONFLICT",
            Self::TurnInProgress => "TURN_IN_PROGRESS",
            Self::Forbidden => "FORBIDDEN",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::VersionNotFound => "VERSION_NOT_FOUND",
            Self::DraftInvalid => "DRAFT_INVALID",
            Self::TestsFailed => "TESTS_FAILED",
        }
    }
}

/// Coarse error families of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorType {
    Syntax,
    Configuration,
    Runtime,
    Session,
    System,
    /// Authentication and authorisation failures.
    Security,
}

impl ErrorType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "syntax",
            Self::Configuration => "configuration",
            Self::Runtime => "runtime",
            Self::Session => "session",
            Self::System => "system",
            Self::Security => "security",
        }
    }
}

/// What a client can do about an error. Transport-independent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    pub can_retry: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl Recovery {
    fn new(can_retry: bool, retry_action: Option<&str>, suggestion: &str) -> Self {
        Self {
            can_retry,
            retry_action: retry_action.map(str::to_owned),
            suggestion: Some(suggestion.to_owned()),
        }
    }
}

/// Where an error happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_id: Option<ScriptId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// The failure itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    #[error("script {0} not found")]
    ScriptNotFound(String),
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    #[error("script could not be parsed: {0}")]
    ScriptParse(ScriptLoadError),
    #[error("script failed validation with {} error(s)", .0.len())]
    ScriptValidation(Vec<ValidationIssue>),
    #[error("action {action_id} failed: {message}")]
    ActionExecution { action_id: String, message: String },
    #[error("LLM service error: {0}")]
    Llm(#[from] LlmError),
    #[error("variable extraction failed: {0}")]
    VariableExtraction(String),
    #[error("database error: {0}")]
    Repository(#[from] RepositoryError),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Another turn holds the session's lease.
    #[error("session {session_id} is already running a turn")]
    TurnInProgress {
        session_id: SessionId,
        /// When the other turn's lease lapses at the latest, when known.
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// The actor lacks the role the operation needs.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A token budget is spent; the turn did not run.
    #[error("token quota exceeded: {0}")]
    QuotaExceeded(QuotaExceeded),
    /// The script has no version with this number.
    #[error("script {script_id} has no version {number}")]
    VersionNotFound { script_id: ScriptId, number: u32 },
    /// Publishing refused the draft: it does not parse or validate.
    #[error("the draft failed validation with {} error(s)", .0.len())]
    DraftInvalid(Vec<ValidationIssue>),
    /// Publishing needs passing conversation tests and the draft's failed
    /// (or it has none).
    #[error("the draft's conversation tests did not pass: {}", .0.summary())]
    TestsFailed(Box<ScriptTestReport>),
    #[error("internal error: {0}")]
    Internal(String),
}

/// An error with the context it happened in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}")]
pub struct DomainError {
    pub kind: ErrorKind,
    /// Boxed to keep `Result<_, DomainError>` small.
    pub context: Box<ErrorContext>,
}

impl DomainError {
    #[must_use]
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            context: Box::default(),
        }
    }

    #[must_use]
    pub fn with_session(mut self, session_id: SessionId) -> Self {
        self.context.session_id = Some(session_id);
        self
    }

    #[must_use]
    pub fn with_script(mut self, script_id: ScriptId, script_name: Option<String>) -> Self {
        self.context.script_id = Some(script_id);
        if script_name.is_some() {
            self.context.script_name = script_name;
        }
        self
    }

    #[must_use]
    pub fn with_position(mut self, position: Position) -> Self {
        self.context.position = Some(position);
        self
    }

    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match &self.kind {
            ErrorKind::ScriptNotFound(_) => ErrorCode::ScriptNotFound,
            ErrorKind::SessionNotFound(_) => ErrorCode::SessionNotFound,
            ErrorKind::ScriptParse(_) => ErrorCode::ScriptParseError,
            ErrorKind::ScriptValidation(_) => ErrorCode::ScriptValidationError,
            ErrorKind::ActionExecution { .. } => ErrorCode::ActionExecutionError,
            ErrorKind::Llm(_) => ErrorCode::LlmServiceError,
            ErrorKind::VariableExtraction(_) => ErrorCode::VariableExtractionError,
            ErrorKind::Repository(RepositoryError::LeaseLost(_)) => ErrorCode::Conflict,
            ErrorKind::Repository(_) => ErrorCode::DatabaseError,
            ErrorKind::Conflict(_) => ErrorCode::Conflict,
            ErrorKind::TurnInProgress { .. } => ErrorCode::TurnInProgress,
            ErrorKind::Forbidden(_) => ErrorCode::Forbidden,
            ErrorKind::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            ErrorKind::VersionNotFound { .. } => ErrorCode::VersionNotFound,
            ErrorKind::DraftInvalid(_) => ErrorCode::DraftInvalid,
            ErrorKind::TestsFailed(_) => ErrorCode::TestsFailed,
            ErrorKind::Internal(_) => ErrorCode::InternalServerError,
        }
    }

    #[must_use]
    pub fn error_type(&self) -> ErrorType {
        match self.code() {
            ErrorCode::ScriptNotFound
            | ErrorCode::ScriptValidationError
            | ErrorCode::Conflict
            | ErrorCode::VersionNotFound
            | ErrorCode::DraftInvalid
            | ErrorCode::TestsFailed => ErrorType::Configuration,
            ErrorCode::ScriptParseError => ErrorType::Syntax,
            ErrorCode::SessionNotFound | ErrorCode::TurnInProgress | ErrorCode::QuotaExceeded => {
                ErrorType::Session
            }
            ErrorCode::SessionExecutionError
            | ErrorCode::ActionExecutionError
            | ErrorCode::LlmServiceError
            | ErrorCode::VariableExtractionError => ErrorType::Runtime,
            ErrorCode::DatabaseError | ErrorCode::InternalServerError => ErrorType::System,
            ErrorCode::Forbidden => ErrorType::Security,
        }
    }

    /// The public, stable message of the error code (details carry the rest).
    #[must_use]
    pub fn public_message(&self) -> &'static str {
        match self.code() {
            ErrorCode::ScriptNotFound => "Script not found",
            ErrorCode::SessionNotFound => "Session not found or expired",
            ErrorCode::ScriptParseError => "Failed to parse script YAML content",
            ErrorCode::ScriptValidationError => "Script structure validation failed",
            ErrorCode::LlmServiceError => "LLM service is temporarily unavailable",
            ErrorCode::ActionExecutionError => "Action execution failed",
            ErrorCode::VariableExtractionError => "Failed to extract variables from response",
            ErrorCode::DatabaseError => "Database operation failed",
            ErrorCode::SessionExecutionError => "Session execution failed",
            ErrorCode::InternalServerError => "An internal server error occurred",
            ErrorCode::Conflict => "The request conflicts with the current state",
            ErrorCode::TurnInProgress => "Another message of this session is being processed",
            ErrorCode::Forbidden => "You are not allowed to do this",
            ErrorCode::QuotaExceeded => "The token quota is used up",
            ErrorCode::VersionNotFound => "Script version not found",
            ErrorCode::DraftInvalid => "The draft cannot be published: it failed validation",
            ErrorCode::TestsFailed => {
                "The draft cannot be published: its conversation tests did not pass"
            }
        }
    }

    /// What the client can do: whether a retry may help, and a suggestion.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        if let ErrorKind::Repository(RepositoryError::LeaseLost(_)) = &self.kind {
            return Recovery::new(
                true,
                Some("Send the message again"),
                "This turn outlived its lease and another turn took the session over; nothing of it was applied",
            );
        }
        if let ErrorKind::QuotaExceeded(exceeded) = &self.kind {
            return match exceeded.limit {
                QuotaLimit::Session => Recovery::new(
                    false,
                    Some("Start a new session"),
                    "This session has used all the tokens one session may use; a new session starts with a fresh budget",
                ),
                QuotaLimit::UserDaily => Recovery::new(
                    true,
                    Some("Send the message again after the reset"),
                    "The daily token quota of this user is used up; it resets at the next UTC midnight (Retry-After)",
                ),
                QuotaLimit::GlobalHourly => Recovery::new(
                    true,
                    Some("Send the message again after the reset"),
                    "The service's hourly token budget is used up; it resets at the next full UTC hour (Retry-After)",
                ),
            };
        }
        match self.code() {
            ErrorCode::ScriptParseError | ErrorCode::ScriptValidationError => Recovery {
                can_retry: false,
                retry_action: None,
                suggestion: Some(
                    "Please check and fix the script YAML file, then restart debugging".into(),
                ),
            },
            ErrorCode::LlmServiceError => Recovery::new(
                true,
                Some("Restart debugging session"),
                "Check network connection and LLM service availability",
            ),
            ErrorCode::SessionNotFound => Recovery::new(
                false,
                Some("Create a new debugging session"),
                "The session may have expired, please restart debugging",
            ),
            ErrorCode::Conflict => Recovery::new(
                false,
                None,
                "Use another name or a new Idempotency-Key for a different request; for a draft, reload it and apply the edit again",
            ),
            ErrorCode::TurnInProgress => Recovery::new(
                true,
                Some("Wait for the reply to the previous message, then send again"),
                "One session takes one message at a time; retry after the Retry-After delay (an Idempotency-Key makes the retry safe)",
            ),
            ErrorCode::Forbidden => Recovery::new(
                false,
                None,
                "Ask an administrator for a token with the role this operation needs",
            ),
            ErrorCode::VersionNotFound => Recovery::new(
                false,
                Some("List the script's versions"),
                "Use a version number from GET /api/projects/{id}/versions",
            ),
            ErrorCode::DraftInvalid => Recovery::new(
                false,
                Some("Fix the draft and publish again"),
                "Correct the issues listed in `errors`, save the draft, then publish",
            ),
            ErrorCode::TestsFailed => Recovery::new(
                false,
                Some("Run the project's tests and fix what fails"),
                "POST /api/projects/{id}/test shows each failing case; fix the draft or the tests, then publish",
            ),
            ErrorCode::ActionExecutionError => Recovery::new(
                true,
                Some("Restart debugging or check action configuration"),
                "Review the action configuration in the script",
            ),
            _ => Recovery::new(
                true,
                Some("Restart debugging session"),
                "If the problem persists, please contact support",
            ),
        }
    }
}

impl From<ErrorKind> for DomainError {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl From<RepositoryError> for DomainError {
    fn from(value: RepositoryError) -> Self {
        Self::new(ErrorKind::Repository(value))
    }
}

impl From<LlmError> for DomainError {
    fn from(value: LlmError) -> Self {
        Self::new(ErrorKind::Llm(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_types_and_recovery_follow_the_variant() {
        let err = DomainError::new(ErrorKind::SessionNotFound(SessionId::new_random()));
        assert_eq!(err.code(), ErrorCode::SessionNotFound);
        assert_eq!(err.error_type(), ErrorType::Session);
        assert_eq!(err.public_message(), "Session not found or expired");
        assert!(!err.recovery().can_retry);

        let err = DomainError::from(LlmError::CircuitOpen);
        assert_eq!(err.code(), ErrorCode::LlmServiceError);
        assert_eq!(err.error_type(), ErrorType::Runtime);
        assert!(err.recovery().can_retry);

        let err = DomainError::from(RepositoryError::Unavailable("down".into()));
        assert_eq!(err.code().as_str(), "DATABASE_ERROR");
        assert_eq!(err.error_type().as_str(), "system");

        let err = DomainError::new(ErrorKind::TurnInProgress {
            session_id: SessionId::new_random(),
            lease_expires_at: None,
        });
        assert_eq!(err.code().as_str(), "TURN_IN_PROGRESS");
        assert_eq!(err.error_type(), ErrorType::Session);
        assert!(err.recovery().can_retry);

        let err = DomainError::new(ErrorKind::VersionNotFound {
            script_id: ScriptId::new_random(),
            number: 7,
        });
        assert_eq!(err.code().as_str(), "VERSION_NOT_FOUND");
        assert_eq!(err.error_type(), ErrorType::Configuration);
        assert!(!err.recovery().can_retry);
        let err = DomainError::new(ErrorKind::DraftInvalid(vec![]));
        assert_eq!(err.code().as_str(), "DRAFT_INVALID");
        assert_eq!(
            err.public_message(),
            "The draft cannot be published: it failed validation"
        );
        let err = DomainError::new(ErrorKind::TestsFailed(Box::default()));
        assert_eq!(err.code().as_str(), "TESTS_FAILED");
        assert_eq!(err.error_type(), ErrorType::Configuration);
        assert!(!err.recovery().can_retry);
        assert!(err.to_string().contains("0 passed, 0 failed"));

        let err = DomainError::from(RepositoryError::LeaseLost("taken over".into()));
        assert_eq!(err.code(), ErrorCode::Conflict);
        assert!(err.recovery().can_retry, "a lost lease is worth a retry");
    }

    #[test]
    fn serializes_codes_in_api_spelling() {
        assert_eq!(
            serde_json::to_string(&ErrorCode::LlmServiceError).unwrap(),
            "\"LLM_SERVICE_ERROR\""
        );
        assert_eq!(
            serde_json::to_string(&ErrorType::Configuration).unwrap(),
            "\"configuration\""
        );
    }
}
