//! Secrets from files, end to end: the real binary reads `DATABASE_URL_FILE`
//! and the password in it never shows in a log line, an error body or `/`.

use crate::process::{answers_health, heartrule};
use crate::support::{closed_port, repo_root, TestDb};
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
    let logs = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
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
