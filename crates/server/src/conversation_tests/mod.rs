//! Conversation tests for script authors: YAML files of cases (user turns
//! and what each must lead to) run against a script with the engine
//! embedded in process — the in-memory store and, by default, the
//! deterministic mock LLM — plus a coverage report of the actions and exit
//! branches no case reached. `heartrule test PATH…` runs them.
//!
//! With a real provider ([`RunOptions::check_wording`] false) the checks that
//! depend on how the LLM words things — `ai_says` and variable values other
//! than `{set: …}` — are skipped and counted, never silently passed.

pub mod coverage;
pub mod format;
mod project;
mod scripted_llm;

pub use coverage::{ActionCoverage, Coverage, ExitBranch};
pub use format::{Expectation, ScriptedReply, TestCase, TestFile, TestTurn, VariableExpectation};
pub use project::ConversationTester;

use coverage::Reached;
use heartrule_domain::{
    Actor, CreateSession, DomainError, LlmProvider, LoadMode, ProcessInput, ScriptCatalog,
    ScriptDocument, ScriptEngine, ScriptImport, SessionManager, SessionManagerConfig,
    TestCaseReport as CaseReport, TestCoverage, TestFailure, TestFileReport, TurnResult,
};
use heartrule_llm::MockProvider;
use heartrule_persistence::{MemoryPorts, MemoryStore};
use heartrule_script_engine::runtime::templates::{EmbeddedTemplates, TemplateSource};
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use scripted_llm::ScriptedLlm;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The user id of every test session.
const TEST_USER: &str = "conversation-test";

/// How the runner builds the engine for each case.
#[derive(Clone)]
pub struct RunOptions {
    /// Answers every LLM call a case's scripted replies do not.
    pub llm: Arc<dyn LlmProvider>,
    pub templates: Arc<dyn TemplateSource>,
    pub engine: EngineOptions,
    /// Check the expectations that depend on the LLM's wording; true for
    /// the deterministic mock, false for a real provider.
    pub check_wording: bool,
}

impl RunOptions {
    /// The mock LLM, the built-in templates and default engine options:
    /// reproducible results on any machine.
    #[must_use]
    pub fn mock() -> Self {
        Self {
            llm: Arc::new(MockProvider::new()),
            templates: Arc::new(EmbeddedTemplates::new()),
            engine: EngineOptions::default(),
            check_wording: true,
        }
    }
}

/// Why a test file could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("{path}: cannot be read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a conversation test file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: the script does not load: {message}")]
    Script { path: PathBuf, message: String },
}

/// The result of one test file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub script: PathBuf,
    pub cases: Vec<CaseReport>,
    pub coverage: Coverage,
}

impl FileReport {
    #[must_use]
    pub fn passed(&self) -> bool {
        self.cases.iter().all(CaseReport::passed)
    }

    /// The report as the domain's test runner port returns it.
    #[must_use]
    pub fn to_domain(&self) -> TestFileReport {
        let (reached, total) = self.coverage.summary();
        TestFileReport {
            path: self.path.display().to_string(),
            error: None,
            cases: self.cases.clone(),
            coverage: TestCoverage {
                reached,
                total,
                gaps: self.coverage.gaps(),
            },
        }
    }
}

/// The test files named by `paths`: files as given, folders searched for
/// `*.test.yaml` / `*.test.yml`, sorted.
pub fn find_test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TestFileError> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            collect(path, &mut found)?;
        } else if path.is_file() {
            found.push(path.clone());
        } else {
            return Err(TestFileError::Read {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Whether `path` names a conversation test file (`*.test.yaml` or
/// `*.test.yml`).
#[must_use]
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), TestFileError> {
    let read_error = |source| TestFileError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.is_dir() {
            collect(&path, found)?;
        } else if is_test_file(&path) {
            found.push(path);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, TestFileError> {
    std::fs::read_to_string(path).map_err(|source| TestFileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A script file of the test: its path, source and import name.
struct ScriptFile {
    path: PathBuf,
    source: String,
    name: String,
}

impl ScriptFile {
    fn read(path: PathBuf) -> Result<Self, TestFileError> {
        let source = read(&path)?;
        Ok(Self::named(&path, source))
    }

    /// The file at `path` holding `source`, imported under its file stem.
    fn named(path: impl AsRef<Path>, source: String) -> Self {
        let path = path.as_ref().to_owned();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("script")
            .to_owned();
        Self { path, source, name }
    }
}

/// Runs every case of the test file at `path`.
pub async fn run_file(path: &Path, options: &RunOptions) -> Result<FileReport, TestFileError> {
    let file = parse_test_file(path, &read(path)?)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let script_path = file.script.as_ref().ok_or_else(|| TestFileError::Format {
        path: path.to_owned(),
        message: "`script` is missing: name the session script the cases run against".into(),
    })?;
    let script = ScriptFile::read(base.join(script_path))?;
    let techniques = file
        .techniques
        .iter()
        .map(|t| ScriptFile::read(base.join(t)))
        .collect::<Result<Vec<_>, _>>()?;
    run_cases(path, &file, script, &techniques, options).await
}

fn parse_test_file(path: &Path, source: &str) -> Result<TestFile, TestFileError> {
    serde_yaml::from_str(source).map_err(|e| TestFileError::Format {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Runs the cases of `file` (found at `path`) against `script` and the
/// `techniques` it may call, and measures what they reached.
async fn run_cases(
    path: &Path,
    file: &TestFile,
    script: ScriptFile,
    techniques: &[ScriptFile],
    options: &RunOptions,
) -> Result<FileReport, TestFileError> {
    // The coverage lists every action; loading here also reports a broken
    // script once, before any case runs.
    let loader = HeartRuleEngine::new(
        Arc::clone(&options.llm),
        Arc::clone(&options.templates),
        options.engine,
    );
    let load = |file: &ScriptFile| {
        loader
            .load(&file.source, LoadMode::Compatible)
            .map(|parsed| parsed.document)
            .map_err(|e| TestFileError::Script {
                path: file.path.clone(),
                message: describe_load_error(&e),
            })
    };
    let mut coverage = Coverage::default();
    for technique in techniques {
        coverage.add_script(&technique.path, &technique.source, &load(technique)?);
    }
    let session = load(&script)?;
    if !matches!(session, ScriptDocument::Session(_)) {
        return Err(TestFileError::Script {
            path: script.path.clone(),
            message: "`script` must be a session script (root `session`)".into(),
        });
    }
    coverage.add_script(&script.path, &script.source, &session);

    let mut reached = Reached::default();
    let mut cases = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let (report, case_reached) = run_case(case, &script, techniques, options).await;
        reached.merge(case_reached);
        cases.push(report);
    }
    coverage.apply(&reached);
    Ok(FileReport {
        path: path.to_owned(),
        script: script.path,
        cases,
        coverage,
    })
}

fn describe_load_error(error: &heartrule_domain::ScriptLoadError) -> String {
    let issues = error.issues();
    let details: Vec<String> = issues
        .iter()
        .map(|i| match i.line {
            Some(line) => format!("line {line}: {}", i.message),
            None => format!("{}: {}", i.path, i.message),
        })
        .collect();
    format!("{error}: {}", details.join("; "))
}

/// One case's conversation with its own store and engine.
struct CaseRun {
    manager: SessionManager<MemoryPorts<HeartRuleEngine>>,
    llm: Arc<ScriptedLlm>,
    report: CaseReport,
    reached: Reached,
    check_wording: bool,
}

async fn run_case(
    case: &TestCase,
    script: &ScriptFile,
    techniques: &[ScriptFile],
    options: &RunOptions,
) -> (CaseReport, Reached) {
    let llm = Arc::new(ScriptedLlm::new(Arc::clone(&options.llm), case.llm.clone()));
    let engine = HeartRuleEngine::new(
        Arc::clone(&llm) as Arc<dyn LlmProvider>,
        Arc::clone(&options.templates),
        options.engine,
    );
    let adapters = MemoryStore::new().adapters(Arc::new(engine));
    let catalog = ScriptCatalog::new(adapters.clone());
    let mut run = CaseRun {
        manager: SessionManager::new(adapters, SessionManagerConfig::default()),
        llm,
        report: CaseReport {
            name: case.name.clone(),
            failures: Vec::new(),
            skipped_checks: 0,
        },
        reached: Reached::default(),
        check_wording: options.check_wording,
    };
    if let Err(message) = run.converse(case, script, techniques, &catalog).await {
        run.fail("end", message);
    }
    let unused = run.llm.unused();
    if unused > 0 {
        run.fail(
            "end",
            format!("{unused} scripted LLM repl(ies) were never asked for"),
        );
    }
    (run.report, run.reached)
}

impl CaseRun {
    fn fail(&mut self, step: &str, message: String) {
        self.report.failures.push(TestFailure {
            step: step.to_owned(),
            message,
        });
    }

    /// Runs the case's turns; an error stops the case (the turn failed).
    async fn converse(
        &mut self,
        case: &TestCase,
        script: &ScriptFile,
        techniques: &[ScriptFile],
        catalog: &ScriptCatalog<MemoryPorts<HeartRuleEngine>>,
    ) -> Result<(), String> {
        let actor = Actor::local_operator();
        let import = |file: &ScriptFile| ScriptImport {
            name: file.name.clone(),
            content: file.source.clone(),
            description: None,
            tags: Vec::new(),
            mode: LoadMode::Compatible,
        };
        for technique in techniques {
            catalog
                .import(&actor, import(technique))
                .await
                .map_err(|e| format!("technique {} not stored: {e}", technique.path.display()))?;
        }
        let stored = catalog
            .import(&actor, import(script))
            .await
            .map_err(|e| format!("script not stored: {e}"))?;

        let first = self
            .manager
            .create_session(CreateSession {
                user_id: TEST_USER.to_owned(),
                script_id: stored.script.id,
                initial_variables: case.initial_variables.clone(),
            })
            .await
            .map_err(|e| turn_error("start", &e))?;
        let session_id = first.session_id;
        let mut all = Vec::new();
        self.observe(&first).await;
        if let Some(expect) = &case.start {
            self.check("start", expect, std::slice::from_ref(&first));
        }
        all.push(first);
        for (index, turn) in case.turns.iter().enumerate() {
            let step = format!("turn {}", index + 1);
            let result = self
                .manager
                .process_input(ProcessInput {
                    session_id,
                    content: turn.user.clone(),
                    idempotency: None,
                    sink: None,
                })
                .await
                .map_err(|e| turn_error(&step, &e))?;
            self.observe(&result).await;
            if let Some(expect) = &turn.expect {
                self.check(&step, expect, std::slice::from_ref(&result));
            }
            all.push(result);
        }
        if let Some(expect) = &case.expect {
            self.check("end", expect, &all);
        }
        Ok(())
    }

    /// Notes the actions and exit branches a turn reached.
    async fn observe(&mut self, result: &TurnResult) {
        let reached = &mut self.reached;
        reached
            .actions
            .extend(result.messages.iter().filter_map(|m| m.action_id.clone()));
        reached
            .actions
            .extend(result.llm_calls.iter().map(|c| c.action_id.clone()));
        reached.actions.extend(result.position.action_id.clone());
        // The session's state keeps what ran without a message or a call
        // (round info, exit decisions, running techniques).
        let Ok(session) = self.manager.get_session(result.session_id).await else {
            return;
        };
        let metadata = &session.state.metadata;
        if let Some(rounds) = metadata.get("actionRoundInfo").and_then(Value::as_object) {
            reached.actions.extend(rounds.keys().cloned());
        }
        for entry in metadata
            .get("exitDecisions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let action = entry.get("actionId").and_then(Value::as_str);
            let branch = entry.get("decision").and_then(ExitBranch::of_decision);
            if let (Some(action), Some(branch)) = (action, branch) {
                reached
                    .branches
                    .entry(action.to_owned())
                    .or_default()
                    .insert(branch);
            }
        }
        reached.skill_callers.extend(
            session
                .state
                .skill_frames
                .iter()
                .map(|f| f.caller_action_id.clone()),
        );
    }

    /// Checks `expect` against the last of `results` (status, position,
    /// variables) and all of them (AI messages, LLM calls).
    fn check(&mut self, step: &str, expect: &Expectation, results: &[TurnResult]) {
        let Some(last) = results.last() else {
            return;
        };
        let mut failures = Vec::new();
        if let Some(status) = expect.status {
            if last.session_status != status {
                failures.push(format!(
                    "session status is {}, expected {}",
                    last.session_status.as_str(),
                    status.as_str()
                ));
            }
        }
        let position = &last.position;
        for (what, expected, actual) in [
            ("phase", &expect.phase, &position.phase_id),
            ("topic", &expect.topic, &position.topic_id),
            ("action", &expect.action, &position.action_id),
        ] {
            if let Some(expected) = expected {
                if actual.as_deref() != Some(expected.as_str()) {
                    failures.push(format!(
                        "{what} is {}, expected {expected}",
                        actual.as_deref().unwrap_or("(none)")
                    ));
                }
            }
        }
        if let Some(expected) = expect.llm_calls {
            let calls: usize = results.iter().map(|r| r.llm_calls.len()).sum();
            if calls != expected {
                failures.push(format!("{calls} LLM call(s), expected {expected}"));
            }
        }
        let variables = last.variables.flat();
        for (name, expectation) in &expect.variables {
            if !self.check_wording && !expectation.is_wording_free() {
                self.report.skipped_checks += 1;
                continue;
            }
            if let Err(message) = check_variable(variables.get(name), expectation) {
                failures.push(format!("variable `{name}` {message}"));
            }
        }
        if !expect.ai_says.0.is_empty() {
            if self.check_wording {
                let said: Vec<&str> = results
                    .iter()
                    .flat_map(|r| r.messages.iter().map(|m| m.content.as_str()))
                    .collect();
                for text in &expect.ai_says.0 {
                    if !said.iter().any(|m| m.contains(text.as_str())) {
                        failures.push(format!(
                            "no AI message contains {text:?}; the AI said {said:?}"
                        ));
                    }
                }
            } else {
                self.report.skipped_checks += expect.ai_says.0.len();
            }
        }
        for message in failures {
            self.fail(step, message);
        }
    }
}

fn turn_error(step: &str, error: &DomainError) -> String {
    format!(
        "{step}: the turn failed with {}: {}",
        error.code().as_str(),
        error.kind
    )
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn check_variable(value: Option<&Value>, expect: &VariableExpectation) -> Result<(), String> {
    let set = value.is_some_and(|v| !v.is_null());
    match expect {
        VariableExpectation::Set { set: wanted } => {
            if set == *wanted {
                Ok(())
            } else if *wanted {
                Err("is not set".into())
            } else {
                Err(format!(
                    "is set to {}",
                    value.map(text_of).unwrap_or_default()
                ))
            }
        }
        VariableExpectation::Equals(expected) => match value {
            Some(actual) if actual == expected => Ok(()),
            Some(actual) => Err(format!("is {actual}, expected {expected}")),
            None => Err(format!("is not set, expected {expected}")),
        },
        VariableExpectation::Contains { contains } => match value {
            Some(actual) if text_of(actual).contains(contains.as_str()) => Ok(()),
            Some(actual) => Err(format!("is {actual}, expected it to contain {contains:?}")),
            None => Err(format!("is not set, expected it to contain {contains:?}")),
        },
        VariableExpectation::Matches { matches } => {
            let pattern = regex::Regex::new(matches)
                .map_err(|e| format!("has an invalid pattern {matches:?}: {e}"))?;
            match value {
                Some(actual) if pattern.is_match(&text_of(actual)) => Ok(()),
                Some(actual) => Err(format!("is {actual}, expected it to match {matches:?}")),
                None => Err(format!("is not set, expected it to match {matches:?}")),
            }
        }
    }
}

/// The human-readable report of `reports`.
#[must_use]
pub fn render_text(reports: &[FileReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for report in reports {
        let _ = writeln!(
            out,
            "{} ({})",
            report.path.display(),
            report.script.display()
        );
        for case in &report.cases {
            skipped += case.skipped_checks;
            if case.passed() {
                passed += 1;
                let _ = writeln!(out, "  ok    {}", case.name);
            } else {
                failed += 1;
                let _ = writeln!(out, "  FAIL  {}", case.name);
                for failure in &case.failures {
                    let _ = writeln!(out, "        {}: {}", failure.step, failure.message);
                }
            }
        }
        let (reached, total) = report.coverage.summary();
        let _ = writeln!(out, "  coverage: {reached}/{total} actions reached");
        for gap in report.coverage.gaps() {
            let _ = writeln!(out, "    {gap}");
        }
    }
    let _ = write!(out, "{passed} passed, {failed} failed");
    if skipped > 0 {
        let _ = write!(
            out,
            ", {skipped} wording-dependent check(s) skipped (real LLM provider)"
        );
    }
    out.push('\n');
    out
}
