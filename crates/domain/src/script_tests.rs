//! Conversation tests of a project: the port that runs them and the report
//! it returns. A test file holds cases of user turns with what each must
//! lead to (session status, position, variables, AI text, LLM calls); the
//! [`ScriptTester`] runs them against a script that is not published yet —
//! a project's draft — so an editor sees what an edit breaks before any
//! user meets it, and `publish` can require them to pass.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One conversation test file (`*.test.yaml`) and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptTestFile {
    /// The file's path in its project (or on disk): names it in reports.
    pub path: String,
    /// The YAML source.
    pub content: String,
}

/// What a project's tests run against: its session script and the files
/// that travel with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestSubject {
    /// The project's name; the runner stores the script under it.
    pub name: String,
    /// The session script's YAML.
    pub script: String,
    /// Technique scripts the session may call through `use_skill`.
    pub techniques: Vec<ScriptTestFile>,
    /// Prompt templates by virtual path (`_system/config/default/<file>` or
    /// `_system/config/custom/<scheme>/<file>`), over the engine's own.
    pub templates: Vec<ScriptTestFile>,
}

/// One unmet expectation of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFailure {
    /// `start`, `turn N` (1-based) or `end`.
    pub step: String,
    /// What was expected and what happened.
    pub message: String,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCaseReport {
    /// The case's name.
    pub name: String,
    /// Every unmet expectation; empty when the case passed.
    pub failures: Vec<TestFailure>,
    /// Wording-dependent checks skipped because a real provider answered.
    pub skipped_checks: usize,
}

impl TestCaseReport {
    /// Whether every expectation of the case held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// How much of a script a test file's cases reached.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCoverage {
    /// Actions at least one case reached.
    pub reached: usize,
    /// Actions of the session script and the techniques it was given.
    pub total: usize,
    /// One line per action or exit branch no case reached, with its line
    /// number (`line 12: action ask_mood (ai_ask) not reached`).
    pub gaps: Vec<String>,
}

/// The result of one test file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFileReport {
    /// The test file's path.
    pub path: String,
    /// Why the file could not run at all (not a test file, the script does
    /// not load); its cases are then empty and the file counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One report per case, in file order.
    pub cases: Vec<TestCaseReport>,
    /// What the cases reached.
    pub coverage: TestCoverage,
}

impl TestFileReport {
    /// Whether the file ran and every case passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.cases.iter().all(TestCaseReport::passed)
    }
}

/// The results of a run of test files.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptTestReport {
    /// Cases that passed, over all files.
    pub passed: usize,
    /// Cases that failed, plus files that could not run.
    pub failed: usize,
    /// Wording-dependent checks skipped over all cases.
    pub skipped_checks: usize,
    /// One report per file, in the order given.
    pub files: Vec<TestFileReport>,
}

impl ScriptTestReport {
    /// The report of `files`, with the totals counted.
    #[must_use]
    pub fn of(files: Vec<TestFileReport>) -> Self {
        let mut report = Self {
            files,
            ..Self::default()
        };
        for file in &report.files {
            if file.error.is_some() {
                report.failed += 1;
            }
            for case in &file.cases {
                report.skipped_checks += case.skipped_checks;
                if case.passed() {
                    report.passed += 1;
                } else {
                    report.failed += 1;
                }
            }
        }
        report
    }

    /// Whether at least one file ran and nothing failed.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        !self.files.is_empty() && self.failed == 0
    }

    /// A one-line summary: `3 passed, 1 failed (first: tests/a.test.yaml,
    /// case "x", turn 2: …)`.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut text = format!("{} passed, {} failed", self.passed, self.failed);
        let first = self.files.iter().find_map(|file| {
            if let Some(error) = &file.error {
                return Some(format!("{}: {error}", file.path));
            }
            file.cases.iter().find_map(|case| {
                case.failures.first().map(|f| {
                    format!(
                        "{}, case {:?}, {}: {}",
                        file.path, case.name, f.step, f.message
                    )
                })
            })
        });
        if let Some(first) = first {
            text.push_str(&format!(" (first: {first})"));
        }
        text
    }
}

/// Runs conversation tests against a script with the engine in process,
/// on a store of its own: nothing of a run reaches the real sessions.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ScriptTester: Send + Sync {
    /// Runs every case of `tests` against `subject`. Never fails as a whole:
    /// a file that cannot run is reported as failed with its reason.
    async fn run(&self, subject: TestSubject, tests: Vec<ScriptTestFile>) -> ScriptTestReport;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, failures: &[(&str, &str)]) -> TestCaseReport {
        TestCaseReport {
            name: name.into(),
            failures: failures
                .iter()
                .map(|(step, message)| TestFailure {
                    step: (*step).into(),
                    message: (*message).into(),
                })
                .collect(),
            skipped_checks: 1,
        }
    }

    fn file(path: &str, error: Option<&str>, cases: Vec<TestCaseReport>) -> TestFileReport {
        TestFileReport {
            path: path.into(),
            error: error.map(Into::into),
            cases,
            coverage: TestCoverage::default(),
        }
    }

    #[test]
    fn totals_count_cases_and_unrunnable_files() {
        let report = ScriptTestReport::of(vec![
            file(
                "tests/a.test.yaml",
                None,
                vec![case("ok", &[]), case("bad", &[("turn 2", "phase is p1")])],
            ),
            file("tests/b.test.yaml", Some("not a test file"), vec![]),
        ]);
        assert_eq!(
            (report.passed, report.failed, report.skipped_checks),
            (1, 2, 2)
        );
        assert!(!report.succeeded());
        assert_eq!(
            report.summary(),
            "1 passed, 2 failed (first: tests/a.test.yaml, case \"bad\", turn 2: phase is p1)"
        );
    }

    #[test]
    fn no_files_is_not_success() {
        let empty = ScriptTestReport::of(Vec::new());
        assert!(!empty.succeeded());
        let passing = ScriptTestReport::of(vec![file("t.test.yaml", None, vec![case("ok", &[])])]);
        assert!(passing.succeeded());
        assert_eq!(passing.summary(), "1 passed, 0 failed");
    }
}
