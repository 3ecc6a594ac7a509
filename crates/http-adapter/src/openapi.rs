//! The OpenAPI document, generated from the handlers' annotations.

use crate::dto;
use crate::error;
use crate::hooks;
use crate::routes::{chat, scripts, sessions, system, ws};
use std::sync::OnceLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "HeartRule Engine API",
        description = "Runs AI counseling conversations from YAML scripts. Every error is \
            `{success:false, error:{code, type, message, details, context, recovery}}`; every \
            response carries `X-Request-Id`.",
    ),
    paths(
        system::info,
        system::health,
        system::ready,
        system::metrics,
        system::openapi,
        system::docs,
        sessions::create_session,
        sessions::get_session,
        sessions::list_messages,
        sessions::post_message,
        sessions::get_variables,
        sessions::release_session,
        sessions::list_user_sessions,
        ws::session_socket,
        chat::chat,
        chat::chat_stream,
        scripts::create_script,
        scripts::get_script,
        scripts::list_scripts,
        scripts::import_script,
        scripts::validate_script,
    ),
    components(schemas(
        dto::CreateSessionRequest,
        dto::PostMessageRequest,
        dto::ChatRequest,
        dto::CreateScriptRequest,
        dto::ImportScriptRequest,
        dto::PositionBody,
        dto::VariableBody,
        dto::PositionedStoreBody,
        dto::ScopedStoreBody,
        dto::TurnMessageBody,
        dto::TokenUsageBody,
        dto::LlmCallBody,
        dto::TurnBody,
        dto::CreateSessionBody,
        dto::ChatBody,
        dto::SessionBody,
        dto::RiskEventBody,
        dto::HandoffBody,
        dto::MessageBody,
        dto::MessagesBody,
        dto::WarningBody,
        dto::IssueBody,
        dto::ScriptBody,
        dto::ScriptListBody,
        dto::ImportDataBody,
        dto::ImportBody,
        dto::ValidBody,
        dto::InfoBody,
        dto::HealthBody,
        dto::ReadyBody,
        scripts::InvalidBody,
        hooks::ComponentStatus,
        hooks::ComponentState,
        hooks::ReadinessLevel,
        error::ErrorBody,
        error::ErrorDetailBody,
        error::ErrorContextBody,
        error::RecoveryBody,
    )),
    tags(
        (name = "system", description = "Health, readiness, metrics and documentation"),
        (name = "sessions", description = "Conversation sessions"),
        (name = "chat", description = "Chat, streaming (SSE) and WebSocket"),
        (name = "scripts", description = "Script catalog"),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn openapi_document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}
