//! Storage failures map by kind: unavailable or timed out → 503, anything
//! else → 500, both `DATABASE_ERROR` (a mocked script repository).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::test;
use actix_web::App;
use heartrule_domain::ports::MockScriptRepository;
use heartrule_domain::{
    Adapters, AdminService, LlmProvider, NoCache, Ports, RandomIds, RepositoryError, ScriptCatalog,
    SessionManager, SessionManagerConfig, SystemClock,
};
use heartrule_http_adapter::{configure, AppState, HttpConfig};
use heartrule_persistence::MemoryStore;
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use std::sync::Arc;
use support::*;

struct MockedScripts;

impl Ports for MockedScripts {
    type Scripts = MockScriptRepository;
    type Sessions = MemoryStore;
    type History = MemoryStore;
    type ScriptCache = NoCache;
    type SessionCache = NoCache;
    type Engine = HeartRuleEngine;
    type Clock = SystemClock;
    type Ids = RandomIds;
    type Audit = MemoryStore;
    type UserData = MemoryStore;
    type CacheJanitor = NoCache;
}

fn state(scripts: MockScriptRepository) -> AppState {
    let store = Arc::new(MemoryStore::new());
    let engine = HeartRuleEngine::new(
        FakeLlm::failing_when_empty() as Arc<dyn LlmProvider>,
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions::default(),
    );
    let adapters: Adapters<MockedScripts> = Adapters {
        scripts: Arc::new(scripts),
        sessions: Arc::clone(&store),
        history: Arc::clone(&store),
        script_cache: Arc::new(NoCache),
        session_cache: Arc::new(NoCache),
        engine: Arc::new(engine),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        audit: Arc::clone(&store),
        user_data: store,
        cache_janitor: Arc::new(NoCache),
    };
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
async fn unavailable_or_timed_out_storage_is_503_other_failures_500() {
    let mut scripts = MockScriptRepository::new();
    scripts
        .expect_list()
        .returning(|_| Err(RepositoryError::Unavailable("pool exhausted".into())));
    scripts
        .expect_find_by_name()
        .returning(|_| Err(RepositoryError::Timeout("statement timeout".into())));
    scripts
        .expect_get()
        .returning(|_| Err(RepositoryError::Query("relation does not exist".into())));
    let app = test::init_service(App::new().configure(configure(state(scripts)))).await;

    let unavailable = get(&app, "/api/scripts").await;
    let error = unavailable.error(503, "DATABASE_ERROR");
    assert_eq!(error["type"], "system");
    assert_eq!(error["message"], "Database operation failed");
    assert!(error["details"]
        .as_str()
        .unwrap()
        .contains("pool exhausted"));
    assert_eq!(error["recovery"]["canRetry"], true);

    let timed_out = post(
        &app,
        "/api/scripts/import",
        serde_json::json!({"yamlContent": DEBUG_SCRIPT, "scriptName": "x"}),
    )
    .await;
    timed_out.error(503, "DATABASE_ERROR");

    let failed = get(&app, "/api/scripts/00000000-0000-4000-8000-000000000001").await;
    let error = failed.error(500, "DATABASE_ERROR");
    assert!(error["details"]
        .as_str()
        .unwrap()
        .contains("relation does not exist"));
}
