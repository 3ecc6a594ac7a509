//! Secrets end to end: the real binary reads `DATABASE_URL_FILE` and the
//! password in it never shows in a log line, an error body or `/`; and no
//! secret it is given (database password, Redis password, LLM key, …)
//! shows in anything it emits.

use crate::process::{answers_health, heartrule};
use crate::support::counselor::counselor_server;
use crate::support::{closed_port, redis_prefix, redis_url, repo_root, require_redis, TestDb};
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Recognisable, and in no other file or fixture of the repository.
const PASSWORD: &str = "Hr-Leak-Canary-5f2c9e";

/// `postgres://user@host/db` → `postgres://user:<PASSWORD>@host/db`. The
/// tests' PostgreSQL trusts local connections, so the password is accepted
/// and ignored.
fn with_password(url: &str) -> String {
    let authority = url.find("://").expect("a URL with a scheme") + 3;
    let at = authority + url[authority..].find('@').expect("a URL with a user");
    assert!(
        !url[authority..at].contains(':'),
        "the test URL already has a password: use one without"
    );
    format!("{}:{PASSWORD}{}", &url[..at], &url[at..])
}

/// A temporary folder holding one secret file, removed at drop.
struct SecretDir(PathBuf);

impl SecretDir {
    fn with(content: &str) -> (Self, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "heartrule-secret-e2e-{}-{}",
            std::process::id(),
            closed_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("database-url");
        std::fs::write(&file, format!("{content}\n")).unwrap();
        (Self(dir), file)
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "the database password appears in {what}:\n{text}"
    );
}

#[actix_web::test]
async fn a_database_url_from_a_file_never_shows_its_password() {
    let db = TestDb::new().await;
    let (dir, file) = SecretDir::with(&with_password(&db.url));
    // Files rather than pipes: a debug log fills a pipe nobody drains yet
    // and would block the server.
    let log_path = dir.0.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = closed_port();
    let root = repo_root();
    let mut child = heartrule()
        .env("DATABASE_URL_FILE", &file)
        .env_remove("DATABASE_URL")
        .env("HEARTRULE__SERVER__PORT", port.to_string())
        .env(
            "HEARTRULE__SCRIPTS__PRELOAD_DIR",
            root.join("examples/scripts"),
        )
        .env(
            "HEARTRULE__ENGINE__PROMPTS_DIR",
            root.join("config/prompts"),
        )
        .env("HEARTRULE__TELEMETRY__LOG__FORMAT", "json")
        // Everything the server and its libraries log, connection set-up included.
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the heartrule binary starts");
    let pid = child.id().expect("a running child");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    answers_health(&base).await;

    let mut bodies = Vec::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    for path in ["/", "/health", "/ready", "/metrics", "/openapi.json"] {
        let response = get(path).await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        bodies.push((path.to_owned(), response.text().await.unwrap()));
    }
    let info: serde_json::Value = serde_json::from_str(&bodies[0].1).unwrap();
    assert_eq!(info["status"], "running", "{info}");

    // A whole conversation, so the store really ran on the file's URL.
    let scripts: serde_json::Value = get("/api/scripts").await.unwrap().json().await.unwrap();
    let script = scripts["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scriptName"] == "hello")
        .expect("the hello script is preloaded")["id"]
        .clone();
    let created: serde_json::Value = http
        .post(format!("{base}/api/sessions"))
        .json(&json!({"userId": "secret-file", "scriptId": script}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = created["sessionId"].as_str().expect("a session").to_owned();
    let turn = http
        .post(format!("{base}/api/sessions/{session}/messages"))
        .json(&json!({"content": "小明"}))
        .send()
        .await
        .unwrap();
    assert!(turn.status().is_success(), "{}", turn.status());
    bodies.push(("turn".into(), turn.text().await.unwrap()));
    assert_eq!(
        db.count("messages", &format!("session_id = '{session}'"))
            .await,
        4,
        "the turn was stored in the database the file names"
    );

    // Error bodies: a missing session, a malformed request, a missing route.
    for (what, response) in [
        (
            "unknown session",
            get("/api/sessions/00000000-0000-4000-8000-000000000000").await,
        ),
        (
            "malformed body",
            http.post(format!("{base}/api/sessions"))
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await,
        ),
        ("unknown route", get("/api/nowhere").await),
    ] {
        let response = response.unwrap();
        assert!(response.status().is_client_error(), "{what}");
        bodies.push((what.into(), response.text().await.unwrap()));
    }
    for (what, body) in &bodies {
        assert_no_password(&format!("the response to {what}"), body);
    }

    let logs = stop_and_read_log(&mut child, pid, &log_path).await;
    // The log is there to be searched: the start-up and the requests logged.
    assert!(logs.contains("server_started"), "{logs}");
    assert!(logs.contains("connected to PostgreSQL"), "{logs}");
    assert!(logs.lines().count() > 20, "{logs}");
    assert_no_password("the log", &logs);
}

#[actix_web::test]
async fn start_up_errors_name_the_variable_never_the_password() {
    // A URL from a file whose database does not exist: start-up fails.
    let absent = format!("heartrule_absent_{}", std::process::id());
    let url = with_password(&heartrule_testkit::db::database_url(
        &heartrule_testkit::db::server_url(),
        &absent,
    ));
    let (_dir, file) = SecretDir::with(&url);
    let failed = heartrule()
        .arg("migrate")
        .env("DATABASE_URL_FILE", &file)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "debug")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(stderr.contains(&absent), "{stderr}");
    assert_no_password("the start-up error", &stderr);
    assert_no_password(
        "the start-up output",
        &String::from_utf8_lossy(&failed.stdout),
    );

    // Both the variable and its file: refused before anything connects.
    let both = heartrule()
        .arg("check-config")
        .env("DATABASE_URL_FILE", &file)
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success(), "{stderr}");
    assert!(
        stderr.contains("both DATABASE_URL and DATABASE_URL_FILE are set"),
        "{stderr}"
    );
    assert_no_password("the refusal", &stderr);

    // A file that cannot be read: named with its variable.
    let unreadable = heartrule()
        .arg("check-config")
        .env("DATABASE_URL_FILE", "/nonexistent-heartrule/database-url")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert!(!unreadable.status.success(), "{stderr}");
    assert!(
        stderr.contains("DATABASE_URL_FILE: cannot read /nonexistent-heartrule/database-url"),
        "{stderr}"
    );
}

/// Recognisable secrets, one per kind, in no other file of the repository.
const DB_PASSWORD: &str = "Hr-Canary-Db-8d1e4b";
const REDIS_PASSWORD: &str = "Hr-Canary-Redis-27c9fa";
const LLM_KEY: &str = "sk-Hr-Canary-Llm-b3e670";
const FALLBACK_LLM_KEY: &str = "sk-Hr-Canary-Fallback-5a09d1";
/// HS256 secrets are at least 32 bytes.
const JWT_SECRET: &str = "Hr-Canary-Jwt-e41c7f-5d82b0a6c3f19e47";

/// `scheme://[user]@host…` → `scheme://[user]:<password>@host…`.
fn with_secret_password(url: &str, password: &str) -> String {
    let authority = url.find("://").expect("a URL with a scheme") + 3;
    match url[authority..].find('@') {
        Some(at) => format!(
            "{}:{password}{}",
            &url[..authority + at],
            &url[authority + at..]
        ),
        None => format!("{}:{password}@{}", &url[..authority], &url[authority..]),
    }
}

/// Every secret variable the server is given, with the canary it holds.
fn secret_variables(db_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", with_secret_password(db_url, DB_PASSWORD)),
        (
            "REDIS_URL",
            with_secret_password(&redis_url(), REDIS_PASSWORD),
        ),
        ("HEARTRULE__LLM__OPENAI__API_KEY", LLM_KEY.to_owned()),
        (
            "HEARTRULE__LLM__FALLBACK__OPENAI__API_KEY",
            FALLBACK_LLM_KEY.to_owned(),
        ),
        ("HEARTRULE__AUTH__HS256_SECRET", JWT_SECRET.to_owned()),
    ]
}

/// The canaries to look for: every secret, and each URL's password alone.
fn canaries() -> [&'static str; 5] {
    [
        DB_PASSWORD,
        REDIS_PASSWORD,
        LLM_KEY,
        FALLBACK_LLM_KEY,
        JWT_SECRET,
    ]
}

fn assert_no_canary(what: &str, text: &str) {
    for canary in canaries() {
        assert!(
            !text.contains(canary),
            "the secret {canary} appears in {what}:\n{text}"
        );
    }
}

/// A whole response, headers and body, as text.
async fn emitted(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let mut text = format!("HTTP {status}\n");
    for (name, value) in response.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&response.bytes().await.unwrap()));
    (status, text)
}

#[actix_web::test]
async fn no_secret_appears_in_logs_responses_or_the_document() {
    require_redis().await;
    let db = TestDb::new().await;
    let llm = counselor_server().await;
    let prefix = redis_prefix();
    let port = closed_port();
    let root = repo_root();
    let dir = std::env::temp_dir().join(format!(
        "heartrule-canary-e2e-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = SecretDir(dir.clone());
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let environment = secret_variables(&db.url)
        .into_iter()
        .chain([
            ("HEARTRULE__SERVER__PORT", port.to_string()),
            ("HEARTRULE__REDIS__KEY_PREFIX", prefix.clone()),
            ("LLM_PROVIDER", "openai".to_owned()),
            (
                "HEARTRULE__LLM__OPENAI__BASE_URL",
                llm.base_url().to_owned(),
            ),
            ("HEARTRULE__LLM__FALLBACK__PROVIDER", "openai".to_owned()),
            (
                "HEARTRULE__LLM__FALLBACK__OPENAI__BASE_URL",
                llm.base_url().to_owned(),
            ),
            (
                "HEARTRULE__LLM__FALLBACK__OPENAI__PROVIDER_NAME",
                "openai-fallback".to_owned(),
            ),
            (
                "HEARTRULE__SCRIPTS__PRELOAD_DIR",
                root.join("examples/scripts").display().to_string(),
            ),
            (
                "HEARTRULE__ENGINE__PROMPTS_DIR",
                root.join("config/prompts").display().to_string(),
            ),
            ("HEARTRULE__TELEMETRY__LOG__FORMAT", "json".to_owned()),
            ("HEARTRULE__AUTH__MODE", "jwt".to_owned()),
            // A burst that runs out, so the 429 path is searched too
            // (authenticated requests count against their subject).
            (
                "HEARTRULE__RATE_LIMITS__PER_SUBJECT__BURST",
                "40".to_owned(),
            ),
            (
                "HEARTRULE__RATE_LIMITS__PER_SUBJECT__RATE",
                "0.1".to_owned(),
            ),
            // Everything the server and its libraries log.
            ("RUST_LOG", "debug".to_owned()),
        ])
        .collect::<Vec<_>>();

    // The configuration summary, too.
    let summary = heartrule()
        .arg("check-config")
        .envs(environment.iter().map(|(k, v)| (*k, v)))
        .output()
        .await
        .unwrap();
    assert!(summary.status.success(), "{summary:?}");
    assert_no_canary(
        "check-config's output",
        &String::from_utf8_lossy(&summary.stdout),
    );
    assert_no_canary(
        "check-config's errors",
        &String::from_utf8_lossy(&summary.stderr),
    );

    // A development token, signed with the secret.
    let issued = heartrule()
        .args(["token", "--subject", "canary", "--role", "client"])
        .envs(environment.iter().map(|(k, v)| (*k, v)))
        .output()
        .await
        .unwrap();
    assert!(issued.status.success(), "{issued:?}");
    let token = String::from_utf8_lossy(&issued.stdout).trim().to_owned();
    assert_no_canary("the token command's output", &token);
    assert_no_canary(
        "the token command's errors",
        &String::from_utf8_lossy(&issued.stderr),
    );

    let mut child = heartrule()
        .envs(environment.iter().map(|(k, v)| (*k, v)))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the heartrule binary starts");
    let pid = child.id().expect("a running child");
    let base = format!("http://127.0.0.1:{port}");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    answers_health(&base).await;

    let mut responses: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, (status, text): (u16, String), expected: &[u16]| {
        assert!(expected.contains(&status), "{what}: {text}");
        responses.push((what.to_owned(), text));
    };
    for path in [
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/docs/",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        keep(path, emitted(response).await, &[200]);
    }

    // A conversation on the LLM behind the key.
    let scripts: serde_json::Value = http
        .get(format!("{base}/api/scripts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let script = scripts["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scriptName"] == "hello")
        .expect("the hello script is preloaded")["id"]
        .clone();
    let created = http
        .post(format!("{base}/api/sessions"))
        .json(&json!({"userId": "canary", "scriptId": script}))
        .send()
        .await
        .unwrap();
    let (status, text) = emitted(created).await;
    let body: serde_json::Value = serde_json::from_str(text.split_once("\n\n").unwrap().1).unwrap();
    let session = body["sessionId"].as_str().expect("a session").to_owned();
    keep("session creation", (status, text), &[200]);
    let turn = http
        .post(format!("{base}/api/sessions/{session}/messages"))
        .json(&json!({"content": "小明"}))
        .send()
        .await
        .unwrap();
    keep("a turn", emitted(turn).await, &[200]);
    let bearer = format!("Bearer {LLM_KEY}");
    assert!(
        llm.requests()
            .iter()
            .any(|r| r.header("authorization") == Some(bearer.as_str())),
        "the LLM was called with the key: the secret was in use"
    );
    for path in [
        format!("/api/sessions/{session}"),
        format!("/api/sessions/{session}/messages"),
        format!("/api/sessions/{session}/variables"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        keep(&path, emitted(response).await, &[200]);
    }

    // Errors: a forged token, bad JSON, no route, wrong method, unknown session.
    let forged = reqwest::Client::new()
        .get(format!("{base}/api/scripts"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    keep("a forged token", emitted(forged).await, &[401]);
    let bad_json = http
        .post(format!("{base}/api/sessions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    keep("bad JSON", emitted(bad_json).await, &[400]);
    let nowhere = http
        .get(format!("{base}/api/nowhere"))
        .send()
        .await
        .unwrap();
    keep("no route", emitted(nowhere).await, &[404]);
    let wrong_method = http
        .delete(format!("{base}/api/scripts"))
        .send()
        .await
        .unwrap();
    keep("wrong method", emitted(wrong_method).await, &[405]);
    let unknown = http
        .get(format!(
            "{base}/api/sessions/00000000-0000-4000-8000-000000000000"
        ))
        .send()
        .await
        .unwrap();
    keep("unknown session", emitted(unknown).await, &[404]);

    // Until the bucket runs out: the 429 is searched too.
    let mut limited = false;
    for _ in 0..60 {
        let response = http
            .get(format!("{base}/api/scripts"))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 429 {
            keep("rate limited", emitted(response).await, &[429]);
            limited = true;
            break;
        }
    }
    assert!(limited, "the burst of 40 ran out");

    for (what, text) in &responses {
        assert_no_canary(&format!("the response to {what}"), text);
    }

    let logs = stop_and_read_log(&mut child, pid, &log_path).await;
    // The log is there to be searched: start-up, the requests, the LLM
    // calls, and Redis failing on the password it was given (the test Redis
    // has none), so the cache and the rate limiter fell back.
    assert!(logs.contains("server_started"), "{logs}");
    assert!(logs.contains("connected to PostgreSQL"), "{logs}");
    assert!(logs.lines().count() > 50, "{logs}");
    assert!(logs.contains("Redis rate limiter failed"), "{logs}");
    assert_no_canary("the log", &logs);
    crate::support::clear_redis_prefix(&prefix);
}

/// Stops the server with SIGTERM, checks it exits cleanly, and returns all
/// it logged.
async fn stop_and_read_log(
    child: &mut tokio::process::Child,
    pid: u32,
    log_path: &std::path::Path,
) -> String {
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    String::from_utf8_lossy(&std::fs::read(log_path).unwrap()).into_owned()
}
