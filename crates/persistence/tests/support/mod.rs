//! Support of the storage tests: the test-database harness (one database
//! per test, cloned from a migrated template; see `heartrule_testkit::db`)
//! and the fixtures these tests store.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fixtures;

pub use heartrule_testkit::db::*;
