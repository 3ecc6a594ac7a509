//! Session routes.

use super::parse_id;
use super::run_turn;
use crate::auth::CurrentActor;
use crate::context::name_user;
use crate::dto::storable::StorableText;
use crate::dto::{
    CreateSessionBody, CreateSessionRequest, IdempotencyKeyHeader, MessageBody, MessagesBody,
    MessagesQuery, PostMessageRequest, ScopedStoreBody, SessionBody, TurnBody, VariablesQuery,
};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{idempotency_key, REPLAYED_HEADER};
use crate::openapi::responses::{JsonBody, Protected, SessionNotFound, TurnConflict, UserAccess};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use heartrule_domain::{CreateSession, ProcessInput, ScriptId, SessionId, TurnResult};

/// Route of `POST /api/sessions/{id}/messages`, part of the idempotency hash.
const POST_MESSAGE_ROUTE: &str = "POST /api/sessions/{id}/messages";

/// A turn response, marked when it replays a stored result.
pub(crate) fn turn_response(result: &TurnResult, body: &impl serde::Serialize) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if result.replayed {
        response.insert_header((REPLAYED_HEADER, "true"));
    }
    response.json(body)
}

/// Creates a session and runs it to its first pause.
#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "sessions",
    request_body = CreateSessionRequest,
    responses(
        (status = 200, description = "The session and its first turn", body = CreateSessionBody,
            links(
                ("GetSession" = (operation_id = "get_session", parameters(("id" = "$response.body#/sessionId")))),
                ("ListMessages" = (operation_id = "list_messages", parameters(("id" = "$response.body#/sessionId")))),
                ("PostMessage" = (operation_id = "post_message", parameters(("id" = "$response.body#/sessionId")))),
                ("GetVariables" = (operation_id = "get_variables", parameters(("id" = "$response.body#/sessionId")))),
                ("ReplaySession" = (operation_id = "replay_session", parameters(("id" = "$response.body#/sessionId")))),
                ("SessionSocket" = (operation_id = "session_socket", parameters(("id" = "$response.body#/sessionId")))),
                ("Chat" = (operation_id = "chat", request_body = json!({"sessionId": "$response.body#/sessionId"}))),
                ("ChatStream" = (operation_id = "chat_stream", request_body = json!({"sessionId": "$response.body#/sessionId"}))),
                ("ListUserSessions" = (operation_id = "list_user_sessions", parameters(("userId" = "$request.body#/userId"))))
            )
        ),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the project is deprecated and starts no new sessions", body = ErrorBody),
        UserAccess, JsonBody, Protected
    )
)]
pub async fn create_session(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    body: web::Json<CreateSessionRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.user_id.is_empty() {
        return Err(ApiError::invalid_request("`userId` must not be empty"));
    }
    name_user(&request, &body.user_id);
    let result = state
        .conversations
        .create_session(
            &actor,
            CreateSession {
                user_id: body.user_id,
                script_id: ScriptId::from(body.script_id),
                initial_variables: body.initial_variables.unwrap_or_default(),
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(CreateSessionBody {
        session_id: result.session_id.as_uuid(),
        status: result.session_status.as_str().to_owned(),
        created_at: result.created_at,
        turn: TurnBody::new(&result, state.config.include_debug_info),
    }))
}

/// The stored session.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionBody),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        SessionNotFound, Protected
    )
)]
pub async fn get_session(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: SessionId = parse_id("id", &id)?;
    let session = state.conversations.get_session(&actor, id).await?;
    Ok(HttpResponse::Ok().json(SessionBody::from(&session)))
}

/// The conversation, oldest first, paged by `seq`.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/messages",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id"), MessagesQuery),
    responses(
        (status = 200, description = "Messages (`role` is `user`, `ai` or `system`)", body = MessagesBody),
        (status = 400, description = "Invalid id or paging", body = ErrorBody),
        SessionNotFound, Protected
    )
)]
pub async fn list_messages(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id: SessionId = parse_id("id", &id)?;
    let after_seq = query.after_seq.unwrap_or(0);
    if after_seq < 0 {
        return Err(ApiError::invalid_request("`afterSeq` must not be negative"));
    }
    let page_limit = state.config.history_page_limit;
    let limit = match query.limit {
        None => page_limit,
        Some(0) => return Err(ApiError::invalid_request("`limit` must be at least 1")),
        Some(n) => (n as usize).min(page_limit),
    };
    let messages = state
        .conversations
        .messages(&actor, id, after_seq, limit)
        .await?;
    Ok(HttpResponse::Ok().json(MessagesBody {
        success: true,
        data: messages.iter().map(MessageBody::from).collect(),
    }))
}

/// Runs one turn with the user's words.
#[utoipa::path(
    post,
    path = "/api/sessions/{id}/messages",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id"), IdempotencyKeyHeader),
    request_body = PostMessageRequest,
    responses(
        (status = 200, description = "The turn's result", body = TurnBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        SessionNotFound, TurnConflict, JsonBody, Protected
    )
)]
pub async fn post_message(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    id: web::Path<String>,
    body: web::Json<PostMessageRequest>,
) -> Result<HttpResponse, ApiError> {
    let session_id: SessionId = parse_id("id", &id)?;
    let body = body.into_inner();
    let idempotency = idempotency_key(&request, POST_MESSAGE_ROUTE, &body)?;
    let result = run_turn(
        &state.conversations,
        actor,
        ProcessInput {
            session_id,
            content: body.content,
            idempotency,
            sink: None,
        },
    )
    .await?;
    Ok(turn_response(
        &result,
        &TurnBody::new(&result, state.config.include_debug_info),
    ))
}

/// Releases a session held in `handoff` (by the crisis protocol, or waiting
/// for the person the user asked for): it is active
/// again and its script resumes where it stood (a system message records
/// who released it). Editors and administrators only.
#[utoipa::path(
    post,
    path = "/api/sessions/{id}/release",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The release, as a turn whose message is the system note", body = TurnBody),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: needs the editor or admin role", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the session is not in handoff; or `TURN_IN_PROGRESS`", body = ErrorBody),
        SessionNotFound, Protected
    )
)]
pub async fn release_session(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: SessionId = parse_id("id", &id)?;
    let result = state.conversations.release_handoff(&actor, id).await?;
    Ok(HttpResponse::Ok().json(TurnBody::new(&result, state.config.include_debug_info)))
}

/// The session's variables: flat, or by scope with `?scoped=true`.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/variables",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id"), VariablesQuery),
    responses(
        (status = 200, description = "The flat map (inner scopes win), or the whole store (`ScopedStoreBody`) with `?scoped=true`", body = Object),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        SessionNotFound, Protected
    )
)]
pub async fn get_variables(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    query: web::Query<VariablesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id: SessionId = parse_id("id", &id)?;
    let store = state.conversations.variables(&actor, id).await?;
    Ok(if query.scoped.unwrap_or(false) {
        HttpResponse::Ok().json(ScopedStoreBody::from(&store))
    } else {
        HttpResponse::Ok().json(store.flat())
    })
}

/// A user's sessions, newest first.
#[utoipa::path(
    get,
    path = "/api/users/{userId}/sessions",
    tag = "sessions",
    params(("userId" = String, Path, min_length = 1, pattern = "^[^\\u0000]*$", description = "User id")),
    responses(
        (status = 200, description = "Sessions, newest first", body = Vec<SessionBody>),
        UserAccess, Protected
    )
)]
pub async fn list_user_sessions(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    user_id: web::Path<StorableText>,
) -> Result<HttpResponse, ApiError> {
    name_user(&request, &user_id);
    let sessions = state
        .conversations
        .list_user_sessions(&actor, &user_id)
        .await?;
    Ok(HttpResponse::Ok().json(sessions.iter().map(SessionBody::from).collect::<Vec<_>>()))
}
