//! The one error shape of the API:
//! `{success:false, error:{code, type, message, details, context, recovery}}`
//! (mapped from typed errors, never from message text).
//!
//! Handlers and extractors fail with an [`ApiError`]; the middleware renders
//! it with the request id and trace id and logs it once.

use crate::context::RequestContext;
use crate::dto::{IssueBody, PositionBody};
use crate::routes::project_tests::TestReportBody;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use heartrule_domain::{
    DomainError, ErrorCode, ErrorContext, ErrorKind, ErrorType, LlmError, Recovery,
    RepositoryError, ScriptTestReport, ValidationIssue,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

/// Codes of failures the HTTP layer detects itself (the domain's codes are
/// [`ErrorCode`]).
pub mod codes {
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// A WebSocket message arrived while the socket's previous turn was running.
    pub const TURN_IN_PROGRESS: &str = "TURN_IN_PROGRESS";
    /// No bearer token, or one that failed validation.
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    /// Too many requests for the subject's or client's rate limit.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
}

/// Error type of failures in the request itself.
const REQUEST_TYPE: &str = "request";

/// Where an error happened, plus the request that hit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorContextBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<PositionBody>,
    pub timestamp: DateTime<Utc>,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// What the client can do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryBody {
    pub can_retry: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

/// The `error` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetailBody {
    /// `SCRIPT_NOT_FOUND`, `SESSION_NOT_FOUND`, `SCRIPT_PARSE_ERROR`,
    /// `SCRIPT_VALIDATION_ERROR`, `LLM_SERVICE_ERROR`, `CONFLICT`,
    /// `TURN_IN_PROGRESS`, `QUOTA_EXCEEDED`, `VERSION_NOT_FOUND`,
    /// `DRAFT_INVALID`, `TESTS_FAILED`, `DATABASE_ERROR`, `INVALID_REQUEST`,
    /// `NOT_FOUND`, …
    pub code: String,
    /// `syntax`, `configuration`, `runtime`, `session`, `system` or `request`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Stable public message.
    pub message: String,
    /// What went wrong in detail (absent for internal errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    pub context: ErrorContextBody,
    pub recovery: RecoveryBody,
}

/// Every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorDetailBody,
    /// Script problems, for `SCRIPT_PARSE_ERROR`, `SCRIPT_VALIDATION_ERROR`
    /// and `DRAFT_INVALID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<IssueBody>>,
    /// The conversation tests' report, for `TESTS_FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestReportBody>,
}

/// A failed request, ready to be rendered. Boxed: it travels in `Result`s.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} ({}): {}", .0.code, .0.status, .0.message)]
pub struct ApiError(Box<Repr>);

#[derive(Debug, Clone)]
struct Repr {
    status: StatusCode,
    code: &'static str,
    error_type: &'static str,
    message: String,
    details: Option<String>,
    context: ErrorContext,
    recovery: Recovery,
    issues: Option<Vec<ValidationIssue>>,
    tests: Option<Box<ScriptTestReport>>,
    retry_after: Option<Duration>,
    /// Logged, never sent (internal errors).
    log_detail: Option<String>,
}

impl ApiError {
    fn request(status: StatusCode, code: &'static str, message: String, suggestion: &str) -> Self {
        Self(Box::new(Repr {
            status,
            code,
            error_type: REQUEST_TYPE,
            message,
            details: None,
            context: ErrorContext::default(),
            recovery: Recovery {
                can_retry: false,
                retry_action: None,
                suggestion: Some(suggestion.to_owned()),
            },
            issues: None,
            tests: None,
            retry_after: None,
            log_detail: None,
        }))
    }

    /// 400 `INVALID_REQUEST`.
    #[must_use]
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::request(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            message.into(),
            "Fix the request as described and send it again",
        )
    }

    /// 400 `INVALID_REQUEST` for a path parameter that is not a UUID.
    #[must_use]
    pub fn invalid_uuid(parameter: &str) -> Self {
        Self::invalid_request(format!("path parameter `{parameter}` must be a UUID"))
    }

    /// 404 `NOT_FOUND`: no route (or resource) at this path.
    #[must_use]
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::request(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            message.into(),
            "Check the URL; GET /openapi.json lists every route",
        )
    }

    /// 405 `METHOD_NOT_ALLOWED`.
    #[must_use]
    pub fn method_not_allowed() -> Self {
        Self::request(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            "Method not allowed on this route".into(),
            "Use a method this route accepts; GET /openapi.json lists them",
        )
    }

    /// 415 `UNSUPPORTED_MEDIA_TYPE`.
    #[must_use]
    pub fn unsupported_media_type() -> Self {
        Self::request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "Request body must be JSON".into(),
            "Send the body with `Content-Type: application/json`",
        )
    }

    /// 413 `PAYLOAD_TOO_LARGE`.
    #[must_use]
    pub fn payload_too_large(limit: usize) -> Self {
        Self::request(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds the limit of {limit} bytes"),
            "Send a smaller body",
        )
    }

    /// 409 `TURN_IN_PROGRESS` (WebSocket: one turn at a time per socket).
    #[must_use]
    pub fn turn_in_progress() -> Self {
        Self::request(
            StatusCode::CONFLICT,
            codes::TURN_IN_PROGRESS,
            "A turn is already running on this connection".into(),
            "Wait for the `turn` frame before sending the next message",
        )
    }

    /// 401 `UNAUTHORIZED`: no bearer token, or one that failed validation
    /// (`details` says which check failed; it never echoes the token).
    #[must_use]
    pub fn unauthorized(details: impl Into<String>) -> Self {
        let mut error = Self::request(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "Authentication required".into(),
            "Send a valid bearer token in the `Authorization` header",
        );
        error.0.error_type = ErrorType::Security.as_str();
        error.0.details = Some(details.into());
        error
    }

    /// 429 `RATE_LIMITED`: the caller's bucket is empty; `Retry-After` says
    /// (in whole seconds, rounded up) when the next request would pass.
    #[must_use]
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut error = Self::request(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            "Too many requests".into(),
            "Slow down: wait the Retry-After delay before the next request",
        );
        error.0.recovery.can_retry = true;
        error.0.recovery.retry_action = Some("Retry after the Retry-After delay".to_owned());
        error.0.retry_after = Some(retry_after);
        error
    }

    /// 500 `INTERNAL_SERVER_ERROR`; `detail` is logged, never sent.
    #[must_use]
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::from(DomainError::new(ErrorKind::Internal(detail.into())))
    }

    /// An error for a bare status produced outside the handlers (router,
    /// actix internals, embedded services).
    #[must_use]
    pub fn from_status(status: StatusCode, detail: Option<String>) -> Self {
        let mut error = match status {
            StatusCode::NOT_FOUND => Self::not_found("No route matches this path"),
            StatusCode::METHOD_NOT_ALLOWED => Self::method_not_allowed(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::unsupported_media_type(),
            StatusCode::PAYLOAD_TOO_LARGE => Self::request(
                status,
                codes::PAYLOAD_TOO_LARGE,
                "Request body is too large".into(),
                "Send a smaller body",
            ),
            s if s.is_client_error() => Self::request(
                s,
                codes::INVALID_REQUEST,
                s.canonical_reason().unwrap_or("Invalid request").into(),
                "Fix the request and send it again",
            ),
            _ => {
                let mut internal =
                    Self::internal(detail.clone().unwrap_or_else(|| status.to_string()));
                internal.0.status = status;
                return internal;
            }
        };
        error.0.details = detail;
        error
    }

    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.0.details = Some(details.into());
        self
    }

    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    #[must_use]
    pub fn code(&self) -> &'static str {
        self.0.code
    }

    /// The body, with the request's id and trace id in the context.
    #[must_use]
    pub fn body(&self, request: &RequestContext) -> ErrorBody {
        let ctx = &self.0.context;
        ErrorBody {
            success: false,
            error: ErrorDetailBody {
                code: self.0.code.to_owned(),
                error_type: self.0.error_type.to_owned(),
                message: self.0.message.clone(),
                details: self.0.details.clone(),
                context: ErrorContextBody {
                    script_id: ctx.script_id.map(|id| id.as_uuid()),
                    script_name: ctx.script_name.clone(),
                    session_id: ctx.session_id.map(|id| id.as_uuid()),
                    position: ctx.position.as_ref().map(PositionBody::from),
                    timestamp: Utc::now(),
                    request_id: request.request_id.clone(),
                    trace_id: request.trace_id.clone(),
                },
                recovery: RecoveryBody {
                    can_retry: self.0.recovery.can_retry,
                    retry_action: self.0.recovery.retry_action.clone(),
                    suggestion: self.0.recovery.suggestion.clone(),
                },
            },
            errors: self
                .0
                .issues
                .as_ref()
                .map(|issues| issues.iter().map(IssueBody::from).collect()),
            tests: self.0.tests.as_deref().map(TestReportBody::from),
        }
    }

    /// The JSON response (status, `Retry-After` when known).
    #[must_use]
    pub fn render(&self, request: &RequestContext) -> HttpResponse {
        let mut response = HttpResponse::build(self.0.status);
        if let Some(after) = self.0.retry_after {
            // Whole seconds, rounded up so a client never retries too early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.0.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme the client should use.
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(self.body(request))
    }

    /// One log line: code, type and context; never conversation text.
    pub fn log(&self, request: &RequestContext) {
        let session_id = self.0.context.session_id.map(|id| id.to_string());
        let script_id = self.0.context.script_id.map(|id| id.to_string());
        let action_id = self
            .0
            .context
            .position
            .as_ref()
            .and_then(|p| p.action_id.clone());
        if self.0.status.is_server_error() {
            tracing::error!(
                error.code = self.0.code,
                error.type = self.0.error_type,
                http.response.status_code = self.0.status.as_u16(),
                request_id = %request.request_id,
                session.id = session_id.as_deref(),
                script.id = script_id.as_deref(),
                action.id = action_id.as_deref(),
                error.detail = self.0.log_detail.as_deref(),
                "request failed"
            );
        } else {
            tracing::warn!(
                error.code = self.0.code,
                error.type = self.0.error_type,
                http.response.status_code = self.0.status.as_u16(),
                request_id = %request.request_id,
                session.id = session_id.as_deref(),
                script.id = script_id.as_deref(),
                action.id = action_id.as_deref(),
                "request rejected"
            );
        }
    }
}

/// The `Retry-After` of a `TURN_IN_PROGRESS`: about one LLM call, the time
/// the running turn usually needs.
pub const TURN_IN_PROGRESS_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let code = error.code();
        let status = match code {
            ErrorCode::ScriptNotFound | ErrorCode::SessionNotFound | ErrorCode::VersionNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::ScriptParseError
            | ErrorCode::ScriptValidationError
            | ErrorCode::DraftInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::TestsFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::LlmServiceError => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Conflict | ErrorCode::TurnInProgress => StatusCode::CONFLICT,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::DatabaseError => match &error.kind {
                ErrorKind::Repository(
                    RepositoryError::Unavailable(_) | RepositoryError::Timeout(_),
                ) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ErrorCode::SessionExecutionError
            | ErrorCode::ActionExecutionError
            | ErrorCode::VariableExtractionError
            | ErrorCode::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let issues = match &error.kind {
            ErrorKind::ScriptParse(load) => Some(load.issues()),
            ErrorKind::ScriptValidation(issues) | ErrorKind::DraftInvalid(issues) => {
                Some(issues.clone())
            }
            _ => None,
        };
        let tests = match &error.kind {
            ErrorKind::TestsFailed(report) => Some(report.clone()),
            _ => None,
        };
        let retry_after = match &error.kind {
            ErrorKind::Llm(LlmError::RateLimited { retry_after }) => *retry_after,
            // The running turn usually answers within about one LLM call.
            ErrorKind::TurnInProgress { .. } => Some(TURN_IN_PROGRESS_RETRY_AFTER),
            // Until the window resets; the session limit never does.
            ErrorKind::QuotaExceeded(refused) => refused.reset_at.map(|at| {
                (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(1))
            }),
            _ => None,
        };
        let internal = code == ErrorCode::InternalServerError;
        let detail = error.kind.to_string();
        Self(Box::new(Repr {
            status,
            code: code.as_str(),
            error_type: error.error_type().as_str(),
            message: error.public_message().to_owned(),
            details: (!internal).then(|| detail.clone()),
            log_detail: internal.then_some(detail),
            recovery: error.recovery(),
            context: *error.context,
            issues,
            tests,
            retry_after,
        }))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    /// Rendered without the middleware's context; the middleware renders
    /// it again with the request id and trace id.
    fn error_response(&self) -> HttpResponse {
        self.render(&RequestContext {
            request_id: crate::context::new_request_id(),
            trace_id: None,
        })
    }
}

/// Error handler of the JSON body extractor.
pub(crate) fn json_error(error: JsonPayloadError, _request: &HttpRequest) -> actix_web::Error {
    let api = match &error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::payload_too_large(*limit),
        JsonPayloadError::ContentType => ApiError::unsupported_media_type(),
        JsonPayloadError::Deserialize(e) => {
            ApiError::invalid_request("Request body is not valid for this endpoint")
                .with_details(e.to_string())
        }
        JsonPayloadError::Serialize(e) => ApiError::internal(e.to_string()),
        other => ApiError::invalid_request("Request body could not be read")
            .with_details(other.to_string()),
    };
    api.into()
}

/// Error handler of the query-string extractor.
pub(crate) fn query_error(error: QueryPayloadError, _request: &HttpRequest) -> actix_web::Error {
    ApiError::invalid_request("Query string is not valid for this endpoint")
        .with_details(error.to_string())
        .into()
}

/// Error handler of the path extractor.
pub(crate) fn path_error(error: PathError, _request: &HttpRequest) -> actix_web::Error {
    ApiError::invalid_request("Path parameters are not valid for this endpoint")
        .with_details(error.to_string())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::{ScriptLoadError, SessionId, ValidationErrorType};

    fn ctx() -> RequestContext {
        RequestContext {
            request_id: "req-1".into(),
            trace_id: Some("trace-1".into()),
        }
    }

    #[test]
    fn statuses_follow_the_domain_code() {
        let cases: Vec<(DomainError, u16)> = vec![
            (ErrorKind::ScriptNotFound("x".into()).into(), 404),
            (
                ErrorKind::SessionNotFound(SessionId::new_random()).into(),
                404,
            ),
            (
                ScriptLoadError::Syntax {
                    message: "bad".into(),
                    line: 2,
                    column: 3,
                }
                .into(),
                400,
            ),
            (ErrorKind::ScriptValidation(vec![]).into(), 400),
            (ErrorKind::DraftInvalid(vec![]).into(), 400),
            (
                ErrorKind::VersionNotFound {
                    script_id: heartrule_domain::ScriptId::new_random(),
                    number: 3,
                }
                .into(),
                404,
            ),
            (LlmError::CircuitOpen.into(), 503),
            (ErrorKind::Conflict("c".into()).into(), 409),
            (
                ErrorKind::TurnInProgress {
                    session_id: heartrule_domain::SessionId::new_random(),
                    lease_expires_at: None,
                }
                .into(),
                409,
            ),
            (RepositoryError::LeaseLost("taken".into()).into(), 409),
            (RepositoryError::Unavailable("down".into()).into(), 503),
            (RepositoryError::Timeout("slow".into()).into(), 503),
            (RepositoryError::Query("bad sql".into()).into(), 500),
            (
                ErrorKind::ActionExecution {
                    action_id: "a".into(),
                    message: "m".into(),
                }
                .into(),
                500,
            ),
            (ErrorKind::Internal("boom".into()).into(), 500),
        ];
        for (domain, status) in cases {
            let code = domain.code();
            let api = ApiError::from(domain);
            assert_eq!(api.status().as_u16(), status, "{code:?}");
            assert_eq!(api.code(), code.as_str());
        }
    }

    #[test]
    fn body_carries_context_recovery_and_details_but_not_internal_text() {
        let session_id = SessionId::new_random();
        let api = ApiError::from(
            DomainError::new(ErrorKind::SessionNotFound(session_id)).with_session(session_id),
        );
        let json = serde_json::to_value(api.body(&ctx())).unwrap();
        assert_eq!(json["success"], false);
        assert_eq!(json["error"]["code"], "SESSION_NOT_FOUND");
        assert_eq!(json["error"]["type"], "session");
        assert_eq!(json["error"]["message"], "Session not found or expired");
        assert_eq!(json["error"]["recovery"]["canRetry"], false);
        assert_eq!(json["error"]["context"]["requestId"], "req-1");
        assert_eq!(json["error"]["context"]["traceId"], "trace-1");
        assert_eq!(
            json["error"]["context"]["sessionId"],
            session_id.to_string()
        );
        assert!(json["error"]["details"]
            .as_str()
            .unwrap()
            .contains("not found"));
        assert!(json.get("errors").is_none());

        let internal = ApiError::from(DomainError::new(ErrorKind::Internal("secret".into())));
        let json = serde_json::to_value(internal.body(&ctx())).unwrap();
        assert_eq!(json["error"]["code"], "INTERNAL_SERVER_ERROR");
        assert!(json["error"].get("details").is_none());
        assert!(!json.to_string().contains("secret"));
    }

    #[test]
    fn script_problems_are_listed_at_top_level() {
        let issue = ValidationIssue {
            path: "session.phases[0]".into(),
            error_type: ValidationErrorType::ConstraintViolation,
            message: "too many".into(),
            expected: Some("≤ 10".into()),
            actual: Some("11".into()),
            suggestion: None,
            line: None,
            column: None,
        };
        let api = ApiError::from(DomainError::new(ErrorKind::ScriptValidation(vec![issue])));
        let json = serde_json::to_value(api.body(&ctx())).unwrap();
        assert_eq!(json["errors"][0]["path"], "session.phases[0]");
        assert_eq!(json["errors"][0]["errorType"], "CONSTRAINT_VIOLATION");

        let syntax = ApiError::from(DomainError::from(ScriptLoadError::Syntax {
            message: "bad indent".into(),
            line: 4,
            column: 2,
        }));
        let json = serde_json::to_value(syntax.body(&ctx())).unwrap();
        assert_eq!(json["error"]["code"], "SCRIPT_PARSE_ERROR");
        assert_eq!(json["errors"][0]["errorType"], "SYNTAX_ERROR");
        assert_eq!(json["errors"][0]["line"], 4);
    }

    #[test]
    fn turn_in_progress_is_409_with_retry_after_and_retry_advice() {
        let api = ApiError::from(DomainError::new(ErrorKind::TurnInProgress {
            session_id: heartrule_domain::SessionId::new_random(),
            lease_expires_at: None,
        }));
        let response = api.render(&ctx());
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let json = serde_json::to_value(api.body(&ctx())).unwrap();
        assert_eq!(json["error"]["code"], "TURN_IN_PROGRESS");
        assert_eq!(json["error"]["type"], "session");
        assert_eq!(json["error"]["recovery"]["canRetry"], true);
    }

    #[test]
    fn quota_exceeded_is_429_with_retry_after_until_the_reset_or_none_for_a_session() {
        use heartrule_domain::{QuotaExceeded, QuotaLimit};
        let daily = ApiError::from(DomainError::new(ErrorKind::QuotaExceeded(QuotaExceeded {
            limit: QuotaLimit::UserDaily,
            used: 1_200,
            limit_tokens: 1_000,
            reset_at: Some(Utc::now() + chrono::TimeDelta::seconds(90)),
        })));
        let response = daily.render(&ctx());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let secs: u64 = response
            .headers()
            .get(header::RETRY_AFTER)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((89..=91).contains(&secs), "{secs}");
        let json = serde_json::to_value(daily.body(&ctx())).unwrap();
        assert_eq!(json["error"]["code"], "QUOTA_EXCEEDED");
        assert_eq!(json["error"]["type"], "session");
        assert_eq!(json["error"]["recovery"]["canRetry"], true);
        let details = json["error"]["details"].as_str().unwrap();
        assert!(
            details.contains("user_daily") && details.contains("1200 of 1000"),
            "{details}"
        );

        let session = ApiError::from(DomainError::new(ErrorKind::QuotaExceeded(QuotaExceeded {
            limit: QuotaLimit::Session,
            used: 500,
            limit_tokens: 500,
            reset_at: None,
        })));
        let response = session.render(&ctx());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let json = serde_json::to_value(session.body(&ctx())).unwrap();
        assert_eq!(json["error"]["recovery"]["canRetry"], false);
        assert_eq!(
            json["error"]["recovery"]["retryAction"],
            "Start a new session"
        );
    }

    #[test]
    fn rate_limited_llm_sets_retry_after_rounded_up() {
        let api = ApiError::from(DomainError::from(LlmError::RateLimited {
            retry_after: Some(Duration::from_millis(1500)),
        }));
        let response = api.render(&ctx());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let no_hint = ApiError::from(DomainError::from(LlmError::CircuitOpen)).render(&ctx());
        assert!(no_hint.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn rate_limited_is_429_with_retry_after_rounded_up_and_retry_advice() {
        let api = ApiError::rate_limited(Duration::from_millis(2_100));
        let response = api.render(&ctx());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "3");
        let json = serde_json::to_value(api.body(&ctx())).unwrap();
        assert_eq!(json["error"]["code"], "RATE_LIMITED");
        assert_eq!(json["error"]["type"], "request");
        assert_eq!(json["error"]["recovery"]["canRetry"], true);
        assert!(json["error"]["recovery"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("Retry-After"));
        let whole = ApiError::rate_limited(Duration::from_secs(4)).render(&ctx());
        assert_eq!(whole.headers().get(header::RETRY_AFTER).unwrap(), "4");
    }

    #[test]
    fn bare_statuses_get_http_codes() {
        assert_eq!(
            ApiError::from_status(StatusCode::NOT_FOUND, None).code(),
            codes::NOT_FOUND
        );
        assert_eq!(
            ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED, None).code(),
            codes::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            ApiError::from_status(StatusCode::BAD_REQUEST, Some("x".into())).code(),
            codes::INVALID_REQUEST
        );
        let bad_gateway = ApiError::from_status(StatusCode::BAD_GATEWAY, None);
        assert_eq!(bad_gateway.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(bad_gateway.code(), "INTERNAL_SERVER_ERROR");
    }
}
