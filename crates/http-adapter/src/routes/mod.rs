//! Route handlers and their registration.

pub mod admin;
pub mod chat;
pub mod project_tests;
pub mod projects;
pub mod replay;
pub mod scripts;
pub mod sessions;
pub mod system;
pub mod versions;
pub mod ws;

use crate::error::ApiError;
use actix_web::web::{self, ServiceConfig};
use heartrule_domain::{Actor, Conversations, ProcessInput, TurnResult};
use std::str::FromStr;
use std::sync::Arc;
use tracing::Instrument;

/// A request body read as a JSON object: serde alone would also build a
/// struct from an array of its fields, which the document does not allow.
pub(crate) fn object_body<T: serde::de::DeserializeOwned>(
    body: serde_json::Value,
) -> Result<T, ApiError> {
    let invalid = || ApiError::invalid_request("Request body is not valid for this endpoint");
    if !body.is_object() {
        return Err(invalid().with_details("the body must be a JSON object"));
    }
    serde_json::from_value(body).map_err(|e| invalid().with_details(e.to_string()))
}

/// Parses a UUID path parameter, naming it in the error.
pub(crate) fn parse_id<T: FromStr>(parameter: &str, raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_uuid(parameter))
}

/// Runs a turn in its own task: actix drops a handler whose client
/// disconnects, and a turn cancelled halfway would leave its session's lease
/// held until it lapses. In a task it commits whole whatever the client does.
pub(crate) async fn run_turn(
    conversations: &Arc<dyn Conversations>,
    actor: Actor,
    input: ProcessInput,
) -> Result<TurnResult, ApiError> {
    let conversations = Arc::clone(conversations);
    actix_web::rt::spawn(
        async move { conversations.process_input(&actor, input).await }
            .instrument(tracing::Span::current()),
    )
    .await
    .map_err(|e| ApiError::internal(format!("the turn's task ended abnormally: {e}")))?
    .map_err(ApiError::from)
}

/// Registers every route. One `resource` per path, so a wrong method on a
/// known path is a 405, not a 404.
pub(crate) fn register(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(system::info)))
        .service(web::resource("/health").route(web::get().to(system::health)))
        .service(web::resource("/ready").route(web::get().to(system::ready)))
        .service(web::resource("/metrics").route(web::get().to(system::metrics)))
        .service(web::resource("/openapi.json").route(web::get().to(system::openapi)))
        .service(web::resource("/docs").route(web::get().to(system::docs)))
        .service(system::swagger_ui())
        .service(web::resource("/api/sessions").route(web::post().to(sessions::create_session)))
        .service(web::resource("/api/sessions/{id}").route(web::get().to(sessions::get_session)))
        .service(
            web::resource("/api/sessions/{id}/messages")
                .route(web::get().to(sessions::list_messages))
                .route(web::post().to(sessions::post_message)),
        )
        .service(
            web::resource("/api/sessions/{id}/release")
                .route(web::post().to(sessions::release_session)),
        )
        .service(
            web::resource("/api/sessions/{id}/replay")
                .route(web::post().to(replay::replay_session)),
        )
        .service(
            web::resource("/api/sessions/{id}/variables")
                .route(web::get().to(sessions::get_variables)),
        )
        .service(web::resource("/api/sessions/{id}/ws").route(web::get().to(ws::session_socket)))
        .service(
            web::resource("/api/users/{userId}/sessions")
                .route(web::get().to(sessions::list_user_sessions)),
        )
        .service(web::resource("/api/users/{userId}/usage").route(web::get().to(admin::user_usage)))
        .service(web::resource("/api/chat").route(web::post().to(chat::chat)))
        .service(web::resource("/api/chat/stream").route(web::post().to(chat::chat_stream)))
        .service(
            web::resource("/api/scripts")
                .route(web::get().to(scripts::list_scripts))
                .route(web::post().to(scripts::create_script)),
        )
        // Before `/api/scripts/{id}`, which would otherwise take `import` as an id.
        .service(web::resource("/api/scripts/import").route(web::post().to(scripts::import_script)))
        .service(web::resource("/api/scripts/{id}").route(web::get().to(scripts::get_script)))
        .service(
            web::resource("/api/scripts/{id}/validate")
                .route(web::post().to(scripts::validate_script)),
        )
        .service(
            web::resource("/api/projects")
                .route(web::get().to(projects::list_projects))
                .route(web::post().to(projects::create_project)),
        )
        .service(
            web::resource("/api/projects/{id}")
                .route(web::get().to(projects::get_project))
                .route(web::put().to(projects::update_project)),
        )
        .service(
            web::resource("/api/projects/{id}/deprecate")
                .route(web::post().to(projects::deprecate_project)),
        )
        .service(
            web::resource("/api/projects/{id}/restore")
                .route(web::post().to(projects::restore_project)),
        )
        .service(
            web::resource("/api/projects/{id}/copy").route(web::post().to(projects::copy_project)),
        )
        .service(
            web::resource("/api/projects/{id}/files")
                .route(web::get().to(projects::list_files))
                .route(web::post().to(projects::create_file)),
        )
        // A tail match: a file's path has slashes of its own.
        .service(
            web::resource("/api/projects/{id}/files/{path:.+}")
                .route(web::get().to(projects::get_file))
                .route(web::put().to(projects::put_file))
                .route(web::delete().to(projects::delete_file)),
        )
        .service(
            web::resource("/api/projects/{id}/template-schemes")
                .route(web::get().to(projects::list_template_schemes))
                .route(web::post().to(projects::create_template_scheme)),
        )
        .service(
            web::resource("/api/projects/{id}/draft")
                .route(web::get().to(versions::get_draft))
                .route(web::put().to(versions::put_draft)),
        )
        .service(
            web::resource("/api/projects/{id}/publish").route(web::post().to(versions::publish)),
        )
        .service(
            web::resource("/api/projects/{id}/test")
                .route(web::post().to(project_tests::run_tests)),
        )
        .service(
            web::resource("/api/projects/{id}/versions")
                .route(web::get().to(versions::list_versions)),
        )
        .service(
            web::resource("/api/projects/{id}/versions/{number}")
                .route(web::get().to(versions::get_version)),
        )
        .service(
            web::resource("/api/projects/{id}/versions/{number}/diff")
                .route(web::get().to(versions::diff)),
        )
        .service(
            web::resource("/api/projects/{id}/versions/{number}/restore")
                .route(web::post().to(versions::restore)),
        )
        .service(
            web::resource("/api/projects/{id}/rollback").route(web::post().to(versions::rollback)),
        )
        .service(
            web::resource("/api/projects/{id}/current-version")
                .route(web::put().to(versions::set_current_version)),
        )
        .service(web::resource("/api/admin/audit-events").route(web::get().to(admin::audit_events)))
        .service(
            web::resource("/api/admin/users/{userId}/export")
                .route(web::get().to(admin::export_user)),
        )
        .service(
            web::resource("/api/admin/users/{userId}").route(web::delete().to(admin::erase_user)),
        );
}
