//! Conversation tests of a project's draft: run on request, and before a
//! publish when the catalog requires them to pass.

use super::ScriptCatalog;
use crate::actor::Actor;
use crate::error::{DomainError, ErrorKind};
use crate::ids::ScriptId;
use crate::ports::ScriptRepository;
use crate::ports_bundle::Ports;
use crate::project::{FileType, ProjectFile};
use crate::script_tests::{ScriptTestFile, ScriptTestReport, ScriptTester, TestSubject};
use std::sync::Arc;

/// The catalog's test runner and whether publishing needs passing tests.
#[derive(Clone)]
pub(crate) struct ProjectTesting {
    pub(crate) tester: Arc<dyn ScriptTester>,
    pub(crate) require_tests_to_publish: bool,
}

impl<P: Ports> ScriptCatalog<P> {
    /// Runs the draft's conversation tests — its test files and `extra`
    /// ones sent with the request — against the draft (editor or admin:
    /// runs cost LLM calls when a real provider answers). Failing cases are
    /// the report's business, not an error; with no test at all the report
    /// is empty and does not count as a success.
    pub async fn run_tests(
        &self,
        actor: &Actor,
        id: ScriptId,
        extra: Vec<ScriptTestFile>,
    ) -> Result<ScriptTestReport, DomainError> {
        actor.require_script_manager()?;
        let testing = self.testing.as_ref().ok_or_else(|| {
            DomainError::new(ErrorKind::Internal(
                "this server runs no conversation tests: no test runner is configured".into(),
            ))
            .with_script(id, None)
        })?;
        let draft = self.draft(id).await?;
        let script = self.get(id).await?;
        let files = self.adapters.scripts.list_files(id).await?;
        let (subject, mut tests) = draft_under_test(
            script.name,
            draft.content,
            files.into_iter().map(|f| f.file),
        );
        tests.extend(extra);
        Ok(testing.tester.run(subject, tests).await)
    }

    /// With tests required to publish: `TESTS_FAILED` unless the draft's
    /// tests all pass, run on exactly what is about to be published (the
    /// project `name`'s session script `content` and its `files`).
    pub(crate) async fn check_tests_before_publish(
        &self,
        id: ScriptId,
        name: &str,
        content: &str,
        files: &[ProjectFile],
    ) -> Result<(), DomainError> {
        let Some(testing) = self.testing.as_ref().filter(|t| t.require_tests_to_publish) else {
            return Ok(());
        };
        let (subject, tests) =
            draft_under_test(name.to_owned(), content.to_owned(), files.iter().cloned());
        let report = testing.tester.run(subject, tests).await;
        if report.succeeded() {
            return Ok(());
        }
        tracing::info!(
            event = "publish_refused_by_tests",
            script.id = %id,
            tests.passed = report.passed,
            tests.failed = report.failed,
            tests.files = report.files.len(),
            "publish refused: the draft's conversation tests did not pass"
        );
        Err(DomainError::new(ErrorKind::TestsFailed(Box::new(report))).with_script(id, None))
    }
}

/// The draft as the tests see it — the session script `content` of project
/// `name` with its technique and template `files` — and its test files.
fn draft_under_test(
    name: String,
    content: String,
    files: impl IntoIterator<Item = ProjectFile>,
) -> (TestSubject, Vec<ScriptTestFile>) {
    let mut subject = TestSubject {
        name,
        script: content,
        techniques: Vec::new(),
        templates: Vec::new(),
    };
    let mut tests = Vec::new();
    for file in files {
        let test_file = ScriptTestFile {
            path: file.path,
            content: file.content,
        };
        match file.file_type {
            FileType::Technique => subject.techniques.push(test_file),
            FileType::Template => subject.templates.push(test_file),
            FileType::Test => tests.push(test_file),
        }
    }
    (subject, tests)
}
