//! The real `heartrule` binary: graceful shutdown on SIGTERM and the
//! `migrate` subcommand.

use crate::support::counselor::counselor;
use crate::support::{
    closed_port, config_dir, eventually, redis_prefix, redis_url, require_redis, rows, FakeServer,
    Response, TestDb,
};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The binary with the test configuration folder.
pub(crate) fn heartrule() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heartrule"));
    command
        .env("HEARTRULE_CONFIG_DIR", config_dir())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The binary serving on `port` with this test's database, Redis prefix,
/// the `openai` provider at `llm_base_url`, and the repository's scripts and
/// prompts.
pub(crate) fn serving(db_url: &str, llm_base_url: &str, redis_prefix: &str, port: u16) -> Command {
    let root = crate::support::repo_root();
    let mut command = heartrule();
    command
        .env("HEARTRULE__SERVER__PORT", port.to_string())
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis_url())
        .env("HEARTRULE__REDIS__KEY_PREFIX", redis_prefix)
        .env("LLM_PROVIDER", "openai")
        .env("HEARTRULE__LLM__OPENAI__BASE_URL", llm_base_url)
        .env("HEARTRULE__LLM__OPENAI__API_KEY", "test")
        .env(
            "HEARTRULE__SCRIPTS__PRELOAD_DIR",
            root.join("examples/scripts"),
        )
        .env(
            "HEARTRULE__ENGINE__PROMPTS_DIR",
            root.join("config/prompts"),
        )
        .stdout(Stdio::null());
    command
}

/// Waits until the server at `base` answers `/health`.
pub(crate) async fn answers_health(base: &str) {
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "the server answers /health",
        || {
            let request = http.get(format!("{base}/health")).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        },
    )
    .await;
}

#[actix_web::test]
async fn sigterm_during_a_turn_lets_it_finish_then_exits_cleanly() {
    require_redis().await;
    let db = TestDb::new().await;
    // The creation turn's two calls answer at once; the message turn's call takes 1.5 s.
    let llm = FakeServer::start(|index, request| {
        let reply = counselor(request);
        if index >= 2 {
            reply.delayed(Duration::from_millis(1500))
        } else {
            reply
        }
    })
    .await;
    let port = closed_port();
    let prefix = redis_prefix();
    let mut child = serving(&db.url, llm.base_url(), &prefix, port)
        .env("HEARTRULE__SERVER__SHUTDOWN_GRACE_PERIOD", "10s")
        .env("HEARTRULE__LLM__OPENAI__TIMEOUT", "5s")
        .spawn()
        .expect("the heartrule binary starts");
    let pid = child.id().expect("a running child");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    answers_health(&base).await;

    let list = Response::read(
        http.get(format!("{base}/api/scripts"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .ok();
    let script = list["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scriptName"] == "hello")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = Response::read(
        http.post(format!("{base}/api/sessions"))
            .json(&json!({"userId": "sigterm", "scriptId": script}))
            .send()
            .await
            .unwrap(),
    )
    .await
    .ok();
    let session = created["sessionId"].as_str().unwrap().to_owned();

    let in_flight = tokio::spawn(
        http.post(format!("{base}/api/sessions/{session}/messages"))
            .json(&json!({"content": "小明"}))
            .send(),
    );
    eventually(
        Duration::from_secs(5),
        "the turn reaches the LLM",
        || async { llm.request_count() >= 3 },
    )
    .await;
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let response = Response::read(
        in_flight
            .await
            .unwrap()
            .expect("the in-flight request is answered"),
    )
    .await;
    let turn = response.ok();
    assert_eq!(turn["executionStatus"], "completed", "{turn}");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server exits after draining")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        db.count(
            "messages",
            &format!("session_id = '{session}' AND role = 'user' AND content = '小明'")
        )
        .await,
        1
    );
    let stored = rows(
        &db,
        &format!("SELECT status FROM sessions WHERE id = '{session}'"),
    )
    .await;
    assert_eq!(stored[0]["status"], "completed");
    assert!(
        !crate::support::redis_keys(&prefix).is_empty(),
        "the binary used its Redis prefix"
    );
    crate::support::clear_redis_prefix(&prefix);
}

#[actix_web::test]
async fn migrate_applies_every_migration_to_an_empty_database() {
    let db = TestDb::empty().await;
    let first = heartrule()
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let migrations = std::fs::read_dir(crate::support::repo_root().join("migrations"))
        .unwrap()
        .count();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("applied ")).count(),
        migrations,
        "{stdout}"
    );
    let tables = rows(
        &db,
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name IN \
         ('scripts', 'sessions', 'messages', 'variables', 'idempotency_keys', 'failed_turns')",
    )
    .await;
    assert_eq!(tables.len(), 6, "{tables:?}");

    let again = heartrule()
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "database is up to date"
    );
}
