//! Conversation tests of a project's draft: `POST /api/projects/{id}/test`
//! runs them before publishing; a publish that requires them answers
//! `TESTS_FAILED` with the same report.

use super::parse_id;
use crate::auth::CurrentActor;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::responses::{JsonBody, Protected, ScriptManager};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use heartrule_domain::{
    ScriptId, ScriptTestFile, ScriptTestReport, TestCaseReport, TestFailure, TestFileReport,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Test files to run besides the project's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunTestsRequest {
    /// Extra test files (not stored): e.g. a case being written.
    #[serde(default)]
    pub tests: Vec<TestFileSource>,
}

/// A conversation test file's YAML and the path that names it in reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestFileSource {
    /// e.g. `tests/intake.test.yaml`.
    pub path: String,
    /// The test file: `cases:` of user turns and expectations.
    pub content: String,
}

/// One unmet expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestFailureBody {
    /// `start`, `turn N` (1-based) or `end`.
    pub step: String,
    pub message: String,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestCaseBody {
    pub name: String,
    pub passed: bool,
    pub failures: Vec<TestFailureBody>,
    /// Wording-dependent checks skipped (a real provider answered).
    pub skipped_checks: usize,
}

/// What a test file's cases reached of the script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestCoverageBody {
    pub reached: usize,
    pub total: usize,
    /// The actions and exit branches no case reached, with line numbers.
    pub gaps: Vec<String>,
}

/// One test file's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestFileBody {
    pub path: String,
    pub passed: bool,
    /// Why the file could not run (not a test file, the draft does not load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub cases: Vec<TestCaseBody>,
    pub coverage: TestCoverageBody,
}

/// The results of a test run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestReportBody {
    /// At least one file ran and no case failed.
    pub succeeded: bool,
    pub passed: usize,
    /// Failed cases plus files that could not run.
    pub failed: usize,
    pub skipped_checks: usize,
    /// `N passed, M failed (first: …)`.
    pub summary: String,
    pub files: Vec<TestFileBody>,
}

impl From<&TestFailure> for TestFailureBody {
    fn from(failure: &TestFailure) -> Self {
        Self {
            step: failure.step.clone(),
            message: failure.message.clone(),
        }
    }
}

impl From<&TestCaseReport> for TestCaseBody {
    fn from(case: &TestCaseReport) -> Self {
        Self {
            name: case.name.clone(),
            passed: case.passed(),
            failures: case.failures.iter().map(TestFailureBody::from).collect(),
            skipped_checks: case.skipped_checks,
        }
    }
}

impl From<&TestFileReport> for TestFileBody {
    fn from(file: &TestFileReport) -> Self {
        Self {
            path: file.path.clone(),
            passed: file.passed(),
            error: file.error.clone(),
            cases: file.cases.iter().map(TestCaseBody::from).collect(),
            coverage: TestCoverageBody {
                reached: file.coverage.reached,
                total: file.coverage.total,
                gaps: file.coverage.gaps.clone(),
            },
        }
    }
}

impl From<&ScriptTestReport> for TestReportBody {
    fn from(report: &ScriptTestReport) -> Self {
        Self {
            succeeded: report.succeeded(),
            passed: report.passed,
            failed: report.failed,
            skipped_checks: report.skipped_checks,
            summary: report.summary(),
            files: report.files.iter().map(TestFileBody::from).collect(),
        }
    }
}

/// Runs the project's conversation tests — its test files and any sent in
/// the body — against its draft, with the engine in process on a store of
/// its own (nothing reaches real sessions). Failing cases are a 200 with
/// `succeeded: false`; with no test at all `files` is empty.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/test",
    tag = "versions",
    params(("id" = Uuid, Path, description = "Project (script) id")),
    request_body = RunTestsRequest,
    responses(
        (status = 200, description = "The report: each file's cases, failures and coverage", body = TestReportBody),
        (status = 400, description = "`id` is not a UUID or the body is invalid", body = ErrorBody),
        (status = 404, description = "`SCRIPT_NOT_FOUND`", body = ErrorBody),
        ScriptManager, JsonBody, Protected
    )
)]
pub async fn run_tests(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    id: web::Path<String>,
    body: web::Json<RunTestsRequest>,
) -> Result<HttpResponse, ApiError> {
    let id: ScriptId = parse_id("id", &id)?;
    let extra = body
        .into_inner()
        .tests
        .into_iter()
        .map(|t| ScriptTestFile {
            path: t.path,
            content: t.content,
        })
        .collect();
    let report = state.scripts.run_tests(&actor, id, extra).await?;
    Ok(HttpResponse::Ok().json(TestReportBody::from(&report)))
}
