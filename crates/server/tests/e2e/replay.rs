//! Replays on the real server over PostgreSQL: each turn's LLM exchanges are
//! written with the turn, and the `heartrule replay` command replays the
//! stored session on the version it ran on (no divergence, every response
//! reused) and on an edited version (the first divergence, exit status 2).

use crate::process::heartrule;
use crate::support::{repo_root, rows, Services, TestApp};
use serde_json::{json, Value};

/// Two legacy `ai_say` actions whose ids carry `tag`: the first waits for
/// an acknowledgment, the second ends the session. One LLM call each.
fn versioned(tag: &str) -> String {
    format!(
        r#"
session:
  session_id: replay_e2e
  phases:
    - phase_id: p
      topics:
        - topic_id: t
          actions:
            - action_id: first_{tag}
              action_type: ai_say
              config:
                content: "first {tag}"
            - action_id: last_{tag}
              action_type: ai_say
              config:
                content: "last {tag}"
                require_acknowledgment: false
"#
    )
}

#[actix_web::test]
async fn the_replay_command_replays_a_stored_session_on_its_version_and_on_an_edit() {
    let services = Services::new().await;
    let app = TestApp::start(&services.env()).await;
    let import = |content: String| json!({"scriptName": "replay_e2e", "yamlContent": content});
    let imported = app
        .post("/api/scripts/import", &import(versioned("v1")))
        .await
        .ok();
    let script = imported["data"]["scriptId"].as_str().unwrap().to_owned();
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap().to_owned();
    app.send(&session, "ok").await.ok();

    let recorded = rows(
        &services.db,
        &format!(
            "SELECT turn_number, call_index, action_id, prompt IS NULL AS without_prompt, \
             length(prompt_hash) AS hash_length FROM llm_exchanges \
             WHERE session_id = '{session}' ORDER BY turn_number, call_index"
        ),
    )
    .await;
    assert_eq!(
        recorded,
        [
            json!({"turn_number": 1, "call_index": 0, "action_id": "first_v1",
                   "without_prompt": true, "hash_length": 64}),
            json!({"turn_number": 2, "call_index": 0, "action_id": "last_v1",
                   "without_prompt": true, "hash_length": 64}),
        ],
        "written with each turn; no prompt text without content capture"
    );
    // Version 2 renames the actions.
    app.post("/api/scripts/import", &import(versioned("v2")))
        .await
        .ok();
    app.stop().await;

    let replay = |args: &[&str]| {
        let mut command = heartrule();
        command
            .env("DATABASE_URL", &services.db.url)
            .env(
                "HEARTRULE__ENGINE__PROMPTS_DIR",
                repo_root().join("config/prompts"),
            )
            .args(["replay", session.as_str()])
            .args(args);
        command.output()
    };

    let same = replay(&["--json"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&same.stdout);
    assert!(
        same.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["diverged"], false, "{report}");
    assert_eq!(report["targetVersion"], 1);
    assert_eq!(report["turnsReplayed"], 2);
    assert_eq!(report["llmCallsReused"], 2);
    assert_eq!(report["llmCallsMade"], 0);

    let edited = replay(&["--version", "2"]).await.unwrap();
    let text = String::from_utf8_lossy(&edited.stdout);
    assert_eq!(edited.status.code(), Some(2), "{text}");
    assert!(text.contains("first divergence at turn 1"), "{text}");
    assert!(
        text.contains("action:   stored first_v1 / replayed first_v2"),
        "{text}"
    );

    let missing = replay(&["--version", "9"]).await.unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("has no version 9"), "{stderr}");

    let audited = rows(
        &services.db,
        &format!(
            "SELECT actor_subject FROM audit_events WHERE action = 'session.replay' \
             AND target_id = '{session}'"
        ),
    )
    .await;
    assert_eq!(audited.len(), 2, "each replay is audited: {audited:?}");
}
