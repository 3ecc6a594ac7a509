//! The embedded schema migrations and the functions that apply them.

use crate::PersistenceError;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The workspace's `migrations/` directory, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Key of the session-level advisory lock that serialises migration runs, so
/// two instances starting together do not apply the same migration twice.
const MIGRATION_LOCK_KEY: i64 = 0x4845_4152_5452_554c; // "HEARTRUL"

type SyncPgConnection = AsyncConnectionWrapper<AsyncPgConnection>;

/// Applies the pending migrations and returns the versions applied (empty
/// when the schema was up to date).
///
/// Diesel's migration harness is synchronous; it runs on a blocking thread
/// through [`AsyncConnectionWrapper`], so this works on any tokio runtime
/// flavour (diesel-async's own harness panics on a current-thread runtime).
pub async fn run_migrations(database_url: &str) -> Result<Vec<String>, PersistenceError> {
    with_migration_connection(database_url, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| PersistenceError::Migration(e.to_string()))
    })
    .await
}

/// Reverts every applied migration (newest first) and returns the versions
/// reverted. Destroys all data: for tests and for tearing a database down.
pub async fn revert_all_migrations(database_url: &str) -> Result<Vec<String>, PersistenceError> {
    with_migration_connection(database_url, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| PersistenceError::Migration(e.to_string()))
    })
    .await
}

async fn with_migration_connection<F>(
    database_url: &str,
    work: F,
) -> Result<Vec<String>, PersistenceError>
where
    F: FnOnce(&mut SyncPgConnection) -> Result<Vec<String>, PersistenceError> + Send + 'static,
{
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = SyncPgConnection::establish(&url)
            .map_err(|e| PersistenceError::Connect(e.to_string()))?;
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .map_err(|e| {
                PersistenceError::Migration(format!("could not take the migration lock: {e}"))
            })?;
        let outcome = work(&mut conn);
        // The lock is session-scoped: closing the connection would release it
        // too, so a failed unlock only needs reporting when the work succeeded.
        let unlocked = conn
            .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .map_err(|e| {
                PersistenceError::Migration(format!("could not release the migration lock: {e}"))
            });
        let versions = outcome?;
        unlocked?;
        Ok(versions)
    })
    .await
    .map_err(|e| PersistenceError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::migration::MigrationSource;
    use diesel::pg::Pg;

    #[test]
    fn migrations_are_embedded_in_order_without_duplicates() {
        let migrations: Vec<_> = MigrationSource::<Pg>::migrations(&MIGRATIONS).unwrap();
        assert!(migrations.len() >= 6, "expected the six table migrations");
        let mut names: Vec<String> = migrations.iter().map(|m| m.name().to_string()).collect();
        let sorted = {
            let mut s = names.clone();
            s.sort();
            s
        };
        assert_eq!(names, sorted, "migrations are embedded in version order");
        names.dedup();
        assert_eq!(names.len(), migrations.len());
    }
}
