//! The script library use cases. Every authenticated actor may read and
//! validate scripts (a chat front end lists them to start a session);
//! writing them (create, import) needs the `editor` or `admin` role, else
//! `FORBIDDEN`. The same holds for the editor operations: drafts,
//! publishing, versions, rollback and restore.

use crate::actor::Actor;
use crate::catalog::{
    DiffTarget, FileWritten, NewProject, ProjectDetails, ProjectUpdate, PublishDraft, Published,
    ScriptDraft, ScriptImport, StoredScript, VersionDiff,
};
use crate::engine::{LoadMode, LoadWarning};
use crate::error::DomainError;
use crate::ids::ScriptId;
use crate::ports::ScriptFilter;
use crate::project::{DraftFile, FileWrite, ProjectFilter, ProjectPage, ProjectSummary};
use crate::script::{Script, ScriptVersion, WorkingDraft};
use crate::script_tests::{ScriptTestFile, ScriptTestReport};
use async_trait::async_trait;

/// Scripts: what script editors (and, reading, chat front ends) do.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ScriptLibrary: Send + Sync {
    /// Scripts matching `filter`, newest first.
    async fn list(&self, actor: &Actor, filter: &ScriptFilter) -> Result<Vec<Script>, DomainError>;

    /// One script; `SCRIPT_NOT_FOUND` when there is none.
    async fn get(&self, actor: &Actor, id: ScriptId) -> Result<Script, DomainError>;

    /// Parses, validates and stores a new script (editor or admin).
    async fn create(&self, actor: &Actor, draft: ScriptDraft) -> Result<StoredScript, DomainError>;

    /// Creates the script or replaces the one with the same name (editor or admin).
    async fn import(
        &self,
        actor: &Actor,
        import: ScriptImport,
    ) -> Result<StoredScript, DomainError>;

    /// Validates a stored script against `mode`.
    async fn validate(
        &self,
        actor: &Actor,
        id: ScriptId,
        mode: LoadMode,
    ) -> Result<Vec<LoadWarning>, DomainError>;

    /// The script's draft: the current version's content until first saved.
    async fn draft(&self, actor: &Actor, id: ScriptId) -> Result<WorkingDraft, DomainError>;

    /// Saves the draft (editor or admin). `expected_revision` is the
    /// revision the edit is based on: a stale one is `CONFLICT`.
    async fn save_draft(
        &self,
        actor: &Actor,
        id: ScriptId,
        content: String,
        expected_revision: u64,
    ) -> Result<WorkingDraft, DomainError>;

    /// Publishes the draft as the next version and makes it current (editor
    /// or admin); `DRAFT_INVALID` when it does not validate, `TESTS_FAILED`
    /// when tests are required to publish and the draft's do not pass.
    async fn publish(
        &self,
        actor: &Actor,
        id: ScriptId,
        request: PublishDraft,
    ) -> Result<Published, DomainError>;

    /// Runs the draft's conversation tests and the `extra` test files
    /// against the draft (editor or admin); the report says what failed.
    async fn run_tests(
        &self,
        actor: &Actor,
        id: ScriptId,
        extra: Vec<ScriptTestFile>,
    ) -> Result<ScriptTestReport, DomainError>;

    /// Every version of the script, newest first.
    async fn versions(
        &self,
        actor: &Actor,
        id: ScriptId,
    ) -> Result<Vec<ScriptVersion>, DomainError>;

    /// One version; `VERSION_NOT_FOUND` when there is none with `number`.
    async fn version(
        &self,
        actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<ScriptVersion, DomainError>;

    /// Moves the current version back to `target`, or to the previous
    /// version when `None` (editor or admin).
    async fn rollback(
        &self,
        actor: &Actor,
        id: ScriptId,
        target: Option<u32>,
    ) -> Result<Script, DomainError>;

    /// Makes version `number` current (editor or admin).
    async fn set_current_version(
        &self,
        actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<Script, DomainError>;

    /// Copies version `number` into the draft (editor or admin).
    async fn restore(
        &self,
        actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<WorkingDraft, DomainError>;

    /// The unified diff from version `from` to another version or the draft.
    async fn diff(
        &self,
        actor: &Actor,
        id: ScriptId,
        from: u32,
        to: DiffTarget,
    ) -> Result<VersionDiff, DomainError>;

    /// Creates a project: a session script as version 1 (editor or admin).
    async fn create_project(
        &self,
        actor: &Actor,
        project: NewProject,
    ) -> Result<StoredScript, DomainError>;

    /// One page of the projects (session scripts) passing `filter`.
    async fn list_projects(
        &self,
        actor: &Actor,
        filter: &ProjectFilter,
    ) -> Result<ProjectPage, DomainError>;

    /// The project with its draft, draft files and versions.
    async fn project(&self, actor: &Actor, id: ScriptId) -> Result<ProjectDetails, DomainError>;

    /// Changes the project's name, description or tags (editor or admin).
    async fn update_project(
        &self,
        actor: &Actor,
        id: ScriptId,
        update: ProjectUpdate,
    ) -> Result<ProjectSummary, DomainError>;

    /// Deprecates the project: no new sessions (editor or admin).
    async fn deprecate_project(
        &self,
        actor: &Actor,
        id: ScriptId,
    ) -> Result<ProjectSummary, DomainError>;

    /// Makes a deprecated project active again (editor or admin).
    async fn reactivate_project(
        &self,
        actor: &Actor,
        id: ScriptId,
    ) -> Result<ProjectSummary, DomainError>;

    /// Copies the project's current version into a new project (editor or
    /// admin).
    async fn copy_project(
        &self,
        actor: &Actor,
        id: ScriptId,
        name: String,
    ) -> Result<StoredScript, DomainError>;

    /// The draft's files, in path order.
    async fn files(&self, actor: &Actor, id: ScriptId) -> Result<Vec<DraftFile>, DomainError>;

    /// One draft file; `FILE_NOT_FOUND` when absent.
    async fn file(&self, actor: &Actor, id: ScriptId, path: &str)
        -> Result<DraftFile, DomainError>;

    /// Adds, replaces or deletes a draft file based on the draft revision
    /// `expected_revision` (editor or admin).
    async fn write_file(
        &self,
        actor: &Actor,
        id: ScriptId,
        write: FileWrite,
        expected_revision: u64,
    ) -> Result<FileWritten, DomainError>;

    /// The draft's template schemes (`default` and its custom ones).
    async fn template_schemes(
        &self,
        actor: &Actor,
        id: ScriptId,
    ) -> Result<Vec<String>, DomainError>;

    /// Creates a custom template scheme in the draft (editor or admin).
    async fn create_template_scheme(
        &self,
        actor: &Actor,
        id: ScriptId,
        name: &str,
        copy_from: Option<String>,
    ) -> Result<FileWritten, DomainError>;
}
