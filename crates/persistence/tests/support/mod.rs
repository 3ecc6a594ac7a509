//! Support of the storage tests: the test-database harness (one database
//! per test, cloned from a migrated template; see `heartrule_testkit::db`)
//! and the fixtures these tests store (`heartrule_testkit::fixtures`).

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub use heartrule_testkit::fixtures;

pub use heartrule_testkit::db::*;
