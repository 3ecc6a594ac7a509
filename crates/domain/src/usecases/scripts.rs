//! The script library use cases. Every authenticated actor may read and
//! validate scripts (a chat front end lists them to start a session);
//! writing them (create, import) needs the `editor` or `admin` role, else
//! `FORBIDDEN`. The same holds for the editor operations: drafts,
//! publishing, versions, rollback and restore.

use crate::actor::Actor;
use crate::catalog::{
    DiffTarget, PublishDraft, Published, ScriptDraft, ScriptImport, StoredScript, VersionDiff,
};
use crate::engine::{LoadMode, LoadWarning};
use crate::error::DomainError;
use crate::ids::ScriptId;
use crate::ports::ScriptFilter;
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
}
