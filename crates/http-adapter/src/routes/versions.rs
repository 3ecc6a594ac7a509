//! The script editor under the original's project paths: a project is a
//! script (its id is the script id), with a draft, immutable versions, the
//! current version new sessions start on, rollback and restore.

use super::parse_id;
use crate::auth::CurrentActor;
use crate::dto::{storable, LoadModeName, ScriptBody, WarningBody};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::responses::{JsonBody, Protected, ScriptManager};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use heartrule_domain::{
    DiffTarget, LoadMode, PublishDraft, ScriptId, ScriptVersion, VersionDiff, WorkingDraft,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A script's draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftBody {
    pub project_id: Uuid,
    /// The draft's YAML: the current version's content until first saved.
    pub content: String,
    /// Grows by one on every save; send it back with the next save (or as
    /// `If-Match`). Also the `ETag` of the response.
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Subject of the last editor who saved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

impl From<&WorkingDraft> for DraftBody {
    fn from(draft: &WorkingDraft) -> Self {
        Self {
            project_id: draft.script_id.as_uuid(),
            content: draft.content.clone(),
            revision: draft.revision,
            updated_at: draft.updated_at,
            updated_by: draft.updated_by.clone(),
        }
    }
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionBody {
    pub project_id: Uuid,
    /// 1 for the first version, then one more per publish.
    pub version_number: u32,
    /// Hex SHA-256 of the content (what sessions started on it record).
    pub content_hash: String,
    /// Subject of the actor who published it.
    pub published_by: String,
    pub release_note: String,
    pub published_at: DateTime<Utc>,
    /// What compatible-mode loading normalised when it was published.
    pub warnings: Vec<WarningBody>,
    /// The YAML source (absent in the version list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl VersionBody {
    fn new(version: &ScriptVersion, with_content: bool) -> Self {
        Self {
            project_id: version.script_id.as_uuid(),
            version_number: version.number,
            content_hash: version.content_hash.clone(),
            published_by: version.author.clone(),
            release_note: version.note.clone(),
            published_at: version.created_at,
            warnings: version.warnings.iter().map(WarningBody::from).collect(),
            content: with_content.then(|| version.content.clone()),
        }
    }
}

/// `GET /api/projects/{id}/versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionListBody {
    /// Newest first, without their content.
    pub versions: Vec<VersionBody>,
    /// The version new sessions start on.
    pub current_version: u32,
}

/// `PUT /api/projects/{id}/draft`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaveDraftRequest {
    /// The draft's YAML (not validated until publishing).
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_any)]
    pub content: String,
    /// The revision this edit is based on; or send it as `If-Match`.
    #[serde(default)]
    pub revision: Option<u64>,
}

/// `POST /api/projects/{id}/publish`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishRequest {
    /// `strict` (default) refuses deprecated fields; `compatible` accepts
    /// them and stores the warnings with the version.
    #[serde(default)]
    pub mode: Option<LoadModeName>,
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = storable::optional_text_schema)]
    pub release_note: Option<String>,
    /// When given, the draft must still be at this revision.
    #[serde(default)]
    pub draft_revision: Option<u64>,
}

/// `POST /api/projects/{id}/publish`: the new version and the script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublishedBody {
    pub version: VersionBody,
    pub script: ScriptBody,
}

/// `POST /api/projects/{id}/rollback`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// The version to go back to; the one before the current when absent.
    #[serde(default)]
    pub target_version: Option<u32>,
}

/// `PUT /api/projects/{id}/current-version`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentVersionRequest {
    pub version_number: u32,
}

/// The `If-Match` header of `PUT /api/projects/{id}/draft`.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatchHeader {
    /// The draft revision the edit is based on, as the `ETag` gave it
    /// (`"3"`); instead of, or equal to, the body's `revision`.
    #[param(rename = "If-Match", pattern = r#"^(W/)?"?[0-9]{1,18}"?$"#)]
    pub if_match: Option<String>,
}

fn project_id(raw: &str) -> Result<ScriptId, ApiError> {
    parse_id("id", raw)
}

fn version_number(raw: &str) -> Result<u32, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid_request("path parameter `number` must be a version number"))
}

fn etag(revision: u64) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{revision}\""))
}

fn draft_response(draft: &WorkingDraft) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(etag(draft.revision))
        .json(DraftBody::from(draft))
}

/// The revision a save is based on: the body's, the `If-Match` header's, or
/// both when they agree.
fn base_revision(request: &HttpRequest, body: Option<u64>) -> Result<u64, ApiError> {
    let header = match request.headers().get(header::IF_MATCH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_request("`If-Match` must be a draft revision such as \"3\"")
                })?,
        ),
    };
    match (body, header) {
        (Some(b), Some(h)) if b != h => Err(ApiError::invalid_request(
            "`revision` and `If-Match` name different revisions",
        )),
        (Some(revision), _) | (None, Some(revision)) => Ok(revision),
        (None, None) => Err(ApiError::invalid_request(
            "send the draft revision the edit is based on as `revision` or `If-Match`",
        )),
    }
}

/// The script's draft (its `ETag` is the revision).
#[utoipa::path(
    get,
    path = "/api/projects/{id}/draft",
    tag = "versions",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    responses(
        (status = 200, description = "The draft", body = DraftBody,
            headers(("ETag" = String, description = "The draft revision, quoted"))),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn get_draft(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let draft = state.scripts.draft(&actor, project_id(&id)?).await?;
    Ok(draft_response(&draft))
}

/// Saves the draft, based on the revision the editor read: a stale
/// revision is refused with `CONFLICT`, so two editors cannot overwrite
/// each other silently.
#[utoipa::path(
    put,
    path = "/api/projects/{id}/draft",
    tag = "versions",
    params(("id" = Uuid, Path, description = "Project (script) id"), IfMatchHeader),
    request_body = SaveDraftRequest,
    responses(
        (status = 200, description = "The saved draft at its new revision", body = DraftBody,
            headers(("ETag" = String, description = "The new draft revision, quoted"))),
        (status = 400, description = "No revision, or `revision` and `If-Match` disagree, or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the draft moved on since that revision", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn put_draft(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    id: web::Path<String>,
    body: web::Json<SaveDraftRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let body = body.into_inner();
    let revision = base_revision(&request, body.revision)?;
    let draft = state
        .scripts
        .save_draft(&actor, id, body.content, revision)
        .await?;
    Ok(draft_response(&draft))
}

/// Validates the draft and publishes it as the next version, which becomes
/// current. Sessions already running keep the version they started on.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/publish",
    tag = "versions",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    request_body = PublishRequest,
    responses(
        (status = 201, description = "The new version and the script pointing at it", body = PublishedBody),
        (status = 400, description = "`DRAFT_INVALID` (with `errors[]`) or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the draft is the current version already, it moved on from `draftRevision`, or another publish won the race", body = ErrorBody),
        (status = 422, description = "`TESTS_FAILED`: tests are required to publish (`scripts.require_tests_to_publish`) and the draft's did not pass, or it has none; `tests` holds the report", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn publish(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    body: web::Json<PublishRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let body = body.into_inner();
    let request = PublishDraft {
        mode: match body.mode.unwrap_or(LoadModeName::Strict) {
            LoadModeName::Strict => LoadMode::Strict,
            LoadModeName::Compatible => LoadMode::Compatible,
        },
        note: body.release_note.unwrap_or_default(),
        draft_revision: body.draft_revision,
    };
    let published = state.scripts.publish(&actor, id, request).await?;
    Ok(HttpResponse::Created().json(PublishedBody {
        version: VersionBody::new(&published.version, true),
        script: ScriptBody::new(&published.script, None),
    }))
}

/// The versions of a script, newest first.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/versions",
    tag = "versions",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    responses(
        (status = 200, description = "The versions (without content) and the current one", body = VersionListBody),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn list_versions(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let versions = state.scripts.versions(&actor, id).await?;
    let script = state.scripts.get(&actor, id).await?;
    Ok(HttpResponse::Ok().json(VersionListBody {
        versions: versions
            .iter()
            .map(|v| VersionBody::new(v, false))
            .collect(),
        current_version: script.current_version,
    }))
}

/// One version with its content.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/versions/{number}",
    tag = "versions",
    params(
        ("id" = Uuid, Path, description = "Project (script) id"),
        ("number" = u32, Path, description = "Version number"),
    ),
    responses(
        (status = 200, description = "The version", body = VersionBody),
        (status = 400, description = "`id` is not a UUID or `number` not a version number", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `VERSION_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn get_version(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, number) = path.into_inner();
    let version = state
        .scripts
        .version(&actor, project_id(&id)?, version_number(&number)?)
        .await?;
    Ok(HttpResponse::Ok().json(VersionBody::new(&version, true)))
}

/// Moves the current version back (to `targetVersion`, else the one before
/// the current). No version is created or removed.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/rollback",
    tag = "versions",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "The script at its new current version", body = ScriptBody),
        (status = 400, description = "`id` is not a UUID or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `VERSION_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: no version before the current one", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn rollback(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    body: web::Json<RollbackRequest>,
) -> Result<HttpResponse, ApiError> {
    let script = state
        .scripts
        .rollback(&actor, project_id(&id)?, body.target_version)
        .await?;
    Ok(HttpResponse::Ok().json(ScriptBody::new(&script, None)))
}

/// Makes a stored version current.
#[utoipa::path(
    put,
    path = "/api/projects/{id}/current-version",
    tag = "versions",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    request_body = CurrentVersionRequest,
    responses(
        (status = 200, description = "The script at its new current version", body = ScriptBody),
        (status = 400, description = "`id` is not a UUID or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `VERSION_NOT_FOUND`", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn set_current_version(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    body: web::Json<CurrentVersionRequest>,
) -> Result<HttpResponse, ApiError> {
    let script = state
        .scripts
        .set_current_version(&actor, project_id(&id)?, body.version_number)
        .await?;
    Ok(HttpResponse::Ok().json(ScriptBody::new(&script, None)))
}

/// Copies a version into the draft (at a new revision).
#[utoipa::path(
    post,
    path = "/api/projects/{id}/versions/{number}/restore",
    tag = "versions",
    params(
        ("id" = Uuid, Path, description = "Project (script) id"),
        ("number" = u32, Path, description = "Version number"),
    ),
    responses(
        (status = 200, description = "The draft holding the version's content", body = DraftBody,
            headers(("ETag" = String, description = "The new draft revision, quoted"))),
        (status = 400, description = "`id` is not a UUID or `number` not a version number", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `VERSION_NOT_FOUND`", body = ErrorBody),
        ScriptManager, Protected
    )
)]
pub async fn restore(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, number) = path.into_inner();
    let draft = state
        .scripts
        .restore(&actor, project_id(&id)?, version_number(&number)?)
        .await?;
    Ok(draft_response(&draft))
}

/// `?to=` of the diff: a version number or `draft` (the default).
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// A version number, or `draft` (the default).
    #[param(pattern = r"^(draft|[0-9]{1,9})$")]
    pub to: Option<String>,
}

/// `GET /api/projects/{id}/versions/{number}/diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffBody {
    /// `version N`: the `---` side.
    pub from: String,
    /// `version M` or `draft`: the `+++` side.
    pub to: String,
    /// The unified diff of the YAML, three lines of context; empty when
    /// both sides are equal.
    pub unified: String,
    /// Lines only in `to`.
    pub additions: usize,
    /// Lines only in `from`.
    pub deletions: usize,
}

impl From<VersionDiff> for DiffBody {
    fn from(diff: VersionDiff) -> Self {
        Self {
            from: diff.from,
            to: diff.to,
            unified: diff.unified,
            additions: diff.additions,
            deletions: diff.deletions,
        }
    }
}

/// The unified diff from a version to another version or the draft.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/versions/{number}/diff",
    tag = "versions",
    params(
        ("id" = Uuid, Path, description = "Project (script) id"),
        ("number" = u32, Path, description = "Version number (the `---` side)"),
        DiffQuery,
    ),
    responses(
        (status = 200, description = "The diff", body = DiffBody),
        (status = 400, description = "`id` is not a UUID, `number` or `to` not a version number", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `VERSION_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn diff(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    path: web::Path<(String, String)>,
    query: web::Query<DiffQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, number) = path.into_inner();
    let to =
        match query.to.as_deref() {
            None | Some("draft") => DiffTarget::Draft,
            Some(other) => DiffTarget::Version(other.parse().map_err(|_| {
                ApiError::invalid_request("`to` must be a version number or `draft`")
            })?),
        };
    let diff = state
        .scripts
        .diff(&actor, project_id(&id)?, version_number(&number)?, to)
        .await?;
    Ok(HttpResponse::Ok().json(DiffBody::from(diff)))
}
