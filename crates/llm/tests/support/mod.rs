//! Test helpers: an in-process OpenAI-compatible HTTP server, a metrics
//! recorder that logs every operation, and a tracing layer that captures
//! every span field and event.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod capture;
pub mod fake_server;
pub mod metrics_log;
