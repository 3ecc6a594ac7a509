//! Projects in the script editor: a session script's metadata, its
//! lifecycle (deprecate, restore), copies, and the files its draft holds
//! beside the script (techniques, templates, tests). Reading needs any
//! actor; writing the editor or admin role. Every write is audited as
//! `script.create` or `script.update` with an `operation` detail.

use super::{content_hash, name_conflict, ScriptCatalog, ScriptDraft, StoredScript};
use crate::actor::Actor;
use crate::audit::AuditAction;
use crate::engine::{LoadMode, ScriptEngine, ValidationErrorType, ValidationIssue};
use crate::error::{DomainError, ErrorKind};
use crate::ids::ScriptId;
use crate::ports::{Clock, IdGenerator, RepositoryError, ScriptRepository};
use crate::ports_bundle::Ports;
use crate::project::{
    check_file_path, template_scheme, version_hash, DraftFile, FileType, FileWrite, ProjectFile,
    ProjectFilter, ProjectPage, ProjectSummary, DEFAULT_SCHEME, TEMPLATE_ROOT,
};
use crate::script::{
    Script, ScriptDocument, ScriptStatus, ScriptType, ScriptVersion, WorkingDraft,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The session a new project starts with when none is given: one greeting,
/// valid in strict mode.
pub const SAMPLE_SESSION: &str = r#"session:
  session_id: new_project
  session_name: "New project"
  phases:
    - phase_id: opening
      topics:
        - topic_id: welcome
          actions:
            - action_id: greet
              action_type: ai_say
              config:
                content: "Welcome the client warmly and say what this session is about."
"#;

/// A new project (`POST /api/projects`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProject {
    /// Unique among scripts.
    pub name: String,
    /// Free text, searched by the project list.
    pub description: String,
    /// Labels the project list filters by.
    pub tags: Vec<String>,
    /// The session script; [`SAMPLE_SESSION`] when `None`.
    pub content: Option<String>,
}

/// A metadata change (`PUT /api/projects/{id}`); `None` keeps the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectUpdate {
    /// Must stay unique among scripts.
    pub name: Option<String>,
    /// The new description.
    pub description: Option<String>,
    /// The new tags, replacing all the old ones.
    pub tags: Option<Vec<String>>,
}

/// A project with its draft, its draft files (content included) and its
/// versions (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectDetails {
    /// The metadata, state and file count.
    pub project: ProjectSummary,
    /// The draft of the session script.
    pub draft: WorkingDraft,
    /// The draft's files, in path order.
    pub files: Vec<DraftFile>,
    /// Every version, newest first.
    pub versions: Vec<ScriptVersion>,
}

/// A draft file write and the draft it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileWritten {
    /// The draft at its new revision.
    pub draft: WorkingDraft,
    /// The file as stored; `None` after a delete.
    pub file: Option<DraftFile>,
}

impl<P: Ports> ScriptCatalog<P> {
    /// Creates a project: a session script (the sample when no content is
    /// given), loaded in compatible mode like the original editor's
    /// scripts, as version 1. A taken name is `CONFLICT`.
    pub async fn create_project(
        &self,
        actor: &Actor,
        project: NewProject,
    ) -> Result<StoredScript, DomainError> {
        self.create(
            actor,
            ScriptDraft {
                name: project.name,
                script_type: Some(ScriptType::Session),
                content: project.content.unwrap_or_else(|| SAMPLE_SESSION.to_owned()),
                author: actor.subject().to_owned(),
                description: project.description,
                tags: project.tags,
                mode: LoadMode::Compatible,
            },
        )
        .await
    }

    /// One page of the projects passing `filter`, with the total.
    pub async fn list_projects(&self, filter: &ProjectFilter) -> Result<ProjectPage, DomainError> {
        Ok(self.adapters.scripts.list_projects(filter).await?)
    }

    /// The project, its draft, files and versions.
    pub async fn project(&self, id: ScriptId) -> Result<ProjectDetails, DomainError> {
        let project = self.project_summary(id).await?;
        let draft = self.draft(id).await?;
        let files = self.adapters.scripts.list_files(id).await?;
        let versions = self.versions(id).await?;
        Ok(ProjectDetails {
            project,
            draft,
            files,
            versions,
        })
    }

    async fn project_summary(&self, id: ScriptId) -> Result<ProjectSummary, DomainError> {
        self.adapters
            .scripts
            .get_project(id)
            .await?
            .ok_or_else(|| DomainError::new(ErrorKind::ScriptNotFound(id.to_string())))
    }

    /// Renames the project or replaces its description or tags; a name
    /// another script has is `CONFLICT`.
    pub async fn update_project(
        &self,
        actor: &Actor,
        id: ScriptId,
        update: ProjectUpdate,
    ) -> Result<ProjectSummary, DomainError> {
        actor.require_script_manager()?;
        let mut script = self.get(id).await?;
        let before = script.clone();
        if let Some(name) = update.name {
            script.name = name;
        }
        if let Some(description) = update.description {
            script.description = description;
        }
        if let Some(tags) = update.tags {
            script.tags = tags;
        }
        if script != before {
            script.updated_at = self.adapters.clock.now();
            self.adapters
                .scripts
                .update(&script)
                .await
                .map_err(name_conflict)?;
            self.project_audit(
                actor,
                &script,
                serde_json::json!({
                    "operation": "project.update",
                    "scriptName": script.name,
                    "previousName": before.name,
                }),
            )
            .await;
        }
        self.project_summary(id).await
    }

    /// Deprecates the project: it starts no new sessions; running ones go
    /// on. `CONFLICT` when it is deprecated already.
    pub async fn deprecate_project(
        &self,
        actor: &Actor,
        id: ScriptId,
    ) -> Result<ProjectSummary, DomainError> {
        self.set_deprecated(actor, id, true).await
    }

    /// Makes a deprecated project active again; `CONFLICT` when it is not
    /// deprecated.
    pub async fn reactivate_project(
        &self,
        actor: &Actor,
        id: ScriptId,
    ) -> Result<ProjectSummary, DomainError> {
        self.set_deprecated(actor, id, false).await
    }

    async fn set_deprecated(
        &self,
        actor: &Actor,
        id: ScriptId,
        deprecate: bool,
    ) -> Result<ProjectSummary, DomainError> {
        actor.require_script_manager()?;
        let now = self.adapters.clock.now();
        let project = self
            .adapters
            .scripts
            .set_deprecated(id, deprecate.then_some(now), now)
            .await
            .map_err(|e| match e {
                RepositoryError::Conflict(_) => DomainError::new(ErrorKind::Conflict(if deprecate {
                    format!("project {id} is deprecated already")
                } else {
                    format!("project {id} is not deprecated: only a deprecated project can be restored")
                }))
                .with_script(id, None),
                RepositoryError::NotFound(_) => {
                    DomainError::new(ErrorKind::ScriptNotFound(id.to_string()))
                }
                other => other.into(),
            })?;
        let operation = if deprecate {
            "project.deprecate"
        } else {
            "project.restore"
        };
        self.project_audit(
            actor,
            &project.script,
            serde_json::json!({ "operation": operation, "scriptName": project.script.name }),
        )
        .await;
        Ok(project)
    }

    /// A new project named `name` whose version 1 and draft are the
    /// source's current version, content and files.
    pub async fn copy_project(
        &self,
        actor: &Actor,
        source: ScriptId,
        name: String,
    ) -> Result<StoredScript, DomainError> {
        actor.require_script_manager()?;
        let a = &self.adapters;
        let original = self.get(source).await?;
        let version = self.version(source, original.current_version).await?;
        let now = a.clock.now();
        let script = Script {
            id: a.ids.script_id(),
            name,
            script_type: version.document.script_type(),
            status: ScriptStatus::Draft,
            content: version.content.clone(),
            content_hash: version.content_hash.clone(),
            document: version.document.clone(),
            current_version: 1,
            version: "1.0.0".into(),
            author: actor.subject().to_owned(),
            description: original.description.clone(),
            tags: original.tags.clone(),
            created_at: now,
            updated_at: now,
        };
        let first = ScriptVersion {
            script_id: script.id,
            number: 1,
            author: actor.subject().to_owned(),
            note: format!("copied from {} version {}", original.name, version.number),
            created_at: now,
            ..version
        };
        a.scripts
            .insert_with_version(&script, &first)
            .await
            .map_err(name_conflict)?;
        self.record_audit(
            actor,
            AuditAction::ScriptCreate,
            script.id,
            (None, Some(script.content_hash.clone())),
            serde_json::json!({
                "operation": "project.copy",
                "scriptName": script.name,
                "sourceId": source.to_string(),
                "sourceVersion": first.number,
            }),
        )
        .await;
        Ok(StoredScript {
            script,
            warnings: first.warnings,
            updated: false,
        })
    }

    async fn project_audit(&self, actor: &Actor, script: &Script, details: serde_json::Value) {
        self.record_audit(
            actor,
            AuditAction::ScriptUpdate,
            script.id,
            (
                Some(script.content_hash.clone()),
                Some(script.content_hash.clone()),
            ),
            details,
        )
        .await;
    }

    /// The draft's files, in path order.
    pub async fn files(&self, id: ScriptId) -> Result<Vec<DraftFile>, DomainError> {
        // An unknown project is SCRIPT_NOT_FOUND, not an empty list.
        self.get(id).await?;
        Ok(self.adapters.scripts.list_files(id).await?)
    }

    /// One draft file; `FILE_NOT_FOUND` when the draft has none at `path`.
    pub async fn file(&self, id: ScriptId, path: &str) -> Result<DraftFile, DomainError> {
        self.files(id)
            .await?
            .into_iter()
            .find(|f| f.file.path == path)
            .ok_or_else(|| file_not_found(id, path))
    }

    /// Adds, replaces or deletes a draft file, unvalidated beyond its path
    /// (a draft may be work in progress; publishing validates it). Like a
    /// draft save, the write must be based on the stored revision, else
    /// `CONFLICT`; it bumps the revision.
    pub async fn write_file(
        &self,
        actor: &Actor,
        id: ScriptId,
        write: FileWrite,
        expected_revision: u64,
    ) -> Result<FileWritten, DomainError> {
        actor.require_script_manager()?;
        if let FileWrite::Create(file) | FileWrite::Replace(file) = &write {
            check_file_path(&file.path, file.file_type)?;
        }
        let a = &self.adapters;
        let path = write.path().to_owned();
        let existing = self.files(id).await?;
        let before = existing.iter().find(|f| f.file.path == path);
        match (&write, before) {
            (FileWrite::Create(_), Some(_)) => {
                return Err(DomainError::new(ErrorKind::Conflict(format!(
                    "the project has a file `{path}` already: replace it with PUT"
                )))
                .with_script(id, None));
            }
            (FileWrite::Replace(_) | FileWrite::Delete(_), None) => {
                return Err(file_not_found(id, &path));
            }
            _ => {}
        }
        let before_hash = before.map(|f| content_hash(&f.file.content));
        let draft = a
            .scripts
            .write_file(
                id,
                &write,
                Some(expected_revision),
                actor.subject(),
                a.clock.now(),
            )
            .await
            .map_err(|e| match e {
                RepositoryError::Conflict(detail) => DomainError::new(ErrorKind::Conflict(format!(
                    "the draft is no longer at revision {expected_revision}, or the file changed ({detail}): reload it and apply the edit again"
                )))
                .with_script(id, None),
                RepositoryError::NotFound(_) => file_not_found(id, &path),
                other => other.into(),
            })?;
        let (operation, file) = match write {
            FileWrite::Create(file) => ("file.create", Some(file)),
            FileWrite::Replace(file) => ("file.update", Some(file)),
            FileWrite::Delete(_) => ("file.delete", None),
        };
        self.record_audit(
            actor,
            AuditAction::ScriptUpdate,
            id,
            (before_hash, file.as_ref().map(|f| content_hash(&f.content))),
            serde_json::json!({
                "operation": operation,
                "path": path,
                "revision": draft.revision,
            }),
        )
        .await;
        let file = file.map(|file| DraftFile {
            file,
            updated_at: draft.updated_at.unwrap_or_else(|| a.clock.now()),
            updated_by: actor.subject().to_owned(),
        });
        Ok(FileWritten { draft, file })
    }

    /// The template schemes of the draft: `default` and every custom
    /// scheme its template files use, sorted.
    pub async fn template_schemes(&self, id: ScriptId) -> Result<Vec<String>, DomainError> {
        let mut schemes: BTreeSet<String> = self
            .files(id)
            .await?
            .iter()
            .filter(|f| f.file.file_type == FileType::Template)
            .filter_map(|f| template_scheme(&f.file.path))
            .map(str::to_owned)
            .collect();
        schemes.insert(DEFAULT_SCHEME.to_owned());
        Ok(schemes.into_iter().collect())
    }

    /// Creates custom scheme `name` in the draft: a copy of every template
    /// of scheme `copy_from` (default: `default`), where the default scheme
    /// is the project's default template files, or the engine's own
    /// defaults when the project has none. One new draft revision;
    /// `CONFLICT` when the scheme exists.
    pub async fn create_template_scheme(
        &self,
        actor: &Actor,
        id: ScriptId,
        name: &str,
        copy_from: Option<&str>,
    ) -> Result<FileWritten, DomainError> {
        actor.require_script_manager()?;
        if name == DEFAULT_SCHEME || !crate::project::is_valid_scheme(name) {
            return Err(DomainError::new(ErrorKind::ScriptValidation(vec![
                ValidationIssue {
                    path: "name".into(),
                    error_type: ValidationErrorType::ConstraintViolation,
                    message: "a scheme name is 1-100 characters of A-Z, a-z, 0-9, `_` or `-`, and not `default`".into(),
                    expected: None,
                    actual: Some(name.to_owned()),
                    suggestion: None,
                    line: None,
                    column: None,
                },
            ])));
        }
        let draft = self.draft(id).await?;
        let files = self.files(id).await?;
        let schemes = self.template_schemes(id).await?;
        if schemes.iter().any(|s| s == name) {
            return Err(DomainError::new(ErrorKind::Conflict(format!(
                "the project has a template scheme `{name}` already"
            )))
            .with_script(id, None));
        }
        let source = copy_from.unwrap_or(DEFAULT_SCHEME);
        if !schemes.iter().any(|s| s == source) {
            return Err(DomainError::new(ErrorKind::ScriptValidation(vec![
                ValidationIssue {
                    path: "copyFrom".into(),
                    error_type: ValidationErrorType::EnumValueInvalid,
                    message: format!("the project has no template scheme `{source}`"),
                    expected: Some(schemes.join(", ")),
                    actual: Some(source.to_owned()),
                    suggestion: None,
                    line: None,
                    column: None,
                },
            ])));
        }
        let source_prefix = if source == DEFAULT_SCHEME {
            format!("{TEMPLATE_ROOT}default/")
        } else {
            format!("{TEMPLATE_ROOT}custom/{source}/")
        };
        let mut templates: BTreeMap<String, String> = files
            .iter()
            .filter(|f| f.file.file_type == FileType::Template)
            .filter_map(|f| {
                f.file
                    .path
                    .strip_prefix(&source_prefix)
                    .map(|file| (file.to_owned(), f.file.content.clone()))
            })
            .collect();
        if templates.is_empty() && source == DEFAULT_SCHEME {
            templates = self.adapters.engine.default_templates();
        }
        let mut all: Vec<ProjectFile> = files.into_iter().map(|f| f.file).collect();
        for (file, content) in templates {
            all.push(ProjectFile {
                path: format!("{TEMPLATE_ROOT}custom/{name}/{file}"),
                file_type: FileType::Template,
                content,
            });
        }
        let saved = self
            .adapters
            .scripts
            .replace_draft(
                id,
                &draft.content,
                &all,
                Some(draft.revision),
                actor.subject(),
                self.adapters.clock.now(),
            )
            .await
            .map_err(|e| match e {
                RepositoryError::Conflict(detail) => DomainError::new(ErrorKind::Conflict(
                    format!("the draft moved on while the scheme was created ({detail}); retry"),
                ))
                .with_script(id, None),
                other => other.into(),
            })?;
        self.record_audit(
            actor,
            AuditAction::ScriptUpdate,
            id,
            (None, None),
            serde_json::json!({
                "operation": "template-scheme.create",
                "scheme": name,
                "copyFrom": source,
                "revision": saved.revision,
            }),
        )
        .await;
        Ok(FileWritten {
            draft: saved,
            file: None,
        })
    }

    /// Validates the draft's technique files for publishing: each must load
    /// in `mode` as a technique, with a technique id no other file has.
    /// The issues name the file in their path.
    pub(crate) fn check_draft_files(
        &self,
        files: &[ProjectFile],
        mode: LoadMode,
    ) -> Vec<ValidationIssue> {
        let mut issues = Vec::new();
        let mut ids: BTreeMap<String, &str> = BTreeMap::new();
        for file in files.iter().filter(|f| f.file_type == FileType::Technique) {
            match self.adapters.engine.load(&file.content, mode) {
                Err(e) => issues.extend(e.issues().into_iter().map(|mut issue| {
                    issue.path = format!("files[{}].{}", file.path, issue.path);
                    issue
                })),
                Ok(parsed) => match parsed.document {
                    ScriptDocument::Technique(t) => {
                        if let Some(other) = ids.insert(t.technique_id.clone(), &file.path) {
                            issues.push(file_issue(
                                file,
                                format!(
                                    "technique id `{}` is declared by `{other}` too",
                                    t.technique_id
                                ),
                            ));
                        }
                    }
                    ScriptDocument::Session(_) => issues.push(file_issue(
                        file,
                        "a technique file must be a technique script (root `topic`)".into(),
                    )),
                },
            }
        }
        issues
    }
}

/// The hash a draft would publish as.
pub(crate) fn draft_hash(draft: &WorkingDraft, files: &[DraftFile]) -> String {
    let files: Vec<ProjectFile> = files.iter().map(|f| f.file.clone()).collect();
    version_hash(&draft.content, &files)
}

fn file_issue(file: &ProjectFile, message: String) -> ValidationIssue {
    ValidationIssue {
        path: format!("files[{}]", file.path),
        error_type: ValidationErrorType::StructureError,
        message,
        expected: None,
        actual: None,
        suggestion: None,
        line: None,
        column: None,
    }
}

fn file_not_found(id: ScriptId, path: &str) -> DomainError {
    DomainError::new(ErrorKind::FileNotFound {
        script_id: id,
        path: path.to_owned(),
    })
    .with_script(id, None)
}
