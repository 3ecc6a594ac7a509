//! The script library use cases. Every authenticated actor may read and
//! validate scripts (a chat front end lists them to start a session);
//! writing them (create, import) needs the `editor` or `admin` role, else
//! `FORBIDDEN`.

use crate::actor::Actor;
use crate::catalog::{ScriptDraft, ScriptImport, StoredScript};
use crate::engine::{LoadMode, LoadWarning};
use crate::error::DomainError;
use crate::ids::ScriptId;
use crate::ports::ScriptFilter;
use crate::script::Script;
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
}
