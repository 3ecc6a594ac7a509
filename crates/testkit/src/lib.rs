//! HeartRule's test support, built once and shared by every crate's tests,
//! benches and the `heartrule-load` tool (cargo features pick the parts):
//!
//! - [`db`] (`db`): a database of its own per test, cloned from a migrated
//!   template on a real PostgreSQL;
//! - [`redis`] (`redis`): a Redis key prefix of its own per test;
//! - [`fake_openai`] (`fake-openai`): a fake OpenAI-compatible HTTP server,
//!   scripted per request or answering everything after a fixed latency;
//! - `fixtures` (`fixtures`): scripts, sessions, turns and claims as the
//!   storage ports take them;
//! - `fake_llm` (`fake-llm`): a scripted in-process LLM behind the
//!   domain's port;
//! - [`otlp`] (`otlp`): an in-process OTLP trace receiver;
//! - [`server`] (`server`): the real server started on a free port;
//! - `webhook` (`webhook`): an in-process webhook receiver.
//!
//! Services that are down fail loudly: nothing here lets a test skip.
//!
//! Only integration tests (`tests/`), benches and tools may use this crate:
//! it depends on the crates it tests, so a crate's own unit tests would see
//! two copies of that crate's types.

// Test support: a broken fixture should fail the test on the spot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "fake-llm")]
pub mod fake_llm;
#[cfg(feature = "fake-openai")]
pub mod fake_openai;
#[cfg(feature = "fixtures")]
pub mod fixtures;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::path::PathBuf;

/// The repository root (found from this crate's own folder, so it holds
/// whichever crate's tests run).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The repository's `config/` folder (`default.yaml`, prompts).
pub fn config_dir() -> PathBuf {
    repo_root().join("config")
}

/// A port on 127.0.0.1 on which nothing listens: it was just bound and
/// released, so connecting to it is refused.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("a bound address").port();
    drop(listener);
    port
}

/// A session script of a greeting and `questions` questions, each answered
/// by one turn: load runs and multi-turn tests need many turns on one
/// session before it completes.
pub fn question_script(session_id: &str, questions: usize) -> String {
    let mut yaml = format!(
        "session:\n  session_id: {session_id}\n  phases:\n    - phase_id: main\n      topics:\n        - topic_id: questions\n          actions:\n            - action_id: welcome\n              action_type: ai_say\n              config:\n                content: \"Welcome\"\n                require_acknowledgment: false\n"
    );
    for index in 0..questions {
        yaml.push_str(&format!(
            "            - action_id: question_{index}\n              action_type: ai_ask\n              config:\n                content: \"Ask question number {index}\"\n                target_variable: answer_{index}\n"
        ));
    }
    yaml
}
