//! Script routes: compatible and strict load modes, and filters that work.

use super::parse_id;
use crate::auth::CurrentActor;
use crate::context::RequestContext;
use crate::dto::{
    CreateScriptRequest, ImportBody, ImportDataBody, ImportScriptRequest, ListScriptsQuery,
    ModeQuery, ScriptBody, ScriptListBody, ValidBody, WarningBody,
};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::responses::{JsonBody, Protected, ScriptManager};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use heartrule_domain::{
    ErrorCode, LoadMode, ScriptDraft, ScriptFilter, ScriptId, ScriptImport, ScriptStatus,
    ScriptType,
};
use serde::Serialize;
use utoipa::openapi::schema::{AnyOfBuilder, Ref, Schema};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// `?mode=`; `default` when absent.
fn load_mode(query: &ModeQuery, default: LoadMode) -> Result<LoadMode, ApiError> {
    match query.mode.as_deref() {
        None => Ok(default),
        Some("strict") => Ok(LoadMode::Strict),
        Some("compatible") => Ok(LoadMode::Compatible),
        Some(_) => Err(ApiError::invalid_request(
            "`mode` must be `strict` or `compatible`",
        )),
    }
}

fn script_type(text: &str) -> Result<ScriptType, ApiError> {
    ScriptType::parse(text).ok_or_else(|| {
        ApiError::invalid_request(
            "`scriptType`/`type` must be `session`, `technique` or `awareness`",
        )
    })
}

fn not_empty(value: &str, field: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        Err(ApiError::invalid_request(format!(
            "`{field}` must not be empty"
        )))
    } else {
        Ok(())
    }
}

/// Stores a new script (compatible mode unless `?mode=strict`).
#[utoipa::path(
    post,
    path = "/api/scripts",
    tag = "scripts",
    params(ModeQuery),
    request_body = CreateScriptRequest,
    responses(
        (status = 200, description = "The stored script with the warnings of compatible mode", body = ScriptBody,
            links(
                ("GetScript" = (operation_id = "get_script", parameters(("id" = "$response.body#/id")))),
                ("CreateSession" = (operation_id = "create_session", request_body = json!({"scriptId": "$response.body#/id"})))
            )
        ),
        (status = 400, description = "`SCRIPT_PARSE_ERROR` / `SCRIPT_VALIDATION_ERROR` (with `errors[]`) or an invalid request", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the name is taken", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn create_script(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    query: web::Query<ModeQuery>,
    body: web::Json<CreateScriptRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    not_empty(&body.script_name, "scriptName")?;
    let draft = ScriptDraft {
        name: body.script_name,
        script_type: Some(script_type(&body.script_type)?),
        content: body.script_content,
        author: body.author,
        description: body.description.unwrap_or_default(),
        tags: body.tags.unwrap_or_default(),
        mode: load_mode(&query, LoadMode::Compatible)?,
    };
    let stored = state.scripts.create(&actor, draft).await?;
    Ok(HttpResponse::Ok().json(ScriptBody::new(&stored.script, Some(&stored.warnings))))
}

/// A stored script.
#[utoipa::path(
    get,
    path = "/api/scripts/{id}",
    tag = "scripts",
    params(("id" = Uuid, Path, description = "Script id")),
    responses(
        (status = 200, description = "The script", body = ScriptBody,
            links(
                ("ValidateScript" = (operation_id = "validate_script", parameters(("id" = "$response.body#/id")))),
                ("CreateSession" = (operation_id = "create_session", request_body = json!({"scriptId": "$response.body#/id"})))
            )
        ),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn get_script(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: ScriptId = parse_id("id", &id)?;
    let script = state.scripts.get(&actor, id).await?;
    Ok(HttpResponse::Ok().json(ScriptBody::new(&script, None)))
}

/// Scripts, newest first, filtered by type and status.
#[utoipa::path(
    get,
    path = "/api/scripts",
    tag = "scripts",
    params(ListScriptsQuery),
    responses(
        (status = 200, description = "The page and the number of matching scripts", body = ScriptListBody,
            links(
                ("GetScript" = (operation_id = "get_script", parameters(("id" = "$response.body#/scripts/0/id")))),
                ("ValidateScript" = (operation_id = "validate_script", parameters(("id" = "$response.body#/scripts/0/id")))),
                ("CreateSession" = (operation_id = "create_session", request_body = json!({"scriptId": "$response.body#/scripts/0/id"})))
            )
        ),
        (status = 400, description = "Unknown type or status, or bad paging", body = ErrorBody),
        Protected
    )
)]
pub async fn list_scripts(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    query: web::Query<ListScriptsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = ScriptFilter {
        script_type: query.script_type.as_deref().map(script_type).transpose()?,
        status: query
            .status
            .as_deref()
            .map(|s| {
                ScriptStatus::parse(s).ok_or_else(|| {
                    ApiError::invalid_request("`status` must be `draft`, `published` or `archived`")
                })
            })
            .transpose()?,
        // The whole filtered list is read so `total` counts every match;
        // the page is cut below.
        limit: None,
        offset: None,
    };
    let scripts = state.scripts.list(&actor, &filter).await?;
    let total = scripts.len();
    let page = scripts
        .iter()
        .skip(query.offset.map_or(0, |n| n as usize))
        .take(query.limit.map_or(usize::MAX, |n| n as usize))
        .map(|s| ScriptBody::new(s, None))
        .collect();
    Ok(HttpResponse::Ok().json(ScriptListBody {
        scripts: page,
        total,
    }))
}

/// Creates the script or replaces the one with the same name (compatible
/// mode unless `?mode=strict`).
#[utoipa::path(
    post,
    path = "/api/scripts/import",
    tag = "scripts",
    params(ModeQuery),
    request_body = ImportScriptRequest,
    responses(
        (status = 200, description = "The script id, the warnings and whether it replaced one", body = ImportBody,
            links(
                ("GetScript" = (operation_id = "get_script", parameters(("id" = "$response.body#/data/scriptId")))),
                ("CreateSession" = (operation_id = "create_session", request_body = json!({"scriptId": "$response.body#/data/scriptId"})))
            )
        ),
        (status = 400, description = "`SCRIPT_PARSE_ERROR` / `SCRIPT_VALIDATION_ERROR` (with `errors[]`) or an invalid request", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn import_script(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    query: web::Query<ModeQuery>,
    body: web::Json<ImportScriptRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    not_empty(&body.yaml_content, "yamlContent")?;
    not_empty(&body.script_name, "scriptName")?;
    let tags = body
        .project_id
        .map(|project| vec!["debug".to_owned(), format!("project:{project}")])
        .unwrap_or_default();
    let stored = state
        .scripts
        .import(
            &actor,
            ScriptImport {
                name: body.script_name,
                content: body.yaml_content,
                description: body.description,
                tags,
                mode: load_mode(&query, LoadMode::Compatible)?,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(ImportBody {
        success: true,
        data: ImportDataBody {
            script_id: stored.script.id.as_uuid(),
            warnings: stored.warnings.iter().map(WarningBody::from).collect(),
            updated: stored.updated,
        },
    }))
}

/// `POST /api/scripts/{id}/validate` when the script is invalid: the
/// original `{valid:false, message, errors}` plus the common error fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidBody {
    /// Always `false`.
    pub valid: bool,
    pub message: String,
    #[serde(flatten)]
    pub error: ErrorBody,
}

/// The 400 of `POST /api/scripts/{id}/validate`: an [`InvalidBody`] when
/// the script fails validation, a plain [`ErrorBody`] when the request
/// itself is wrong (the id or the mode).
pub struct ValidationFailure;

impl utoipa::PartialSchema for ValidationFailure {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(InvalidBody::name()))
            .item(Ref::from_schema_name(ErrorBody::name()))
            .into()
    }
}

impl ToSchema for ValidationFailure {}

/// Validates a stored script (strict unless `?mode=compatible`).
#[utoipa::path(
    post,
    path = "/api/scripts/{id}/validate",
    tag = "scripts",
    params(("id" = Uuid, Path, description = "Script id"), ModeQuery),
    responses(
        (status = 200, description = "Valid", body = ValidBody),
        (status = 400, description = "Invalid: `SCRIPT_PARSE_ERROR` / `SCRIPT_VALIDATION_ERROR` with `valid:false`, `message` and `errors[]`; or `INVALID_REQUEST` (bad `id` or `mode`) without them", body = ValidationFailure),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        ScriptManager, Protected
    )
)]
pub async fn validate_script(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    id: web::Path<String>,
    query: web::Query<ModeQuery>,
) -> Result<HttpResponse, ApiError> {
    let id: ScriptId = parse_id("id", &id)?;
    let mode = load_mode(&query, LoadMode::Strict)?;
    match state.scripts.validate(&actor, id, mode).await {
        Ok(warnings) => Ok(HttpResponse::Ok().json(ValidBody {
            valid: true,
            message: "Script is valid".into(),
            warnings: warnings.iter().map(WarningBody::from).collect(),
        })),
        Err(error)
            if matches!(
                error.code(),
                ErrorCode::ScriptParseError | ErrorCode::ScriptValidationError
            ) =>
        {
            let error = ApiError::from(error);
            Ok(HttpResponse::BadRequest().json(InvalidBody {
                valid: false,
                message: "Script validation failed".into(),
                error: error.body(&RequestContext::of(&request)),
            }))
        }
        Err(error) => Err(error.into()),
    }
}
