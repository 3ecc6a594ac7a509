//! The `ScriptCatalog`: creating, importing, validating and listing scripts.

use crate::actor::Actor;
use crate::audit::{AuditAction, AuditEvent, AuditLog};
use crate::engine::{LoadMode, LoadWarning, ScriptEngine, ValidationErrorType, ValidationIssue};
use crate::error::{DomainError, ErrorKind};
use crate::ids::ScriptId;
use crate::ports::{Clock, IdGenerator, RepositoryError, ScriptFilter, ScriptRepository};
use crate::ports_bundle::{Adapters, Ports};
use crate::script::{Script, ScriptStatus, ScriptType, ScriptVersion, WorkingDraft};
use crate::script_tests::{ScriptTestFile, ScriptTestReport, ScriptTester};
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
    testing: Option<ProjectTesting>,
}

impl<P: Ports> Clone for ScriptCatalog<P> {
    fn clone(&self) -> Self {
        Self {
            adapters: self.adapters.clone(),
            testing: self.testing.clone(),
        }
    }
}

impl<P: Ports> ScriptCatalog<P> {
    /// A catalog over `adapters` without a conversation-test runner: running
    /// a project's tests is then refused (see [`Self::with_tester`]).
    #[must_use]
    pub fn new(adapters: Adapters<P>) -> Self {
        Self {
            adapters,
            testing: None,
        }
    }

    /// Runs projects' conversation tests with `tester`; when
    /// `require_tests_to_publish`, a draft is published only after its tests
    /// pass (`TESTS_FAILED` otherwise, also when it has none).
    #[must_use]
    pub fn with_tester(
        mut self,
        tester: std::sync::Arc<dyn ScriptTester>,
        require_tests_to_publish: bool,
    ) -> Self {
        self.testing = Some(ProjectTesting {
            tester,
            require_tests_to_publish,
        });
        self
    }

    /// Parses, validates and stores a new script. A taken name is a conflict;
    /// an actor without the editor or admin role is `FORBIDDEN`. Audited as
    /// `script.create` by `actor`.
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
            current_version: 1,
            version: "1.0.0".into(),
            author: draft.author,
            description: draft.description,
            tags: draft.tags,
            created_at: now,
            updated_at: now,
        };
        let first = first_version(&script, actor, &parsed.warnings);
        a.scripts
            .insert_with_version(&script, &first)
            .await
            .map_err(name_conflict)?;
        tracing::info!(
            event = "script_created",
            script.id = %script.id,
            script.name = %script.name,
            audit = true,
            "script created"
        );
        self.audit(actor, AuditAction::ScriptCreate, &script, None)
            .await;
        Ok(StoredScript {
            script,
            warnings: parsed.warnings,
            updated: false,
        })
    }

    /// Creates the script (version 1), or publishes the content as a new
    /// version of the script with the same name and replaces its
    /// description and tags; an actor without the editor or admin role is
    /// `FORBIDDEN`. Sessions already running keep their version. Audited by
    /// `actor` as `script.import` (created) or `script.update` (replaced,
    /// with both content hashes).
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
                let before = script.clone();
                let before_hash = script.content_hash.clone();
                if let Some(description) = &import.description {
                    script.description.clone_from(description);
                }
                if !import.tags.is_empty() {
                    script.tags.clone_from(&import.tags);
                }
                let new_content = script.content_hash != hash;
                if !new_content && script == before {
                    // The same content again (a preload at every start, a
                    // retried import): nothing to write, nothing to audit.
                    return Ok(StoredScript {
                        script,
                        warnings: parsed.warnings,
                        updated: true,
                    });
                }
                script.updated_at = now;
                if new_content {
                    let number = self.next_version_number(script.id).await?;
                    let version = ScriptVersion {
                        script_id: script.id,
                        number,
                        content: import.content.clone(),
                        content_hash: hash.clone(),
                        document: parsed.document.clone(),
                        author: actor.subject().to_owned(),
                        note: "imported".into(),
                        warnings: parsed.warnings.clone(),
                        created_at: now,
                    };
                    become_version(&mut script, &version);
                    a.scripts
                        .publish(&script, &version)
                        .await
                        .map_err(publish_conflict)?;
                } else {
                    a.scripts.update(&script).await?;
                }
                tracing::info!(event = "script_updated", script.id = %script.id, script.name = %script.name, audit = true, "script imported over an existing one");
                self.audit(actor, AuditAction::ScriptUpdate, &script, Some(before_hash))
                    .await;
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
                current_version: 1,
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
            let first = first_version(&script, actor, &parsed.warnings);
            match a.scripts.insert_with_version(&script, &first).await {
                Ok(()) => {
                    tracing::info!(event = "script_created", script.id = %script.id, script.name = %script.name, audit = true, "script imported");
                    self.audit(actor, AuditAction::ScriptImport, &script, None)
                        .await;
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

    /// Records a script write in the audit log. The write has happened by
    /// then, so a failing audit store does not undo or fail it: the event
    /// still reaches the audit log lines, and the failure is logged as an
    /// error beside it for the operator to act on.
    async fn audit(
        &self,
        actor: &Actor,
        action: AuditAction,
        script: &Script,
        before_hash: Option<String>,
    ) {
        let details = serde_json::json!({
            "scriptName": script.name,
            "version": script.current_version,
        });
        self.record_audit(
            actor,
            action,
            script.id,
            (before_hash, Some(script.content_hash.clone())),
            details,
        )
        .await;
    }

    /// Records an audit event about script `id` with the content hashes
    /// before and after the write and the given details.
    pub(crate) async fn record_audit(
        &self,
        actor: &Actor,
        action: AuditAction,
        id: ScriptId,
        (before_hash, after_hash): (Option<String>, Option<String>),
        details: serde_json::Value,
    ) {
        let a = &self.adapters;
        let event = AuditEvent::new(
            a.ids.audit_event_id(),
            a.clock.now(),
            actor,
            action,
            id.to_string(),
        )
        .with_hashes(before_hash, after_hash)
        .with_details(details);
        event.log();
        if let Err(error) = a.audit.record(&event).await {
            tracing::error!(
                target: crate::audit::AUDIT_LOG_TARGET,
                event = "audit_record_failed",
                audit.id = %event.id,
                audit.action = event.action.as_str(),
                error = %error,
                "the audit event of a script write could not be stored; it is only in this log"
            );
        }
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

#[path = "catalog_versions.rs"]
mod versions;

#[path = "catalog_testing.rs"]
mod testing;
use testing::ProjectTesting;
pub use versions::{DiffTarget, PublishDraft, Published, VersionDiff};

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

    async fn draft(&self, _actor: &Actor, id: ScriptId) -> Result<WorkingDraft, DomainError> {
        ScriptCatalog::draft(self, id).await
    }

    async fn save_draft(
        &self,
        actor: &Actor,
        id: ScriptId,
        content: String,
        expected_revision: u64,
    ) -> Result<WorkingDraft, DomainError> {
        ScriptCatalog::save_draft(self, actor, id, content, expected_revision).await
    }

    async fn publish(
        &self,
        actor: &Actor,
        id: ScriptId,
        request: PublishDraft,
    ) -> Result<Published, DomainError> {
        ScriptCatalog::publish(self, actor, id, request).await
    }

    async fn versions(
        &self,
        _actor: &Actor,
        id: ScriptId,
    ) -> Result<Vec<ScriptVersion>, DomainError> {
        ScriptCatalog::versions(self, id).await
    }

    async fn run_tests(
        &self,
        actor: &Actor,
        id: ScriptId,
        extra: Vec<ScriptTestFile>,
    ) -> Result<ScriptTestReport, DomainError> {
        ScriptCatalog::run_tests(self, actor, id, extra).await
    }

    async fn version(
        &self,
        _actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<ScriptVersion, DomainError> {
        ScriptCatalog::version(self, id, number).await
    }

    async fn rollback(
        &self,
        actor: &Actor,
        id: ScriptId,
        target: Option<u32>,
    ) -> Result<Script, DomainError> {
        ScriptCatalog::rollback(self, actor, id, target).await
    }

    async fn set_current_version(
        &self,
        actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<Script, DomainError> {
        ScriptCatalog::set_current_version(self, actor, id, number).await
    }

    async fn restore(
        &self,
        actor: &Actor,
        id: ScriptId,
        number: u32,
    ) -> Result<WorkingDraft, DomainError> {
        ScriptCatalog::restore(self, actor, id, number).await
    }

    async fn diff(
        &self,
        _actor: &Actor,
        id: ScriptId,
        from: u32,
        to: DiffTarget,
    ) -> Result<VersionDiff, DomainError> {
        ScriptCatalog::diff(self, id, from, to).await
    }
}

/// Version 1 of a new script, published by `actor`.
fn first_version(script: &Script, actor: &Actor, warnings: &[LoadWarning]) -> ScriptVersion {
    ScriptVersion {
        author: actor.subject().to_owned(),
        note: "created".into(),
        warnings: warnings.to_vec(),
        ..ScriptVersion::first_of(script)
    }
}

/// Makes `script` the row whose current version is `version`.
pub(crate) fn become_version(script: &mut Script, version: &ScriptVersion) {
    script.script_type = version.document.script_type();
    script.content.clone_from(&version.content);
    script.content_hash.clone_from(&version.content_hash);
    script.document = version.document.clone();
    script.current_version = version.number;
}

/// A publish that lost the race for its version number to another one.
pub(crate) fn publish_conflict(error: RepositoryError) -> DomainError {
    match error {
        RepositoryError::Conflict(detail) => DomainError::new(ErrorKind::Conflict(format!(
            "another version was published at the same time, or the name or technique id is taken ({detail}); retry"
        ))),
        other => other.into(),
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
    use crate::audit::{AuditTargetType, MockAuditLog};
    use crate::engine::{MockScriptEngine, ParsedScript};
    use crate::ports::{
        MockMessageHistory, MockScriptRepository, MockSessionRepository, NoCache, RandomIds,
        SystemClock,
    };
    use crate::privacy::MockUserDataStore;
    use crate::script::{ScriptDocument, TechniqueScript, Topic};
    use std::sync::{Arc, Mutex};

    struct CatalogPorts;
    impl Ports for CatalogPorts {
        type Scripts = MockScriptRepository;
        type Sessions = MockSessionRepository;
        type History = MockMessageHistory;
        type ScriptCache = NoCache;
        type SessionCache = NoCache;
        type Engine = MockScriptEngine;
        type Clock = SystemClock;
        type Ids = RandomIds;
        type Audit = MockAuditLog;
        type UserData = MockUserDataStore;
        type CacheJanitor = NoCache;
    }

    fn document() -> ScriptDocument {
        ScriptDocument::Technique(TechniqueScript {
            technique_id: "t".into(),
            name: None,
            input_parameters: vec![],
            output_variables: vec![],
            topic: Topic {
                topic_id: "t".into(),
                topic_name: None,
                topic_goal: None,
                description: None,
                strategy: None,
                actions: vec![],
            },
        })
    }

    /// A catalog whose audit log collects what it is asked to record.
    fn catalog_with(
        scripts: MockScriptRepository,
    ) -> (ScriptCatalog<CatalogPorts>, Arc<Mutex<Vec<AuditEvent>>>) {
        let mut engine = MockScriptEngine::new();
        engine.expect_load().returning(|_, _| {
            Ok(ParsedScript {
                document: document(),
                warnings: vec![],
            })
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let mut audit = MockAuditLog::new();
        audit.expect_record().returning(move |event| {
            sink.lock().unwrap().push(event.clone());
            Ok(())
        });
        let catalog = ScriptCatalog::new(Adapters {
            scripts: Arc::new(scripts),
            sessions: Arc::new(MockSessionRepository::new()),
            history: Arc::new(MockMessageHistory::new()),
            script_cache: Arc::new(NoCache),
            session_cache: Arc::new(NoCache),
            engine: Arc::new(engine),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            audit: Arc::new(audit),
            user_data: Arc::new(MockUserDataStore::new()),
            cache_janitor: Arc::new(NoCache),
        });
        (catalog, events)
    }

    fn import(content: &str) -> ScriptImport {
        ScriptImport {
            name: "t".into(),
            content: content.into(),
            description: None,
            tags: vec![],
            mode: LoadMode::Compatible,
        }
    }

    #[tokio::test]
    async fn a_created_script_is_audited_with_its_actor_and_hash() {
        let mut scripts = MockScriptRepository::new();
        scripts
            .expect_insert_with_version()
            .withf(|script, version| {
                script.current_version == 1
                    && version.number == 1
                    && version.content_hash == script.content_hash
            })
            .returning(|_, _| Ok(()));
        let (catalog, events) = catalog_with(scripts);
        let stored = catalog
            .create(
                &Actor::editor("ed"),
                ScriptDraft {
                    name: "t".into(),
                    script_type: None,
                    content: "topic: {}".into(),
                    author: "ed".into(),
                    description: String::new(),
                    tags: vec![],
                    mode: LoadMode::Strict,
                },
            )
            .await
            .unwrap();
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.action, AuditAction::ScriptCreate);
        assert_eq!(event.target_type, AuditTargetType::Script);
        assert_eq!(event.target_id, stored.script.id.to_string());
        assert_eq!(event.actor_subject, "ed");
        assert_eq!(event.before_hash, None);
        assert_eq!(
            event.after_hash.as_deref(),
            Some(content_hash("topic: {}").as_str())
        );
        assert_eq!(event.details["scriptName"], "t");
        assert_eq!(event.details["version"], 1);
    }

    #[tokio::test]
    async fn imports_are_audited_as_import_when_new_and_update_with_both_hashes() {
        let mut scripts = MockScriptRepository::new();
        scripts
            .expect_find_by_name()
            .times(1)
            .returning(|_| Ok(None));
        scripts
            .expect_insert_with_version()
            .withf(|script, version| {
                script.current_version == 1
                    && version.number == 1
                    && version.content_hash == script.content_hash
            })
            .returning(|_, _| Ok(()));
        let (catalog, events) = catalog_with(scripts);
        catalog
            .import(&Actor::admin("root"), import("v1"))
            .await
            .unwrap();
        assert_eq!(events.lock().unwrap()[0].action, AuditAction::ScriptImport);

        let mut scripts = MockScriptRepository::new();
        let previous = catalog_script_with("v1");
        scripts
            .expect_find_by_name()
            .returning(move |_| Ok(Some(previous.clone())));
        scripts
            .expect_latest_version_number()
            .returning(|_| Ok(Some(1)));
        scripts
            .expect_publish()
            .withf(|script, version| {
                version.number == 2
                    && script.current_version == 2
                    && version.content == "v2"
                    && script.content == "v2"
                    && version.author == "root"
            })
            .times(1)
            .returning(|_, _| Ok(()));
        let (catalog, events) = catalog_with(scripts);
        let stored = catalog
            .import(&Actor::admin("root"), import("v2"))
            .await
            .unwrap();
        assert!(stored.updated);
        let events = events.lock().unwrap();
        let event = &events[0];
        assert_eq!(event.action, AuditAction::ScriptUpdate);
        assert_eq!(
            event.before_hash.as_deref(),
            Some(content_hash("v1").as_str())
        );
        assert_eq!(
            event.after_hash.as_deref(),
            Some(content_hash("v2").as_str())
        );
        assert_eq!(event.actor_roles, vec![crate::Role::Admin]);
    }

    #[tokio::test]
    async fn importing_the_same_content_again_writes_and_audits_nothing() {
        let mut scripts = MockScriptRepository::new();
        let previous = catalog_script_with("v1");
        let stored_id = previous.id;
        scripts
            .expect_find_by_name()
            .returning(move |_| Ok(Some(previous.clone())));
        scripts.expect_update().times(0);
        scripts.expect_publish().times(0);
        let (catalog, events) = catalog_with(scripts);
        let stored = catalog
            .import(&Actor::admin("root"), import("v1"))
            .await
            .unwrap();
        assert!(stored.updated, "it names the existing script");
        assert_eq!(stored.script.id, stored_id);
        assert!(events.lock().unwrap().is_empty());
    }

    fn catalog_script_with(content: &str) -> Script {
        let now = chrono::Utc::now();
        Script {
            id: ScriptId::new_random(),
            name: "t".into(),
            script_type: ScriptType::Technique,
            status: ScriptStatus::Draft,
            content: content.into(),
            content_hash: content_hash(content),
            document: document(),
            current_version: 1,
            version: "1.0.0".into(),
            author: "a".into(),
            description: String::new(),
            tags: vec![],
            created_at: now,
            updated_at: now,
        }
    }

    /// A script repository holding `script` with the draft `draft`, ready
    /// for a publish (which is expected `publishes` times).
    fn publishable(script: &Script, draft: &str, publishes: usize) -> MockScriptRepository {
        let mut scripts = MockScriptRepository::new();
        let (id, stored, draft) = (script.id, script.clone(), draft.to_owned());
        scripts.expect_get_draft().returning(move |_| {
            Ok(Some(WorkingDraft {
                script_id: id,
                content: draft.clone(),
                revision: 3,
                updated_at: None,
                updated_by: None,
            }))
        });
        scripts
            .expect_get()
            .returning(move |_| Ok(Some(stored.clone())));
        scripts
            .expect_latest_version_number()
            .returning(|_| Ok(Some(1)));
        scripts
            .expect_publish()
            .times(publishes)
            .returning(|_, _| Ok(()));
        scripts
    }

    fn tester_reporting(report: ScriptTestReport) -> Arc<dyn ScriptTester> {
        let mut tester = crate::script_tests::MockScriptTester::new();
        tester
            .expect_run()
            .withf(|subject, _| subject.script == "v2" && subject.name == "t")
            .times(1)
            .returning(move |_, _| report.clone());
        Arc::new(tester)
    }

    fn publish_request() -> PublishDraft {
        PublishDraft {
            mode: LoadMode::Strict,
            note: String::new(),
            draft_revision: None,
        }
    }

    #[tokio::test]
    async fn a_publish_that_requires_tests_is_refused_when_they_fail_and_goes_on_when_they_pass() {
        use crate::script_tests::{TestCaseReport, TestCoverage, TestFailure, TestFileReport};
        let script = catalog_script_with("v1");
        let file = |failures: Vec<TestFailure>| TestFileReport {
            path: "tests/a.test.yaml".into(),
            error: None,
            cases: vec![TestCaseReport {
                name: "greets".into(),
                failures,
                skipped_checks: 0,
            }],
            coverage: TestCoverage::default(),
        };
        let failing = ScriptTestReport::of(vec![file(vec![TestFailure {
            step: "turn 1".into(),
            message: "phase is p1, expected p2".into(),
        }])]);
        let (catalog, events) = catalog_with(publishable(&script, "v2", 0));
        let catalog = catalog.with_tester(tester_reporting(failing), true);
        let refused = catalog
            .publish(&Actor::editor("ed"), script.id, publish_request())
            .await
            .unwrap_err();
        let ErrorKind::TestsFailed(report) = &refused.kind else {
            panic!("expected TESTS_FAILED, got {refused:?}");
        };
        assert_eq!(report.failed, 1);
        assert!(
            refused.to_string().contains("case \"greets\", turn 1"),
            "{refused}"
        );
        assert!(
            events.lock().unwrap().is_empty(),
            "a refused publish is not audited"
        );

        let passing = ScriptTestReport::of(vec![file(Vec::new())]);
        let (catalog, _) = catalog_with(publishable(&script, "v2", 1));
        let catalog = catalog.with_tester(tester_reporting(passing), true);
        let published = catalog
            .publish(&Actor::editor("ed"), script.id, publish_request())
            .await
            .unwrap();
        assert_eq!(published.version.number, 2);
    }

    #[tokio::test]
    async fn tests_run_on_request_only_for_script_managers_and_not_before_an_unrequired_publish() {
        let script = catalog_script_with("v1");
        let (catalog, _) = catalog_with(publishable(&script, "v2", 1));
        let mut tester = crate::script_tests::MockScriptTester::new();
        tester.expect_run().times(0);
        let catalog = catalog.with_tester(Arc::new(tester), false);
        catalog
            .publish(&Actor::editor("ed"), script.id, publish_request())
            .await
            .unwrap();
        let refused = catalog
            .run_tests(&Actor::client("visitor"), script.id, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), crate::error::ErrorCode::Forbidden);
    }

    #[test]
    fn content_hash_is_stable_hex_sha256() {
        assert_eq!(
            content_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(content_hash("a"), content_hash("b"));
    }
}
