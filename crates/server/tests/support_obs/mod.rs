//! Support for the observability end-to-end tests: a throw-away PostgreSQL
//! database and Redis key prefix, a fake OpenAI-compatible LLM server that
//! records what it receives, and the real server started on a free port.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/postgres` and Redis
//! `redis://127.0.0.1:6379` unless `HEARTRULE_TEST_DATABASE_URL` /
//! `HEARTRULE_TEST_REDIS_URL` say otherwise. Unreachable services fail the
//! tests loudly; they never skip.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use actix_web::{web, HttpRequest, HttpResponse};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use heartrule_server::config::AppConfig;
use heartrule_server::{build_app, App};
use heartrule_telemetry::{MetricsRendererFn, TelemetryConfig};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEFAULT_DATABASE_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

/// The distinctive user message the privacy checks look for.
pub const SECRET_MESSAGE: &str = "zebra-violet-4711";
/// What the fake LLM answers (a JSON reply every engine action accepts).
pub const FAKE_REPLY_MARKER: &str = "FAKE-LLM-REPLY";
pub const FAKE_MODEL: &str = "fake-model";
pub const FAKE_PROVIDER: &str = "fake-openai";
/// Token usage the fake LLM reports for every call.
pub const PROMPT_TOKENS: u32 = 40;
pub const COMPLETION_TOKENS: u32 = 7;

/// A session script whose second turn runs an `ai_ask` that calls the LLM
/// (so one `POST …/messages` touches HTTP, the manager, the engine, the
/// LLM, PostgreSQL and Redis).
pub const SCRIPT: &str = r#"
session:
  session_id: obs_e2e
  session_name: "observability check"
  phases:
    - phase_id: p1
      topics:
        - topic_id: t1
          actions:
            - action_id: welcome
              action_type: ai_say
              config:
                content: "Welcome to the practice session"
                require_acknowledgment: false
            - action_id: ask_name
              action_type: ai_ask
              config:
                content: "Ask how to address the client"
                target_variable: user_name
            - action_id: ask_mood
              action_type: ai_ask
              config:
                content: "Ask {user_name} about their mood lately"
                output:
                  - get: mood
                    define: "the client's mood"
                max_rounds: 3
            - action_id: ask_sleep
              action_type: ai_ask
              config:
                content: "Ask {user_name} how they sleep"
                output:
                  - get: sleep
                    define: "the client's sleep"
                max_rounds: 3
"#;

fn database_server_url() -> String {
    std::env::var("HEARTRULE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_DATABASE_SERVER.to_owned())
}

/// `server`'s URL with its database replaced by `name`.
fn database_url(server: &str, name: &str) -> String {
    let authority_start = server.find("://").map_or(0, |i| i + 3);
    let path_start = server[authority_start..]
        .find('/')
        .map_or(server.len(), |i| authority_start + i);
    format!("{}/{name}", &server[..path_start])
}

fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A database created for one test and dropped (with its connections) when
/// this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let server = database_server_url();
        let name = format!("heartrule_obs_{}", unique_suffix());
        let mut connection = AsyncPgConnection::establish(&server)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL for the tests is unreachable at {server}: {e}; these tests never skip")
            });
        connection
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        Self {
            url: database_url(&server, &name),
            name,
        }
    }
}

/// Runs `work` to completion on a fresh runtime in its own thread (for
/// async clean-up from `Drop`, which may run inside a runtime).
fn block_on_thread<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("clean-up runtime")
            .block_on(work);
    });
    thread.join().expect("clean-up thread");
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_thread(async move {
            let server = database_server_url();
            let mut connection = AsyncPgConnection::establish(&server)
                .await
                .expect("connect to drop the test database");
            connection
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .expect("drop the test database");
        });
    }
}

/// A Redis key prefix of one test; its keys are deleted when this is dropped.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub async fn new() -> Self {
        let url =
            std::env::var("HEARTRULE_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS.to_owned());
        let client = redis::Client::open(url.as_str()).expect("Redis URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| {
                panic!("Redis for the tests is unreachable at {url}: {e}; these tests never skip")
            });
        let pong: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .expect("PING");
        assert_eq!(pong, "PONG");
        Self {
            url,
            prefix: format!("heartrule-obs-{}", unique_suffix()),
        }
    }

    /// The keys under this prefix.
    pub async fn keys(&self) -> Vec<String> {
        keys_with_prefix(&self.url, &self.prefix).await
    }
}

async fn keys_with_prefix(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).expect("Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS")
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        block_on_thread(async move {
            let keys = keys_with_prefix(&url, &prefix).await;
            if keys.is_empty() {
                return;
            }
            let client = redis::Client::open(url.as_str()).expect("Redis URL");
            let mut connection = client
                .get_multiplexed_async_connection()
                .await
                .expect("Redis");
            let _deleted: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .expect("DEL");
        });
    }
}

/// One request the fake LLM received.
#[derive(Debug, Clone)]
pub struct LlmCall {
    pub traceparent: Option<String>,
    pub body: Value,
}

/// An OpenAI-compatible `/v1/chat/completions` on 127.0.0.1 answering every
/// call with the same JSON reply and usage, recording each request.
pub struct FakeLlm {
    pub base_url: String,
    calls: Arc<Mutex<Vec<LlmCall>>>,
    handle: actix_web::dev::ServerHandle,
}

/// The text of the fake's completion.
pub fn fake_reply_text() -> String {
    json!({
        "content": format!("{FAKE_REPLY_MARKER} tell me more?"),
        "EXIT": "false",
        "BRIEF": "asked",
    })
    .to_string()
}

async fn fake_completion(
    request: HttpRequest,
    body: web::Bytes,
    calls: web::Data<Arc<Mutex<Vec<LlmCall>>>>,
) -> HttpResponse {
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    calls.lock().unwrap().push(LlmCall { traceparent, body });
    HttpResponse::Ok().json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": FAKE_MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": fake_reply_text()},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS
        }
    }))
}

impl FakeLlm {
    pub fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let data = web::Data::new(Arc::clone(&calls));
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .route("/v1/chat/completions", web::post().to(fake_completion))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind the fake LLM");
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base_url: format!("http://{address}/v1"),
            calls,
            handle,
        }
    }

    pub fn calls(&self) -> Vec<LlmCall> {
        self.calls.lock().unwrap().clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// The server configuration of the tests: `config/default.yaml` with real
/// PostgreSQL and Redis and the fake LLM as `openai` provider.
pub fn app_config(
    database: &TestDatabase,
    redis: &TestRedis,
    llm: &FakeLlm,
    telemetry: TelemetryConfig,
) -> AppConfig {
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut config = AppConfig::load_from(&config_dir, &[]).expect("config/default.yaml loads");
    config.server.host = "127.0.0.1".to_owned();
    config.server.port = 0;
    config.server.workers = 2;
    config.server.shutdown_grace_period = Duration::from_secs(1);
    config.database.url = database.url.clone();
    config.database.run_migrations = true;
    config.database.max_connections = 4;
    config.redis.url = redis.url.clone();
    config.redis.key_prefix = redis.prefix.clone();
    config.redis.op_timeout = Duration::from_secs(1);
    config.llm.provider = heartrule_llm::ProviderKind::OpenAi;
    config.llm.openai.base_url = llm.base_url.clone();
    config.llm.openai.api_key = Some("sk-fake".to_owned());
    config.llm.openai.model = FAKE_MODEL.to_owned();
    config.llm.openai.provider_name = FAKE_PROVIDER.to_owned();
    config.llm.openai.timeout = Duration::from_secs(10);
    config.llm.resilience.max_retries = 0;
    config.scripts.preload_dir = config_dir.join("no-preload-in-tests");
    config.telemetry = telemetry;
    config
}

/// The real server, built by `build_app` and listening on a free port.
pub struct RunningServer {
    pub base_url: String,
    handle: actix_web::dev::ServerHandle,
    app: Option<App>,
}

impl RunningServer {
    pub async fn start(config: &AppConfig, metrics: Option<MetricsRendererFn>) -> Self {
        let app = build_app(config, metrics, Instant::now())
            .await
            .expect("the server builds");
        let server = app.http_server(config).expect("the server binds");
        let address = server.addrs()[0];
        let handle = server.handle();
        tokio::spawn(server.run());
        Self {
            base_url: format!("http://{address}"),
            handle,
            app: Some(app),
        }
    }

    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

/// A reply: status, headers and parsed JSON body (or the text as a string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the request is answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("the body is read");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// A client of the running server.
pub struct Client {
    pub http: reqwest::Client,
    pub base_url: String,
}

impl Client {
    pub fn new(server: &RunningServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: server.base_url.clone(),
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base_url))
            .json(body)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base_url))
    }

    /// Stores [`SCRIPT`]; returns its id.
    pub async fn create_script(&self) -> String {
        let reply = send(self.post(
            "/api/scripts",
            &json!({"scriptName": "obs-e2e", "scriptType": "session", "scriptContent": SCRIPT, "author": "tests"}),
        ))
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["scriptId"]
            .as_str()
            .expect("scriptId")
            .to_owned()
    }

    /// Starts a session on `script_id`; returns its id.
    pub async fn create_session(&self, script_id: &str) -> String {
        let reply = send(self.post(
            "/api/sessions",
            &json!({"userId": "obs-user", "scriptId": script_id}),
        ))
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned()
    }

    /// `POST /api/sessions/{id}/messages`, optionally with a `traceparent`.
    pub async fn post_message(
        &self,
        session_id: &str,
        content: &str,
        traceparent: Option<&str>,
    ) -> Reply {
        let mut request = self.post(
            &format!("/api/sessions/{session_id}/messages"),
            &json!({ "content": content }),
        );
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let reply = send(request).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply
    }
}

/// Telemetry of the trace tests: JSON logs at info with the span fields
/// rendered (the strictest place for conversation text to leak), every
/// trace exported over OTLP/HTTP to `endpoint`, metrics off.
pub fn traced_telemetry_config(endpoint: String, capture_content: bool) -> TelemetryConfig {
    use heartrule_telemetry::{LogConfig, LogFormat, MetricsConfig, OtlpProtocol, TraceConfig};
    TelemetryConfig {
        service_name: "heartrule-obs-test".to_owned(),
        service_version: "0.0.0-test".to_owned(),
        environment: "test".to_owned(),
        log: LogConfig {
            format: LogFormat::Json,
            level: "info".to_owned(),
            file: None,
            span_fields: true,
        },
        traces: TraceConfig {
            enabled: true,
            endpoint,
            protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(5),
        },
        metrics: MetricsConfig { enabled: false },
        capture_content,
    }
}

/// The real server with global telemetry exporting into an in-process OTLP
/// receiver, and a session of [`SCRIPT`] waiting for its next message.
pub struct TracedServer {
    pub receiver: heartrule_telemetry::testing::OtlpTestReceiver,
    pub logs: heartrule_telemetry::testing::CapturedLogs,
    pub telemetry: heartrule_telemetry::Telemetry,
    pub llm: FakeLlm,
    pub server: RunningServer,
    pub client: Client,
    pub session_id: String,
    /// Spans received before the test's own requests.
    pub seen_before: usize,
    database: TestDatabase,
    redis: TestRedis,
}

impl TracedServer {
    /// Installs the process-global telemetry: once per test binary.
    pub async fn start(capture_content: bool) -> Self {
        let receiver = heartrule_telemetry::testing::OtlpTestReceiver::start().unwrap();
        let logs = heartrule_telemetry::testing::CapturedLogs::default();
        let telemetry_config = traced_telemetry_config(receiver.endpoint(), capture_content);
        let telemetry =
            heartrule_telemetry::init_with_writer(&telemetry_config, logs.clone()).unwrap();
        let database = TestDatabase::create().await;
        let redis = TestRedis::new().await;
        let llm = FakeLlm::start();
        let config = app_config(&database, &redis, &llm, telemetry_config);
        let server = RunningServer::start(&config, None).await;
        let client = Client::new(&server);
        let script_id = client.create_script().await;
        let session_id = client.create_session(&script_id).await;
        tokio::task::block_in_place(|| telemetry.flush()).unwrap();
        let seen_before = receiver.spans().len();
        Self {
            receiver,
            logs,
            telemetry,
            llm,
            server,
            client,
            session_id,
            seen_before,
            database,
            redis,
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
        self.llm.stop().await;
        let telemetry = self.telemetry;
        tokio::task::block_in_place(|| telemetry.shutdown());
        drop(self.redis);
        drop(self.database);
    }
}
