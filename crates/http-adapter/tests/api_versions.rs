//! Script versions end to end over the in-memory store and the real engine:
//! sessions pinned to the version they started on (through re-imports,
//! publishes and rollbacks), the draft with its revision, publish, the
//! version list, rollback, set-current and restore.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test::TestRequest;
use heartrule_domain::{Actor, AuditAction, AuditFilter, AuditLog, SessionManagerConfig};
use heartrule_http_adapter::auth::{AuthFailure, Authenticator};
use heartrule_http_adapter::HttpConfig;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Three legacy `ai_say` actions whose ids carry `tag`: the first two wait
/// for an acknowledgment, the last ends the session. One LLM call each.
fn versioned(tag: &str) -> String {
    format!(
        r#"
session:
  session_id: pinned
  phases:
    - phase_id: p
      topics:
        - topic_id: t
          actions:
            - action_id: first_{tag}
              action_type: ai_say
              config:
                content: "first {tag}"
            - action_id: second_{tag}
              action_type: ai_say
              config:
                content: "second {tag}"
            - action_id: last_{tag}
              action_type: ai_say
              config:
                content: "last {tag}"
                require_acknowledgment: false
"#
    )
}

async fn start<S, B>(app: &S, llm: &FakeLlm, script_id: &str) -> (String, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    llm.reply("said");
    let reply = create_session(app, script_id).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let id = reply.body["sessionId"].as_str().unwrap().to_owned();
    (id, reply.body)
}

async fn turn<S, B>(app: &S, llm: &FakeLlm, session_id: &str) -> Value
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    llm.reply("said");
    let reply = post(
        app,
        &format!("/api/sessions/{session_id}/messages"),
        json!({"content": "ok"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn said_by(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["actionId"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_draft<S, B>(app: &S, id: &str, content: &str, revision: u64) -> Reply
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    call(
        app,
        TestRequest::put()
            .uri(&format!("/api/projects/{id}/draft"))
            .set_json(json!({"content": content, "revision": revision})),
    )
    .await
}

/// Saves `content` as the draft and publishes it (compatible mode).
async fn publish<S, B>(app: &S, id: &str, content: &str) -> Value
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let draft = get(app, &format!("/api/projects/{id}/draft")).await;
    let revision = draft.body["revision"].as_u64().unwrap();
    let saved = put_draft(app, id, content, revision).await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    let published = post(
        app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible", "releaseNote": "next"}),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text);
    published.body
}

/// Turns that load their script from the store each time, as on another
/// replica: nothing is memoised between turns.
fn unmemoised() -> Harness {
    Harness::with_manager(
        HttpConfig::default(),
        SessionManagerConfig {
            script_memo_ttl: Duration::ZERO,
            ..SessionManagerConfig::default()
        },
    )
}

#[actix_web::test]
async fn a_running_session_keeps_its_content_when_the_script_is_reimported() {
    let h = unmemoised();
    let app = h.service().await;
    let import = |content: String| json!({"scriptName": "pinned", "yamlContent": content});
    let imported = post(&app, "/api/scripts/import", import(versioned("v1"))).await;
    assert_eq!(imported.status, 200, "{}", imported.text);
    let script_id = imported.body["data"]["scriptId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (session, first) = start(&app, &h.llm, &script_id).await;
    assert_eq!(said_by(&first), ["first_v1"]);

    // Same name, action ids changed.
    let reimported = post(&app, "/api/scripts/import", import(versioned("v2"))).await;
    assert_eq!(reimported.status, 200, "{}", reimported.text);
    assert_eq!(reimported.body["data"]["updated"], true);
    let script = get(&app, &format!("/api/scripts/{script_id}")).await;
    assert_eq!(script.body["currentVersion"], 2);

    let second = turn(&app, &h.llm, &session).await;
    assert_eq!(said_by(&second), ["second_v1"], "{second}");
    let last = turn(&app, &h.llm, &session).await;
    assert_eq!(said_by(&last), ["last_v1"]);
    assert_eq!(last["sessionStatus"], "completed");

    let (_, fresh) = start(&app, &h.llm, &script_id).await;
    assert_eq!(
        said_by(&fresh),
        ["first_v2"],
        "a new session takes the new version"
    );
}

#[actix_web::test]
async fn sessions_finish_on_their_version_through_publish_and_rollback() {
    let h = unmemoised();
    let app = h.service().await;
    let script_id = create_script(&app, "pinned", &versioned("v1")).await;
    let (on_v1, first) = start(&app, &h.llm, &script_id).await;
    assert_eq!(said_by(&first), ["first_v1"]);

    let published = publish(&app, &script_id, &versioned("v2")).await;
    assert_eq!(published["version"]["versionNumber"], 2);
    assert_eq!(published["script"]["currentVersion"], 2);
    assert_eq!(said_by(&turn(&app, &h.llm, &on_v1).await), ["second_v1"]);

    let (on_v2, first) = start(&app, &h.llm, &script_id).await;
    assert_eq!(
        said_by(&first),
        ["first_v2"],
        "new sessions take the current version"
    );

    let rolled = post(
        &app,
        &format!("/api/projects/{script_id}/rollback"),
        json!({}),
    )
    .await;
    assert_eq!(rolled.status, 200, "{}", rolled.text);
    assert_eq!(rolled.body["currentVersion"], 1);
    assert_eq!(rolled.body["scriptContent"], versioned("v1"));

    // Both running sessions stay where they started.
    assert_eq!(said_by(&turn(&app, &h.llm, &on_v2).await), ["second_v2"]);
    let last = turn(&app, &h.llm, &on_v1).await;
    assert_eq!(said_by(&last), ["last_v1"]);
    assert_eq!(last["sessionStatus"], "completed");
    let last = turn(&app, &h.llm, &on_v2).await;
    assert_eq!(said_by(&last), ["last_v2"]);
    assert_eq!(last["sessionStatus"], "completed");

    let (_, first) = start(&app, &h.llm, &script_id).await;
    assert_eq!(
        said_by(&first),
        ["first_v1"],
        "after the rollback: version 1"
    );
}

#[actix_web::test]
async fn publish_rollback_restore_round_trip() {
    let h = Harness::default_config();
    let app = h.service().await;
    let id = create_script(&app, "pinned", &versioned("v1")).await;
    publish(&app, &id, &versioned("v2")).await;
    // With a deprecated field: compatible mode warns.
    publish(&app, &id, DEBUG_SCRIPT).await;

    let list = get(&app, &format!("/api/projects/{id}/versions")).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["currentVersion"], 3);
    let numbers: Vec<u64> = list.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["versionNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    let v3 = &list.body["versions"][0];
    assert_eq!(v3["releaseNote"], "next");
    assert_eq!(v3["publishedBy"], heartrule_domain::LOCAL_OPERATOR_SUBJECT);
    assert!(v3.get("content").is_none(), "the list leaves content out");
    assert!(
        !v3["warnings"].as_array().unwrap().is_empty(),
        "compatible mode's warnings are stored: {v3}"
    );

    let v2 = get(&app, &format!("/api/projects/{id}/versions/2")).await;
    assert_eq!(v2.status, 200, "{}", v2.text);
    assert_eq!(v2.body["content"], versioned("v2"));
    assert_eq!(
        v2.body["contentHash"],
        heartrule_domain::content_hash(&versioned("v2"))
    );

    let to_v1 = call(
        &app,
        TestRequest::put()
            .uri(&format!("/api/projects/{id}/current-version"))
            .set_json(json!({"versionNumber": 1})),
    )
    .await;
    assert_eq!(to_v1.status, 200, "{}", to_v1.text);
    assert_eq!(to_v1.body["currentVersion"], 1);
    let rolled = post(
        &app,
        &format!("/api/projects/{id}/rollback"),
        json!({"targetVersion": 2}),
    )
    .await;
    assert_eq!(rolled.body["currentVersion"], 2, "{}", rolled.text);

    let before = get(&app, &format!("/api/projects/{id}/draft")).await;
    let restored = post(
        &app,
        &format!("/api/projects/{id}/versions/3/restore"),
        json!({}),
    )
    .await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert_eq!(restored.body["content"], DEBUG_SCRIPT);
    let revision = before.body["revision"].as_u64().unwrap() + 1;
    assert_eq!(restored.body["revision"], revision);
    assert_eq!(
        restored.header("etag"),
        Some(format!("\"{revision}\"").as_str())
    );
    let draft = get(&app, &format!("/api/projects/{id}/draft")).await;
    assert_eq!(draft.body["content"], DEBUG_SCRIPT);
    // Restoring touched the draft only.
    let script = get(&app, &format!("/api/scripts/{id}")).await;
    assert_eq!(script.body["currentVersion"], 2);

    // Publishing the restored draft makes a new version, not version 3 again.
    let published = post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible"}),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text);
    assert_eq!(published.body["version"]["versionNumber"], 4);
    assert_eq!(published.body["script"]["scriptContent"], DEBUG_SCRIPT);

    // Every editor write is audited as a script update.
    let events = h
        .store
        .list_events(&AuditFilter {
            action: Some(AuditAction::ScriptUpdate),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let operations: Vec<&str> = events
        .iter()
        .filter_map(|e| e.details["operation"].as_str())
        .collect();
    for operation in [
        "draft.save",
        "publish",
        "set-current",
        "rollback",
        "restore",
    ] {
        assert!(
            operations.contains(&operation),
            "{operation}: {operations:?}"
        );
    }
}

#[actix_web::test]
async fn a_stale_draft_revision_is_a_conflict_and_changes_nothing() {
    let h = Harness::default_config();
    let app = h.service().await;
    let id = create_script(&app, "pinned", &versioned("v1")).await;
    let draft = get(&app, &format!("/api/projects/{id}/draft")).await;
    assert_eq!(draft.status, 200, "{}", draft.text);
    assert_eq!(draft.body["revision"], 0);
    assert_eq!(draft.body["content"], versioned("v1"));
    assert_eq!(draft.header("etag"), Some("\"0\""));

    let saved = put_draft(&app, &id, "# editor one\n", 0).await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert_eq!(saved.body["revision"], 1);
    assert_eq!(saved.header("etag"), Some("\"1\""));

    // The second editor read revision 0 too.
    let stale = put_draft(&app, &id, "# editor two\n", 0).await;
    stale.error(409, "CONFLICT");
    let draft = get(&app, &format!("/api/projects/{id}/draft")).await;
    assert_eq!(draft.body["content"], "# editor one\n");
    assert_eq!(draft.body["revision"], 1);

    // The revision may come as If-Match instead.
    let with_header = |if_match: &str, body: Value| {
        TestRequest::put()
            .uri(&format!("/api/projects/{id}/draft"))
            .insert_header(("If-Match", if_match.to_owned()))
            .set_json(body)
    };
    let by_header = call(&app, with_header("\"1\"", json!({"content": "# two\n"}))).await;
    assert_eq!(by_header.status, 200, "{}", by_header.text);
    assert_eq!(by_header.body["revision"], 2);
    call(&app, with_header("\"1\"", json!({"content": "# three\n"})))
        .await
        .error(409, "CONFLICT");
    call(
        &app,
        with_header("\"2\"", json!({"content": "# three\n", "revision": 1})),
    )
    .await
    .error(400, "INVALID_REQUEST");
    call(
        &app,
        TestRequest::put()
            .uri(&format!("/api/projects/{id}/draft"))
            .set_json(json!({"content": "# three\n"})),
    )
    .await
    .error(400, "INVALID_REQUEST");

    // Publishing checks the revision the editor reviewed.
    post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"draftRevision": 1}),
    )
    .await
    .error(409, "CONFLICT");
}

#[actix_web::test]
async fn publishing_refuses_invalid_and_unchanged_drafts_and_unknown_versions_are_named() {
    let h = Harness::default_config();
    let app = h.service().await;
    let id = create_script(&app, "pinned", &versioned("v1")).await;

    // Unchanged: the draft is version 1.
    post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible"}),
    )
    .await
    .error(409, "CONFLICT");
    // Nothing before version 1.
    post(&app, &format!("/api/projects/{id}/rollback"), json!({}))
        .await
        .error(409, "CONFLICT");

    assert_eq!(put_draft(&app, &id, "session: [", 0).await.status, 200);
    let invalid = post(&app, &format!("/api/projects/{id}/publish"), json!({})).await;
    invalid.error(400, "DRAFT_INVALID");
    assert!(
        !invalid.body["errors"].as_array().unwrap().is_empty(),
        "{}",
        invalid.text
    );
    // Strict mode refuses what compatible mode only warns about.
    assert_eq!(put_draft(&app, &id, DEBUG_SCRIPT, 1).await.status, 200);
    post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "strict"}),
    )
    .await
    .error(400, "DRAFT_INVALID");
    let list = get(&app, &format!("/api/projects/{id}/versions")).await;
    assert_eq!(list.body["versions"].as_array().unwrap().len(), 1);

    get(&app, &format!("/api/projects/{id}/versions/7"))
        .await
        .error(404, "VERSION_NOT_FOUND");
    post(
        &app,
        &format!("/api/projects/{id}/rollback"),
        json!({"targetVersion": 7}),
    )
    .await
    .error(404, "VERSION_NOT_FOUND");
    post(
        &app,
        &format!("/api/projects/{id}/versions/7/restore"),
        json!({}),
    )
    .await
    .error(404, "VERSION_NOT_FOUND");
    get(&app, &format!("/api/projects/{id}/versions/x"))
        .await
        .error(400, "INVALID_REQUEST");
    let unknown = "00000000-0000-4000-8000-000000000000";
    for uri in [
        format!("/api/projects/{unknown}/draft"),
        format!("/api/projects/{unknown}/versions"),
        format!("/api/projects/{unknown}/versions/1"),
    ] {
        get(&app, &uri).await.error(404, "SCRIPT_NOT_FOUND");
    }
}

/// Every request acts as the client `alice`.
struct ClientAlice;

impl Authenticator for ClientAlice {
    fn authenticate(&self, _authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        Ok(Actor::client("alice"))
    }
}

#[actix_web::test]
async fn clients_read_versions_but_only_editors_and_admins_change_them() {
    let h = Harness::default_config();
    let id = {
        let app = h.service().await;
        create_script(&app, "pinned", &versioned("v1")).await
    };
    let mut h = h;
    h.state = h.state.clone().with_authenticator(Arc::new(ClientAlice));
    let app = h.service().await;
    assert_eq!(
        get(&app, &format!("/api/projects/{id}/versions"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&app, &format!("/api/projects/{id}/draft")).await.status,
        200
    );
    for request in [
        TestRequest::put()
            .uri(&format!("/api/projects/{id}/draft"))
            .set_json(json!({"content": "x", "revision": 0})),
        TestRequest::post()
            .uri(&format!("/api/projects/{id}/publish"))
            .set_json(json!({})),
        TestRequest::post()
            .uri(&format!("/api/projects/{id}/rollback"))
            .set_json(json!({})),
        TestRequest::put()
            .uri(&format!("/api/projects/{id}/current-version"))
            .set_json(json!({"versionNumber": 1})),
        TestRequest::post().uri(&format!("/api/projects/{id}/versions/1/restore")),
    ] {
        call(&app, request).await.error(403, "FORBIDDEN");
    }
    let draft = get(&app, &format!("/api/projects/{id}/draft")).await;
    assert_eq!(draft.body["revision"], 0, "nothing was written");
}

#[actix_web::test]
async fn diffs_show_added_removed_and_changed_actions() {
    let h = Harness::default_config();
    let app = h.service().await;
    let id = create_script(&app, "pinned", &versioned("v1")).await;
    // `second` removed, `first` changed, `extra` added.
    let edited = versioned("v1")
        .replace(
            "            - action_id: second_v1\n              action_type: ai_say\n              config:\n                content: \"second v1\"\n",
            "",
        )
        .replace("content: \"first v1\"", "content: \"first, reworded\"")
        + "            - action_id: extra\n              action_type: ai_say\n              config:\n                content: \"extra\"\n";
    assert_eq!(put_draft(&app, &id, &edited, 0).await.status, 200);

    let to_draft = get(&app, &format!("/api/projects/{id}/versions/1/diff")).await;
    assert_eq!(to_draft.status, 200, "{}", to_draft.text);
    let unified = to_draft.body["unified"].as_str().unwrap();
    assert!(
        unified.starts_with("--- version 1\n+++ draft\n"),
        "{unified}"
    );
    for line in [
        "-            - action_id: second_v1",
        "-                content: \"second v1\"",
        "-                content: \"first v1\"",
        "+                content: \"first, reworded\"",
        "+            - action_id: extra",
    ] {
        assert!(unified.lines().any(|l| l == line), "{line} in\n{unified}");
    }
    assert!(
        !unified
            .lines()
            .any(|l| l == "-            - action_id: first_v1"),
        "unchanged lines are context: {unified}"
    );
    assert_eq!(to_draft.body["additions"], 5);
    assert_eq!(to_draft.body["deletions"], 5);

    let published = post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible"}),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text);
    let between = get(&app, &format!("/api/projects/{id}/versions/1/diff?to=2")).await;
    assert_eq!(between.body["to"], "version 2");
    assert_eq!(
        between.body["unified"].as_str().unwrap(),
        unified.replace("+++ draft", "+++ version 2")
    );
    let same = get(
        &app,
        &format!("/api/projects/{id}/versions/2/diff?to=draft"),
    )
    .await;
    assert_eq!(same.body["unified"], "");
    assert_eq!(same.body["additions"], 0);

    get(&app, &format!("/api/projects/{id}/versions/1/diff?to=9"))
        .await
        .error(404, "VERSION_NOT_FOUND");
    get(
        &app,
        &format!("/api/projects/{id}/versions/1/diff?to=latest"),
    )
    .await
    .error(400, "INVALID_REQUEST");
}
