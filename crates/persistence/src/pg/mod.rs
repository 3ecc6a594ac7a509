//! The PostgreSQL adapter: [`PgStore`].

mod audit;
mod error;
mod exchanges;
mod history;
mod models;
mod privacy;
mod retention;
mod safety;
mod scripts;
mod sessions;
mod turns;
mod usage;

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
    /// (PgBouncer `pool_mode = transaction`), which may hand each exchange
    /// outside a transaction to a different server connection, while the
    /// driver prepares a statement in one exchange and runs it in the next.
    /// Then every checkout runs inside one explicit transaction
    /// (`BEGIN; SET LOCAL` the two timeouts, … `COMMIT`), which keeps it on
    /// one server connection; no prepared statement outlives its
    /// transaction (no statement cache, connection set-up inside a
    /// transaction too); and nothing is `SET` for the session, since that
    /// would stick to one server connection and reach other clients.
    /// Costs a `BEGIN` and a `COMMIT` round trip per checkout.
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
    /// The statement batch opening every checkout's transaction, in
    /// transaction pooling mode only.
    checkout_begin: Option<String>,
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
        let checkout_begin = setup.checkout_begin.clone();
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
                checkout_begin,
            }),
        };
        let connect_error = |e: RepositoryError| {
            PersistenceError::Connect(format!("{}: {e}", redact_password(&config.url)))
        };
        let probe = store.acquire().await.map_err(connect_error)?;
        // Back to the pool: the first request reuses it. In transaction
        // pooling mode this also proves that the checkout's `BEGIN` batch
        // (with its timeouts) is accepted.
        probe.finish(Ok(())).await.map_err(connect_error)?;
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
            let outcome = conn.batch_execute("SELECT 1").await.map_err(map_diesel);
            conn.finish(outcome).await
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
            let outcome = sessions::table
                .filter(sessions::status.eq("active"))
                .filter(sessions::execution_status.eq("waiting_input"))
                .count()
                .get_result::<i64>(&mut *conn)
                .await
                .map_err(map_diesel);
            conn.finish(outcome).await
        })
        .await
    }

    /// Checks out a connection for one operation, timing the wait; in
    /// transaction pooling mode the checkout's transaction is open when this
    /// returns. End it with [`Checkout::finish`].
    pub(crate) async fn acquire(&self) -> Result<Checkout, RepositoryError> {
        let started = Instant::now();
        let result = self.inner.pool.get().await;
        let waited = started.elapsed();
        metrics::histogram!(POOL_ACQUIRE_DURATION).record(waited.as_secs_f64());
        self.inner.acquire.record(waited);
        let mut conn = result.map_err(error::map_pool)?;
        let Some(begin_sql) = &self.inner.checkout_begin else {
            return Ok(Checkout {
                conn: Some(conn),
                transaction: CheckoutTransaction::None,
            });
        };
        // Through the transaction manager, so that diesel counts the
        // transaction: a checkout lost with it open is never reused.
        match AnsiTransactionManager::begin_transaction_sql(&mut *conn, begin_sql).await {
            Ok(()) => Ok(Checkout {
                conn: Some(conn),
                transaction: CheckoutTransaction::Pinned,
            }),
            Err(e) => {
                // Whatever failed, the connection's state is unknown.
                drop(Object::take(conn));
                Err(map_diesel(e))
            }
        }
    }
}

/// The transaction a [`Checkout`] has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckoutTransaction {
    None,
    /// Opened by [`PgStore::acquire`] in transaction pooling mode.
    Pinned,
    /// Opened by [`Checkout::begin`].
    Begun,
}

/// A pooled connection checked out for one repository operation. Derefs to
/// the connection; every operation ends it with [`Checkout::finish`], which
/// commits or rolls back whatever transaction it has open (in transaction
/// pooling mode there always is one). Dropped inside a transaction (a
/// cancelled request, a forgotten `finish`), it closes the connection instead
/// of pooling it, so the transaction is rolled back and no pooled
/// connection, nor the pooler's server connection behind it, stays in it.
pub(crate) struct Checkout {
    /// `None` only while [`Checkout::finish`] or `drop` take it.
    conn: Option<PooledConnection>,
    transaction: CheckoutTransaction,
}

impl std::ops::Deref for Checkout {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a checkout is used after finish"),
        }
    }
}

impl std::ops::DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a checkout is used after finish"),
        }
    }
}

impl Checkout {
    /// Makes the rest of the operation one transaction: a `BEGIN`, or
    /// nothing when the checkout already runs in one (transaction pooling).
    pub(crate) async fn begin(&mut self) -> Result<(), RepositoryError> {
        if self.transaction != CheckoutTransaction::None {
            return Ok(());
        }
        AnsiTransactionManager::begin_transaction(&mut **self)
            .await
            .map_err(map_diesel)?;
        self.transaction = CheckoutTransaction::Begun;
        Ok(())
    }

    /// Ends the operation with its `outcome`: commits the open transaction,
    /// or rolls it back when `outcome` is an error, and returns the
    /// connection to the pool. Without a transaction it costs no round trip.
    /// A connection whose transaction cannot be ended cleanly is detached
    /// from the pool.
    pub(crate) async fn finish<T>(
        mut self,
        outcome: Result<T, RepositoryError>,
    ) -> Result<T, RepositoryError> {
        if self.transaction == CheckoutTransaction::None {
            return outcome;
        }
        self.transaction = CheckoutTransaction::None;
        let Some(conn) = self.conn.take() else {
            return outcome;
        };
        end_transaction(conn, outcome).await
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if self.transaction == CheckoutTransaction::None {
            return;
        }
        if let Some(conn) = self.conn.take() {
            tracing::info!(
                "a database operation ended inside its transaction (cancelled); \
                 closing its connection, which rolls the transaction back"
            );
            drop(Object::take(conn));
        }
    }
}

/// How the pool's connections are set up and checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnectionSetup {
    /// `SET` statements for the session, if any.
    session_settings: Option<String>,
    /// Keep diesel-async's prepared-statement cache.
    statement_cache: bool,
    /// The batch that opens every checkout's transaction (transaction
    /// pooling): `BEGIN` and the timeouts for that transaction only.
    checkout_begin: Option<String>,
}

impl ConnectionSetup {
    fn for_config(config: &PgConfig) -> Self {
        let statement_timeout = config.statement_timeout.as_millis();
        let idle_timeout = config.idle_in_transaction_timeout.as_millis();
        if config.transaction_pooling {
            Self {
                session_settings: None,
                statement_cache: false,
                checkout_begin: Some(format!(
                    "BEGIN; SET LOCAL statement_timeout = {statement_timeout}; \
                     SET LOCAL idle_in_transaction_session_timeout = {idle_timeout}"
                )),
            }
        } else {
            Self {
                session_settings: Some(format!(
                    "SET statement_timeout = {statement_timeout}; \
                     SET idle_in_transaction_session_timeout = {idle_timeout}"
                )),
                statement_cache: true,
                checkout_begin: None,
            }
        }
    }
}

/// Opens a connection and applies the pool's connection setup to it.
async fn establish(
    url: &str,
    setup: ConnectionSetup,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    let mut conn = if setup.checkout_begin.is_some() {
        establish_in_transaction(url).await?
    } else {
        AsyncPgConnection::establish(url).await?
    };
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

/// Opens a connection for transaction pooling: diesel-async's own set-up
/// (`SET TIME ZONE`, `SET CLIENT_ENCODING`, each prepared in one exchange and
/// run in the next) runs inside a transaction, so a pooler keeps both
/// exchanges on one server connection, and the statement cache is emptied
/// (its statements closed) before that transaction commits, so no prepared
/// statement stays behind on a server connection that another client gets
/// next. PgBouncer tracks both parameters per client and sets them on
/// whichever server connection it hands out.
async fn establish_in_transaction(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    use futures::future::{select, Either};
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
    // The connection must be driven while BEGIN is in flight; diesel-async
    // takes it over afterwards.
    let begun = {
        let begin = client.batch_execute("BEGIN");
        futures::pin_mut!(begin);
        match select(begin, &mut connection).await {
            Either::Left((result, _)) => result.map_err(|e| e.to_string()),
            Either::Right((result, _)) => Err(match result {
                Ok(()) => "the server closed the connection".to_owned(),
                Err(e) => e.to_string(),
            }),
        }
    };
    begun
        .map_err(|e| ConnectionError::BadConnection(format!("BEGIN at connection set-up: {e}")))?;
    let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection).await?;
    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    conn.batch_execute("COMMIT")
        .await
        .map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

// ------------------------------------------------------------ transactions

/// Commits, or rolls back when `outcome` is an error. A connection whose
/// transaction cannot be ended cleanly is detached from the pool.
async fn end_transaction<T>(
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
async fn abort(mut conn: PooledConnection) -> bool {
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
fn lost_connection(error: RepositoryError) -> RepositoryError {
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
    fn transaction_pooling_moves_the_timeouts_into_each_checkouts_transaction() {
        let mut config = PgConfig::new("postgres://app@db/heartrule");
        config.statement_timeout = Duration::from_secs(7);
        config.idle_in_transaction_timeout = Duration::from_millis(2500);
        assert_eq!(
            ConnectionSetup::for_config(&config),
            ConnectionSetup {
                session_settings: Some(
                    "SET statement_timeout = 7000; \
                     SET idle_in_transaction_session_timeout = 2500"
                        .into()
                ),
                statement_cache: true,
                checkout_begin: None,
            }
        );
        config.transaction_pooling = true;
        assert_eq!(
            ConnectionSetup::for_config(&config),
            ConnectionSetup {
                session_settings: None,
                statement_cache: false,
                checkout_begin: Some(
                    "BEGIN; SET LOCAL statement_timeout = 7000; \
                     SET LOCAL idle_in_transaction_session_timeout = 2500"
                        .into()
                ),
            }
        );
    }

    /// What a connection reports about its transaction, timeouts and
    /// prepared statements.
    #[derive(diesel::QueryableByName, Debug)]
    struct Probe {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        xid: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        statement_timeout_ms: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        idle_timeout_ms: i64,
        /// Prepared statements on the server connection, besides this one.
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        prepared: i64,
    }

    async fn probe(conn: &mut AsyncPgConnection) -> Probe {
        use diesel_async::RunQueryDsl;
        // txid_current() is the same for two statements only inside one
        // transaction.
        diesel::sql_query(
            "SELECT txid_current() AS xid, \
               (SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout') \
                 AS statement_timeout_ms, \
               (SELECT setting::bigint FROM pg_settings \
                 WHERE name = 'idle_in_transaction_session_timeout') AS idle_timeout_ms, \
               (SELECT count(*) FROM pg_prepared_statements \
                 WHERE statement NOT LIKE '%txid_current%') AS prepared",
        )
        .get_result(conn)
        .await
        .unwrap()
    }

    async fn store_on(db: &heartrule_testkit::db::TestDb, transaction_pooling: bool) -> PgStore {
        let mut config = PgConfig::new(db.url.clone());
        config.max_connections = 2;
        config.statement_timeout = Duration::from_millis(4321);
        config.idle_in_transaction_timeout = Duration::from_millis(1234);
        config.transaction_pooling = transaction_pooling;
        PgStore::connect(config).await.unwrap()
    }

    async fn table_exists(store: &PgStore, name: &str) -> bool {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Exists {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            exists: bool,
        }
        let mut conn = store.acquire().await.unwrap();
        let found = diesel::sql_query(format!(
            "SELECT to_regclass('{name}') IS NOT NULL AS exists"
        ))
        .get_result::<Exists>(&mut *conn)
        .await
        .map_err(map_diesel);
        conn.finish(found).await.unwrap().exists
    }

    #[tokio::test]
    async fn transaction_pooling_runs_each_checkout_in_one_transaction_and_leaves_nothing_behind() {
        let db = heartrule_testkit::db::TestDb::new().await;
        let store = store_on(&db, true).await;
        let mut conn = store.acquire().await.unwrap();
        let first = probe(&mut conn).await;
        let second = probe(&mut conn).await;
        assert_eq!(first.xid, second.xid, "one transaction per checkout");
        assert_eq!(first.statement_timeout_ms, 4321);
        assert_eq!(first.idle_timeout_ms, 1234);
        assert_eq!(first.prepared, 0, "the set-up left prepared statements");
        assert_eq!(second.prepared, 0, "the first probe left its statement");
        conn.finish(Ok(())).await.unwrap();

        // The same server connection between checkouts, as the next client
        // of a transaction pooler would get it: no transaction, no session
        // setting, no prepared statement.
        assert_eq!(store.pool_stats().size, 1);
        let mut raw = store.inner.pool.get().await.unwrap();
        let after = probe(&mut raw).await;
        let again = probe(&mut raw).await;
        assert_ne!(after.xid, again.xid, "a transaction outlived its checkout");
        assert_ne!(after.statement_timeout_ms, 4321);
        assert_ne!(after.idle_timeout_ms, 1234);
        assert_eq!(after.prepared, 0);
    }

    #[tokio::test]
    async fn without_transaction_pooling_a_checkout_opens_no_transaction() {
        let db = heartrule_testkit::db::TestDb::new().await;
        let store = store_on(&db, false).await;
        let mut conn = store.acquire().await.unwrap();
        let first = probe(&mut conn).await;
        let second = probe(&mut conn).await;
        assert_ne!(first.xid, second.xid);
        // Set once per connection instead.
        assert_eq!(first.statement_timeout_ms, 4321);
        assert_eq!(first.idle_timeout_ms, 1234);
        conn.begin().await.unwrap();
        let third = probe(&mut conn).await;
        assert_eq!(third.xid, probe(&mut conn).await.xid);
        conn.finish(Ok(())).await.unwrap();
        assert_eq!(store.pool_stats().size, 1);
    }

    #[tokio::test]
    async fn begin_inside_the_pooling_transaction_adds_no_savepoint() {
        let db = heartrule_testkit::db::TestDb::new().await;
        let store = store_on(&db, true).await;
        let mut conn = store.acquire().await.unwrap();
        conn.begin().await.unwrap();
        let depth = AnsiTransactionManager::transaction_manager_status_mut(&mut *conn)
            .transaction_depth()
            .unwrap();
        assert_eq!(depth.map(std::num::NonZeroU32::get), Some(1));
        conn.finish(Ok(())).await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_operation_is_rolled_back_and_its_connection_reused() {
        let db = heartrule_testkit::db::TestDb::new().await;
        for pooling in [true, false] {
            let store = store_on(&db, pooling).await;
            let mut conn = store.acquire().await.unwrap();
            conn.begin().await.unwrap();
            conn.batch_execute("CREATE TABLE failed_probe (x int)")
                .await
                .unwrap();
            let outcome: Result<(), _> = conn
                .finish(Err(RepositoryError::Query("boom".into())))
                .await;
            assert!(matches!(outcome, Err(RepositoryError::Query(_))));
            assert_eq!(store.pool_stats().size, 1, "pooling: {pooling}");
            assert!(
                !table_exists(&store, "failed_probe").await,
                "pooling: {pooling}"
            );
        }
    }

    #[tokio::test]
    async fn a_checkout_dropped_inside_its_transaction_is_closed_and_rolled_back() {
        let db = heartrule_testkit::db::TestDb::new().await;
        for pooling in [true, false] {
            let store = store_on(&db, pooling).await;
            let mut conn = store.acquire().await.unwrap();
            conn.begin().await.unwrap();
            conn.batch_execute("CREATE TABLE dropped_probe (x int)")
                .await
                .unwrap();
            // A cancelled request: the operation's future is dropped.
            drop(conn);
            assert_eq!(store.pool_stats().size, 0, "pooling: {pooling}");
            assert!(
                !table_exists(&store, "dropped_probe").await,
                "pooling: {pooling}"
            );
        }
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
