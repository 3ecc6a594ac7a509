//! `heartrule maintenance cleanup` on real PostgreSQL and Redis: what goes,
//! what stays, batches, the dry run, and the command line the CronJob runs.

use crate::process::heartrule;
use crate::support::{redis_keys, redis_prefix, redis_url, require_redis, TestDb};
use heartrule_cache::{RedisCache, RedisCacheConfig};
use heartrule_domain::{
    CacheJanitor, RetentionAges, RetentionCounts, ScriptRepository, Session, SessionCache,
    SessionId, SessionRepository,
};
use heartrule_persistence::PgStore;
use heartrule_server::maintenance::{run_cleanup, CleanupReport, CleanupSettings};
use heartrule_testkit::fixtures::{
    claim, failure, first_turn, new_session, next_turn, session_script, with_idempotency,
};
use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn settings(batch_size: usize, dry_run: bool) -> CleanupSettings {
    CleanupSettings {
        ages: RetentionAges {
            sessions: 90 * DAY,
            idempotency_keys: DAY,
            failed_turns: 30 * DAY,
        },
        batch_size,
        batch_pause: Duration::from_millis(1),
        dry_run,
    }
}

/// A session with 3 messages, 1 variable snapshot, 1 idempotency key and 1
/// failed turn.
async fn conversation(store: &PgStore, script: heartrule_domain::ScriptId) -> Session {
    let session = new_session(script, "retention-user");
    store.create(&first_turn(session.clone())).await.unwrap();
    let turn = claim(store, session.id).await;
    let record = with_idempotency(
        next_turn(&turn.session, "I slept badly", &["Tell me more."]),
        &format!("key-{}", session.id),
    );
    store.commit_turn(&turn.lease, &record).await.unwrap();
    let turn = claim(store, session.id).await;
    store
        .release_turn(&turn.lease, Some(&failure(&turn.session, "still awake")))
        .await
        .unwrap();
    SessionRepository::get(store, session.id)
        .await
        .unwrap()
        .unwrap()
}

async fn execute(db: &TestDb, sql: &str) {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connection().await;
    diesel::sql_query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn id_list(ids: &[SessionId]) -> String {
    ids.iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of every cleaned table: sessions, messages, variables, keys, failed turns.
async fn table_counts(db: &TestDb) -> [i64; 5] {
    [
        db.count("sessions", "true").await,
        db.count("messages", "true").await,
        db.count("variables", "true").await,
        db.count("idempotency_keys", "true").await,
        db.count("failed_turns", "true").await,
    ]
}

fn raw_redis() -> redis::Connection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap()
}

struct World {
    db: TestDb,
    store: PgStore,
    cache: RedisCache,
    prefix: String,
    old: Vec<SessionId>,
    recent: Vec<SessionId>,
    leased: SessionId,
    crashed: SessionId,
    orphan_key: String,
    unexpiring_key: String,
    foreign_key: String,
}

/// Five sessions idle for 100 days, two recent ones (one with an expired
/// idempotency key and an old failed turn), one idle session whose turn is
/// running, one idle session whose turn crashed an hour ago (its lease
/// lapsed), their Redis snapshots, an orphaned snapshot, a cache key left
/// without an expiry and a key that is not the cache's.
async fn world() -> World {
    require_redis().await;
    let db = TestDb::new().await;
    let store = db.store().await;
    let prefix = redis_prefix();
    let cache = RedisCache::connect(RedisCacheConfig {
        url: redis_url(),
        key_prefix: prefix.clone(),
        op_timeout: Duration::from_secs(2),
        ..RedisCacheConfig::default()
    })
    .await
    .unwrap();
    let script = session_script("retention");
    ScriptRepository::insert(&store, &script).await.unwrap();

    let mut sessions = Vec::new();
    for _ in 0..9 {
        let session = conversation(&store, script.id).await;
        SessionCache::put(&cache, &session).await;
        sessions.push(session.id);
    }
    let old = sessions[..5].to_vec();
    let recent = sessions[5..7].to_vec();
    let leased = sessions[7];
    let crashed = sessions[8];
    // The leased session's turn is still running (a one-minute lease).
    let _running = claim(&store, leased).await;
    let mut idle = old.clone();
    idle.extend([leased, crashed]);
    // Aged as this version writes them (`active_on` the day of `updated_at`),
    // except two rows as the previous version left them (no `active_on`).
    execute(
        &db,
        &format!(
            "UPDATE sessions SET updated_at = now() - interval '100 days', \
             active_on = ((now() - interval '100 days') AT TIME ZONE 'UTC')::date \
             WHERE id IN ({})",
            id_list(&idle)
        ),
    )
    .await;
    execute(
        &db,
        &format!(
            "UPDATE sessions SET active_on = NULL WHERE id IN ({})",
            id_list(&old[..2])
        ),
    )
    .await;
    execute(
        &db,
        &format!(
            "UPDATE sessions SET lease_owner = gen_random_uuid(), \
             lease_expires_at = now() - interval '1 hour' WHERE id = '{crashed}'"
        ),
    )
    .await;
    execute(
        &db,
        &format!(
            "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE session_id = '{}'",
            recent[0]
        ),
    )
    .await;
    execute(
        &db,
        &format!(
            "UPDATE failed_turns SET failed_at = now() - interval '40 days' WHERE session_id = '{}'",
            recent[0]
        ),
    )
    .await;

    let orphan_key = cache.session_key(SessionId::new_random());
    let unexpiring_key = format!("{prefix}:script:{}", uuid_like());
    let foreign_key = format!("{prefix}:other:keep-me");
    let mut raw = raw_redis();
    redis::cmd("SET")
        .arg(&orphan_key)
        .arg("{}")
        .arg("EX")
        .arg(3600)
        .exec(&mut raw)
        .unwrap();
    redis::cmd("SET")
        .arg(&unexpiring_key)
        .arg("stale")
        .exec(&mut raw)
        .unwrap();
    redis::cmd("SET")
        .arg(&foreign_key)
        .arg("not ours")
        .exec(&mut raw)
        .unwrap();
    World {
        db,
        store,
        cache,
        prefix,
        old,
        recent,
        leased,
        crashed,
        orphan_key,
        unexpiring_key,
        foreign_key,
    }
}

fn uuid_like() -> String {
    SessionId::new_random().to_string()
}

impl World {
    async fn clean(&self, batch_size: usize, dry_run: bool) -> CleanupReport {
        run_cleanup(
            &self.store,
            Some(&self.cache as &dyn CacheJanitor),
            &settings(batch_size, dry_run),
        )
        .await
    }

    fn keys(&self) -> Vec<String> {
        let mut keys = redis_keys(&self.prefix);
        keys.sort();
        keys
    }
}

impl Drop for World {
    fn drop(&mut self) {
        crate::support::clear_redis_prefix(&self.prefix);
    }
}

const EXPECTED_DB: RetentionCounts = RetentionCounts {
    sessions: 5,
    messages: 15,
    variable_snapshots: 5,
    // 5 with their sessions, 1 for its own age.
    idempotency_keys: 6,
    failed_turns: 6,
    cache_keys: 0,
};

#[tokio::test]
async fn a_dry_run_counts_and_deletes_nothing() {
    let world = world().await;
    let rows_before = table_counts(&world.db).await;
    let keys_before = world.keys();

    let report = world.clean(2, true).await;

    assert!(report.succeeded(), "{report:?}");
    assert!(report.dry_run);
    assert_eq!(
        report.counts,
        RetentionCounts {
            // The orphaned snapshot and the key without an expiry; the old
            // sessions' snapshots only become stale once they are deleted.
            cache_keys: 2,
            ..EXPECTED_DB
        }
    );
    assert_eq!(report.batches, 0, "a dry run runs no delete");
    assert_eq!(table_counts(&world.db).await, rows_before);
    assert_eq!(rows_before, [9, 27, 9, 9, 9]);
    assert_eq!(world.keys(), keys_before);
}

#[tokio::test]
async fn cleanup_removes_old_data_in_batches_and_keeps_the_rest() {
    let world = world().await;

    let report = world.clean(2, false).await;

    assert!(report.succeeded(), "{report:?}");
    assert_eq!(
        report.counts,
        RetentionCounts {
            // 5 snapshots of deleted sessions, the orphan, the unexpiring key.
            cache_keys: 7,
            ..EXPECTED_DB
        }
    );
    // Sessions in batches of 2 (2 + 2 + 1), then one batch each of keys
    // and failed turns.
    assert_eq!(report.batches, 5);

    let old = id_list(&world.old);
    for table in ["messages", "variables", "idempotency_keys", "failed_turns"] {
        assert_eq!(
            world
                .db
                .count(table, &format!("session_id IN ({old})"))
                .await,
            0,
            "{table} of old sessions"
        );
    }
    assert_eq!(
        world.db.count("sessions", &format!("id IN ({old})")).await,
        0
    );
    // Recent sessions keep everything but the expired key and old failure;
    // the sessions whose turn runs or recently crashed keep everything.
    let mut kept = world.recent.clone();
    kept.extend([world.leased, world.crashed]);
    assert_eq!(
        world
            .db
            .count("sessions", &format!("id IN ({})", id_list(&kept)))
            .await,
        4
    );
    assert_eq!(table_counts(&world.db).await, [4, 12, 4, 3, 3]);
    assert_eq!(
        world
            .db
            .count(
                "idempotency_keys",
                &format!("session_id = '{}'", world.recent[0])
            )
            .await,
        0
    );
    assert_eq!(
        world
            .db
            .count("failed_turns", &format!("session_id = '{}'", world.leased))
            .await,
        1
    );

    let mut expected_keys: Vec<String> =
        kept.iter().map(|id| world.cache.session_key(*id)).collect();
    expected_keys.push(world.foreign_key.clone());
    expected_keys.sort();
    assert_eq!(world.keys(), expected_keys);
    assert!(!world.keys().contains(&world.orphan_key));
    assert!(!world.keys().contains(&world.unexpiring_key));

    // A second run finds nothing left to do.
    let again = world.clean(2, false).await;
    assert!(again.succeeded(), "{again:?}");
    assert_eq!(again.counts, RetentionCounts::default());
    assert_eq!(again.batches, 3);
    let dry = world.clean(2, true).await;
    assert_eq!(dry.counts, RetentionCounts::default());
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_run_but_not_the_database_part() {
    let world = world().await;
    let dead = RedisCache::connect_lazy(RedisCacheConfig {
        url: format!("redis://127.0.0.1:{}", heartrule_testkit::closed_port()),
        key_prefix: world.prefix.clone(),
        connect_timeout: Duration::from_millis(200),
        ..RedisCacheConfig::default()
    })
    .unwrap();

    let report = run_cleanup(
        &world.store,
        Some(&dead as &dyn CacheJanitor),
        &settings(500, false),
    )
    .await;

    assert!(!report.succeeded());
    assert_eq!(
        report.errors.len(),
        1,
        "one cache error, then no more tries: {report:?}"
    );
    assert!(report.errors[0].starts_with("cache: "), "{report:?}");
    assert_eq!(report.counts.sessions, 5);
    assert_eq!(report.counts.cache_keys, 0);
}

#[tokio::test]
async fn the_cronjob_command_line_reports_and_writes_the_metrics_file() {
    let world = world().await;
    let dir = std::env::temp_dir().join(format!("heartrule-cleanup-{}", SessionId::new_random()));
    std::fs::create_dir_all(&dir).unwrap();
    let metrics = dir.join("heartrule_cleanup.prom");
    let command = |dry_run: bool| {
        let mut command = heartrule();
        command
            .env("APP_ENV", "production")
            .env("RUST_LOG", "info")
            .env("HEARTRULE__TELEMETRY__TRACES__ENABLED", "false")
            .env("DATABASE_URL", &world.db.url)
            .env("REDIS_URL", redis_url())
            .env("HEARTRULE__REDIS__KEY_PREFIX", &world.prefix)
            .env("HEARTRULE__RETENTION__BATCH_SIZE", "2")
            .args(["maintenance", "cleanup", "--metrics-file"])
            .arg(&metrics);
        if dry_run {
            command.arg("--dry-run");
        }
        command
    };

    let dry = command(true).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        stdout.contains("retention cleanup (dry run) finished"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sessions             would delete 5"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("heartrule_maintenance_cleanup_items{kind=\"sessions\",dry_run=\"true\"} 5"),
        "{text}"
    );
    assert_eq!(table_counts(&world.db).await, [9, 27, 9, 9, 9]);

    let real = command(false).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&real.stdout);
    assert!(
        real.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&real.stderr)
    );
    // The JSON log line (production) carries the summary's counts.
    let logged = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| {
            line.pointer("/fields/event").and_then(|v| v.as_str()) == Some("retention_cleanup")
                || line.get("event").and_then(|v| v.as_str()) == Some("retention_cleanup")
        })
        .unwrap_or_else(|| panic!("no retention_cleanup log line in\n{stdout}"));
    assert!(logged.to_string().contains("\"messages\":15"), "{logged}");
    assert!(
        stdout.contains("sessions             deleted 5"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    for line in [
        "heartrule_maintenance_cleanup_items{kind=\"sessions\",dry_run=\"false\"} 5",
        "heartrule_maintenance_cleanup_items{kind=\"cache_keys\",dry_run=\"false\"} 7",
        "heartrule_maintenance_cleanup_batches{dry_run=\"false\"} 5",
        "heartrule_maintenance_cleanup_success{dry_run=\"false\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert_eq!(table_counts(&world.db).await, [4, 12, 4, 3, 3]);

    // A database that cannot be reached fails the job and says so in the file.
    let down = heartrule()
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres@127.0.0.1:{}/x",
                heartrule_testkit::closed_port()
            ),
        )
        .env("HEARTRULE__DATABASE__CONNECT_TIMEOUT", "1s")
        .args(["maintenance", "cleanup", "--metrics-file"])
        .arg(&metrics)
        .output()
        .await
        .unwrap();
    assert!(!down.status.success());
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("heartrule_maintenance_cleanup_success{dry_run=\"false\"} 0"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
