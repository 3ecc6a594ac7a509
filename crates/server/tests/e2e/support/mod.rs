//! The end-to-end harness: the whole server (`build_app` on 127.0.0.1:0)
//! over real PostgreSQL and Redis and an in-process fake OpenAI server.
//!
//! The test-database harness and the fake OpenAI server are the ones the
//! persistence and LLM crates test with, compiled in from their `tests/`
//! folders so there is one copy of each.

#![allow(dead_code)]

#[path = "../../../../persistence/tests/support/mod.rs"]
pub mod pg;

#[path = "../../../../llm/tests/support/fake_server.rs"]
pub mod fake_llm;

pub mod counselor;

use heartrule_server::config::AppConfig;
use heartrule_server::{build_app, App};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

pub use fake_llm::{FakeServer, Reply};
pub use pg::TestDb;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

pub fn config_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
}

/// The Redis the tests use (`HEARTRULE_TEST_REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("HEARTRULE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

static REDIS_CHECKED: OnceCell<()> = OnceCell::const_new();

/// Fails loudly when the test Redis does not answer `PING`.
pub async fn require_redis() {
    REDIS_CHECKED
        .get_or_init(|| async {
            let url = redis_url();
            let address = url
                .trim_start_matches("redis://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let answer = async {
                let mut socket = tokio::net::TcpStream::connect(&address).await?;
                socket.write_all(b"PING\r\n").await?;
                let mut buffer = [0u8; 16];
                let read = socket.read(&mut buffer).await?;
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&buffer[..read]).into_owned())
            };
            match tokio::time::timeout(Duration::from_secs(3), answer).await {
                Ok(Ok(reply)) if reply.starts_with("+PONG") => {}
                outcome => panic!(
                    "Redis for the tests is unreachable at {url} ({outcome:?}). Start it, or point \
                     HEARTRULE_TEST_REDIS_URL at one. These tests never skip."
                ),
            }
        })
        .await;
}

/// A per-test Redis key prefix.
pub fn redis_prefix() -> String {
    format!("heartrule_e2e_{}", uuid::Uuid::new_v4().simple())
}

/// One command to the test Redis over a blocking socket (usable in `Drop`);
/// returns the raw RESP reply.
pub fn redis_command(args: &[&str]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let url = redis_url();
    let address = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut socket = std::net::TcpStream::connect(address)?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    socket.write_all(command.as_bytes())?;
    socket.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    socket.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The test Redis's keys under `prefix`.
pub fn redis_keys(prefix: &str) -> Vec<String> {
    let reply = redis_command(&["KEYS", &format!("{prefix}*")]).expect("KEYS on the test Redis");
    // `*N`, then `$len` / `key` line pairs.
    reply
        .split("\r\n")
        .skip(1)
        .skip(1)
        .step_by(2)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A `host:port` on which nothing listens.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
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

/// Deletes the test Redis's keys under `prefix`.
pub fn clear_redis_prefix(prefix: &str) {
    let keys = redis_keys(prefix);
    if keys.is_empty() {
        return;
    }
    let mut args = vec!["DEL"];
    args.extend(keys.iter().map(String::as_str));
    if let Err(e) = redis_command(&args) {
        eprintln!("warning: Redis keys under {prefix} were not deleted: {e}");
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        clear_redis_prefix(&self.redis_prefix);
    }
}

/// A running server.
pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    app: Option<App>,
}

impl TestApp {
    pub async fn start(env: &Env) -> Self {
        let config = env.config();
        let app = build_app(&config, None, Instant::now())
            .await
            .expect("the app builds");
        let server = app.http_server(&config).expect("the server binds");
        let address = server.addrs()[0];
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            server.run().await.expect("the server runs");
        });
        Self {
            url: format!("http://{address}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
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
    use diesel::sql_types::Jsonb;
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Jsonb)]
        row: Value,
    }
    let mut conn = db.connection().await;
    diesel::sql_query(format!("SELECT to_jsonb(t) AS row FROM ({sql}) t"))
        .load::<Row>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.row)
        .collect()
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
