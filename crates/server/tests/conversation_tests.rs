//! `heartrule test`: the example scripts' conversation tests pass, unmet
//! expectations are reported by step, and the coverage report names the
//! actions no case reached with their lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_server::conversation_tests::{
    find_test_files, render_text, run_file, RunOptions, TestFileError,
};
use std::path::{Path, PathBuf};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scripts")
}

/// A test file in its own folder beside a copy of hello.yaml.
fn write_test(name: &str, body: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("conversation-tests")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(examples().join("hello.yaml"), dir.join("hello.yaml")).unwrap();
    let path = dir.join("case.test.yaml");
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test]
async fn the_example_scripts_pass_their_conversation_tests() {
    let files = find_test_files(&[examples()]).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["cbt_intake.test.yaml", "hello.test.yaml"]);
    for file in &files {
        let report = run_file(file, &RunOptions::mock()).await.unwrap();
        assert!(
            report.passed(),
            "{}",
            render_text(std::slice::from_ref(&report))
        );
        let (reached, total) = report.coverage.summary();
        assert_eq!(
            reached,
            total,
            "{}",
            render_text(std::slice::from_ref(&report))
        );
    }
}

#[tokio::test]
async fn unmet_expectations_are_reported_by_step() {
    let path = write_test(
        "unmet",
        r#"
script: hello.yaml
cases:
  - name: wrong on purpose
    llm:
      - purpose: ai_think
        reply: never asked for
    start:
      action: goodbye
      ai_says: Good evening
      llm_calls: 5
    turns:
      - user: Call me Sam
        expect:
          status: active
          variables:
            visitor_name: {matches: "^Alex$"}
            mood: {set: true}
"#,
    );
    let report = run_file(&path, &RunOptions::mock()).await.unwrap();
    assert!(!report.passed());
    let failures: Vec<String> = report.cases[0]
        .failures
        .iter()
        .map(|f| format!("{}: {}", f.step, f.message))
        .collect();
    assert_eq!(failures.len(), 7, "{failures:#?}");
    assert_eq!(failures[0], "start: action is ask_name, expected goodbye");
    assert_eq!(failures[1], "start: 2 LLM call(s), expected 5");
    assert!(failures[2].starts_with("start: no AI message contains \"Good evening\""));
    assert_eq!(
        failures[3],
        "turn 1: session status is completed, expected active"
    );
    assert_eq!(
        failures[4], "turn 1: variable `mood` is not set",
        "{failures:#?}"
    );
    assert_eq!(
        failures[5],
        "turn 1: variable `visitor_name` is \"Call me Sam\", expected it to match \"^Alex$\""
    );
    assert_eq!(
        failures[6],
        "end: 1 scripted LLM repl(ies) were never asked for"
    );
}

#[tokio::test]
async fn coverage_names_the_actions_and_branches_no_case_reached() {
    let path = write_test(
        "coverage",
        "script: hello.yaml\ncases:\n  - name: only the start\n",
    );
    let report = run_file(&path, &RunOptions::mock()).await.unwrap();
    assert!(report.passed());
    assert_eq!(report.coverage.summary(), (2, 3));
    let script = path.parent().unwrap().join("hello.yaml");
    assert_eq!(
        report.coverage.gaps(),
        [
            format!(
                "{}:16 ask_name never exited before its last round",
                script.display()
            ),
            format!(
                "{}:16 ask_name never ran to its max_rounds",
                script.display()
            ),
            format!("{}:24 goodbye (ai_say) was never reached", script.display()),
        ]
    );
}

#[tokio::test]
async fn with_a_real_provider_wording_checks_are_skipped_and_counted() {
    let path = write_test(
        "wording",
        r#"
script: hello.yaml
cases:
  - name: wording is not checked
    start:
      ai_says: [words a real model may not use, nor these]
    turns:
      - user: Call me Sam
        expect:
          status: completed
          variables:
            visitor_name: {contains: not checked}
            goodbye_said: {set: false}
"#,
    );
    let options = RunOptions {
        check_wording: false,
        ..RunOptions::mock()
    };
    let report = run_file(&path, &options).await.unwrap();
    assert!(
        report.passed(),
        "{}",
        render_text(std::slice::from_ref(&report))
    );
    assert_eq!(report.cases[0].skipped_checks, 3);
    assert!(render_text(&[report]).contains("3 wording-dependent check(s) skipped"));
}

#[tokio::test]
async fn a_broken_script_or_test_file_is_an_error_not_a_pass() {
    let path = write_test(
        "broken",
        "script: hello.yaml\ncases:\n  - name: x\n    turns: [{user: hi, expct: {}}]\n",
    );
    let error = run_file(&path, &RunOptions::mock()).await.unwrap_err();
    assert!(matches!(error, TestFileError::Format { .. }), "{error}");

    let path = write_test("broken-script", "script: hello.yaml\ncases: []\n");
    std::fs::write(
        path.with_file_name("hello.yaml"),
        "session: [not, a, script]\n",
    )
    .unwrap();
    let error = run_file(&path, &RunOptions::mock()).await.unwrap_err();
    assert!(matches!(error, TestFileError::Script { .. }), "{error}");
}

#[test]
fn the_command_fails_when_a_case_fails() {
    let failing = write_test(
        "command",
        "script: hello.yaml\ncases:\n  - name: wrong\n    start: {action: goodbye}\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_heartrule"))
        .arg("test")
        .arg(&failing)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL  wrong"), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_heartrule"))
        .args(["test", "--json"])
        .arg(examples())
        .output()
        .unwrap();
    assert!(output.status.success());
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reports.as_array().map(Vec::len), Some(2));
}
