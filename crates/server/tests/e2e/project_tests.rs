//! A project's conversation tests over HTTP: `POST /api/projects/{id}/test`
//! runs them against the draft, and with `scripts.require_tests_to_publish`
//! a publish whose tests fail (or that has none) is refused.

use crate::support::{Services, TestApp};
use serde_json::{json, Value};

const GREETER: &str = r#"
session:
  session_id: greeter
  phases:
    - phase_id: p
      topics:
        - topic_id: t
          actions:
            - action_id: welcome
              action_type: ai_say
              config:
                content: "Welcome to the tests"
            - action_id: bye
              action_type: ai_say
              config:
                content: "Goodbye"
                require_acknowledgment: false
"#;

const PASSING: &str = "cases:\n  - name: greets and ends\n    start: {ai_says: Welcome, action: welcome}\n    turns:\n      - user: ok\n        expect: {status: completed}\n";

const FAILING: &str = "cases:\n  - name: expects another greeting\n    start: {ai_says: Bonjour}\n";

async fn import(app: &TestApp) -> String {
    let imported = app
        .post(
            "/api/scripts/import",
            &json!({"scriptName": "greeter", "yamlContent": GREETER}),
        )
        .await
        .ok();
    imported["data"]["scriptId"].as_str().unwrap().to_owned()
}

fn test_file(path: &str, content: &str) -> Value {
    json!({"path": path, "content": content})
}

#[actix_web::test]
async fn the_test_route_runs_cases_against_the_draft_and_names_failures() {
    let services = Services::new().await;
    let app = TestApp::start(&services.env()).await;
    let project = import(&app).await;

    let report = app
        .post(
            &format!("/api/projects/{project}/test"),
            &json!({"tests": [
                test_file("tests/pass.test.yaml", PASSING),
                test_file("tests/fail.test.yaml", FAILING),
            ]}),
        )
        .await
        .ok();
    assert_eq!(report["succeeded"], false, "{report}");
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let failing = &report["files"][1];
    assert_eq!(failing["path"], "tests/fail.test.yaml");
    assert_eq!(failing["cases"][0]["name"], "expects another greeting");
    assert_eq!(failing["cases"][0]["failures"][0]["step"], "start");
    assert!(
        failing["cases"][0]["failures"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Bonjour"),
        "{report}"
    );
    assert_eq!(report["files"][0]["coverage"]["reached"], 2, "{report}");
    assert_eq!(report["files"][0]["coverage"]["total"], 2, "{report}");

    // Nothing of the run reached the server's own sessions.
    let sessions = app.get("/api/users/conversation-test/sessions").await.ok();
    assert_eq!(sessions.as_array().map(Vec::len), Some(0), "{sessions}");

    let unknown = "00000000-0000-4000-8000-000000000000";
    app.post(&format!("/api/projects/{unknown}/test"), &json!({}))
        .await
        .error(404, "SCRIPT_NOT_FOUND");
    app.stop().await;
}

#[actix_web::test]
async fn publishing_requires_passing_tests_when_configured() {
    let services = Services::new().await;
    let env = services
        .env()
        .set("HEARTRULE__SCRIPTS__REQUIRE_TESTS_TO_PUBLISH", "true");
    let app = TestApp::start(&env).await;
    let project = import(&app).await;
    let draft = app
        .get(&format!("/api/projects/{project}/draft"))
        .await
        .ok();
    let edited = GREETER.replace("Goodbye", "Take care");
    let saved = app
        .http
        .put(app.at(&format!("/api/projects/{project}/draft")))
        .header("If-Match", format!("\"{}\"", draft["revision"]))
        .json(&json!({"content": edited}))
        .send()
        .await
        .unwrap();
    assert!(saved.status().is_success());

    // A draft without tests cannot be published.
    let refused = app
        .post(&format!("/api/projects/{project}/publish"), &json!({}))
        .await
        .error(422, "TESTS_FAILED");
    assert_eq!(refused["tests"]["succeeded"], false, "{refused}");
    assert_eq!(refused["tests"]["files"], json!([]), "{refused}");
    let versions = app
        .get(&format!("/api/projects/{project}/versions"))
        .await
        .ok();
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );

    // The project's own test files (stored beside the script) are run: a
    // failing one blocks the publish and the refusal names its case.
    let files = app
        .get(&format!("/api/projects/{project}/files"))
        .await
        .ok();
    let added = app
        .post(
            &format!("/api/projects/{project}/files"),
            &json!({"path": "tests/greeter.test.yaml", "fileType": "test",
                    "content": FAILING, "revision": files["revision"]}),
        )
        .await;
    assert_eq!(added.status.as_u16(), 201, "{}", added.text);
    let refused = app
        .post(&format!("/api/projects/{project}/publish"), &json!({}))
        .await
        .error(422, "TESTS_FAILED");
    let summary = refused["tests"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("tests/greeter.test.yaml, case \"expects another greeting\", start"),
        "{refused}"
    );
    assert!(
        refused["error"]["details"]
            .as_str()
            .unwrap()
            .contains("expects another greeting"),
        "{refused}"
    );

    // Once it passes, the draft is published with it.
    let files = app
        .get(&format!("/api/projects/{project}/files"))
        .await
        .ok();
    let fixed = app
        .http
        .put(app.at(&format!(
            "/api/projects/{project}/files/tests/greeter.test.yaml"
        )))
        .json(&json!({"content": PASSING, "revision": files["revision"]}))
        .send()
        .await
        .unwrap();
    assert!(
        fixed.status().is_success(),
        "{}",
        fixed.text().await.unwrap()
    );
    let published = app
        .post(&format!("/api/projects/{project}/publish"), &json!({}))
        .await;
    assert_eq!(published.status.as_u16(), 201, "{}", published.text);
    let published = published.json();
    assert_eq!(published["version"]["versionNumber"], 2, "{published}");
    assert_eq!(
        published["version"]["files"][0]["path"], "tests/greeter.test.yaml",
        "{published}"
    );
    app.stop().await;
}
