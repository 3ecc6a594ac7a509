//! The OpenAPI document, generated from the handlers' annotations.

pub mod responses;

use crate::dto;
use crate::error;
use crate::hooks;
use crate::routes::{
    admin, chat, project_tests, projects, replay, scripts, sessions, system, versions, ws,
};
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Name of the security scheme every `/api` operation requires.
pub const BEARER_AUTH: &str = "bearerAuth";

/// Paths under this prefix need a bearer token; the others (info, health,
/// readiness, metrics, this document, Swagger UI) are public.
pub const PROTECTED_PREFIX: &str = "/api/";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "HeartRule Engine API",
        description = "Runs AI counseling conversations from YAML scripts. Every error is \
            `{success:false, error:{code, type, message, details, context, recovery}}`; every \
            response carries `X-Request-Id`. Every `/api` operation needs a bearer JWT \
            (`Authorization: Bearer <token>`, scheme `bearerAuth`) unless the server runs with \
            authentication off.",
    ),
    modifiers(&BearerAuth),
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
        replay::replay_session,
        sessions::list_user_sessions,
        ws::session_socket,
        chat::chat,
        chat::chat_stream,
        scripts::create_script,
        scripts::get_script,
        scripts::list_scripts,
        scripts::import_script,
        scripts::validate_script,
        projects::list_projects,
        projects::create_project,
        projects::get_project,
        projects::update_project,
        projects::deprecate_project,
        projects::restore_project,
        projects::copy_project,
        projects::list_files,
        projects::create_file,
        projects::get_file,
        projects::put_file,
        projects::delete_file,
        projects::list_template_schemes,
        projects::create_template_scheme,
        versions::get_draft,
        versions::put_draft,
        versions::publish,
        versions::list_versions,
        versions::get_version,
        versions::rollback,
        versions::set_current_version,
        versions::restore,
        versions::diff,
        project_tests::run_tests,
        admin::audit_events,
        admin::export_user,
        admin::erase_user,
        admin::user_usage,
    ),
    components(schemas(
        dto::CreateSessionRequest,
        dto::storable::StorableJson,
        dto::ScriptTypeName,
        dto::ScriptStatusName,
        dto::LoadModeName,
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
        dto::StreamEventBody,
        dto::StreamEventName,
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
        scripts::ValidationFailure,
        projects::FileTypeName,
        projects::ProjectStatusName,
        projects::ProjectBody,
        projects::ProjectListBody,
        projects::FileSummaryBody,
        projects::FileBody,
        projects::DraftSummaryBody,
        projects::ProjectDetailsBody,
        projects::FileListBody,
        projects::FileWrittenBody,
        projects::TemplateSchemesBody,
        projects::CreateProjectRequest,
        projects::UpdateProjectRequest,
        projects::CopyProjectRequest,
        projects::CreateFileRequest,
        projects::UpdateFileRequest,
        projects::CreateSchemeRequest,
        versions::VersionFileBody,
        versions::DraftBody,
        versions::VersionBody,
        versions::VersionListBody,
        versions::SaveDraftRequest,
        versions::PublishRequest,
        versions::PublishedBody,
        versions::RollbackRequest,
        versions::CurrentVersionRequest,
        versions::DiffBody,
        replay::ReplayBody,
        replay::DivergenceAspectName,
        replay::DivergenceBody,
        replay::VariableDifferenceBody,
        project_tests::RunTestsRequest,
        project_tests::TestFileSource,
        project_tests::TestReportBody,
        project_tests::TestFileBody,
        project_tests::TestCaseBody,
        project_tests::TestFailureBody,
        project_tests::TestCoverageBody,
        admin::AuditActionName,
        admin::AuditTargetTypeName,
        admin::AuditEventBody,
        admin::AuditEventsBody,
        admin::VariableSnapshotBody,
        admin::FailedTurnBody,
        admin::LlmExchangeBody,
        admin::ExportedSessionBody,
        admin::UserExportBody,
        admin::ErasedCountsBody,
        admin::UserErasureBody,
        admin::DailyUsageBody,
        admin::QuotaStateBody,
        admin::UserUsageBody,
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
        (name = "projects", description = "Projects: metadata, lifecycle, copies, the files versioned with the session script (techniques, templates, tests) and template schemes"),
        (name = "versions", description = "Script editor: the draft, immutable versions, publish, rollback and restore of a project (a script)"),
        (name = "admin", description = "Audit log and privacy operations (admin role)"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearerAuth` scheme (HTTP bearer, JWT) and requires it on
/// every operation under [`PROTECTED_PREFIX`], so a route added there is
/// protected in the document as it is in the server.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER_AUTH,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "A JWT naming the subject (`sub`) and its roles (`client`, `editor`, \
                             `admin`), signed with the server's key for its issuer and audience",
                        ))
                        .build(),
                ),
            );
        for (path, item) in &mut openapi.paths.paths {
            if !path.starts_with(PROTECTED_PREFIX) {
                continue;
            }
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                operation.security = Some(vec![SecurityRequirement::new(
                    BEARER_AUTH,
                    Vec::<String>::new(),
                )]);
            }
        }
    }
}

/// The document, built once.
pub fn openapi_document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The document as `GET /openapi.json` serves it, built once. utoipa 5.5
/// writes the fields of a link object in snake_case (juhaku/utoipa#1326);
/// OpenAPI spells them `operationId`, `operationRef` and `requestBody`, the
/// only names clients that follow links (schemathesis) read.
pub fn openapi_json() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| {
        // Only a non-string map key could fail, and the document has none.
        let mut json = serde_json::to_value(openapi_document()).unwrap_or_else(|error| {
            tracing::error!(%error, "the OpenAPI document could not be serialized");
            Value::Null
        });
        camel_case_links(&mut json);
        json
    })
}

fn camel_case_links(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_served_with_the_openapi_field_names() {
        let served = openapi_json().to_string();
        for snake in ["operation_id", "operation_ref", "request_body"] {
            assert!(!served.contains(&format!("\"{snake}\"")), "{snake}");
        }
        let link =
            &openapi_json()["paths"]["/api/sessions"]["post"]["responses"]["200"]["links"]["Chat"];
        assert_eq!(link["operationId"], "chat");
        assert_eq!(
            link["requestBody"]["sessionId"],
            "$response.body#/sessionId"
        );
    }
}
