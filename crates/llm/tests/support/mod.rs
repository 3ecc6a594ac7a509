//! Test helpers: the fake OpenAI-compatible HTTP server (from
//! `heartrule-testkit`), a metrics recorder that logs every operation, and a
//! tracing layer that captures every span field and event.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod capture;
pub mod metrics_log;

pub use heartrule_testkit::fake_openai as fake_server;
