//! The `ScriptCatalog`: creating, importing, validating and listing scripts.

use crate::actor::Actor;
use crate::engine::{LoadMode, LoadWarning, ScriptEngine, ValidationErrorType, ValidationIssue};
use crate::error::{DomainError, ErrorKind};
use crate::ids::ScriptId;
use crate::ports::{
    Clock, IdGenerator, RepositoryError, ScriptCache, ScriptFilter, ScriptRepository,
};
use crate::ports_bundle::{Adapters, Ports};
use crate::script::{Script, ScriptStatus, ScriptType};
use crate::usecases::ScriptLibrary;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A new script (`POST /api/scripts`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptDraft {
    pub name: String,
    /// When given, must match the document's root.
    pub script_type: Option<ScriptType>,
    pub content: String,
    pub author: String,
    pub description: String,
    pub tags: Vec<String>,
    pub mode: LoadMode,
}

/// An upsert by name (`POST /api/scripts/import`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptImport {
    pub name: String,
    pub content: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub mode: LoadMode,
}

/// A stored script with the warnings its load produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredScript {
    pub script: Script,
    pub warnings: Vec<LoadWarning>,
    /// True when an import replaced an existing script.
    pub updated: bool,
}

/// Hex SHA-256 of a script's source; keys the parsed-script cache.
#[must_use]
pub fn content_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

pub struct ScriptCatalog<P: Ports> {
    adapters: Adapters<P>,
}

impl<P: Ports> Clone for ScriptCatalog<P> {
    fn clone(&self) -> Self {
        Self {
            adapters: self.adapters.clone(),
        }
    }
}

impl<P: Ports> ScriptCatalog<P> {
    #[must_use]
    pub fn new(adapters: Adapters<P>) -> Self {
        Self { adapters }
    }

    /// Parses, validates and stores a new script. A taken name is a conflict;
    /// an actor without the editor or admin role is `FORBIDDEN`.
    pub async fn create(
        &self,
        actor: &Actor,
        draft: ScriptDraft,
    ) -> Result<StoredScript, DomainError> {
        actor.require_script_manager()?;
        let a = &self.adapters;
        let parsed = a.engine.load(&draft.content, draft.mode)?;
        let script_type = parsed.document.script_type();
        if let Some(expected) = draft.script_type {
            if expected != script_type {
                return Err(type_mismatch(expected, script_type));
            }
        }
        let now = a.clock.now();
        let script = Script {
            id: a.ids.script_id(),
            name: draft.name,
            script_type,
            status: ScriptStatus::Draft,
            content_hash: content_hash(&draft.content),
            content: draft.content,
            document: parsed.document,
            version: "1.0.0".into(),
            author: draft.author,
            description: draft.description,
            tags: draft.tags,
            created_at: now,
            updated_at: now,
        };
        a.scripts.insert(&script).await.map_err(name_conflict)?;
        tracing::info!(
            event = "script_created",
            script.id = %script.id,
            script.name = %script.name,
            audit = true,
            "script created"
        );
        Ok(StoredScript {
            script,
            warnings: parsed.warnings,
            updated: false,
        })
    }

    /// Creates the script, or replaces content, description and tags of the
    /// script with the same name; an actor without the editor or admin role
    /// is `FORBIDDEN`.
    pub async fn import(
        &self,
        actor: &Actor,
        import: ScriptImport,
    ) -> Result<StoredScript, DomainError> {
        actor.require_script_manager()?;
        let a = &self.adapters;
        let parsed = a.engine.load(&import.content, import.mode)?;
        let now = a.clock.now();
        let hash = content_hash(&import.content);
        // Two attempts: an insert may lose a race against a concurrent import
        // of the same name, which the second attempt turns into an update.
        for _ in 0..2 {
            if let Some(mut script) = a.scripts.find_by_name(&import.name).await? {
                script.script_type = parsed.document.script_type();
                script.content.clone_from(&import.content);
                script.content_hash.clone_from(&hash);
                script.document = parsed.document.clone();
                if let Some(description) = &import.description {
                    script.description.clone_from(description);
                }
                if !import.tags.is_empty() {
                    script.tags.clone_from(&import.tags);
                }
                script.updated_at = now;
                a.scripts.update(&script).await?;
                a.script_cache.invalidate(script.id).await;
                tracing::info!(event = "script_updated", script.id = %script.id, script.name = %script.name, audit = true, "script imported over an existing one");
                return Ok(StoredScript {
                    script,
                    warnings: parsed.warnings,
                    updated: true,
                });
            }
            let script = Script {
                id: a.ids.script_id(),
                name: import.name.clone(),
                script_type: parsed.document.script_type(),
                status: ScriptStatus::Draft,
                content: import.content.clone(),
                content_hash: hash.clone(),
                document: parsed.document.clone(),
                version: "1.0.0".into(),
                author: "debug_user".into(),
                description: import
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("Debug script: {}", import.name)),
                tags: if import.tags.is_empty() {
                    vec!["debug".into()]
                } else {
                    import.tags.clone()
                },
                created_at: now,
                updated_at: now,
            };
            match a.scripts.insert(&script).await {
                Ok(()) => {
                    tracing::info!(event = "script_created", script.id = %script.id, script.name = %script.name, audit = true, "script imported");
                    return Ok(StoredScript {
                        script,
                        warnings: parsed.warnings,
                        updated: false,
                    });
                }
                Err(RepositoryError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::new(ErrorKind::Conflict(format!(
            "script `{}` is being imported concurrently; retry",
            import.name
        ))))
    }

    /// Validates a stored script against the given mode.
    pub async fn validate(
        &self,
        id: ScriptId,
        mode: LoadMode,
    ) -> Result<Vec<LoadWarning>, DomainError> {
        let script = self.get(id).await?;
        let parsed = self
            .adapters
            .engine
            .load(&script.content, mode)
            .map_err(|e| DomainError::from(e).with_script(id, Some(script.name.clone())))?;
        Ok(parsed.warnings)
    }

    pub async fn get(&self, id: ScriptId) -> Result<Script, DomainError> {
        self.adapters
            .scripts
            .get(id)
            .await?
            .ok_or_else(|| DomainError::new(ErrorKind::ScriptNotFound(id.to_string())))
    }

    pub async fn list(&self, filter: &ScriptFilter) -> Result<Vec<Script>, DomainError> {
        Ok(self.adapters.scripts.list(filter).await?)
    }
}

#[async_trait]
impl<P: Ports> ScriptLibrary for ScriptCatalog<P> {
    async fn list(
        &self,
        _actor: &Actor,
        filter: &ScriptFilter,
    ) -> Result<Vec<Script>, DomainError> {
        ScriptCatalog::list(self, filter).await
    }

    async fn get(&self, _actor: &Actor, id: ScriptId) -> Result<Script, DomainError> {
        ScriptCatalog::get(self, id).await
    }

    async fn create(&self, actor: &Actor, draft: ScriptDraft) -> Result<StoredScript, DomainError> {
        ScriptCatalog::create(self, actor, draft).await
    }

    async fn import(
        &self,
        actor: &Actor,
        import: ScriptImport,
    ) -> Result<StoredScript, DomainError> {
        ScriptCatalog::import(self, actor, import).await
    }

    async fn validate(
        &self,
        _actor: &Actor,
        id: ScriptId,
        mode: LoadMode,
    ) -> Result<Vec<LoadWarning>, DomainError> {
        ScriptCatalog::validate(self, id, mode).await
    }
}

fn name_conflict(error: RepositoryError) -> DomainError {
    match error {
        RepositoryError::Conflict(detail) => DomainError::new(ErrorKind::Conflict(format!(
            "a script with this name already exists ({detail})"
        ))),
        other => other.into(),
    }
}

fn type_mismatch(expected: ScriptType, actual: ScriptType) -> DomainError {
    DomainError::new(ErrorKind::ScriptValidation(vec![ValidationIssue {
        path: "root".into(),
        error_type: ValidationErrorType::StructureError,
        message: format!(
            "scriptType is `{}` but the content is a {} script",
            expected.as_str(),
            actual.as_str()
        ),
        expected: Some(expected.as_str().into()),
        actual: Some(actual.as_str().into()),
        suggestion: Some(
            "Send the scriptType that matches the YAML root (`session` or `topic`)".into(),
        ),
        line: None,
        column: None,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_stable_hex_sha256() {
        assert_eq!(
            content_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(content_hash("a"), content_hash("b"));
    }
}
