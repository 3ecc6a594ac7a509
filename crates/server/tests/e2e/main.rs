//! End-to-end tests of the HeartRule server: the whole app over HTTP, on
//! real PostgreSQL and Redis, with an in-process fake OpenAI server.
//! One test binary (one link) with a module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod auth;
mod conversation;
mod degraded;
mod edge;
mod errors;
mod leases;
mod llm_degraded;
mod llm_faults;
mod maintenance;
mod openapi;
mod privacy;
mod process;
mod project_tests;
mod quotas;
mod repair;
mod replay;
mod safety;
mod secrets;
mod streaming;
mod versions;
