//! Test databases on a real PostgreSQL server.
//!
//! The schema is migrated once into a template database named after a hash
//! of `migrations/` (built under an advisory lock, so parallel test binaries
//! don't race); each test then gets its own `CREATE DATABASE … TEMPLATE`,
//! dropped when the [`TestDb`] is dropped. Leftovers older than an hour
//! (from killed runs) are dropped when the template is first needed.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `HEARTRULE_TEST_DATABASE_URL` says otherwise; tools name theirs with the
//! `*_on` constructors. An unreachable server fails the tests loudly; they
//! never skip.

use anyhow::{ensure, Context};
use diesel::sql_types::{BigInt, Jsonb, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use heartrule_persistence::{PgConfig, PgStore};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const TEST_DB_PREFIX: &str = "heartrule_test_";
const TEMPLATE_LOCK_KEY: i64 = 0x4852_5445_5354_504c; // "HRTESTPL"
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The server the tests run against (its maintenance database).
pub fn server_url() -> String {
    std::env::var("HEARTRULE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned())
}

/// The URL of database `name` on the same server.
pub fn database_url(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A connection to the test server's maintenance database.
pub async fn server_connection() -> AsyncPgConnection {
    try_server_connection(&server_url())
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable_hint(e)))
}

/// A connection to `server`'s maintenance database.
pub async fn try_server_connection(server: &str) -> anyhow::Result<AsyncPgConnection> {
    AsyncPgConnection::establish(server)
        .await
        .with_context(|| format!("PostgreSQL is unreachable at {server}"))
}

fn unreachable_hint(error: anyhow::Error) -> String {
    format!(
        "{error:#}. Start it (`bash scripts/services.sh start`), or point \
         HEARTRULE_TEST_DATABASE_URL at a server where this user may create databases. \
         These tests never skip."
    )
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// PostgreSQL processes working for one database (see [`TestDb::try_worker_pids`]).
#[derive(Debug, Clone, Default)]
pub struct WorkerPids {
    /// The database's own backends.
    pub backends: Vec<i32>,
    /// Background processes shared by every database of the server.
    pub background: Vec<i32>,
}

#[derive(QueryableByName)]
struct WorkerPid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    background: bool,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct DatabaseName {
    #[diesel(sql_type = Text)]
    datname: String,
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<bool> {
    let count = diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(name)
        .get_result::<Count>(conn)
        .await
        .context("query pg_database")?;
    Ok(count.n > 0)
}

/// Hash of every file under `migrations/`, so a changed migration gets a
/// fresh template.
fn migrations_hash() -> anyhow::Result<String> {
    fn collect(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                collect(&path, out)?;
            } else {
                let name = path.to_string_lossy().into_owned();
                out.push((name, std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    // This crate sits next to the persistence crate, two levels below the
    // root, like every crate of the workspace.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files = Vec::new();
    collect(&root, &mut files).with_context(|| format!("reading {}", root.display()))?;
    files.sort();
    let prefix = root.to_string_lossy().into_owned();
    let mut hasher = Sha256::new();
    for (name, content) in files {
        hasher.update(name.trim_start_matches(&prefix).as_bytes());
        hasher.update([0]);
        hasher.update(&content);
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Drops `heartrule_test_<unix seconds>_<uuid>` databases older than an hour.
async fn drop_stale_test_databases(conn: &mut AsyncPgConnection) -> anyhow::Result<()> {
    let names: Vec<DatabaseName> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'heartrule\\_test\\_%'",
    )
    .load(conn)
    .await
    .context("list test databases")?;
    let now = unix_now();
    for DatabaseName { datname } in names {
        let created = datname
            .strip_prefix(TEST_DB_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| now.saturating_sub(created) > STALE_AFTER.as_secs()) {
            conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"
            ))
            .await
            .with_context(|| format!("drop stale test database {datname}"))?;
        }
    }
    Ok(())
}

/// The template of each server, by server URL, built on first use (the
/// lock also makes concurrent first uses wait for one build).
static TEMPLATES: Mutex<BTreeMap<String, String>> = Mutex::const_new(BTreeMap::new());

/// The migrated template database of `server`, built on first use.
pub async fn template(server: &str) -> anyhow::Result<String> {
    let mut templates = TEMPLATES.lock().await;
    if let Some(name) = templates.get(server) {
        return Ok(name.clone());
    }
    let name = build_template(server).await?;
    templates.insert(server.to_owned(), name.clone());
    Ok(name)
}

async fn build_template(server: &str) -> anyhow::Result<String> {
    let name = format!("heartrule_tpl_{}", &migrations_hash()?[..16]);
    let mut conn = try_server_connection(server).await?;
    conn.batch_execute(&format!("SELECT pg_advisory_lock({TEMPLATE_LOCK_KEY})"))
        .await
        .context("take the template lock")?;
    drop_stale_test_databases(&mut conn).await?;
    if !database_exists(&mut conn, &name).await? {
        // Built under another name and renamed when complete, so a run that
        // dies half-way never leaves a half-migrated template behind.
        let building = format!("{name}_build");
        // Two calls: a multi-statement string runs as one implicit
        // transaction, which these commands refuse.
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .await
            .context("drop a half-built template database")?;
        conn.batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .context("create the template database")?;
        let applied = heartrule_persistence::run_migrations(&database_url(server, &building))
            .await
            .context("migrate the template database")?;
        ensure!(!applied.is_empty(), "a new template gets every migration");
        conn.batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
            .context("publish the template database")?;
    }
    // An early return above releases the lock too: it is the session's, and
    // the session ends with the connection.
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK_KEY})"))
        .await
        .context("release the template lock")?;
    Ok(name)
}

/// A database of its own for one test; dropped (with its connections) when
/// this value is dropped, even when the test panics.
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The server's maintenance database, where it is dropped from.
    pub server: String,
}

impl TestDb {
    /// A copy of the migrated template on the test server.
    pub async fn new() -> Self {
        Self::try_new_on(&server_url())
            .await
            .unwrap_or_else(|e| panic!("{}", unreachable_hint(e)))
    }

    /// A database without any schema on the test server.
    pub async fn empty() -> Self {
        Self::try_empty_on(&server_url())
            .await
            .unwrap_or_else(|e| panic!("{}", unreachable_hint(e)))
    }

    /// A copy of the migrated template on `server` (a maintenance database URL).
    pub async fn try_new_on(server: &str) -> anyhow::Result<Self> {
        let template = template(server).await?;
        Self::create(server, &format!("TEMPLATE {template}")).await
    }

    /// A database without any schema on `server`.
    pub async fn try_empty_on(server: &str) -> anyhow::Result<Self> {
        Self::create(server, "TEMPLATE template0").await
    }

    async fn create(server: &str, options: &str) -> anyhow::Result<Self> {
        let name = format!(
            "{TEST_DB_PREFIX}{}_{}",
            unix_now(),
            uuid::Uuid::new_v4().simple()
        );
        let mut conn = try_server_connection(server).await?;
        conn.batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .with_context(|| format!("create test database {name}"))?;
        Ok(Self {
            url: database_url(server, &name),
            name,
            server: server.to_owned(),
        })
    }

    /// Pool settings for tests: small pool, generous timeouts.
    pub fn config(&self) -> PgConfig {
        PgConfig {
            url: self.url.clone(),
            max_connections: 5,
            acquire_timeout: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(60),
            idle_in_transaction_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            transaction_pooling: false,
        }
    }

    pub async fn store(&self) -> PgStore {
        self.store_with(self.config()).await
    }

    pub async fn store_with(&self, config: PgConfig) -> PgStore {
        PgStore::connect(config)
            .await
            .expect("connect to the test database")
    }

    /// A plain connection, for inspecting or tampering with rows.
    pub async fn connection(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// `SELECT count(*) FROM <table> WHERE <condition>`.
    pub async fn count(&self, table: &str, condition: &str) -> i64 {
        let mut conn = self.connection().await;
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM {table} WHERE {condition}"
        ))
        .get_result::<Count>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .n
    }

    /// The rows of `sql`, as JSON (one object per row).
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        self.try_rows(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
    }

    /// The rows of `sql`, as JSON (one object per row), or what failed.
    pub async fn try_rows(&self, sql: &str) -> anyhow::Result<Vec<Value>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Jsonb)]
            row: Value,
        }
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .context("connecting to the test database")?;
        Ok(
            diesel::sql_query(format!("SELECT to_jsonb(t) AS row FROM ({sql}) t"))
                .load::<Row>(&mut conn)
                .await
                .with_context(|| sql.to_owned())?
                .into_iter()
                .map(|r| r.row)
                .collect(),
        )
    }

    /// Runs `sql` (statements without results, e.g. `VACUUM`) on this database.
    pub async fn try_execute(&self, sql: &str) -> anyhow::Result<()> {
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .context("connecting to the test database")?;
        conn.batch_execute(sql)
            .await
            .with_context(|| sql.to_owned())
    }

    /// Backend pids connected to this database in the given state.
    pub async fn backends_in_state(&self, state: &str) -> Vec<i32> {
        let mut conn = try_server_connection(&self.server)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        diesel::sql_query("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND state = $2")
            .bind::<Text, _>(&self.name)
            .bind::<Text, _>(state)
            .load::<Pid>(&mut conn)
            .await
            .expect("query pg_stat_activity")
            .into_iter()
            .map(|p| p.pid)
            .collect()
    }

    /// Pids of the server processes that work for this database: its
    /// backends (autovacuum workers included) and, apart, the background
    /// processes that belong to no database (WAL writer, checkpointer, …),
    /// which a shared server's other databases keep busy too. Not the
    /// backends of other databases.
    pub async fn try_worker_pids(&self) -> anyhow::Result<WorkerPids> {
        let mut conn = try_server_connection(&self.server).await?;
        let rows = diesel::sql_query(
            "SELECT pid, datname IS NULL AS background FROM pg_stat_activity \
             WHERE datname = $1 OR datname IS NULL",
        )
        .bind::<Text, _>(&self.name)
        .load::<WorkerPid>(&mut conn)
        .await
        .context("query pg_stat_activity")?;
        let (background, backends): (Vec<WorkerPid>, Vec<WorkerPid>) =
            rows.into_iter().partition(|row| row.background);
        let pids = |rows: Vec<WorkerPid>| rows.into_iter().map(|row| row.pid).collect();
        Ok(WorkerPids {
            backends: pids(backends),
            background: pids(background),
        })
    }

    /// Waits until no backend of this database is `idle in transaction`.
    pub async fn wait_until_no_open_transaction(&self) {
        for _ in 0..100 {
            if self
                .backends_in_state("idle in transaction")
                .await
                .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("a connection stayed idle in transaction");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        // Drop can't await; a thread with its own runtime does the cleanup.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = AsyncPgConnection::establish(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test database {} was not dropped: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn the_database_is_replaced_in_the_url() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://h:5432", "z"),
            "postgres://h:5432/z"
        );
    }
}
