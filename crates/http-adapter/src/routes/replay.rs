//! `POST /api/sessions/{id}/replay`: a stored session run again against a
//! version of its script, and where the two conversations diverge.

use super::parse_id;
use crate::auth::CurrentActor;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::responses::Protected;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use heartrule_domain::{Divergence, DivergenceAspect, ReplayReport, SessionId, VariableDifference};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `?version=` of the replay.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// The version of the session's script to replay against; the version
    /// the session ran on when absent.
    #[param(minimum = 0, maximum = 4294967295_u32, format = Int64)]
    pub version: Option<u32>,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayBody {
    pub session_id: Uuid,
    pub script_id: Uuid,
    /// The version the session ran on (absent: it started before versions
    /// were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_version: Option<u32>,
    /// The version replayed (absent as for `storedVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<u32>,
    /// Content hash of the replayed version.
    pub target_hash: String,
    /// Engine turns of the stored conversation: the opening turn, then one
    /// per user message.
    pub turns_stored: usize,
    /// Turns replayed, up to and including the first divergence.
    pub turns_replayed: usize,
    pub diverged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_divergence: Option<DivergenceBody>,
    /// LLM calls answered by the session's recorded responses.
    pub llm_calls_reused: usize,
    /// LLM calls that went to the LLM (the prompt was new).
    pub llm_calls_made: usize,
    /// LLM exchanges the session recorded.
    pub recorded_exchanges: usize,
    /// Present when the session recorded no exchange: every LLM call of the
    /// replay went to the LLM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What differs at a divergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum DivergenceAspectName {
    Messages,
    Position,
    Variables,
    Status,
    Error,
}

/// The first turn at which the replay departs from the stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DivergenceBody {
    /// 1 for the opening turn, then one more per user message.
    pub turn: usize,
    /// The user message the turn answered (absent for the opening turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message: Option<String>,
    pub aspects: Vec<DivergenceAspectName>,
    /// Action of the first differing AI message (the last when the
    /// messages agree), stored and replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_action_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_action_id: Option<String>,
    /// `phase/topic/action` reached, stored and replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_topic_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_topic_path: Option<String>,
    /// Variables whose values differ after the turn.
    pub variables: Vec<VariableDifferenceBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_ai_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_ai_text: Option<String>,
    /// Why the replayed turn failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A variable set differently, or on one side only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariableDifferenceBody {
    pub name: String,
    /// `global`, `session`, `phase` or `topic`.
    pub scope: String,
    /// The phase or topic id of those scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_key: Option<String>,
    /// Absent: not set in the stored conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Value>,
    /// Absent: not set in the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Value>,
}

impl From<DivergenceAspect> for DivergenceAspectName {
    fn from(aspect: DivergenceAspect) -> Self {
        match aspect {
            DivergenceAspect::Messages => Self::Messages,
            DivergenceAspect::Position => Self::Position,
            DivergenceAspect::Variables => Self::Variables,
            DivergenceAspect::Status => Self::Status,
            DivergenceAspect::Error => Self::Error,
        }
    }
}

impl From<&VariableDifference> for VariableDifferenceBody {
    fn from(d: &VariableDifference) -> Self {
        Self {
            name: d.name.clone(),
            scope: d.scope.as_str().to_owned(),
            scope_key: d.scope_key.clone(),
            stored: d.stored.clone(),
            replayed: d.replayed.clone(),
        }
    }
}

impl From<&Divergence> for DivergenceBody {
    fn from(d: &Divergence) -> Self {
        Self {
            turn: d.turn,
            user_message: d.user_message.clone(),
            aspects: d.aspects.iter().copied().map(Into::into).collect(),
            stored_action_id: d.stored_action_id.clone(),
            replayed_action_id: d.replayed_action_id.clone(),
            stored_topic_path: d.stored_topic_path.clone(),
            replayed_topic_path: d.replayed_topic_path.clone(),
            variables: d.variables.iter().map(Into::into).collect(),
            stored_ai_text: d.stored_ai_text.clone(),
            replayed_ai_text: d.replayed_ai_text.clone(),
            error: d.error.clone(),
        }
    }
}

impl From<&ReplayReport> for ReplayBody {
    fn from(r: &ReplayReport) -> Self {
        Self {
            session_id: r.session_id.as_uuid(),
            script_id: r.script_id.as_uuid(),
            stored_version: r.stored_version,
            target_version: r.target_version,
            target_hash: r.target_hash.clone(),
            turns_stored: r.turns_stored,
            turns_replayed: r.turns_replayed,
            diverged: r.diverged,
            first_divergence: r.first_divergence.as_ref().map(Into::into),
            llm_calls_reused: r.llm_calls_reused,
            llm_calls_made: r.llm_calls_made,
            recorded_exchanges: r.recorded_exchanges,
            note: r.note.clone(),
        }
    }
}

/// Replays the session's user messages against a version of its script
/// (`?version=`, else the version it ran on), in memory, reusing its
/// recorded LLM responses wherever the prompt is unchanged, and reports the
/// first turn where the conversations diverge. Nothing is written but the
/// audit event. Editors and administrators only.
#[utoipa::path(
    post,
    path = "/api/sessions/{id}/replay",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id"), ReplayQuery),
    responses(
        (status = 200, description = "The replay's report", body = ReplayBody),
        (status = 400, description = "`id` is not a UUID or `version` not a version number", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: needs the editor or admin role", body = ErrorBody),
        (status = 404, description = "`SESSION_NOT_FOUND`, or `VERSION_NOT_FOUND`: the session's script has no such version", body = ErrorBody),
        Protected
    )
)]
pub async fn replay_session(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    query: web::Query<ReplayQuery>,
) -> Result<HttpResponse, ApiError> {
    let id: SessionId = parse_id("id", &id)?;
    let report = state
        .conversations
        .replay(&actor, id, query.version)
        .await?;
    Ok(HttpResponse::Ok().json(ReplayBody::from(&report)))
}
