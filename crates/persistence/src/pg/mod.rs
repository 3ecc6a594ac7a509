//! The PostgreSQL adapter: [`PgStore`].

mod error;
mod history;
mod models;
mod retention;
mod scripts;
mod sessions;
mod turns;

use crate::observe::{observed, POOL_ACQUIRE_DURATION};
use crate::PersistenceError;
use diesel::connection::CacheSize;
use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use futures::future::BoxFuture;
use heartrule_domain::RepositoryError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use error::map_diesel;

/// Connection settings of a [`PgStore`].
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Size of the connection pool.
    pub max_connections: usize,
    /// How long a repository call waits for a pooled connection before
    /// failing with [`RepositoryError::Timeout`].
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`, set on every new connection
    /// (zero disables it).
    pub statement_timeout: Duration,
    /// PostgreSQL `idle_in_transaction_session_timeout`, set on every new
    /// connection (zero disables it): no code path keeps a transaction open
    /// across slow work, so one that idles this long is a bug and is ended.
    pub idle_in_transaction_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// PostgreSQL is reached through a pooler in transaction pooling mode
    /// (PgBouncer `pool_mode = transaction`), where consecutive
    /// transactions of one client connection may run on different server
    /// connections. Then no prepared statement is cached across queries
    /// (it would be missing on the next server connection) and the timeouts
    /// are not `SET` per connection (the setting would stick to one server
    /// connection and reach other clients); they must be configured on the
    /// role or database instead, and [`PgStore::connect`] warns when the
    /// server's values differ from the ones asked for.
    pub transaction_pooling: bool,
}

impl PgConfig {
    /// Settings for `url` with defaults: 10 connections, 5 s to acquire one,
    /// 30 s per statement, 10 s idle in a transaction, 5 s to connect.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            transaction_pooling: false,
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("transaction_pooling", &self.transaction_pooling)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return url.to_owned();
    };
    match url[scheme_end..at].find(':').map(|i| scheme_end + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// A snapshot of the connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub max_size: usize,
    /// Connections open (idle + in use).
    pub size: usize,
    pub idle: usize,
    pub in_use: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// Connection requests so far, including failed ones.
    pub acquire_count: u64,
    /// Total and longest time callers waited for a connection.
    pub acquire_wait_total: Duration,
    pub acquire_wait_max: Duration,
}

#[derive(Default)]
struct AcquireStats {
    count: AtomicU64,
    wait_total_nanos: AtomicU64,
    wait_max_nanos: AtomicU64,
}

impl AcquireStats {
    fn record(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.wait_total_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.wait_max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

type PgPool = Pool<AsyncPgConnection>;
pub(crate) type PooledConnection = Object<AsyncPgConnection>;

struct Inner {
    pool: PgPool,
    acquire: AcquireStats,
}

/// PostgreSQL behind the domain's storage ports
/// ([`ScriptRepository`](heartrule_domain::ScriptRepository),
/// [`SessionRepository`](heartrule_domain::SessionRepository),
/// [`MessageHistory`](heartrule_domain::MessageHistory)). Cheap to clone: clones
/// share one pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool_stats())
            .finish()
    }
}

impl PgStore {
    /// Builds the pool and opens one connection, so a wrong URL or an
    /// unreachable server fails here rather than on the first request.
    /// Does not run migrations (see [`crate::run_migrations`]).
    pub async fn connect(config: PgConfig) -> Result<Self, PersistenceError> {
        if config.max_connections == 0 {
            return Err(PersistenceError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        let setup = ConnectionSetup::for_config(&config);
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        // A pooled connection is checked for a leftover transaction and a
        // closed socket only; a `SELECT 1` per checkout would double the round
        // trips of short calls.
        manager_config.recycling_method = RecyclingMethod::Fast;
        manager_config.custom_setup = Box::new(move |url: &str| -> BoxFuture<'_, _> {
            Box::pin(establish(url, setup.clone()))
        });
        let manager =
            AsyncDieselConnectionManager::new_with_config(config.url.clone(), manager_config);
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| PersistenceError::Config(e.to_string()))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                acquire: AcquireStats::default(),
            }),
        };
        let mut probe = store.acquire().await.map_err(|e| {
            PersistenceError::Connect(format!("{}: {e}", redact_password(&config.url)))
        })?;
        if config.transaction_pooling {
            warn_about_role_timeouts(&mut probe, &config).await;
        }
        // Back to the pool: the first request reuses it.
        drop(probe);
        tracing::info!(
            db.system = "postgresql",
            max_connections = config.max_connections,
            transaction_pooling = config.transaction_pooling,
            "connected to PostgreSQL"
        );
        Ok(store)
    }

    /// The pool's current state and the acquisition counters.
    #[must_use]
    pub fn pool_stats(&self) -> PoolStats {
        let status = self.inner.pool.status();
        let stats = &self.inner.acquire;
        PoolStats {
            max_size: status.max_size,
            size: status.size,
            idle: status.available,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
            acquire_count: stats.count.load(Ordering::Relaxed),
            acquire_wait_total: Duration::from_nanos(
                stats.wait_total_nanos.load(Ordering::Relaxed),
            ),
            acquire_wait_max: Duration::from_nanos(stats.wait_max_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Runs `SELECT 1` on a pooled connection: for readiness checks.
    pub async fn ping(&self) -> Result<(), RepositoryError> {
        observed!("ping", "none", async {
            let mut conn = self.acquire().await?;
            conn.batch_execute("SELECT 1").await.map_err(map_diesel)
        })
        .await
    }

    /// Active sessions waiting for the user's next message (the
    /// `heartrule_sessions_waiting` gauge).
    pub async fn count_waiting_sessions(&self) -> Result<i64, RepositoryError> {
        use crate::schema::sessions;
        use diesel::{ExpressionMethods, QueryDsl};
        use diesel_async::RunQueryDsl;
        observed!("count", "sessions", async {
            let mut conn = self.acquire().await?;
            sessions::table
                .filter(sessions::status.eq("active"))
                .filter(sessions::execution_status.eq("waiting_input"))
                .count()
                .get_result::<i64>(&mut conn)
                .await
                .map_err(map_diesel)
        })
        .await
    }

    /// Checks out a connection, timing the wait.
    pub(crate) async fn acquire(&self) -> Result<PooledConnection, RepositoryError> {
        let started = Instant::now();
        let result = self.inner.pool.get().await;
        let waited = started.elapsed();
        metrics::histogram!(POOL_ACQUIRE_DURATION).record(waited.as_secs_f64());
        self.inner.acquire.record(waited);
        result.map_err(error::map_pool)
    }
}

/// What every new pooled connection gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnectionSetup {
    /// `SET` statements for the session, if any.
    session_settings: Option<String>,
    /// Keep diesel-async's prepared-statement cache.
    statement_cache: bool,
}

impl ConnectionSetup {
    fn for_config(config: &PgConfig) -> Self {
        if config.transaction_pooling {
            Self {
                session_settings: None,
                statement_cache: false,
            }
        } else {
            Self {
                session_settings: Some(format!(
                    "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
                    config.statement_timeout.as_millis(),
                    config.idle_in_transaction_timeout.as_millis()
                )),
                statement_cache: true,
            }
        }
    }
}

/// Opens a connection and applies the pool's connection setup to it.
async fn establish(
    url: &str,
    setup: ConnectionSetup,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    if !setup.statement_cache {
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    }
    if let Some(settings) = &setup.session_settings {
        conn.batch_execute(settings)
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
    }
    Ok(conn)
}

/// The timeout settings as the server reports them, in milliseconds.
#[derive(diesel::QueryableByName)]
struct ServerTimeouts {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    statement_timeout_ms: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    idle_in_transaction_timeout_ms: i64,
}

/// Behind a transaction pooler the timeouts come from the role or database
/// settings; a server that does not enforce the configured ones gets a
/// warning naming the statement that fixes it, rather than silently running
/// statements without a limit.
async fn warn_about_role_timeouts(conn: &mut PooledConnection, config: &PgConfig) {
    use diesel_async::RunQueryDsl;
    let query = diesel::sql_query(
        "SELECT \
           (SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout') \
             AS statement_timeout_ms, \
           (SELECT setting::bigint FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout') \
             AS idle_in_transaction_timeout_ms",
    );
    match query.get_result::<ServerTimeouts>(&mut **conn).await {
        Ok(server) => {
            let wanted = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            for (name, actual, expected) in [
                (
                    "statement_timeout",
                    server.statement_timeout_ms,
                    wanted(config.statement_timeout),
                ),
                (
                    "idle_in_transaction_session_timeout",
                    server.idle_in_transaction_timeout_ms,
                    wanted(config.idle_in_transaction_timeout),
                ),
            ] {
                if actual != expected {
                    tracing::warn!(
                        setting = name,
                        server_ms = actual,
                        configured_ms = expected,
                        "transaction pooling: the server's {name} differs from the configured \
                         one; set it on the role: ALTER ROLE <user> SET {name} = {expected}"
                    );
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the server's timeout settings"),
    }
}

// ------------------------------------------------------------ transactions

pub(crate) async fn begin(conn: &mut PooledConnection) -> Result<(), RepositoryError> {
    AnsiTransactionManager::begin_transaction(&mut **conn)
        .await
        .map_err(map_diesel)
}

/// Commits, or rolls back when `outcome` is an error. A connection whose
/// transaction cannot be ended cleanly is detached from the pool.
pub(crate) async fn finish<T>(
    mut conn: PooledConnection,
    outcome: Result<T, RepositoryError>,
) -> Result<T, RepositoryError> {
    match outcome {
        Ok(value) => match AnsiTransactionManager::commit_transaction(&mut *conn).await {
            Ok(()) => Ok(value),
            Err(e) => {
                let error = map_diesel(e);
                abort(conn).await;
                Err(error)
            }
        },
        Err(error) => {
            if abort(conn).await {
                Err(error)
            } else {
                Err(lost_connection(error))
            }
        }
    }
}

/// Rolls the open transaction back and returns the connection to the pool;
/// when that fails the connection is detached and closed (PostgreSQL then
/// aborts the transaction), so no pooled connection is ever left inside a
/// transaction. Returns whether the rollback succeeded.
pub(crate) async fn abort(mut conn: PooledConnection) -> bool {
    match AnsiTransactionManager::rollback_transaction(&mut *conn).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "rollback failed; closing the connection");
            drop(Object::take(conn));
            false
        }
    }
}

/// An error seen on a connection that then could not even roll back: the
/// connection is gone, whatever the first error looked like.
pub(crate) fn lost_connection(error: RepositoryError) -> RepositoryError {
    match error {
        RepositoryError::Unavailable(_) | RepositoryError::Timeout(_) => error,
        other => {
            RepositoryError::Unavailable(format!("the database connection was lost ({other})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let config = PgConfig::new("postgres://app:s3cret@db:5432/heartrule");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db:5432/heartrule"),
            "{shown}"
        );
        assert_eq!(
            redact_password("postgres://postgres@127.0.0.1/db"),
            "postgres://postgres@127.0.0.1/db"
        );
        assert_eq!(redact_password("not a url"), "not a url");
    }

    #[test]
    fn transaction_pooling_drops_the_statement_cache_and_the_session_settings() {
        let mut config = PgConfig::new("postgres://app@db/heartrule");
        config.statement_timeout = Duration::from_secs(7);
        config.idle_in_transaction_timeout = Duration::from_millis(2500);
        let direct = ConnectionSetup::for_config(&config);
        assert!(direct.statement_cache);
        assert_eq!(
            direct.session_settings.as_deref(),
            Some("SET statement_timeout = 7000; SET idle_in_transaction_session_timeout = 2500")
        );
        config.transaction_pooling = true;
        assert_eq!(
            ConnectionSetup::for_config(&config),
            ConnectionSetup {
                session_settings: None,
                statement_cache: false,
            }
        );
    }

    #[test]
    fn acquire_stats_track_count_total_and_max() {
        let stats = AcquireStats::default();
        stats.record(Duration::from_millis(3));
        stats.record(Duration::from_millis(7));
        assert_eq!(stats.count.load(Ordering::Relaxed), 2);
        assert_eq!(stats.wait_total_nanos.load(Ordering::Relaxed), 10_000_000);
        assert_eq!(stats.wait_max_nanos.load(Ordering::Relaxed), 7_000_000);
    }
}
