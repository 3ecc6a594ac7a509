//! Script versions on the real server over PostgreSQL and Redis: a session
//! finishes on the version it started on through a publish and a rollback,
//! whether its turns find that version in the Redis script cache or, with
//! the cache emptied, in `script_versions`.

use crate::support::{clear_redis_prefix, Services, TestApp};
use serde_json::{json, Value};

/// Two legacy `ai_say` actions whose ids carry `tag`: the first waits for
/// an acknowledgment, the second ends the session.
fn versioned(tag: &str) -> String {
    format!(
        r#"
session:
  session_id: pinned_e2e
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

fn said_by(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["actionId"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn sessions_finish_on_their_version_across_publish_rollback_and_an_empty_cache() {
    let services = Services::new().await;
    // No memo: every turn asks the cache, then the database.
    let env = services
        .env()
        .set("HEARTRULE__ENGINE__SCRIPT_MEMO_TTL", "0s");
    let app = TestApp::start(&env).await;
    let imported = app
        .post(
            "/api/scripts/import",
            &json!({"scriptName": "pinned_e2e", "yamlContent": versioned("v1")}),
        )
        .await
        .ok();
    let script = imported["data"]["scriptId"].as_str().unwrap().to_owned();
    let on_v1 = app.create_session(&script).await;
    assert_eq!(said_by(&on_v1), ["first_v1"]);
    let on_v1 = on_v1["sessionId"].as_str().unwrap().to_owned();

    let draft = app.get(&format!("/api/projects/{script}/draft")).await.ok();
    let saved = app
        .http
        .put(app.at(&format!("/api/projects/{script}/draft")))
        .header("If-Match", format!("\"{}\"", draft["revision"]))
        .json(&json!({"content": versioned("v2")}))
        .send()
        .await
        .unwrap();
    assert!(
        saved.status().is_success(),
        "{}",
        saved.text().await.unwrap()
    );
    let published = app
        .post(&format!("/api/projects/{script}/publish"), &json!({}))
        .await;
    assert_eq!(published.status.as_u16(), 201, "{}", published.text);
    assert_eq!(published.json()["version"]["versionNumber"], 2);

    let on_v2 = app.create_session(&script).await;
    assert_eq!(said_by(&on_v2), ["first_v2"]);
    let on_v2 = on_v2["sessionId"].as_str().unwrap().to_owned();
    let rolled = app
        .post(&format!("/api/projects/{script}/rollback"), &json!({}))
        .await
        .ok();
    assert_eq!(rolled["currentVersion"], 1);

    // From the Redis script cache, keyed by each version's hash.
    let last = app.send(&on_v1, "ok").await.ok();
    assert_eq!(said_by(&last), ["last_v1"], "{last}");
    assert_eq!(last["sessionStatus"], "completed");

    // From script_versions once the cache is gone.
    clear_redis_prefix(&services.redis_prefix);
    let last = app.send(&on_v2, "ok").await.ok();
    assert_eq!(said_by(&last), ["last_v2"], "{last}");
    assert_eq!(last["sessionStatus"], "completed");

    let fresh = app.create_session(&script).await;
    assert_eq!(
        said_by(&fresh),
        ["first_v1"],
        "the current version after the rollback"
    );
    let versions = services
        .db
        .count("script_versions", &format!("script_id = '{script}'"))
        .await;
    assert_eq!(versions, 2);
    app.stop().await;
}
