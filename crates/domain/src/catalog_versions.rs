//! The script editor: a draft per script, immutable published versions, and
//! the current-version pointer new sessions start on (publish, rollback,
//! restore). Reading needs any actor; writing the editor or admin role.
//! Every write is audited as `script.update` with an `operation` detail.

use super::{become_version, content_hash, publish_conflict, ScriptCatalog};
use crate::actor::Actor;
use crate::audit::AuditAction;
use crate::engine::{LoadMode, ScriptEngine};
use crate::error::{DomainError, ErrorKind};
use crate::ids::ScriptId;
use crate::ports::{Clock, RepositoryError, ScriptRepository};
use crate::ports_bundle::Ports;
use crate::project::{version_hash, ProjectFile};
use crate::script::{Script, ScriptVersion, WorkingDraft};
use serde::{Deserialize, Serialize};

/// What [`ScriptCatalog::publish`] is asked to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishDraft {
    /// `Strict` refuses what compatible mode would normalise; `Compatible`
    /// accepts it and stores the warnings with the version.
    pub mode: LoadMode,
    /// The release note stored with the version.
    pub note: String,
    /// When given, the draft must still be at this revision (the one the
    /// editor reviewed), else `CONFLICT`.
    pub draft_revision: Option<u64>,
}

/// A published version and the script now pointing at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The script, now pointing at `version`.
    pub script: Script,
    /// The version just stored.
    pub version: ScriptVersion,
}

/// What a version is compared with in [`ScriptCatalog::diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffTarget {
    /// Another stored version.
    Version(u32),
    /// The script's draft.
    Draft,
}

/// A unified diff between a version and another version or the draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionDiff {
    /// `version N`: the `---` side.
    pub from: String,
    /// `version M` or `draft`: the `+++` side.
    pub to: String,
    /// The unified diff (three lines of context) of the session script,
    /// then one section per changed file with the file's path in its
    /// headers (`version N/<path>`, a missing side `/dev/null`); empty when
    /// both sides are equal.
    pub unified: String,
    /// Lines only in `to`.
    pub additions: usize,
    /// Lines only in `from`.
    pub deletions: usize,
    /// Paths of the files added, removed or changed, sorted.
    #[serde(default)]
    pub changed_files: Vec<String>,
}

/// Adds the unified diff of `old` → `new` under the given headers to
/// `unified` and counts its lines; false when both are equal.
fn diff_section(
    unified: &mut String,
    counts: &mut (usize, usize),
    (old, new): (&str, &str),
    (from, to): (&str, &str),
) -> bool {
    let diff = similar::TextDiff::from_lines(old, new);
    let (mut additions, mut deletions) = (0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => additions += 1,
            similar::ChangeTag::Delete => deletions += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    if additions + deletions == 0 {
        return false;
    }
    counts.0 += additions;
    counts.1 += deletions;
    unified.push_str(
        &diff
            .unified_diff()
            .context_radius(3)
            .header(from, to)
            .to_string(),
    );
    true
}

impl<P: Ports> ScriptCatalog<P> {
    /// The unified diff from version `from` to `to` (another version or
    /// the draft), line by line.
    pub async fn diff(
        &self,
        id: ScriptId,
        from: u32,
        to: DiffTarget,
    ) -> Result<VersionDiff, DomainError> {
        let old = self.version(id, from).await?;
        let (to_label, new, new_files) = match to {
            DiffTarget::Version(number) => {
                let version = self.version(id, number).await?;
                (format!("version {number}"), version.content, version.files)
            }
            DiffTarget::Draft => {
                let files = self.adapters.scripts.list_files(id).await?;
                (
                    "draft".to_owned(),
                    self.draft(id).await?.content,
                    files.into_iter().map(|f| f.file).collect(),
                )
            }
        };
        let from_label = format!("version {from}");
        let mut unified = String::new();
        let mut counts = (0, 0);
        diff_section(
            &mut unified,
            &mut counts,
            (&old.content, &new),
            (&from_label, &to_label),
        );
        let by_path = |files: &[ProjectFile]| -> std::collections::BTreeMap<String, String> {
            files
                .iter()
                .map(|f| (f.path.clone(), f.content.clone()))
                .collect()
        };
        let (old_files, new_files) = (by_path(&old.files), by_path(&new_files));
        let paths: std::collections::BTreeSet<&String> =
            old_files.keys().chain(new_files.keys()).collect();
        let mut changed_files = Vec::new();
        for path in paths {
            let (before, after) = (old_files.get(path), new_files.get(path));
            let from_header = before.map_or_else(
                || "/dev/null".to_owned(),
                |_| format!("{from_label}/{path}"),
            );
            let to_header =
                after.map_or_else(|| "/dev/null".to_owned(), |_| format!("{to_label}/{path}"));
            let changed = diff_section(
                &mut unified,
                &mut counts,
                (
                    before.map_or("", String::as_str),
                    after.map_or("", String::as_str),
                ),
                (&from_header, &to_header),
            );
            // An empty file added or removed changes no line but is a change.
            if changed || before.is_none() != after.is_none() {
                changed_files.push(path.clone());
            }
        }
        Ok(VersionDiff {
            from: from_label,
            to: to_label,
            unified,
            additions: counts.0,
            deletions: counts.1,
            changed_files,
        })
    }

    /// The number the next published version of script `id` gets.
    pub(crate) async fn next_version_number(&self, id: ScriptId) -> Result<u32, DomainError> {
        let latest = self
            .adapters
            .scripts
            .latest_version_number(id)
            .await?
            .ok_or_else(|| script_not_found(id))?;
        latest.checked_add(1).ok_or_else(|| {
            DomainError::new(ErrorKind::Conflict(format!(
                "script {id} has no version number left"
            )))
        })
    }

    /// The script's draft (its current version's content until first saved).
    pub async fn draft(&self, id: ScriptId) -> Result<WorkingDraft, DomainError> {
        self.adapters
            .scripts
            .get_draft(id)
            .await?
            .ok_or_else(|| script_not_found(id))
    }

    /// Saves the draft, unvalidated (a draft may be work in progress). The
    /// save must be based on the stored revision: an editor holding an
    /// older one gets `CONFLICT` and nothing is written.
    pub async fn save_draft(
        &self,
        actor: &Actor,
        id: ScriptId,
        content: String,
        expected_revision: u64,
    ) -> Result<WorkingDraft, DomainError> {
        actor.require_script_manager()?;
        let before = self.draft(id).await?;
        let saved = self
            .adapters
            .scripts
            .save_draft(
                id,
                &content,
                Some(expected_revision),
                actor.subject(),
                self.adapters.clock.now(),
            )
            .await
            .map_err(|e| stale_draft(e, id, expected_revision))?;
        self.record_audit(
            actor,
            AuditAction::ScriptUpdate,
            id,
            (
                Some(content_hash(&before.content)),
                Some(content_hash(&saved.content)),
            ),
            serde_json::json!({ "operation": "draft.save", "revision": saved.revision }),
        )
        .await;
        Ok(saved)
    }

    /// Validates the draft and publishes it as the next version, which
    /// becomes current: new sessions start on it, running ones keep theirs.
    /// A draft that does not load is `DRAFT_INVALID` with its issues; a
    /// draft equal to the current version is `CONFLICT` (nothing to publish).
    pub async fn publish(
        &self,
        actor: &Actor,
        id: ScriptId,
        request: PublishDraft,
    ) -> Result<Published, DomainError> {
        actor.require_script_manager()?;
        let a = &self.adapters;
        let draft = self.draft(id).await?;
        if let Some(expected) = request.draft_revision {
            if expected != draft.revision {
                return Err(stale_revision(id, expected, draft.revision));
            }
        }
        let files: Vec<ProjectFile> = a
            .scripts
            .list_files(id)
            .await?
            .into_iter()
            .map(|f| f.file)
            .collect();
        let mut issues = Vec::new();
        let parsed = match a.engine.load(&draft.content, request.mode) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                issues = e.issues();
                None
            }
        };
        issues.extend(self.check_draft_files(&files, request.mode));
        let parsed = match parsed {
            Some(parsed) if issues.is_empty() => parsed,
            _ => {
                return Err(DomainError::new(ErrorKind::DraftInvalid(issues)).with_script(id, None))
            }
        };
        let mut script = self.get(id).await?;
        let hash = version_hash(&draft.content, &files);
        if hash == script.content_hash {
            return Err(DomainError::new(ErrorKind::Conflict(format!(
                "the draft is version {} already: nothing to publish",
                script.current_version
            )))
            .with_script(id, Some(script.name)));
        }
        // No connection is held here: with a real provider the tests take
        // as long as their LLM calls.
        self.check_tests_before_publish(id, &script.name, &draft.content, &files)
            .await?;
        let before_hash = script.content_hash.clone();
        let now = a.clock.now();
        let version = ScriptVersion {
            script_id: id,
            number: self.next_version_number(id).await?,
            content: draft.content,
            content_hash: hash,
            document: parsed.document,
            files,
            author: actor.subject().to_owned(),
            note: request.note,
            warnings: parsed.warnings,
            created_at: now,
        };
        become_version(&mut script, &version);
        script.updated_at = now;
        a.scripts
            .publish(&script, &version)
            .await
            .map_err(publish_conflict)?;
        tracing::info!(event = "script_published", script.id = %id, script.version = version.number, audit = true, "script version published");
        self.record_audit(
            actor,
            AuditAction::ScriptUpdate,
            id,
            (Some(before_hash), Some(version.content_hash.clone())),
            serde_json::json!({
                "operation": "publish",
                "scriptName": script.name,
                "version": version.number,
                "draftRevision": draft.revision,
            }),
        )
        .await;
        Ok(Published { script, version })
    }

    /// Every version of the script, newest first.
    pub async fn versions(&self, id: ScriptId) -> Result<Vec<ScriptVersion>, DomainError> {
        let versions = self.adapters.scripts.list_versions(id).await?;
        if versions.is_empty() {
            // Every stored script has at least version 1.
            return Err(script_not_found(id));
        }
        Ok(versions)
    }

    /// One version; `VERSION_NOT_FOUND` when the script has no such number.
    pub async fn version(&self, id: ScriptId, number: u32) -> Result<ScriptVersion, DomainError> {
        if let Some(version) = self.adapters.scripts.get_version(id, number).await? {
            return Ok(version);
        }
        // Tell an unknown script from an unknown version.
        self.get(id).await?;
        Err(DomainError::new(ErrorKind::VersionNotFound {
            script_id: id,
            number,
        })
        .with_script(id, None))
    }

    /// Points the script at version `number`: new sessions start on it;
    /// running sessions keep the version they started on.
    pub async fn set_current_version(
        &self,
        actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<Script, DomainError> {
        actor.require_script_manager()?;
        let before = self.get(id).await?;
        self.move_current(actor, before, number, "set-current")
            .await
    }

    /// Moves the current version back: to `target`, or when `None` to the
    /// highest-numbered version below the current one (`CONFLICT` when the
    /// current version is the first).
    pub async fn rollback(
        &self,
        actor: &Actor,
        id: ScriptId,
        target: Option<u32>,
    ) -> Result<Script, DomainError> {
        actor.require_script_manager()?;
        let before = self.get(id).await?;
        let number = match target {
            Some(number) => number,
            None => self
                .versions(id)
                .await?
                .iter()
                .map(|v| v.number)
                .find(|n| *n < before.current_version)
                .ok_or_else(|| {
                    DomainError::new(ErrorKind::Conflict(format!(
                        "version {} is the first: there is nothing to roll back to",
                        before.current_version
                    )))
                    .with_script(id, Some(before.name.clone()))
                })?,
        };
        self.move_current(actor, before, number, "rollback").await
    }

    async fn move_current(
        &self,
        actor: &Actor,
        before: Script,
        number: u32,
        operation: &str,
    ) -> Result<Script, DomainError> {
        let id = before.id;
        // VERSION_NOT_FOUND before anything is written.
        self.version(id, number).await?;
        let script = self
            .adapters
            .scripts
            .set_current_version(id, number, self.adapters.clock.now())
            .await?;
        tracing::info!(event = "script_current_version_set", script.id = %id, script.version = number, audit = true, "script current version moved");
        self.record_audit(
            actor,
            AuditAction::ScriptUpdate,
            id,
            (Some(before.content_hash), Some(script.content_hash.clone())),
            serde_json::json!({
                "operation": operation,
                "scriptName": script.name,
                "version": number,
                "fromVersion": before.current_version,
            }),
        )
        .await;
        Ok(script)
    }

    /// Copies version `number` (its content and files) into the draft (a new draft revision; an
    /// editor holding the older revision then gets `CONFLICT` on saving).
    pub async fn restore(
        &self,
        actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<WorkingDraft, DomainError> {
        actor.require_script_manager()?;
        let version = self.version(id, number).await?;
        let before = self.draft(id).await?;
        let before_files = self.adapters.scripts.list_files(id).await?;
        let saved = self
            .adapters
            .scripts
            .replace_draft(
                id,
                &version.content,
                &version.files,
                None,
                actor.subject(),
                self.adapters.clock.now(),
            )
            .await?;
        self.record_audit(
            actor,
            AuditAction::ScriptUpdate,
            id,
            (
                Some(super::projects::draft_hash(&before, &before_files)),
                Some(version.content_hash),
            ),
            serde_json::json!({
                "operation": "restore",
                "version": number,
                "revision": saved.revision,
            }),
        )
        .await;
        Ok(saved)
    }
}

fn script_not_found(id: ScriptId) -> DomainError {
    DomainError::new(ErrorKind::ScriptNotFound(id.to_string()))
}

fn stale_revision(id: ScriptId, expected: u64, actual: u64) -> DomainError {
    DomainError::new(ErrorKind::Conflict(format!(
        "the draft is at revision {actual}, not {expected}: another editor saved it; reload it and apply the edit again"
    )))
    .with_script(id, None)
}

fn stale_draft(error: RepositoryError, id: ScriptId, expected: u64) -> DomainError {
    match error {
        RepositoryError::Conflict(detail) => DomainError::new(ErrorKind::Conflict(format!(
            "the draft is no longer at revision {expected} ({detail}): another editor saved it; reload it and apply the edit again"
        )))
        .with_script(id, None),
        RepositoryError::NotFound(_) => script_not_found(id),
        other => other.into(),
    }
}
