//! PostgreSQL failures during a turn: a killed backend, a statement timeout,
//! an exhausted pool, an unreachable server. Each ends in a typed
//! `RepositoryError` with nothing half-applied, and the store recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use diesel_async::SimpleAsyncConnection;
use heartrule_domain::{MessageHistory, RepositoryError, ScriptRepository, SessionRepository};
use heartrule_persistence::{PersistenceError, PgConfig, PgStore};
use std::time::Duration;
use support::fixtures::*;
use support::{server_connection, TestDb};

async fn session_in(store: &PgStore) -> heartrule_domain::Session {
    let script = session_script("faults");
    store.insert(&script).await.unwrap();
    let record = first_turn(new_session(script.id, "user-1"));
    store.create(&record).await.unwrap();
    record.session
}

#[tokio::test]
async fn killed_backend_between_begin_and_commit_applies_nothing() {
    let db = TestDb::new().await;
    let store = db
        .store_with(PgConfig {
            max_connections: 2,
            ..db.config()
        })
        .await;
    let session = session_in(&store).await;

    let mut turn = store.begin_turn(session.id).await.unwrap().unwrap();
    let record = with_idempotency(next_turn(turn.session(), "lost?", &["never stored"]), "k1");
    let pids = db.backends_in_state("idle in transaction").await;
    assert_eq!(pids.len(), 1, "the open turn is the only transaction");
    let mut admin = server_connection().await;
    admin
        .batch_execute(&format!("SELECT pg_terminate_backend({})", pids[0]))
        .await
        .unwrap();
    for _ in 0..100 {
        if !db
            .backends_in_state("idle in transaction")
            .await
            .contains(&pids[0])
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let error = turn.commit(&record).await.expect_err("the backend is gone");
    assert!(
        matches!(error, RepositoryError::Unavailable(_)),
        "{error:?}"
    );
    drop(turn);

    // Nothing of the turn is stored.
    let id = session.id;
    assert_eq!(
        db.count("messages", &format!("session_id = '{id}'")).await,
        1
    );
    assert_eq!(
        db.count("variables", &format!("session_id = '{id}'")).await,
        0
    );
    assert_eq!(
        db.count("idempotency_keys", &format!("session_id = '{id}'"))
            .await,
        0
    );
    assert_eq!(
        SessionRepository::get(&store, id).await.unwrap(),
        Some(session.clone())
    );

    // The next turn gets a healthy connection and commits.
    let mut turn = store.begin_turn(id).await.unwrap().unwrap();
    let record = next_turn(turn.session(), "retry", &["stored"]);
    turn.commit(&record).await.unwrap();
    assert_eq!(store.list_messages(id, 0, 10).await.unwrap().len(), 3);
    assert_eq!(
        SessionRepository::get(&store, id).await.unwrap(),
        Some(record.session)
    );
}

#[tokio::test]
async fn statement_timeout_is_a_timeout_error() {
    let db = TestDb::new().await;
    let config = PgConfig {
        statement_timeout: Duration::from_millis(300),
        ..db.config()
    };
    let store = db.store_with(config).await;
    let session = session_in(&store).await;

    // Another client holds the session row.
    let mut blocker = db.connection().await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM sessions WHERE id = '{}' FOR UPDATE",
            session.id
        ))
        .await
        .unwrap();

    let error = store
        .begin_turn(session.id)
        .await
        .err()
        .expect("the row is locked");
    assert!(matches!(error, RepositoryError::Timeout(_)), "{error:?}");
    let error = store
        .record_failure(&failure(&session, "hello"))
        .await
        .expect_err("the row is locked");
    assert!(matches!(error, RepositoryError::Timeout(_)), "{error:?}");
    assert_eq!(store.failed_turns(session.id).await.unwrap(), vec![]);

    blocker.batch_execute("ROLLBACK").await.unwrap();
    let mut turn = store.begin_turn(session.id).await.unwrap().unwrap();
    turn.rollback().await.unwrap();
    db.wait_until_no_open_transaction().await;
}

#[tokio::test]
async fn exhausted_pool_times_out_and_pool_stats_show_it() {
    let db = TestDb::new().await;
    let config = PgConfig {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(150),
        ..db.config()
    };
    let store = db.store_with(config).await;
    let session = session_in(&store).await;

    let turn = store.begin_turn(session.id).await.unwrap().unwrap();
    let stats = store.pool_stats();
    assert_eq!(
        (stats.max_size, stats.size, stats.in_use, stats.idle),
        (1, 1, 1, 0)
    );

    let error = SessionRepository::get(&store, session.id)
        .await
        .expect_err("the only connection is taken");
    assert!(matches!(error, RepositoryError::Timeout(_)), "{error:?}");
    let stats = store.pool_stats();
    assert!(
        stats.acquire_wait_max >= Duration::from_millis(150),
        "{stats:?}"
    );
    assert!(stats.acquire_wait_total >= stats.acquire_wait_max);
    let before = stats.acquire_count;

    drop(turn);
    let again = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match SessionRepository::get(&store, session.id).await {
                Ok(found) => break found,
                Err(RepositoryError::Timeout(_)) => continue,
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await
    .expect("the dropped turn gave its connection back");
    assert_eq!(again, Some(session));
    assert!(store.pool_stats().acquire_count > before);
    assert_eq!(store.pool_stats().in_use, 0);
    db.wait_until_no_open_transaction().await;
}

#[tokio::test]
async fn dropped_turn_never_leaves_a_connection_in_a_transaction() {
    let db = TestDb::new().await;
    let store = db
        .store_with(PgConfig {
            max_connections: 1,
            ..db.config()
        })
        .await;
    let session = session_in(&store).await;
    for _ in 0..3 {
        let turn = store.begin_turn(session.id).await.unwrap().unwrap();
        assert_eq!(db.backends_in_state("idle in transaction").await.len(), 1);
        drop(turn);
        db.wait_until_no_open_transaction().await;
    }
    // The single pooled connection is reusable and outside any transaction.
    let mut turn = store.begin_turn(session.id).await.unwrap().unwrap();
    let record = next_turn(turn.session(), "after drops", &["fine"]);
    turn.commit(&record).await.unwrap();
    assert_eq!(store.pool_stats().size, 1);
}

#[tokio::test]
async fn ping_follows_the_server() {
    let db = TestDb::new().await;
    let store = db
        .store_with(PgConfig {
            max_connections: 1,
            ..db.config()
        })
        .await;
    store.ping().await.unwrap();

    // Kill the pooled connection: the next ping may see it die, the one
    // after gets a fresh connection.
    let mut admin = server_connection().await;
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Err(error) = store.ping().await {
        assert!(
            matches!(error, RepositoryError::Unavailable(_)),
            "{error:?}"
        );
    }
    store.ping().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_fails_connect_with_a_typed_error() {
    let config = PgConfig {
        connect_timeout: Duration::from_secs(2),
        ..PgConfig::new("postgres://postgres:secret@127.0.0.1:1/heartrule")
    };
    let started = std::time::Instant::now();
    let error = PgStore::connect(config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(error, PersistenceError::Connect(_)), "{error:?}");
    assert!(!error.to_string().contains("secret"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let zero = PgConfig {
        max_connections: 0,
        ..PgConfig::new(support::server_url())
    };
    assert!(matches!(
        PgStore::connect(zero).await,
        Err(PersistenceError::Config(_))
    ));
}
