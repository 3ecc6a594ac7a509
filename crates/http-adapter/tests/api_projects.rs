//! Projects end to end over the in-memory store and the real engine: the
//! files of a project's draft (revisions, publish, restore, diff), template
//! schemes, sessions running their pinned version's techniques and
//! templates, the project list and lifecycle, and the original engine's
//! example project through the editor API to a finished conversation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test::TestRequest;
use heartrule_domain::{
    AdminService, AuditAction, AuditFilter, AuditLog, LlmProvider, ScriptCatalog, SessionManager,
    SessionManagerConfig,
};
use heartrule_http_adapter::{configure, AppState, HttpConfig};
use heartrule_llm::mock::MockProvider;
use heartrule_persistence::MemoryStore;
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A session whose only action runs the technique `probe`, with the
/// template scheme `warm`.
const SESSION: &str = r#"
session:
  session_id: pinned_files
  template_scheme: warm
  phases:
    - phase_id: p
      topics:
        - topic_id: t
          actions:
            - action_id: run_probe
              action_type: use_skill
              config:
                skill: probe
"#;

/// The technique `probe`: two template-mode says (prompted through the
/// `ai_say` template) whose texts carry `tag`, each one round: one LLM call,
/// then the next input moves on.
fn technique(tag: &str) -> String {
    format!(
        r#"
technique_id: probe
name: "Probe"
topic:
  topic_id: probe_topic
  actions:
    - action_id: probe_first
      action_type: ai_say
      config:
        content: "technique {tag} first"
        max_rounds: 1
    - action_id: probe_last
      action_type: ai_say
      config:
        content: "technique {tag} last"
        max_rounds: 1
"#
    )
}

const TECHNIQUE_PATH: &str = "techniques/probe.yaml";
const WARM_SAY: &str = "_system/config/custom/warm/ai_say_v1.md";

/// The say template of scheme `warm`, marked with `tag`.
fn warm_template(tag: &str) -> String {
    format!("WARM-{tag}\n{{{{topic_content}}}}\n")
}

fn file_uri(id: &str, path: &str) -> String {
    format!("/api/projects/{id}/files/{path}")
}

fn put(uri: &str, body: Value) -> TestRequest {
    TestRequest::put().uri(uri).set_json(body)
}

async fn create_project<S, B>(app: &S, body: Value) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let reply = post(app, "/api/projects", body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn files_are_edited_by_revision_published_restored_and_diffed() {
    let h = Harness::default_config();
    let app = h.service().await;
    let id = create_project(&app, json!({"name": "files"})).await;

    let listed = get(&app, &format!("/api/projects/{id}/files")).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body, json!({"files": [], "revision": 0}));
    assert_eq!(listed.header("etag"), Some("\"0\""));

    let files = format!("/api/projects/{id}/files");
    for (path, file_type) in [
        ("../techniques/probe.yaml", "technique"),
        ("techniques/probe.txt", "technique"),
        ("prompts/ai_say_v1.md", "template"),
        ("tests/probe.yaml", "test"),
    ] {
        post(
            &app,
            &files,
            json!({"path": path, "fileType": file_type, "content": "x", "revision": 0}),
        )
        .await
        .error(400, "SCRIPT_VALIDATION_ERROR");
    }
    let created = post(
        &app,
        &files,
        json!({"path": TECHNIQUE_PATH, "fileType": "technique", "content": technique("one"), "revision": 0}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["revision"], 1);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.body["file"]["path"], TECHNIQUE_PATH);
    post(
        &app,
        &files,
        json!({"path": TECHNIQUE_PATH, "fileType": "technique", "content": "x", "revision": 1}),
    )
    .await
    .error(409, "CONFLICT");

    // An edit based on a stale revision is refused and changes nothing.
    let uri = file_uri(&id, TECHNIQUE_PATH);
    call(
        &app,
        put(&uri, json!({"content": technique("stale"), "revision": 0})),
    )
    .await
    .error(409, "CONFLICT");
    let by_header = call(
        &app,
        put(&uri, json!({"content": technique("two")})).insert_header(("If-Match", "\"1\"")),
    )
    .await;
    assert_eq!(by_header.status, 200, "{}", by_header.text);
    assert_eq!(by_header.body["revision"], 2);
    let read = get(&app, &uri).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["content"], technique("two"));
    assert_eq!(read.body["fileType"], "technique");
    assert_eq!(read.header("etag"), Some("\"2\""));

    let project = get(&app, &format!("/api/projects/{id}")).await;
    assert_eq!(project.status, 200, "{}", project.text);
    assert_eq!(project.body["draft"]["revision"], 2);
    assert_eq!(project.body["project"]["fileCount"], 1);
    assert_eq!(
        project.body["files"][0]["size"],
        technique("two").len(),
        "{}",
        project.text
    );
    assert!(project.body["files"][0].get("content").is_none());
    assert_eq!(project.body["versions"].as_array().unwrap().len(), 1);

    // Publishing freezes the files into the version.
    let published = post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible", "releaseNote": "with a technique"}),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text);
    assert_eq!(published.body["version"]["versionNumber"], 2);
    assert_eq!(
        published.body["version"]["files"],
        json!([{"path": TECHNIQUE_PATH, "fileType": "technique", "content": technique("two")}])
    );
    let v1 = get(&app, &format!("/api/projects/{id}/versions/1")).await;
    assert_eq!(v1.body["files"], json!([]));
    assert_ne!(
        published.body["version"]["contentHash"], v1.body["contentHash"],
        "the files are part of the version's identity"
    );
    post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible"}),
    )
    .await
    .error(409, "CONFLICT");

    // A broken technique file is named by a publish.
    call(
        &app,
        put(&uri, json!({"content": "topic: [", "revision": 2})),
    )
    .await;
    let invalid = post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible"}),
    )
    .await;
    invalid.error(400, "DRAFT_INVALID");
    assert!(
        invalid.text.contains("files[techniques/probe.yaml]"),
        "{}",
        invalid.text
    );

    // The diff shows the changed file under its path.
    let diff = get(&app, &format!("/api/projects/{id}/versions/2/diff")).await;
    assert_eq!(diff.status, 200, "{}", diff.text);
    assert_eq!(diff.body["changedFiles"], json!([TECHNIQUE_PATH]));
    let unified = diff.body["unified"].as_str().unwrap();
    assert!(
        unified.contains("--- version 2/techniques/probe.yaml")
            && unified.contains("+++ draft/techniques/probe.yaml")
            && unified.contains("+topic: ["),
        "{unified}"
    );
    let between = get(&app, &format!("/api/projects/{id}/versions/1/diff?to=2")).await;
    assert!(between.body["unified"]
        .as_str()
        .unwrap()
        .contains("--- /dev/null"));

    // Delete, then restore version 2: the file comes back as published.
    let deleted = call(
        &app,
        TestRequest::delete()
            .uri(&uri)
            .insert_header(("If-Match", "\"3\"")),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.body, json!({"revision": 4}));
    get(&app, &uri).await.error(404, "FILE_NOT_FOUND");
    call(&app, TestRequest::delete().uri(&uri))
        .await
        .error(400, "INVALID_REQUEST");
    let restored = post(
        &app,
        &format!("/api/projects/{id}/versions/2/restore"),
        json!({}),
    )
    .await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert_eq!(restored.body["revision"], 5);
    assert_eq!(get(&app, &uri).await.body["content"], technique("two"));

    // Every write is audited as a script update naming its operation.
    let events = h
        .store
        .list_events(&AuditFilter {
            target_id: Some(id.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let operations: Vec<&str> = events
        .iter()
        .filter(|e| e.action == AuditAction::ScriptUpdate)
        .filter_map(|e| e.details["operation"].as_str())
        .collect();
    for operation in [
        "file.create",
        "file.update",
        "file.delete",
        "publish",
        "restore",
    ] {
        assert!(operations.contains(&operation), "{operations:?}");
    }
}

#[actix_web::test]
async fn template_schemes_copy_the_default_templates() {
    let h = Harness::default_config();
    let app = h.service().await;
    let id = create_project(&app, json!({"name": "schemes"})).await;
    let schemes = format!("/api/projects/{id}/template-schemes");
    let listed = get(&app, &schemes).await;
    assert_eq!(listed.body, json!({"schemes": ["default"], "revision": 0}));

    // Without default templates of its own, the engine's are copied.
    let created = post(&app, &schemes, json!({"name": "warm"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        created.body,
        json!({"schemes": ["default", "warm"], "revision": 1})
    );
    let files = get(&app, &format!("/api/projects/{id}/files")).await;
    let paths: Vec<&str> = files.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&WARM_SAY), "{paths:?}");
    assert_eq!(paths.len(), 5, "{paths:?}");
    post(&app, &schemes, json!({"name": "warm"}))
        .await
        .error(409, "CONFLICT");
    post(&app, &schemes, json!({"name": "bad scheme"}))
        .await
        .error(400, "SCRIPT_VALIDATION_ERROR");
    post(&app, &schemes, json!({"name": "x", "copyFrom": "nope"}))
        .await
        .error(400, "SCRIPT_VALIDATION_ERROR");

    // A copy of a custom scheme copies that scheme's files.
    call(
        &app,
        put(
            &file_uri(&id, WARM_SAY),
            json!({"content": warm_template("one"), "revision": 1}),
        ),
    )
    .await;
    let copied = post(
        &app,
        &schemes,
        json!({"name": "warmer", "copyFrom": "warm"}),
    )
    .await;
    assert_eq!(copied.status, 201, "{}", copied.text);
    let copy = get(
        &app,
        &file_uri(&id, "_system/config/custom/warmer/ai_say_v1.md"),
    )
    .await;
    assert_eq!(copy.body["content"], warm_template("one"));
}

/// Starts a session on `project` (one LLM reply queued) and returns its id.
async fn start<S, B>(app: &S, llm: &FakeLlm, project: &str) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    llm.reply(json!({"content": "said"}).to_string());
    let reply = create_session(app, project).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["sessionId"].as_str().unwrap().to_owned()
}

/// Replaces a draft file at the draft's current revision.
async fn replace<S, B>(app: &S, id: &str, path: &str, content: &str)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let revision = get(app, &format!("/api/projects/{id}/files")).await.body["revision"].clone();
    let reply = call(
        app,
        put(
            &file_uri(id, path),
            json!({"content": content, "revision": revision}),
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[actix_web::test]
async fn a_session_runs_its_versions_technique_and_templates_to_its_end() {
    // No memo: every turn loads its version as another replica would.
    let h = Harness::with_manager(
        HttpConfig::default(),
        SessionManagerConfig {
            script_memo_ttl: Duration::ZERO,
            ..SessionManagerConfig::default()
        },
    );
    let app = h.service().await;
    // A technique script of the same id: the version's own file wins.
    let global = post(
        &app,
        "/api/scripts",
        json!({"scriptName": "global probe", "scriptType": "technique",
               "scriptContent": technique("global"), "author": "tests"}),
    )
    .await;
    assert_eq!(global.status, 200, "{}", global.text);
    let id = create_project(&app, json!({"name": "pinned", "content": SESSION})).await;
    let files = format!("/api/projects/{id}/files");
    for (revision, path, file_type, content) in [
        (0, TECHNIQUE_PATH, "technique", technique("one")),
        (1, WARM_SAY, "template", warm_template("ONE")),
    ] {
        let reply = post(
            &app,
            &files,
            json!({"path": path, "fileType": file_type, "content": content, "revision": revision}),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    let publish = format!("/api/projects/{id}/publish");
    let v2 = post(&app, &publish, json!({"mode": "compatible"})).await;
    assert_eq!(v2.status, 201, "{}", v2.text);

    let first = start(&app, &h.llm, &id).await;
    let prompt = h.llm.last_call().prompt;
    assert!(prompt.contains("technique one first"), "{prompt}");
    assert!(prompt.contains("WARM-ONE"), "{prompt}");

    replace(&app, &id, TECHNIQUE_PATH, &technique("two")).await;
    replace(&app, &id, WARM_SAY, &warm_template("TWO")).await;
    let v3 = post(&app, &publish, json!({"mode": "compatible"})).await;
    assert_eq!(v3.status, 201, "{}", v3.text);

    // The running session finishes on version 2's technique and template.
    let messages = format!("/api/sessions/{first}/messages");
    h.llm.reply(json!({"content": "said"}).to_string());
    let turn = post(&app, &messages, json!({"content": "ok"})).await;
    assert_eq!(turn.status, 200, "{}", turn.text);
    let prompt = h.llm.last_call().prompt;
    assert!(prompt.contains("technique one last"), "{prompt}");
    assert!(prompt.contains("WARM-ONE"), "{prompt}");
    let calls = h.llm.call_count();
    let turn = post(&app, &messages, json!({"content": "ok"})).await;
    assert_eq!(turn.status, 200, "{}", turn.text);
    assert_eq!(turn.body["sessionStatus"], "completed", "{}", turn.text);
    assert_eq!(h.llm.call_count(), calls, "the last answer needs no call");

    // A new session starts on version 3.
    start(&app, &h.llm, &id).await;
    let prompt = h.llm.last_call().prompt;
    assert!(prompt.contains("technique two first"), "{prompt}");
    assert!(prompt.contains("WARM-TWO"), "{prompt}");
}

#[actix_web::test]
async fn projects_are_listed_updated_deprecated_restored_and_copied() {
    let h = Harness::default_config();
    let app = h.service().await;
    let intake = create_project(
        &app,
        json!({"name": "Intake", "description": "First meeting", "tags": ["cbt"]}),
    )
    .await;
    let follow = create_project(
        &app,
        json!({"name": "Follow-up", "description": "Weekly CHECK-in", "tags": ["cbt", "weekly"]}),
    )
    .await;
    create_script(&app, "plain", DEBUG_SCRIPT).await;
    post(&app, "/api/projects", json!({"name": "Intake"}))
        .await
        .error(409, "CONFLICT");

    let names = |reply: &Reply| -> Vec<String> {
        reply.body["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = get(&app, "/api/projects").await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(names(&all), ["plain", "Follow-up", "Intake"]);
    assert_eq!(all.body["total"], 3);
    assert_eq!(all.body["projects"][2]["status"], "active");
    assert_eq!(all.body["projects"][2]["currentVersion"], 1);
    let found = get(&app, "/api/projects?search=check").await;
    assert_eq!(names(&found), ["Follow-up"]);
    let tagged = get(&app, "/api/projects?tag=cbt&limit=1&offset=1").await;
    assert_eq!(
        (names(&tagged), tagged.body["total"].clone()),
        (vec!["Intake".to_owned()], json!(2))
    );
    get(&app, "/api/projects?limit=201")
        .await
        .error(400, "INVALID_REQUEST");

    let renamed = call(
        &app,
        put(
            &format!("/api/projects/{follow}"),
            json!({"name": "Intake"}),
        ),
    )
    .await;
    renamed.error(409, "CONFLICT");
    let updated = call(
        &app,
        put(
            &format!("/api/projects/{follow}"),
            json!({"name": "Follow-up session", "tags": ["weekly"]}),
        ),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["name"], "Follow-up session");
    assert_eq!(updated.body["tags"], json!(["weekly"]));
    assert_eq!(updated.body["description"], "Weekly CHECK-in");

    // A deprecated project starts no session; restored, it does again.
    let deprecate = format!("/api/projects/{intake}/deprecate");
    let deprecated = post(&app, &deprecate, json!({})).await;
    assert_eq!(deprecated.status, 200, "{}", deprecated.text);
    assert_eq!(deprecated.body["status"], "deprecated");
    post(&app, &deprecate, json!({}))
        .await
        .error(409, "CONFLICT");
    let refused = create_session(&app, &intake).await;
    let error = refused.error(409, "CONFLICT");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deprecated")
            || error.to_string().contains("deprecated"),
        "{error}"
    );
    assert_eq!(names(&get(&app, "/api/projects").await).len(), 2);
    let with = get(&app, "/api/projects?includeDeprecated=true").await;
    assert_eq!(with.body["total"], 3);
    let only = get(&app, "/api/projects?status=deprecated").await;
    assert_eq!(names(&only), ["Intake"]);
    let restore = format!("/api/projects/{intake}/restore");
    assert_eq!(post(&app, &restore, json!({})).await.status, 200);
    post(&app, &restore, json!({})).await.error(409, "CONFLICT");
    h.llm.reply("welcome");
    assert_eq!(create_session(&app, &intake).await.status, 200);

    // A copy starts from the source's current version, files included.
    let files = format!("/api/projects/{intake}/files");
    post(
        &app,
        &files,
        json!({"path": "tests/intake.test.yaml", "fileType": "test", "content": "steps: []\n", "revision": 0}),
    )
    .await;
    let published = post(&app, &format!("/api/projects/{intake}/publish"), json!({})).await;
    assert_eq!(published.status, 201, "{}", published.text);
    post(
        &app,
        &format!("/api/projects/{intake}/copy"),
        json!({"name": "Follow-up session"}),
    )
    .await
    .error(409, "CONFLICT");
    let copy = post(
        &app,
        &format!("/api/projects/{intake}/copy"),
        json!({"name": "Intake (copy)"}),
    )
    .await;
    assert_eq!(copy.status, 201, "{}", copy.text);
    assert_eq!(copy.body["currentVersion"], 1);
    assert_eq!(copy.body["fileCount"], 1);
    let copy_id = copy.body["id"].as_str().unwrap();
    let v1 = get(&app, &format!("/api/projects/{copy_id}/versions/1")).await;
    assert_eq!(
        v1.body["contentHash"],
        published.body["version"]["contentHash"]
    );
    assert_eq!(v1.body["files"][0]["path"], "tests/intake.test.yaml");
    let copied = get(
        &app,
        &format!("/api/projects/{copy_id}/files/tests/intake.test.yaml"),
    )
    .await;
    assert_eq!(copied.body["content"], "steps: []\n");
}

/// The app over the in-memory store and the offline mock LLM, which
/// answers every prompt in the engine's formats.
fn mock_llm_state() -> AppState {
    let store = MemoryStore::new();
    let engine = HeartRuleEngine::new(
        Arc::new(MockProvider::new()) as Arc<dyn LlmProvider>,
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions::default(),
    );
    let adapters = store.adapters(Arc::new(engine));
    AppState::new(
        Arc::new(SessionManager::new(
            adapters.clone(),
            SessionManagerConfig::default(),
        )),
        Arc::new(ScriptCatalog::new(adapters.clone())),
        Arc::new(AdminService::new(adapters)),
        HttpConfig::default(),
    )
}

#[actix_web::test]
async fn the_original_example_project_runs_through_the_editor_api_to_its_end() {
    let state = mock_llm_state();
    let app =
        actix_web::test::init_service(actix_web::App::new().configure(configure(state.clone())))
            .await;
    let id = create_project(&app, json!({"name": "CBT depression assessment"})).await;
    let example = include_str!("fixtures/cbt_depression_assessment.yaml");
    let saved = call(
        &app,
        put(
            &format!("/api/projects/{id}/draft"),
            json!({"content": example, "revision": 0}),
        ),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    // The original's scripts use fields compatible mode normalises.
    let published = post(
        &app,
        &format!("/api/projects/{id}/publish"),
        json!({"mode": "compatible", "releaseNote": "the original's example"}),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text);
    assert_eq!(published.body["version"]["versionNumber"], 2);

    let created = create_session(&app, &id).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let session = created.body["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(created.body["position"]["phaseId"], "phase_1_rapport");
    let mut last = created.body;
    let mut phases = vec![last["position"]["phaseId"].clone()];
    for _ in 0..60 {
        if last["sessionStatus"] == "completed" {
            break;
        }
        let turn = post(
            &app,
            &format!("/api/sessions/{session}/messages"),
            json!({"content": "我叫小明，今年二十八岁，最近情绪很低落，对什么都提不起兴趣。"}),
        )
        .await;
        assert_eq!(turn.status, 200, "{}", turn.text);
        last = turn.body;
        phases.push(last["position"]["phaseId"].clone());
    }
    assert_eq!(last["sessionStatus"], "completed", "{last}");
    assert!(phases.contains(&json!("phase_2_assessment")), "{phases:?}");
    let stored = get(&app, &format!("/api/sessions/{session}")).await;
    assert_eq!(stored.body["status"], "completed", "{}", stored.text);
}
