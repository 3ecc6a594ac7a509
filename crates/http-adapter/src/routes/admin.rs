//! Administration routes (`admin` role): the audit log, and the export and
//! erasure of one user's data. The domain checks the role and records the
//! audit events; these handlers only parse, call and shape the answer.

use crate::auth::CurrentActor;
use crate::dto::storable::{self, StorableText};
use crate::dto::{MessageBody, SessionBody};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::responses::{AdminOnly, Protected};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use heartrule_domain::{
    AuditAction, AuditEvent, AuditFilter, AuditTargetType, DailyUsage, ErasedCounts, FailedTurn,
    LlmExchange, QuotaState, SessionData, UserErasure, UserExport, UserUsage, VariableSnapshot,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The most events one page of the audit log holds.
const MAX_AUDIT_PAGE: usize = 500;
/// A page of the audit log when `limit` is not given.
const DEFAULT_AUDIT_PAGE: usize = 100;
/// The longest user id (the stored column's size).
const MAX_USER_ID_LEN: usize = 255;

/// `GET /api/admin/audit-events` filters; every given one must match.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditEventsQuery {
    /// Only this action.
    #[param(value_type = Option<AuditActionName>)]
    pub action: Option<String>,
    /// Only events of this actor subject.
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[param(pattern = "^[^\\u0000]*$")]
    pub actor: Option<String>,
    /// Only targets of this type.
    #[param(value_type = Option<AuditTargetTypeName>)]
    pub target_type: Option<String>,
    /// Only this script id or user id.
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[param(pattern = "^[^\\u0000]*$")]
    pub target_id: Option<String>,
    /// Events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Events per page (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Matching events to skip (default 0).
    #[param(minimum = 0, maximum = 4294967295_u32, format = Int64)]
    pub offset: Option<u32>,
}

/// The audit actions (`?action=`; the handler parses them with the
/// domain's `AuditAction`, a test keeps both in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AuditActionName {
    #[serde(rename = "script.create")]
    ScriptCreate,
    #[serde(rename = "script.import")]
    ScriptImport,
    #[serde(rename = "script.update")]
    ScriptUpdate,
    #[serde(rename = "script.delete")]
    ScriptDelete,
    #[serde(rename = "user.export")]
    UserExport,
    #[serde(rename = "user.erase")]
    UserErase,
    #[serde(rename = "session.replay")]
    SessionReplay,
}

/// The audit target types (`?targetType=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditTargetTypeName {
    Script,
    User,
    Session,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventBody {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// Who: the actor's subject and roles.
    pub actor_subject: String,
    pub actor_roles: Vec<String>,
    /// What: `script.create`, `script.import`, `script.update`,
    /// `script.delete`, `user.export`, `user.erase` or `session.replay`.
    pub action: String,
    /// `script`, `user` or `session`.
    pub target_type: String,
    pub target_id: String,
    /// Content hash of the target before and after the action, when known.
    pub before_hash: Option<String>,
    pub after_hash: Option<String>,
    /// Action-specific facts (script name, erased counts, …).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<&AuditEvent> for AuditEventBody {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id.as_uuid(),
            occurred_at: e.occurred_at,
            actor_subject: e.actor_subject.clone(),
            actor_roles: e
                .actor_roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            action: e.action.as_str().to_owned(),
            target_type: e.target_type.as_str().to_owned(),
            target_id: e.target_id.clone(),
            before_hash: e.before_hash.clone(),
            after_hash: e.after_hash.clone(),
            details: e.details.clone(),
        }
    }
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventsBody {
    pub events: Vec<AuditEventBody>,
    pub limit: usize,
    pub offset: usize,
}

/// `?includeSensitive=` of the export.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Show the values of variables declared `sensitive: true` (masked as
    /// `[sensitive]` otherwise). Default false.
    pub include_sensitive: Option<bool>,
}

/// One value a turn wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariableSnapshotBody {
    pub turn_id: Uuid,
    pub name: String,
    pub scope: String,
    pub scope_key: Option<String>,
    #[schema(value_type = Object)]
    pub value: Value,
    /// JSON type of the value.
    #[serde(rename = "type")]
    pub value_type: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
}

impl From<&VariableSnapshot> for VariableSnapshotBody {
    fn from(s: &VariableSnapshot) -> Self {
        Self {
            turn_id: s.turn_id.as_uuid(),
            name: s.name.clone(),
            scope: s.scope.as_str().to_owned(),
            scope_key: s.scope_key.clone(),
            value: s.value.clone(),
            value_type: s.value_type.as_str().to_owned(),
            source: s.source.clone(),
            created_at: s.created_at,
        }
    }
}

/// A turn that failed, with the words the user sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedTurnBody {
    pub turn_id: Uuid,
    pub user_input: Option<String>,
    pub error_code: String,
    pub error_message: String,
    pub failed_at: DateTime<Utc>,
}

impl From<&FailedTurn> for FailedTurnBody {
    fn from(f: &FailedTurn) -> Self {
        Self {
            turn_id: f.turn_id.as_uuid(),
            user_input: f.user_input.clone(),
            error_code: f.error_code.as_str().to_owned(),
            error_message: f.error_message.clone(),
            failed_at: f.failed_at,
        }
    }
}

/// One LLM exchange a turn recorded for replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmExchangeBody {
    pub turn_id: Uuid,
    /// 1 for the opening turn, then one more per committed turn.
    pub turn_number: u64,
    /// The call's place among the turn's calls, from 0.
    pub call_index: u32,
    pub action_id: String,
    pub purpose: String,
    /// Hex SHA-256 of the request (purpose, sampling settings, prompt).
    pub prompt_hash: String,
    /// The prompt, kept only where content capture was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    pub response: String,
    pub created_at: DateTime<Utc>,
}

impl From<&LlmExchange> for LlmExchangeBody {
    fn from(e: &LlmExchange) -> Self {
        Self {
            turn_id: e.turn_id.as_uuid(),
            turn_number: e.turn_number,
            call_index: e.call_index,
            action_id: e.action_id.clone(),
            purpose: e.purpose.clone(),
            prompt_hash: e.prompt_hash.clone(),
            prompt: e.prompt.clone(),
            response: e.response.clone(),
            created_at: e.created_at,
        }
    }
}

/// Everything stored for one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedSessionBody {
    pub session: SessionBody,
    /// The engine's whole state (position, pending action, skill frames,
    /// bookkeeping), as stored.
    #[schema(value_type = Object)]
    pub engine_state: Value,
    /// Every message, oldest first.
    pub messages: Vec<MessageBody>,
    /// Every value every turn wrote, oldest first.
    pub variable_history: Vec<VariableSnapshotBody>,
    pub failed_turns: Vec<FailedTurnBody>,
    /// The LLM exchanges its turns recorded (see replays), by turn and call.
    pub llm_exchanges: Vec<LlmExchangeBody>,
}

impl ExportedSessionBody {
    fn new(data: &SessionData) -> Result<Self, ApiError> {
        Ok(Self {
            session: SessionBody::from(&data.session),
            engine_state: serde_json::to_value(&data.session.state).map_err(|e| {
                ApiError::internal(format!("the engine state could not be encoded: {e}"))
            })?,
            messages: data.messages.iter().map(MessageBody::from).collect(),
            variable_history: data
                .variable_history
                .iter()
                .map(VariableSnapshotBody::from)
                .collect(),
            failed_turns: data.failed_turns.iter().map(FailedTurnBody::from).collect(),
            llm_exchanges: data
                .llm_exchanges
                .iter()
                .map(LlmExchangeBody::from)
                .collect(),
        })
    }
}

/// All data of one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserExportBody {
    pub user_id: String,
    pub exported_at: DateTime<Utc>,
    /// Whether sensitive values are shown (`includeSensitive=true`).
    pub sensitive_included: bool,
    /// Oldest first.
    pub sessions: Vec<ExportedSessionBody>,
}

impl UserExportBody {
    fn new(export: &UserExport) -> Result<Self, ApiError> {
        Ok(Self {
            user_id: export.user_id.clone(),
            exported_at: export.exported_at,
            sensitive_included: export.sensitive_included,
            sessions: export
                .sessions
                .iter()
                .map(ExportedSessionBody::new)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Rows and cache entries removed, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasedCountsBody {
    pub sessions: u64,
    pub messages: u64,
    pub variable_snapshots: u64,
    pub idempotency_keys: u64,
    pub failed_turns: u64,
    pub cache_keys: u64,
}

impl From<&ErasedCounts> for ErasedCountsBody {
    fn from(c: &ErasedCounts) -> Self {
        Self {
            sessions: c.sessions,
            messages: c.messages,
            variable_snapshots: c.variable_snapshots,
            idempotency_keys: c.idempotency_keys,
            failed_turns: c.failed_turns,
            cache_keys: c.cache_keys,
        }
    }
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserErasureBody {
    pub user_id: String,
    pub erased: ErasedCountsBody,
    /// The audit event recording the erasure; it stays.
    pub audit_event_id: Uuid,
}

impl From<&UserErasure> for UserErasureBody {
    fn from(e: &UserErasure) -> Self {
        Self {
            user_id: e.user_id.clone(),
            erased: ErasedCountsBody::from(&e.erased),
            audit_event_id: e.audit_event_id.as_uuid(),
        }
    }
}

/// `GET /api/users/{userId}/usage` range: UTC days, both inclusive.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First UTC day (`YYYY-MM-DD`); default 29 days before `to`.
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// Last UTC day (`YYYY-MM-DD`); default today.
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
}

/// One UTC day of a user's token usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyUsageBody {
    #[schema(value_type = String, format = Date)]
    pub day: NaiveDate,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// LLM calls of the day's committed turns.
    pub llm_calls: u64,
    /// Sessions with LLM calls that day.
    pub sessions: u64,
}

impl From<&DailyUsage> for DailyUsageBody {
    fn from(d: &DailyUsage) -> Self {
        Self {
            day: d.day,
            prompt_tokens: d.prompt_tokens,
            completion_tokens: d.completion_tokens,
            total_tokens: d.total_tokens,
            llm_calls: d.llm_calls,
            sessions: d.sessions,
        }
    }
}

/// The configured token limits (`null` when off) and the spend against
/// them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStateBody {
    /// Tokens one session may use over its lifetime.
    pub session_max_tokens: Option<u64>,
    /// Tokens the user may use per UTC day.
    pub user_daily_tokens: Option<u64>,
    /// Tokens all users together may use per UTC hour.
    pub global_hourly_tokens: Option<u64>,
    /// The user's tokens of the current UTC day.
    pub user_day_tokens: u64,
    /// What is left of the daily quota (`null` without one).
    pub user_day_remaining: Option<u64>,
    /// Every user's tokens of the current UTC hour.
    pub global_hour_tokens: u64,
    /// What is left of the hourly budget (`null` without one).
    pub global_hour_remaining: Option<u64>,
    /// When the daily total starts afresh (next UTC midnight).
    pub day_resets_at: DateTime<Utc>,
    /// When the hourly total starts afresh.
    pub hour_resets_at: DateTime<Utc>,
}

impl From<&QuotaState> for QuotaStateBody {
    fn from(q: &QuotaState) -> Self {
        Self {
            session_max_tokens: q.limits.session_max_tokens,
            user_daily_tokens: q.limits.user_daily_tokens,
            global_hourly_tokens: q.limits.global_hourly_tokens,
            user_day_tokens: q.user_day_tokens,
            user_day_remaining: q
                .limits
                .user_daily_tokens
                .map(|limit| limit.saturating_sub(q.user_day_tokens)),
            global_hour_tokens: q.global_hour_tokens,
            global_hour_remaining: q
                .limits
                .global_hourly_tokens
                .map(|limit| limit.saturating_sub(q.global_hour_tokens)),
            day_resets_at: q.day_resets_at,
            hour_resets_at: q.hour_resets_at,
        }
    }
}

/// A user's token usage per UTC day and their quota now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserUsageBody {
    pub user_id: String,
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    /// Days with usage, oldest first (days without any are left out).
    pub days: Vec<DailyUsageBody>,
    pub quota: QuotaStateBody,
}

impl From<&UserUsage> for UserUsageBody {
    fn from(u: &UserUsage) -> Self {
        Self {
            user_id: u.user_id.clone(),
            from: u.from,
            to: u.to,
            days: u.days.iter().map(DailyUsageBody::from).collect(),
            quota: QuotaStateBody::from(&u.quota),
        }
    }
}

/// Days of the usage range when not given.
const DEFAULT_USAGE_DAYS: i64 = 30;

/// The range asked for, within what the store's timestamps can hold
/// (1970 to 9999). A reversed range is empty, not an error: the document
/// cannot say that `from` must precede `to`.
fn usage_range(query: &UsageQuery, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let earliest = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN);
    let latest = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX);
    let to = query.to.unwrap_or(today).clamp(earliest, latest);
    let from = query
        .from
        .unwrap_or_else(|| {
            to.checked_sub_signed(chrono::TimeDelta::days(DEFAULT_USAGE_DAYS - 1))
                .unwrap_or(earliest)
        })
        .clamp(earliest, latest);
    (from, to)
}

fn parse<T: std::str::FromStr>(raw: Option<&str>, name: &str) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    raw.map(|text| {
        text.parse()
            .map_err(|e| ApiError::invalid_request(format!("`{name}`: {e}")))
    })
    .transpose()
}

fn audit_filter(query: AuditEventsQuery) -> Result<AuditFilter, ApiError> {
    let limit = query.limit.map_or(DEFAULT_AUDIT_PAGE, |l| l as usize);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "`limit` must be 1–{MAX_AUDIT_PAGE}"
        )));
    }
    // `since` after `until` is an empty window, not an error: the document
    // cannot say that one bound must precede the other, so the answer is the
    // honest one, no events.
    Ok(AuditFilter {
        action: parse::<AuditAction>(query.action.as_deref(), "action")?,
        actor_subject: query.actor,
        target_type: parse::<AuditTargetType>(query.target_type.as_deref(), "targetType")?,
        target_id: query.target_id,
        since: query.since,
        until: query.until,
        limit,
        offset: query.offset.unwrap_or(0) as usize,
    })
}

fn user_id(raw: &str) -> Result<&str, ApiError> {
    if raw.is_empty() || raw.chars().count() > MAX_USER_ID_LEN {
        return Err(ApiError::invalid_request(format!(
            "`userId` must be 1–{MAX_USER_ID_LEN} characters"
        )));
    }
    Ok(raw)
}

/// The audit log, newest first: every script write and administrative
/// action (admin role).
#[utoipa::path(
    get,
    path = "/api/admin/audit-events",
    tag = "admin",
    params(AuditEventsQuery),
    responses(
        (status = 200, description = "One page of events, newest first", body = AuditEventsBody),
        (status = 400, description = "`INVALID_REQUEST`: an unknown action or target type, a bad time or limit", body = ErrorBody),
        AdminOnly, Protected
    )
)]
pub async fn audit_events(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    query: web::Query<AuditEventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = audit_filter(query.into_inner())?;
    let events = state.admin.audit_events(&actor, &filter).await?;
    Ok(HttpResponse::Ok().json(AuditEventsBody {
        events: events.iter().map(AuditEventBody::from).collect(),
        limit: filter.limit,
        offset: filter.offset,
    }))
}

/// Everything stored about one user (sessions, messages, variables and
/// their history, failed turns) as JSON; sensitive variable values are
/// masked unless `includeSensitive=true`. Audited as `user.export` (admin
/// role).
#[utoipa::path(
    get,
    path = "/api/admin/users/{userId}/export",
    tag = "admin",
    params(("userId" = String, Path, min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$", description = "User id"), ExportQuery),
    responses(
        (status = 200, description = "The user's data (no sessions when none is stored)", body = UserExportBody),
        (status = 400, description = "`INVALID_REQUEST`: `userId` is empty, longer than 255 characters or holds a NUL, or `includeSensitive` is not a boolean", body = ErrorBody),
        AdminOnly, Protected
    )
)]
pub async fn export_user(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    path: web::Path<StorableText>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(&path)?;
    let include_sensitive = query.include_sensitive.unwrap_or(false);
    let export = state
        .admin
        .export_user(&actor, user, include_sensitive)
        .await?;
    Ok(HttpResponse::Ok().json(UserExportBody::new(&export)?))
}

/// Erases everything stored about one user, in PostgreSQL and in Redis,
/// and answers with what was removed. The audit record of the erasure
/// (`user.erase`) stays (admin role).
#[utoipa::path(
    delete,
    path = "/api/admin/users/{userId}",
    tag = "admin",
    params(("userId" = String, Path, min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$", description = "User id")),
    responses(
        (status = 200, description = "What was erased (all zero when nothing was stored)", body = UserErasureBody),
        (status = 400, description = "`INVALID_REQUEST`: `userId` is empty, longer than 255 characters or holds a NUL", body = ErrorBody),
        AdminOnly, Protected
    )
)]
pub async fn erase_user(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    path: web::Path<StorableText>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(&path)?;
    let erasure = state.admin.erase_user(&actor, user).await?;
    Ok(HttpResponse::Ok().json(UserErasureBody::from(&erasure)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_queries_become_filters_or_invalid_requests() {
        let filter = audit_filter(AuditEventsQuery {
            action: Some("user.erase".into()),
            target_type: Some("user".into()),
            limit: Some(5),
            offset: Some(10),
            ..AuditEventsQuery::default()
        })
        .unwrap();
        assert_eq!(filter.action, Some(AuditAction::UserErase));
        assert_eq!(filter.target_type, Some(AuditTargetType::User));
        assert_eq!((filter.limit, filter.offset), (5, 10));
        assert_eq!(
            audit_filter(AuditEventsQuery::default()).unwrap().limit,
            DEFAULT_AUDIT_PAGE
        );
        for bad in [
            AuditEventsQuery {
                action: Some("script.rename".into()),
                ..AuditEventsQuery::default()
            },
            AuditEventsQuery {
                target_type: Some("message".into()),
                ..AuditEventsQuery::default()
            },
            AuditEventsQuery {
                limit: Some(0),
                ..AuditEventsQuery::default()
            },
            AuditEventsQuery {
                limit: Some(MAX_AUDIT_PAGE as u32 + 1),
                ..AuditEventsQuery::default()
            },
        ] {
            assert!(audit_filter(bad).is_err());
        }
        // A reversed window is schema-valid: an empty window, not an error.
        let now = Utc::now();
        let reversed = audit_filter(AuditEventsQuery {
            since: Some(now),
            until: Some(now - chrono::Duration::hours(1)),
            ..AuditEventsQuery::default()
        })
        .unwrap();
        assert_eq!(reversed.since, Some(now));
    }

    #[test]
    fn user_ids_are_bounded() {
        assert!(user_id("alice").is_ok());
        assert!(user_id("").is_err());
        assert!(user_id(&"x".repeat(MAX_USER_ID_LEN + 1)).is_err());
    }
}

#[cfg(test)]
mod names {
    use super::*;

    #[test]
    fn the_documented_names_are_the_domains() {
        for action in AuditAction::ALL {
            let name: AuditActionName =
                serde_json::from_value(serde_json::json!(action.as_str())).unwrap();
            assert_eq!(
                serde_json::to_value(name).unwrap(),
                serde_json::json!(action.as_str())
            );
        }
        for target in [AuditTargetType::Script, AuditTargetType::User] {
            let name: AuditTargetTypeName =
                serde_json::from_value(serde_json::json!(target.as_str())).unwrap();
            assert_eq!(
                serde_json::to_value(name).unwrap(),
                serde_json::json!(target.as_str())
            );
        }
    }
}

/// A user's token usage per UTC day (prompt, completion and total tokens,
/// LLM calls, sessions) and where their quota stands now (admin role).
#[utoipa::path(
    get,
    path = "/api/users/{userId}/usage",
    tag = "admin",
    params(("userId" = String, Path, min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$", description = "User id"), UsageQuery),
    responses(
        (status = 200, description = "The user's usage per day (no days when nothing was used) and the quota state", body = UserUsageBody),
        (status = 400, description = "`INVALID_REQUEST`: `userId` is empty, longer than 255 characters or holds a NUL, or `from`/`to` is not a `YYYY-MM-DD` date", body = ErrorBody),
        AdminOnly, Protected
    )
)]
pub async fn user_usage(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    path: web::Path<StorableText>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(&path)?;
    let (from, to) = usage_range(&query, Utc::now().date_naive());
    let usage = state.admin.user_usage(&actor, user, from, to).await?;
    Ok(HttpResponse::Ok().json(UserUsageBody::from(&usage)))
}
