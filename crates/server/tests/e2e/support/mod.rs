//! The end-to-end harness: the whole server (`build_app` on 127.0.0.1:0)
//! over real PostgreSQL and Redis and an in-process fake OpenAI server.
//!
//! The test database, the Redis prefix, the fake OpenAI server and the
//! running server come from `heartrule-testkit`, the one copy every crate's
//! tests share.

#![allow(dead_code)]

pub mod counselor;

use heartrule_server::config::AppConfig;
use heartrule_testkit::server::RunningServer;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

pub use heartrule_testkit::db::TestDb;
pub use heartrule_testkit::fake_openai as fake_llm;
pub use heartrule_testkit::fake_openai::{FakeServer, Reply};
pub use heartrule_testkit::redis::{redis_url, require_redis, unique_prefix as redis_prefix};
pub use heartrule_testkit::{closed_port, config_dir, repo_root};

/// The test Redis's keys under `prefix`.
pub fn redis_keys(prefix: &str) -> Vec<String> {
    heartrule_testkit::redis::keys_under(&redis_url(), prefix).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Deletes the test Redis's keys under `prefix`.
pub fn clear_redis_prefix(prefix: &str) {
    if let Err(e) = heartrule_testkit::redis::delete_keys_under(&redis_url(), prefix) {
        eprintln!("warning: Redis keys under {prefix} were not deleted: {e:#}");
    }
}

/// Environment for one server: builder over the keys `AppConfig` reads.
#[derive(Clone, Default)]
pub struct Env(pub Vec<(String, String)>);

impl Env {
    /// Port 0, two workers, the repository's scripts and prompts, no
    /// database, no Redis, the mock LLM.
    pub fn base() -> Self {
        let root = repo_root();
        Self::default()
            .set("HEARTRULE__SERVER__PORT", "0")
            .set("HEARTRULE__SERVER__WORKERS", "2")
            .set("HEARTRULE__SERVER__SHUTDOWN_GRACE_PERIOD", "5s")
            .set(
                "HEARTRULE__SCRIPTS__PRELOAD_DIR",
                &root.join("examples/scripts").display().to_string(),
            )
            .set(
                "HEARTRULE__ENGINE__PROMPTS_DIR",
                &root.join("config/prompts").display().to_string(),
            )
            .set("HEARTRULE__HTTP__INCLUDE_DEBUG_INFO", "true")
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.0.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn database(self, db: &TestDb) -> Self {
        self.set("DATABASE_URL", &db.url)
    }

    pub fn redis(self, url: &str, prefix: &str) -> Self {
        self.set("REDIS_URL", url)
            .set("HEARTRULE__REDIS__KEY_PREFIX", prefix)
            .set("HEARTRULE__REDIS__CONNECT_TIMEOUT", "300ms")
            .set("HEARTRULE__REDIS__OP_TIMEOUT", "200ms")
            .set("HEARTRULE__REDIS__SCRIPT_TTL", "5m")
            .set("HEARTRULE__REDIS__SESSION_TTL", "5m")
    }

    /// The `openai` provider at `base_url`, with millisecond backoffs, a
    /// short per-attempt timeout and a breaker that does not trip unless a
    /// test asks for it.
    pub fn openai(self, base_url: &str) -> Self {
        self.set("LLM_PROVIDER", "openai")
            .set("HEARTRULE__LLM__OPENAI__BASE_URL", base_url)
            .set("HEARTRULE__LLM__OPENAI__API_KEY", "test")
            .set("HEARTRULE__LLM__OPENAI__MODEL", "fake-model")
            .set("HEARTRULE__LLM__OPENAI__TIMEOUT", "1500ms")
            .set("HEARTRULE__LLM__RESILIENCE__MAX_RETRIES", "2")
            .set("HEARTRULE__LLM__RESILIENCE__INITIAL_BACKOFF", "5ms")
            .set("HEARTRULE__LLM__RESILIENCE__MAX_BACKOFF", "20ms")
            .set(
                "HEARTRULE__LLM__RESILIENCE__BREAKER__FAILURE_THRESHOLD",
                "50",
            )
            .set("HEARTRULE__LLM__RESILIENCE__BREAKER__OPEN_FOR", "1s")
    }

    pub fn config(&self) -> AppConfig {
        AppConfig::load_from(&config_dir(), &self.0).expect("test configuration loads")
    }
}

/// PostgreSQL, Redis and a fake LLM for one test.
pub struct Services {
    pub db: TestDb,
    pub redis_prefix: String,
}

impl Services {
    pub async fn new() -> Self {
        require_redis().await;
        Self {
            db: TestDb::new().await,
            redis_prefix: redis_prefix(),
        }
    }

    /// [`Env::base`] on this test's database and Redis prefix.
    pub fn env(&self) -> Env {
        Env::base()
            .database(&self.db)
            .redis(&redis_url(), &self.redis_prefix)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        clear_redis_prefix(&self.redis_prefix);
    }
}

/// A running server and a client of it.
pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    server: RunningServer,
}

impl TestApp {
    pub async fn start(env: &Env) -> Self {
        let server = RunningServer::start(&env.config(), None).await;
        Self {
            url: server.base_url.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            server,
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn get(&self, path: &str) -> Response {
        Response::read(self.http.get(self.at(path)).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        Response::read(
            self.http
                .post(self.at(path))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The id of a stored script by name.
    pub async fn script_id(&self, name: &str) -> String {
        let list = self.get("/api/scripts").await.ok();
        list["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|script| script["scriptName"] == name)
            .unwrap_or_else(|| panic!("script {name} is not listed: {list}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a session on `script` and returns the response body.
    pub async fn create_session(&self, script_id: &str) -> Value {
        self.post(
            "/api/sessions",
            &serde_json::json!({"userId": "e2e-user", "scriptId": script_id}),
        )
        .await
        .ok()
    }

    pub async fn send(&self, session_id: &str, content: &str) -> Response {
        self.post(
            &format!("/api/sessions/{session_id}/messages"),
            &serde_json::json!({ "content": content }),
        )
        .await
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Response {
    pub async fn read(response: reqwest::Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// The JSON body of a 200.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        self.json()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the API's error shape with this status and code; returns the body.
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        for field in ["type", "message"] {
            assert!(body["error"][field].is_string(), "error.{field} in {body}");
        }
        assert!(body["error"]["recovery"]["canRetry"].is_boolean(), "{body}");
        let request_id = self
            .header("x-request-id")
            .expect("X-Request-Id on an error");
        assert!(!request_id.is_empty());
        assert_eq!(body["error"]["context"]["requestId"], request_id, "{body}");
        body
    }
}

/// Rows of the test database, as JSON (one object per row).
pub async fn rows(db: &TestDb, sql: &str) -> Vec<Value> {
    db.rows(sql).await
}

/// Polls `check` until it holds (or panics after `within`).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}
