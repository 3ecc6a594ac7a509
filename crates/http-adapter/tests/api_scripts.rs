//! Script routes: create (compatible/strict), get, list with working
//! filters, import (upsert, project tag), validate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::*;

/// A canonical session script that is valid in strict mode.
const STRICT_SCRIPT: &str = r#"
session:
  session_id: strict_ok
  phases:
    - phase_id: p1
      topics:
        - topic_id: t1
          actions:
            - action_id: greet
              action_type: ai_say
              config:
                content: "欢迎"
                max_rounds: 1
"#;

/// A technique script (root `topic`).
const TECHNIQUE_SCRIPT: &str = r#"
technique_id: breathing
input_parameters:
  - name: pace
topic:
  topic_id: breathing_topic
  actions:
    - action_id: guide
      action_type: ai_say
      config:
        content: "跟着{pace}的节奏呼吸"
        max_rounds: 1
"#;

#[actix_web::test]
async fn create_returns_the_stored_script_with_warnings_and_get_reads_it() {
    let h = Harness::default_config();
    let app = h.service().await;
    let created = post(
        &app,
        "/api/scripts",
        json!({
            "scriptName": "debug",
            "scriptType": "session",
            "scriptContent": DEBUG_SCRIPT,
            "author": "alice",
            "description": "for tests",
            "tags": ["a", "b"]
        }),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let body = &created.body;
    assert_eq!(body["scriptId"], body["id"]);
    assert_eq!(body["scriptName"], "debug");
    assert_eq!(body["scriptType"], "session");
    assert_eq!(body["status"], "draft");
    assert_eq!(body["version"], "1.0.0");
    assert_eq!(body["author"], "alice");
    assert_eq!(body["description"], "for tests");
    assert_eq!(body["tags"], json!(["a", "b"]));
    assert!(body["createdAt"].is_string() && body["updatedAt"].is_string());
    let warnings = body["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w["path"].as_str().unwrap().contains("prompt_template")),
        "compatible mode reports the deprecated field: {}",
        created.text
    );

    let id = body["scriptId"].as_str().unwrap();
    let fetched = get(&app, &format!("/api/scripts/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["scriptContent"], DEBUG_SCRIPT);
    assert_eq!(fetched.body["scriptName"], "debug");
    assert!(fetched.body.get("warnings").is_none());

    let missing = get(&app, "/api/scripts/00000000-0000-4000-8000-000000000009").await;
    missing.error(404, "SCRIPT_NOT_FOUND");

    let taken = post(
        &app,
        "/api/scripts",
        json!({"scriptName": "debug", "scriptType": "session", "scriptContent": DEBUG_SCRIPT, "author": "bob"}),
    )
    .await;
    taken.error(409, "CONFLICT");
}

#[actix_web::test]
async fn create_rejects_bad_scripts_with_located_errors() {
    let h = Harness::default_config();
    let app = h.service().await;
    let strict = post(
        &app,
        "/api/scripts?mode=strict",
        json!({"scriptName": "s", "scriptType": "session", "scriptContent": DEBUG_SCRIPT, "author": "a"}),
    )
    .await;
    strict.error(400, "SCRIPT_VALIDATION_ERROR");
    assert!(strict.body["errors"].as_array().unwrap().iter().any(|e| {
        e["path"].as_str().unwrap().contains("actions[1]") && e.get("suggestion").is_some()
    }));

    let syntax = post(
        &app,
        "/api/scripts",
        json!({"scriptName": "s", "scriptType": "session", "scriptContent": "session:\n  phases: [\n", "author": "a"}),
    )
    .await;
    let error = syntax.error(400, "SCRIPT_PARSE_ERROR");
    assert_eq!(error["type"], "syntax");
    assert_eq!(syntax.body["errors"][0]["errorType"], "SYNTAX_ERROR");
    assert!(syntax.body["errors"][0]["line"].is_u64());

    let wrong_type = post(
        &app,
        "/api/scripts",
        json!({"scriptName": "s", "scriptType": "technique", "scriptContent": STRICT_SCRIPT, "author": "a"}),
    )
    .await;
    wrong_type.error(400, "SCRIPT_VALIDATION_ERROR");

    for body in [
        json!({"scriptName": "s", "scriptType": "poem", "scriptContent": STRICT_SCRIPT, "author": "a"}),
        json!({"scriptName": "", "scriptType": "session", "scriptContent": STRICT_SCRIPT, "author": "a"}),
        json!({"scriptName": "s", "scriptType": "session", "author": "a"}),
    ] {
        post(&app, "/api/scripts", body)
            .await
            .error(400, "INVALID_REQUEST");
    }
    let bad_mode = post(
        &app,
        "/api/scripts?mode=lenient",
        json!({"scriptName": "s", "scriptType": "session", "scriptContent": STRICT_SCRIPT, "author": "a"}),
    )
    .await;
    bad_mode.error(400, "INVALID_REQUEST");
}

#[actix_web::test]
async fn list_filters_by_type_and_status_and_pages() {
    let h = Harness::default_config();
    let app = h.service().await;
    for name in ["one", "two", "three"] {
        create_script(&app, name, STRICT_SCRIPT).await;
    }
    let technique = post(
        &app,
        "/api/scripts",
        json!({"scriptName": "breathing", "scriptType": "technique", "scriptContent": TECHNIQUE_SCRIPT, "author": "a"}),
    )
    .await;
    assert_eq!(technique.status, 200, "{}", technique.text);

    let all = get(&app, "/api/scripts").await;
    assert_eq!(all.body["total"], 4);
    assert_eq!(all.body["scripts"].as_array().unwrap().len(), 4);

    let techniques = get(&app, "/api/scripts?type=technique").await;
    assert_eq!(techniques.body["total"], 1);
    assert_eq!(techniques.body["scripts"][0]["scriptName"], "breathing");
    assert_eq!(techniques.body["scripts"][0]["scriptType"], "technique");

    let sessions = get(&app, "/api/scripts?type=session&status=draft").await;
    assert_eq!(sessions.body["total"], 3);
    let published = get(&app, "/api/scripts?status=published").await;
    assert_eq!(published.body["total"], 0);
    assert_eq!(published.body["scripts"], json!([]));

    let page = get(&app, "/api/scripts?type=session&limit=2&offset=1").await;
    assert_eq!(page.body["total"], 3, "total counts every match");
    let names: Vec<&str> = page.body["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scriptName"].as_str().unwrap())
        .collect();
    let all_sessions: Vec<&str> = sessions.body["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scriptName"].as_str().unwrap())
        .collect();
    assert_eq!(names, all_sessions[1..3]);

    get(&app, "/api/scripts?type=poem")
        .await
        .error(400, "INVALID_REQUEST");
    get(&app, "/api/scripts?status=gone")
        .await
        .error(400, "INVALID_REQUEST");
}

#[actix_web::test]
async fn import_inserts_then_updates_by_name_with_the_project_tag() {
    let h = Harness::default_config();
    let app = h.service().await;
    let project = "11111111-2222-4333-8444-555555555555";
    let first = post(
        &app,
        "/api/scripts/import",
        json!({"yamlContent": DEBUG_SCRIPT, "scriptName": "imported", "projectId": project}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["success"], true);
    assert_eq!(first.body["data"]["updated"], false);
    assert!(!first.body["data"]["warnings"]
        .as_array()
        .unwrap()
        .is_empty());
    let id = first.body["data"]["scriptId"].as_str().unwrap().to_owned();

    let stored = get(&app, &format!("/api/scripts/{id}")).await;
    assert_eq!(
        stored.body["tags"],
        json!(["debug", format!("project:{project}")])
    );
    assert_eq!(stored.body["author"], "debug_user");
    assert_eq!(stored.body["description"], "Debug script: imported");

    let second = post(
        &app,
        "/api/scripts/import",
        json!({"yamlContent": STRICT_SCRIPT, "scriptName": "imported", "description": "v2"}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.body["data"]["scriptId"], id.as_str());
    assert_eq!(second.body["data"]["updated"], true);
    assert_eq!(second.body["data"]["warnings"], json!([]));
    let stored = get(&app, &format!("/api/scripts/{id}")).await;
    assert_eq!(stored.body["scriptContent"], STRICT_SCRIPT);
    assert_eq!(stored.body["description"], "v2");

    for body in [
        json!({"yamlContent": "", "scriptName": "x"}),
        json!({"yamlContent": STRICT_SCRIPT, "scriptName": ""}),
        json!({"yamlContent": STRICT_SCRIPT, "scriptName": "x", "projectId": "not-a-uuid"}),
    ] {
        post(&app, "/api/scripts/import", body)
            .await
            .error(400, "INVALID_REQUEST");
    }
}

#[actix_web::test]
async fn validate_is_strict_by_default() {
    let h = Harness::default_config();
    let app = h.service().await;
    let legacy_id = create_script(&app, "legacy", DEBUG_SCRIPT).await;
    let strict_id = create_script(&app, "strict", STRICT_SCRIPT).await;

    let invalid = post(
        &app,
        &format!("/api/scripts/{legacy_id}/validate"),
        json!({}),
    )
    .await;
    assert_eq!(invalid.status, 400, "{}", invalid.text);
    assert_eq!(invalid.body["valid"], false);
    assert!(invalid.body["message"].is_string());
    assert!(!invalid.body["errors"].as_array().unwrap().is_empty());
    invalid.error(400, "SCRIPT_VALIDATION_ERROR");

    let compatible = post(
        &app,
        &format!("/api/scripts/{legacy_id}/validate?mode=compatible"),
        json!({}),
    )
    .await;
    assert_eq!(compatible.status, 200, "{}", compatible.text);
    assert_eq!(compatible.body["valid"], true);
    assert!(!compatible.body["warnings"].as_array().unwrap().is_empty());

    let valid = post(
        &app,
        &format!("/api/scripts/{strict_id}/validate"),
        json!({}),
    )
    .await;
    assert_eq!(valid.status, 200, "{}", valid.text);
    assert_eq!(valid.body["valid"], true);
    assert_eq!(valid.body["warnings"], json!([]));

    let missing = post(
        &app,
        "/api/scripts/00000000-0000-4000-8000-000000000009/validate",
        json!({}),
    )
    .await;
    missing.error(404, "SCRIPT_NOT_FOUND");
}
