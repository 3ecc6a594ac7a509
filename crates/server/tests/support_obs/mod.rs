//! Support for the observability end-to-end tests: the script they run,
//! the configuration of the real server over a test database, Redis prefix
//! and fake OpenAI server (all from `heartrule-testkit`), and a client.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/postgres` and Redis
//! `redis://127.0.0.1:6379` unless `HEARTRULE_TEST_DATABASE_URL` /
//! `HEARTRULE_TEST_REDIS_URL` say otherwise. Unreachable services fail the
//! tests loudly; they never skip.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use heartrule_server::config::AppConfig;
use heartrule_telemetry::TelemetryConfig;
use heartrule_testkit::fake_openai::{completion, FakeServer, Reply as LlmReply};
use heartrule_testkit::otlp::OtlpTestReceiver;
use serde_json::{json, Value};
use std::time::Duration;

pub use heartrule_testkit::db::TestDb;
pub use heartrule_testkit::redis::TestRedis;
pub use heartrule_testkit::server::RunningServer;

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

/// The text of the fake's completion.
pub fn fake_reply_text() -> String {
    json!({
        "content": format!("{FAKE_REPLY_MARKER} tell me more?"),
        "EXIT": "false",
        "BRIEF": "asked",
    })
    .to_string()
}

/// An OpenAI-compatible server on 127.0.0.1 answering every call with the
/// same JSON reply and usage, recording each request (`traceparent`
/// included).
pub async fn fake_llm() -> FakeServer {
    FakeServer::always(|| {
        LlmReply::json(
            200,
            &completion(&fake_reply_text(), PROMPT_TOKENS, COMPLETION_TOKENS),
        )
    })
    .await
}

/// The server configuration of the tests: `config/default.yaml` with real
/// PostgreSQL and Redis and the fake LLM as `openai` provider.
pub fn app_config(
    database: &TestDb,
    redis: &TestRedis,
    llm: &FakeServer,
    telemetry: TelemetryConfig,
) -> AppConfig {
    let config_dir = heartrule_testkit::config_dir();
    let mut config = AppConfig::load_from(&config_dir, &[]).expect("config/default.yaml loads");
    config.server.host = "127.0.0.1".to_owned();
    config.server.port = 0;
    config.server.workers = 2;
    config.server.shutdown_grace_period = Duration::from_secs(1);
    config.database.url = database.url.clone().into();
    config.database.run_migrations = true;
    config.database.max_connections = 4;
    config.redis.url = redis.url.clone().into();
    config.redis.key_prefix = redis.prefix.clone();
    config.redis.op_timeout = Duration::from_secs(1);
    config.llm.provider = heartrule_llm::ProviderKind::OpenAi;
    config.llm.openai.base_url = llm.base_url().to_owned();
    config.llm.openai.api_key = Some("sk-fake".to_owned());
    config.llm.openai.model = FAKE_MODEL.to_owned();
    config.llm.openai.provider_name = FAKE_PROVIDER.to_owned();
    config.llm.openai.timeout = Duration::from_secs(10);
    config.llm.resilience.max_retries = 0;
    config.scripts.preload_dir = config_dir.join("no-preload-in-tests");
    config.telemetry = telemetry;
    config
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
    pub receiver: OtlpTestReceiver,
    pub logs: heartrule_telemetry::testing::CapturedLogs,
    pub telemetry: heartrule_telemetry::Telemetry,
    pub llm: FakeServer,
    pub server: RunningServer,
    pub client: Client,
    pub session_id: String,
    /// Spans received before the test's own requests.
    pub seen_before: usize,
    database: TestDb,
    redis: TestRedis,
}

impl TracedServer {
    /// Installs the process-global telemetry: once per test binary.
    pub async fn start(capture_content: bool) -> Self {
        let receiver = OtlpTestReceiver::start().unwrap();
        let logs = heartrule_telemetry::testing::CapturedLogs::default();
        let telemetry_config = traced_telemetry_config(receiver.endpoint(), capture_content);
        let telemetry = heartrule_telemetry::init_with_writer(
            &telemetry_config,
            &heartrule_server::metrics_catalogue().unwrap(),
            logs.clone(),
        )
        .unwrap();
        let database = TestDb::new().await;
        let redis = TestRedis::new().await;
        let llm = fake_llm().await;
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
        drop(self.llm);
        let telemetry = self.telemetry;
        tokio::task::block_in_place(|| telemetry.shutdown());
        drop(self.redis);
        drop(self.database);
    }
}
