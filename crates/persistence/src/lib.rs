//! HeartRule's storage adapters behind the domain's ports
//! ([`ScriptRepository`], [`SessionRepository`], [`MessageHistory`]):
//!
//! - [`PgStore`]: PostgreSQL through diesel-async and a deadpool pool. A
//!   turn holds no connection while the engine runs: [`SessionRepository::claim_turn`]
//!   takes a lease on the session row and reads the turn's context in one
//!   pipelined round trip, and [`SessionRepository::commit_turn`] writes the
//!   whole turn in one statement fenced on that lease.
//! - [`MemoryStore`]: the same semantics in process memory, used when no
//!   database is configured (nothing survives a restart).
//!
//! The schema lives in the workspace's top-level `migrations/` and is
//! embedded; [`run_migrations`] applies it. `src/schema.rs` is generated
//! from a migrated database and checked in (a test compares the two):
//!
//! ```text
//! diesel migration run --migration-dir migrations --database-url "$URL"
//! diesel print-schema --database-url "$URL" > crates/persistence/src/schema.rs
//! ```
//!
//! Tests need PostgreSQL (`HEARTRULE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the commit-turn benchmark
//! runs with `cargo bench -p heartrule-persistence --bench commit_turn`.
//!
//! [`ScriptRepository`]: heartrule_domain::ScriptRepository
//! [`SessionRepository`]: heartrule_domain::SessionRepository
//! [`SessionRepository::claim_turn`]: heartrule_domain::SessionRepository::claim_turn
//! [`SessionRepository::commit_turn`]: heartrule_domain::SessionRepository::commit_turn
//! [`MessageHistory`]: heartrule_domain::MessageHistory

pub mod memory;
mod migrate;
mod observe;
pub mod pg;
pub mod schema;
mod turn_check;

pub use memory::{MemoryPorts, MemoryStore};
pub use migrate::{revert_all_migrations, run_migrations, MIGRATIONS};
pub use observe::{ERRORS_TOTAL, METRICS, POOL_ACQUIRE_DURATION, QUERY_DURATION};
pub use pg::{PgConfig, PgStore, PoolStats};

/// Failures of setting a store up (connecting, migrating). Failures of the
/// repository calls themselves are [`heartrule_domain::RepositoryError`]s.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("could not connect to the database: {0}")]
    Connect(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("migration task did not finish: {0}")]
    Task(String),
}
