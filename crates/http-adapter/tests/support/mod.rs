//! Shared harness of the HTTP adapter's integration tests: the real engine
//! and in-memory store behind the app, the scripted fake LLM of
//! `heartrule-testkit` (a call with no reply queued fails the turn with
//! `Unavailable`), and small JSON request helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use actix_web::App;
use heartrule_domain::{
    AdminService, LlmProvider, ScriptCatalog, SessionManager, SessionManagerConfig,
};
use heartrule_http_adapter::{configure, AppState, HttpConfig};
use heartrule_persistence::MemoryStore;
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use serde_json::{json, Value};
use std::sync::Arc;

pub use heartrule_testkit::fake_llm::FakeLlm;

/// The app's state and the fakes behind it.
pub struct Harness {
    pub state: AppState,
    pub store: MemoryStore,
    pub llm: Arc<FakeLlm>,
}

impl Harness {
    pub fn new(config: HttpConfig) -> Self {
        Self::with_manager(config, SessionManagerConfig::default())
    }

    /// The harness with the session manager's (and the admin service's
    /// quota) settings of `manager` (a zero `script_memo_ttl` makes every
    /// turn load its script as another replica's first turn would).
    pub fn with_manager(config: HttpConfig, manager: SessionManagerConfig) -> Self {
        let store = MemoryStore::new();
        let llm = FakeLlm::failing_when_empty();
        let engine = HeartRuleEngine::new(
            Arc::clone(&llm) as Arc<dyn LlmProvider>,
            Arc::new(EmbeddedTemplates::new()),
            EngineOptions::default(),
        );
        // The real engine over the in-memory store.
        let adapters = store.adapters(Arc::new(engine));
        let state = AppState::new(
            Arc::new(SessionManager::new(adapters.clone(), manager.clone())),
            Arc::new(ScriptCatalog::new(adapters.clone())),
            Arc::new(AdminService::new(adapters).with_quotas(manager.quotas)),
            config,
        );
        Self { state, store, llm }
    }

    pub fn default_config() -> Self {
        Self::new(HttpConfig::default())
    }

    pub async fn service(
        &self,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        test::init_service(App::new().configure(configure(self.state.clone()))).await
    }
}

/// A response read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn request_id(&self) -> &str {
        self.header("x-request-id")
            .expect("every response carries X-Request-Id")
    }

    /// Asserts the common error shape and returns `error`.
    pub fn error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.body["success"], false, "{}", self.text);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "{}", self.text);
        for key in ["type", "message", "context", "recovery"] {
            assert!(
                error.get(key).is_some(),
                "error.{key} missing: {}",
                self.text
            );
        }
        assert_eq!(
            error["context"]["requestId"],
            self.request_id(),
            "the body names the request"
        );
        assert!(error["context"]["timestamp"].is_string());
        error
    }
}

pub async fn read<B: MessageBody>(response: ServiceResponse<B>) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

pub async fn call<S, B>(app: &S, request: TestRequest) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    read(test::call_service(app, request.to_request()).await).await
}

pub async fn get<S, B>(app: &S, uri: &str) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    call(app, TestRequest::get().uri(uri)).await
}

pub async fn post<S, B>(app: &S, uri: &str, body: Value) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    call(app, TestRequest::post().uri(uri).set_json(body)).await
}

/// Stores a script (compatible mode) and returns its id.
pub async fn create_script<S, B>(app: &S, name: &str, yaml: &str) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let reply = post(
        app,
        "/api/scripts",
        json!({"scriptName": name, "scriptType": "session", "scriptContent": yaml, "author": "tests"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["scriptId"].as_str().unwrap().to_owned()
}

/// Creates a session on a script and returns the reply.
pub async fn create_session<S, B>(app: &S, script_id: &str) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    post(
        app,
        "/api/sessions",
        json!({"userId": "user-1", "scriptId": script_id}),
    )
    .await
}

/// An LLM debug script: a legacy no-ack `ai_say` and a simple
/// `ai_ask` with the deprecated `prompt_template` + `target_variable`.
pub const DEBUG_SCRIPT: &str = r#"
session:
  session_id: http_debug
  session_name: "调试会话"
  phases:
    - phase_id: intro
      topics:
        - topic_id: greeting
          actions:
            - action_id: action_1
              action_type: ai_say
              config:
                content: "您好，这里是练习用的咨询会话"
                require_acknowledgment: false
            - action_id: action_2
              action_type: ai_ask
              config:
                prompt_template: "请问该怎么称呼您？"
                target_variable: "user_name"
"#;

/// The LLM replies of [`DEBUG_SCRIPT`]'s first turn.
pub const DEBUG_WELCOME: &str = "欢迎您";
pub const DEBUG_QUESTION: &str = "请问您希望如何称呼您？";

pub fn queue_debug_first_turn(llm: &FakeLlm) {
    llm.reply(DEBUG_WELCOME);
    llm.reply(json!({ "content": DEBUG_QUESTION }).to_string());
}

/// A script whose second turn streams: after the name, a multi-round ask
/// whose JSON reply's `content` is the message.
pub const STREAM_SCRIPT: &str = r#"
session:
  session_id: http_stream
  phases:
    - phase_id: p1
      topics:
        - topic_id: t1
          actions:
            - action_id: welcome
              action_type: ai_say
              config:
                content: "欢迎来到练习会话"
                require_acknowledgment: false
            - action_id: ask_name
              action_type: ai_ask
              config:
                content: "请问怎么称呼您？"
                target_variable: user_name
            - action_id: ask_mood
              action_type: ai_ask
              config:
                content: "问问{user_name}最近的心情"
                output:
                  - get: mood
                    define: "用户的心情"
                max_rounds: 2
"#;

pub const STREAM_MOOD_QUESTION: &str = "小明，最近心情怎么样？有什么想聊的吗？";

pub fn queue_stream_first_turn(llm: &FakeLlm) {
    llm.reply("欢迎你来");
    llm.reply(json!({"content": "怎么称呼您？"}).to_string());
}

pub fn queue_stream_second_turn(llm: &FakeLlm) {
    // Written out (not `json!`, which sorts keys) so `content` comes first,
    // as the prompt contract asks.
    llm.reply(format!(
        r#"{{"content": "{STREAM_MOOD_QUESTION}", "EXIT": "false"}}"#
    ));
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event: ") {
                    name = rest.to_owned();
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data.push_str(rest);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            SseEvent {
                name,
                data: serde_json::from_str(&data).unwrap(),
            }
        })
        .collect()
}
