//! The conversation-test runner behind the domain's [`ScriptTester`] port:
//! a project's test files run against its draft the way `heartrule test`
//! runs files against scripts on disk — each case on an in-memory store of
//! its own, so nothing reaches the real sessions.

use super::{parse_test_file, run_cases, RunOptions, ScriptFile, TestFileError};
use async_trait::async_trait;
use heartrule_domain::project::template_key;
use heartrule_domain::{
    ScriptTestFile, ScriptTestReport, ScriptTester, TestCoverage, TestFileReport, TestSubject,
};
use heartrule_script_engine::runtime::templates::OverlayTemplates;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs projects' conversation tests with the engine in process.
#[derive(Clone)]
pub struct ConversationTester {
    options: RunOptions,
}

impl ConversationTester {
    /// A runner building each case's engine from `options` (the mock LLM
    /// for reproducible results).
    #[must_use]
    pub fn new(options: RunOptions) -> Self {
        Self { options }
    }

    /// The runner's options with the subject's template files over the
    /// runner's templates, as a session on a version with those files gets
    /// them.
    fn options_for(&self, subject: &TestSubject) -> RunOptions {
        let own: Vec<(String, String)> = subject
            .templates
            .iter()
            .filter_map(|t| template_key(&t.path).map(|key| (key.to_owned(), t.content.clone())))
            .collect();
        if own.is_empty() {
            return self.options.clone();
        }
        RunOptions {
            templates: Arc::new(OverlayTemplates::new(
                own.iter().map(|(key, text)| (key, text)),
                Arc::clone(&self.options.templates),
            )),
            ..self.options.clone()
        }
    }

    async fn run_one(
        &self,
        subject: &TestSubject,
        test: &ScriptTestFile,
        options: &RunOptions,
    ) -> Result<TestFileReport, TestFileError> {
        let path = Path::new(&test.path);
        let file = parse_test_file(path, &test.content)?;
        // The project's draft is the script under test, whatever a `script`
        // key says (it lets the same file run from disk beside the script).
        let script = ScriptFile {
            path: PathBuf::from(format!("{}.yaml", subject.name)),
            source: subject.script.clone(),
            name: subject.name.clone(),
        };
        let techniques: Vec<ScriptFile> = subject
            .techniques
            .iter()
            .map(|t| ScriptFile::named(&t.path, t.content.clone()))
            .collect();
        let report = run_cases(path, &file, script, &techniques, options).await?;
        Ok(report.to_domain())
    }
}

#[async_trait]
impl ScriptTester for ConversationTester {
    async fn run(&self, subject: TestSubject, tests: Vec<ScriptTestFile>) -> ScriptTestReport {
        let options = self.options_for(&subject);
        let mut files = Vec::with_capacity(tests.len());
        for test in &tests {
            files.push(match self.run_one(&subject, test, &options).await {
                Ok(report) => report,
                Err(error) => TestFileReport {
                    path: test.path.clone(),
                    error: Some(error.to_string()),
                    cases: Vec::new(),
                    coverage: TestCoverage::default(),
                },
            });
        }
        ScriptTestReport::of(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "session:\n  session_id: hello\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: welcome\n              action_type: ai_say\n              config: {content: Welcome to HeartRule}\n            - action_id: bye\n              action_type: ai_say\n              config: {content: Goodbye}\n";

    fn subject() -> TestSubject {
        TestSubject {
            name: "hello".into(),
            script: SCRIPT.into(),
            ..TestSubject::default()
        }
    }

    fn test(path: &str, content: &str) -> ScriptTestFile {
        ScriptTestFile {
            path: path.into(),
            content: content.into(),
        }
    }

    #[tokio::test]
    async fn runs_cases_against_the_subject_and_names_failures() {
        let tester = ConversationTester::new(RunOptions::mock());
        let report = tester
            .run(
                subject(),
                vec![test(
                    "tests/hello.test.yaml",
                    "cases:\n  - name: greets\n    start: {ai_says: Welcome}\n  - name: wrong text\n    start: {ai_says: Bonjour}\n",
                )],
            )
            .await;
        assert_eq!((report.passed, report.failed), (1, 1), "{report:?}");
        let failing = &report.files[0].cases[1];
        assert_eq!(failing.name, "wrong text");
        assert_eq!(failing.failures[0].step, "start");
        assert!(failing.failures[0].message.contains("Bonjour"));
        assert_eq!(report.files[0].coverage.total, 2);
        assert!(report.summary().contains("case \"wrong text\", start"));
    }

    /// The mock's answers, with every prompt kept.
    struct PromptLog {
        mock: heartrule_llm::MockProvider,
        prompts: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait]
    impl heartrule_domain::LlmProvider for PromptLog {
        fn name(&self) -> &str {
            "prompt-log"
        }

        async fn complete(
            &self,
            request: &heartrule_domain::LlmRequest,
        ) -> Result<heartrule_domain::LlmResponse, heartrule_domain::LlmError> {
            self.prompts.lock().unwrap().push(request.prompt.clone());
            self.mock.complete(request).await
        }

        async fn stream(
            &self,
            request: &heartrule_domain::LlmRequest,
        ) -> Result<heartrule_domain::LlmStream, heartrule_domain::LlmError> {
            self.prompts.lock().unwrap().push(request.prompt.clone());
            self.mock.stream(request).await
        }
    }

    #[tokio::test]
    async fn the_subjects_template_files_shape_the_prompts() {
        let llm = Arc::new(PromptLog {
            mock: heartrule_llm::MockProvider::new(),
            prompts: std::sync::Mutex::new(Vec::new()),
        });
        let tester = ConversationTester::new(RunOptions {
            llm: Arc::clone(&llm) as Arc<dyn heartrule_domain::LlmProvider>,
            ..RunOptions::mock()
        });
        let asking = SCRIPT.replace(
            "action_type: ai_say\n              config: {content: Welcome to HeartRule}",
            "action_type: ai_ask\n              config: {content: How are you?, output: [{get: mood}]}",
        );
        let subject = TestSubject {
            script: asking,
            templates: vec![test(
                "_system/config/default/ai_ask_v1.md",
                "PROJECT ASK TEMPLATE: {{task}}",
            )],
            ..subject()
        };
        tester
            .run(
                subject,
                vec![test("tests/t.test.yaml", "cases:\n  - name: asks\n")],
            )
            .await;
        let prompts = llm.prompts.lock().unwrap();
        assert!(
            prompts
                .iter()
                .any(|p| p.starts_with("PROJECT ASK TEMPLATE: ")),
            "{prompts:?}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_test_file_fails_with_its_reason() {
        let tester = ConversationTester::new(RunOptions::mock());
        let report = tester
            .run(subject(), vec![test("tests/bad.test.yaml", "cases: 3\n")])
            .await;
        assert_eq!(report.failed, 1);
        let error = report.files[0].error.as_deref().unwrap();
        assert!(
            error.starts_with("tests/bad.test.yaml: not a conversation test file"),
            "{error}"
        );
        assert!(!report.succeeded());
    }
}
