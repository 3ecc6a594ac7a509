//! Projects under the original's editor paths: a project is a session
//! script (its id is the script id) with metadata, a lifecycle (deprecate,
//! restore), copies, the files its draft holds beside the script
//! (techniques, prompt templates, conversation tests) and its template
//! schemes. Files are versioned with the project: publishing freezes them.

use super::object_body;
use super::versions::{base_revision, etag, project_id, VersionBody};
use crate::auth::CurrentActor;
use crate::dto::{storable, WarningBody};
use crate::error::{ApiError, ErrorBody};
use crate::openapi::responses::{JsonBody, Protected, ScriptManager};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use heartrule_domain::{
    DraftFile, FileType, FileWrite, NewProject, ProjectFile, ProjectFilter, ProjectStatus,
    ProjectSummary, ProjectUpdate,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The default page size of `GET /api/projects`.
const DEFAULT_LIMIT: u32 = 50;
/// The largest page of `GET /api/projects`.
const MAX_LIMIT: u32 = 200;

/// What a project file is (`fileType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileTypeName {
    /// A technique script (`techniques/<name>.yaml`).
    Technique,
    /// A prompt template (`_system/config/default/<file>.md` or
    /// `_system/config/custom/<scheme>/<file>.md`).
    Template,
    /// A conversation test (`tests/<name>.test.yaml`).
    Test,
}

impl From<FileTypeName> for FileType {
    fn from(name: FileTypeName) -> Self {
        match name {
            FileTypeName::Technique => Self::Technique,
            FileTypeName::Template => Self::Template,
            FileTypeName::Test => Self::Test,
        }
    }
}

/// A project's state (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProjectStatusName {
    Active,
    /// Starts no new sessions; running ones go on.
    Deprecated,
}

impl From<ProjectStatus> for ProjectStatusName {
    fn from(status: ProjectStatus) -> Self {
        match status {
            ProjectStatus::Active => Self::Active,
            ProjectStatus::Deprecated => Self::Deprecated,
        }
    }
}

/// A project's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectBody {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub author: String,
    pub status: ProjectStatusName,
    /// The version new sessions start on.
    pub current_version: u32,
    /// Files of the draft.
    pub file_count: usize,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<DateTime<Utc>>,
    /// What compatible mode normalised (create and copy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<WarningBody>>,
}

impl From<&ProjectSummary> for ProjectBody {
    fn from(project: &ProjectSummary) -> Self {
        let script = &project.script;
        Self {
            id: script.id.as_uuid(),
            name: script.name.clone(),
            description: script.description.clone(),
            tags: script.tags.clone(),
            author: script.author.clone(),
            status: project.status().into(),
            current_version: script.current_version,
            file_count: project.file_count,
            created_at: script.created_at,
            updated_at: script.updated_at,
            deprecated_at: project.deprecated_at,
            warnings: None,
        }
    }
}

/// `GET /api/projects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectListBody {
    /// Newest first.
    pub projects: Vec<ProjectBody>,
    /// Projects passing the filters, all pages together.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

/// A draft file without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSummaryBody {
    pub path: String,
    pub file_type: FileTypeName,
    /// Bytes of content.
    pub size: usize,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// A draft file with its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileBody {
    pub path: String,
    pub file_type: FileTypeName,
    pub content: String,
    pub size: usize,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

fn type_name(file_type: FileType) -> FileTypeName {
    match file_type {
        FileType::Technique => FileTypeName::Technique,
        FileType::Template => FileTypeName::Template,
        FileType::Test => FileTypeName::Test,
    }
}

impl From<&DraftFile> for FileSummaryBody {
    fn from(f: &DraftFile) -> Self {
        Self {
            path: f.file.path.clone(),
            file_type: type_name(f.file.file_type),
            size: f.file.content.len(),
            updated_at: f.updated_at,
            updated_by: f.updated_by.clone(),
        }
    }
}

impl From<&DraftFile> for FileBody {
    fn from(f: &DraftFile) -> Self {
        Self {
            path: f.file.path.clone(),
            file_type: type_name(f.file.file_type),
            content: f.file.content.clone(),
            size: f.file.content.len(),
            updated_at: f.updated_at,
            updated_by: f.updated_by.clone(),
        }
    }
}

/// The draft of a project, without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftSummaryBody {
    /// Send it back with the next write (or as `If-Match`).
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// `GET /api/projects/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectDetailsBody {
    pub project: ProjectBody,
    pub draft: DraftSummaryBody,
    /// The draft's files, in path order, without content.
    pub files: Vec<FileSummaryBody>,
    /// Newest first, without content.
    pub versions: Vec<VersionBody>,
}

/// `GET /api/projects/{id}/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileListBody {
    /// In path order, without content.
    pub files: Vec<FileSummaryBody>,
    /// The draft revision (also the `ETag`).
    pub revision: u64,
}

/// A file write: the draft's new revision and the file as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileWrittenBody {
    /// The draft revision after the write (also the `ETag`).
    pub revision: u64,
    /// Absent after a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileBody>,
}

/// `GET|POST /api/projects/{id}/template-schemes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSchemesBody {
    /// `default` and the custom schemes of the draft's template files, sorted.
    pub schemes: Vec<String>,
    /// The draft revision (also the `ETag`).
    pub revision: u64,
}

/// `POST /api/projects`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateProjectRequest {
    /// Unique among scripts.
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub name: String,
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = storable::optional_text_schema)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "storable::optional_texts")]
    #[schema(schema_with = storable::optional_texts_schema)]
    pub tags: Option<Vec<String>>,
    /// The session YAML (compatible mode); a small sample session when absent.
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = storable::optional_text_schema)]
    pub content: Option<String>,
}

/// `PUT /api/projects/{id}`: absent fields keep their value.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProjectRequest {
    /// Must stay unique among scripts.
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = optional_name_schema)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = storable::optional_text_schema)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "storable::optional_texts")]
    #[schema(schema_with = storable::optional_texts_schema)]
    pub tags: Option<Vec<String>>,
}

/// `POST /api/projects/{id}/copy`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyProjectRequest {
    /// The copy's name, unique among scripts.
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub name: String,
}

/// `POST /api/projects/{id}/files`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateFileRequest {
    /// Relative, unique in the project; where it may point depends on
    /// `fileType`.
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub path: String,
    pub file_type: FileTypeName,
    /// Stored as written (publishing validates technique files).
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_any)]
    pub content: String,
    /// The draft revision this edit is based on; or send it as `If-Match`.
    #[serde(default)]
    pub revision: Option<u64>,
}

/// `PUT /api/projects/{id}/files/{path}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFileRequest {
    /// The file's type; its current type when absent.
    #[serde(default)]
    pub file_type: Option<FileTypeName>,
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_any)]
    pub content: String,
    /// The draft revision this edit is based on; or send it as `If-Match`.
    #[serde(default)]
    pub revision: Option<u64>,
}

/// `POST /api/projects/{id}/template-schemes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSchemeRequest {
    /// 1-100 characters of A-Z, a-z, 0-9, `_` or `-`; not `default`.
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub name: String,
    /// The scheme whose templates are copied (default: `default`).
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = storable::optional_text_schema)]
    pub copy_from: Option<String>,
}

/// Filters and paging of `GET /api/projects`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListProjectsQuery {
    /// Only projects in this state (deprecated ones are otherwise left out
    /// unless `includeDeprecated`).
    pub status: Option<ProjectStatusName>,
    /// Case-insensitive substring of the name or description.
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[param(pattern = "^[^\\u0000]*$")]
    pub search: Option<String>,
    /// Projects of exactly this author.
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[param(pattern = "^[^\\u0000]*$")]
    pub author: Option<String>,
    /// Projects carrying this tag.
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[param(pattern = "^[^\\u0000]*$")]
    pub tag: Option<String>,
    /// List deprecated projects too (default false).
    pub include_deprecated: Option<bool>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Matches to skip.
    #[param(minimum = 0, maximum = 4294967295_u32, format = Int64)]
    pub offset: Option<u32>,
}

/// The `If-Match` header of the file writes.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct FileIfMatchHeader {
    /// The draft revision the edit is based on, as the `ETag` gave it
    /// (`"3"`); instead of, or equal to, the body's `revision`.
    #[param(rename = "If-Match", pattern = r#"^(W/)?"?[0-9]{1,18}"?$"#)]
    pub if_match: Option<String>,
}

/// A new name: at least one character without NUL, or `null` to keep it.
fn optional_name_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(storable::STORABLE_TEXT))
        .min_length(Some(1))
        .into()
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

/// Lists projects (session scripts) with filters and paging.
#[utoipa::path(
    get,
    path = "/api/projects",
    tag = "projects",
    params(ListProjectsQuery),
    responses(
        (status = 200, description = "One page of projects and the total", body = ProjectListBody),
        (status = 400, description = "A filter or paging value out of range", body = ErrorBody),
        Protected
    )
)]
pub async fn list_projects(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    query: web::Query<ListProjectsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "`limit` must be 1 to {MAX_LIMIT}"
        )));
    }
    let offset = query.offset.unwrap_or(0);
    let filter = ProjectFilter {
        status: query.status.map(|s| match s {
            ProjectStatusName::Active => ProjectStatus::Active,
            ProjectStatusName::Deprecated => ProjectStatus::Deprecated,
        }),
        search: query.search.filter(|s| !s.is_empty()),
        author: query.author,
        tag: query.tag,
        include_deprecated: query.include_deprecated.unwrap_or(false),
        limit: limit as usize,
        offset: offset as usize,
    };
    let page = state.scripts.list_projects(&actor, &filter).await?;
    Ok(HttpResponse::Ok().json(ProjectListBody {
        projects: page.projects.iter().map(ProjectBody::from).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

/// Creates a project: its session script becomes version 1.
#[utoipa::path(
    post,
    path = "/api/projects",
    tag = "projects",
    request_body = CreateProjectRequest,
    responses(
        (status = 201, description = "The project", body = ProjectBody,
            links(
                ("GetProject" = (operation_id = "get_project", parameters(("id" = "$response.body#/id")))),
                ("ListFiles" = (operation_id = "list_files", parameters(("id" = "$response.body#/id")))),
                ("SetCurrentVersion" = (operation_id = "set_current_version", parameters(("id" = "$response.body#/id")), request_body = json!({"versionNumber": "$response.body#/currentVersion"}))),
                ("Rollback" = (operation_id = "rollback", parameters(("id" = "$response.body#/id")), request_body = json!({"targetVersion": "$response.body#/currentVersion"}))),
                ("CreateSession" = (operation_id = "create_session", request_body = json!({"scriptId": "$response.body#/id"})))
            )
        ),
        (status = 400, description = "`SCRIPT_PARSE_ERROR` / `SCRIPT_VALIDATION_ERROR` (with `errors[]`) or an invalid request", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the name is taken", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn create_project(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: CreateProjectRequest = object_body(body.into_inner())?;
    not_empty(&body.name, "name")?;
    let stored = state
        .scripts
        .create_project(
            &actor,
            NewProject {
                name: body.name,
                description: body.description.unwrap_or_default(),
                tags: body.tags.unwrap_or_default(),
                content: body.content,
            },
        )
        .await?;
    created(&state, &actor, stored).await
}

async fn created(
    state: &AppState,
    actor: &heartrule_domain::Actor,
    stored: heartrule_domain::StoredScript,
) -> Result<HttpResponse, ApiError> {
    let project = state.scripts.project(actor, stored.script.id).await?;
    let mut body = ProjectBody::from(&project.project);
    body.warnings = Some(stored.warnings.iter().map(WarningBody::from).collect());
    Ok(HttpResponse::Created().json(body))
}

/// The project with its draft summary, its files and its versions.
#[utoipa::path(
    get,
    path = "/api/projects/{id}",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    responses(
        (status = 200, description = "The project", body = ProjectDetailsBody),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn get_project(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let details = state.scripts.project(&actor, project_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(ProjectDetailsBody {
        project: ProjectBody::from(&details.project),
        draft: DraftSummaryBody {
            revision: details.draft.revision,
            updated_at: details.draft.updated_at,
            updated_by: details.draft.updated_by.clone(),
        },
        files: details.files.iter().map(FileSummaryBody::from).collect(),
        versions: details
            .versions
            .iter()
            .map(|v| VersionBody::new(v, false))
            .collect(),
    }))
}

/// Renames the project or replaces its description or tags.
#[utoipa::path(
    put,
    path = "/api/projects/{id}",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    request_body = UpdateProjectRequest,
    responses(
        (status = 200, description = "The project", body = ProjectBody),
        (status = 400, description = "`id` is not a UUID or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the name is taken", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn update_project(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let body: UpdateProjectRequest = object_body(body.into_inner())?;
    if let Some(name) = &body.name {
        not_empty(name, "name")?;
    }
    let project = state
        .scripts
        .update_project(
            &actor,
            id,
            ProjectUpdate {
                name: body.name,
                description: body.description,
                tags: body.tags,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(ProjectBody::from(&project)))
}

/// Deprecates the project: it starts no new sessions, running ones go on.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/deprecate",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    responses(
        (status = 200, description = "The deprecated project", body = ProjectBody),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: deprecated already", body = ErrorBody),
        ScriptManager, Protected
    )
)]
pub async fn deprecate_project(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let project = state
        .scripts
        .deprecate_project(&actor, project_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(ProjectBody::from(&project)))
}

/// Makes a deprecated project active again.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/restore",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    responses(
        (status = 200, description = "The active project", body = ProjectBody),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the project is not deprecated", body = ErrorBody),
        ScriptManager, Protected
    )
)]
pub async fn restore_project(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let project = state
        .scripts
        .reactivate_project(&actor, project_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(ProjectBody::from(&project)))
}

/// Copies the project's current version (script and files) into a new
/// project, whose version 1 and draft it becomes.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/copy",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    request_body = CopyProjectRequest,
    responses(
        (status = 201, description = "The new project", body = ProjectBody),
        (status = 400, description = "`id` is not a UUID or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the name is taken", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn copy_project(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let body: CopyProjectRequest = object_body(body.into_inner())?;
    not_empty(&body.name, "name")?;
    let stored = state.scripts.copy_project(&actor, id, body.name).await?;
    created(&state, &actor, stored).await
}

/// The draft's files, without content.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/files",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    responses(
        (status = 200, description = "The files", body = FileListBody,
            headers(("ETag" = String, description = "The draft revision, quoted"))),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn list_files(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let files = state.scripts.files(&actor, id).await?;
    let draft = state.scripts.draft(&actor, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(draft.revision))
        .json(FileListBody {
            files: files.iter().map(FileSummaryBody::from).collect(),
            revision: draft.revision,
        }))
}

fn written(
    written: &heartrule_domain::FileWritten,
    status: actix_web::http::StatusCode,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(etag(written.draft.revision))
        .json(FileWrittenBody {
            revision: written.draft.revision,
            file: written.file.as_ref().map(FileBody::from),
        })
}

/// Adds a file to the draft (a new draft revision), based on the revision
/// the editor read: a stale one is `CONFLICT`.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/files",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id"), FileIfMatchHeader),
    request_body = CreateFileRequest,
    responses(
        (status = 201, description = "The file and the new draft revision", body = FileWrittenBody,
            headers(("ETag" = String, description = "The new draft revision, quoted"))),
        (status = 400, description = "`SCRIPT_VALIDATION_ERROR`: the path is not one of the file type's, no revision, or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the path is taken or the draft moved on since that revision", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn create_file(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let body: CreateFileRequest = object_body(body.into_inner())?;
    let revision = base_revision(&request, body.revision)?;
    let write = FileWrite::Create(ProjectFile {
        path: body.path,
        file_type: body.file_type.into(),
        content: body.content,
    });
    let done = state
        .scripts
        .write_file(&actor, id, write, revision)
        .await?;
    Ok(written(&done, actix_web::http::StatusCode::CREATED))
}

/// One draft file with its content.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/files/{path}",
    tag = "projects",
    params(
        ("id" = Uuid, Path, description = "Project (script) id"),
        ("path" = String, Path, description = "The file's path (may contain `/`)"),
    ),
    responses(
        (status = 200, description = "The file", body = FileBody,
            headers(("ETag" = String, description = "The draft revision, quoted"))),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `FILE_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn get_file(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, path) = path.into_inner();
    let id = project_id(&id)?;
    let file = state.scripts.file(&actor, id, &path).await?;
    let draft = state.scripts.draft(&actor, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(draft.revision))
        .json(FileBody::from(&file)))
}

/// Replaces a draft file's content (a new draft revision), based on the
/// revision the editor read: a stale one is `CONFLICT`.
#[utoipa::path(
    put,
    path = "/api/projects/{id}/files/{path}",
    tag = "projects",
    params(
        ("id" = Uuid, Path, description = "Project (script) id"),
        ("path" = String, Path, description = "The file's path (may contain `/`)"),
        FileIfMatchHeader,
    ),
    request_body = UpdateFileRequest,
    responses(
        (status = 200, description = "The file and the new draft revision", body = FileWrittenBody,
            headers(("ETag" = String, description = "The new draft revision, quoted"))),
        (status = 400, description = "`SCRIPT_VALIDATION_ERROR`: the path is not one of the file type's, no revision, or an invalid request", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `FILE_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the draft moved on since that revision", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn put_file(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (id, path) = path.into_inner();
    let id = project_id(&id)?;
    let body: UpdateFileRequest = object_body(body.into_inner())?;
    let revision = base_revision(&request, body.revision)?;
    let file_type = match body.file_type {
        Some(name) => name.into(),
        None => state.scripts.file(&actor, id, &path).await?.file.file_type,
    };
    let write = FileWrite::Replace(ProjectFile {
        path,
        file_type,
        content: body.content,
    });
    let done = state
        .scripts
        .write_file(&actor, id, write, revision)
        .await?;
    Ok(written(&done, actix_web::http::StatusCode::OK))
}

/// Removes a draft file (a new draft revision); the revision it is based
/// on comes as `If-Match`.
#[utoipa::path(
    delete,
    path = "/api/projects/{id}/files/{path}",
    tag = "projects",
    params(
        ("id" = Uuid, Path, description = "Project (script) id"),
        ("path" = String, Path, description = "The file's path (may contain `/`)"),
        FileIfMatchHeader,
    ),
    responses(
        (status = 200, description = "The new draft revision", body = FileWrittenBody,
            headers(("ETag" = String, description = "The new draft revision, quoted"))),
        (status = 400, description = "`id` is not a UUID or no `If-Match`", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND` or `FILE_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the draft moved on since that revision", body = ErrorBody),
        ScriptManager, Protected
    )
)]
pub async fn delete_file(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, path) = path.into_inner();
    let id = project_id(&id)?;
    let revision = base_revision(&request, None)?;
    let done = state
        .scripts
        .write_file(&actor, id, FileWrite::Delete(path), revision)
        .await?;
    Ok(written(&done, actix_web::http::StatusCode::OK))
}

/// The draft's template schemes: `default` and its custom ones.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/template-schemes",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    responses(
        (status = 200, description = "The schemes", body = TemplateSchemesBody),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        Protected
    )
)]
pub async fn list_template_schemes(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let schemes = state.scripts.template_schemes(&actor, id).await?;
    let draft = state.scripts.draft(&actor, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(draft.revision))
        .json(TemplateSchemesBody {
            schemes,
            revision: draft.revision,
        }))
}

/// Creates a custom template scheme in the draft: copies of the templates
/// of `copyFrom` (the project's default templates, or the engine's own when
/// it has none) under `_system/config/custom/<name>/`.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/template-schemes",
    tag = "projects",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    request_body = CreateSchemeRequest,
    responses(
        (status = 201, description = "The schemes and the new draft revision", body = TemplateSchemesBody,
            headers(("ETag" = String, description = "The new draft revision, quoted"))),
        (status = 400, description = "`SCRIPT_VALIDATION_ERROR`: an invalid name or an unknown `copyFrom`", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the scheme exists, or the draft moved on meanwhile", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn create_template_scheme(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = project_id(&id)?;
    let body: CreateSchemeRequest = object_body(body.into_inner())?;
    let done = state
        .scripts
        .create_template_scheme(&actor, id, &body.name, body.copy_from)
        .await?;
    let schemes = state.scripts.template_schemes(&actor, id).await?;
    Ok(HttpResponse::Created()
        .insert_header(etag(done.draft.revision))
        .json(TemplateSchemesBody {
            schemes,
            revision: done.draft.revision,
        }))
}
