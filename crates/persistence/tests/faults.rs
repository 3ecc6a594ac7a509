//! PostgreSQL failures during a turn: a killed backend, a statement timeout,
//! an exhausted pool, an unreachable server; and the guarantee that a
//! claimed turn holds nothing in the database while the engine runs. Each ends in a typed
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

/// Opens a transaction on `conn` that holds the session's row lock, as
/// another client of the database might.
async fn lock_row(conn: &mut diesel_async::AsyncPgConnection, session: &heartrule_domain::Session) {
    conn.batch_execute(&format!(
        "BEGIN; SELECT id FROM sessions WHERE id = '{}' FOR UPDATE",
        session.id
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn killed_backend_between_claim_and_commit_applies_nothing_or_everything() {
    let db = TestDb::new().await;
    let store = db
        .store_with(PgConfig {
            max_connections: 2,
            ..db.config()
        })
        .await;
    let session = session_in(&store).await;

    let turn = claim(&store, session.id).await;
    let record = with_idempotency(next_turn(&turn.session, "lost?", &["kept"]), "k1");
    // The engine runs with nothing open: kill every pooled connection.
    assert!(db.backends_in_state("idle in transaction").await.is_empty());
    let mut admin = server_connection().await;
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The commit is one statement: a dead connection fails it whole, and
    // the lease is still the turn's, so the same commit can be sent again.
    let id = session.id;
    match store.commit_turn(&turn.lease, &record).await {
        Ok(()) => {}
        Err(error) => {
            assert!(
                matches!(error, RepositoryError::Unavailable(_)),
                "{error:?}"
            );
            assert_eq!(
                db.count("messages", &format!("session_id = '{id}'")).await,
                1
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
            store.commit_turn(&turn.lease, &record).await.unwrap();
        }
    }
    assert_eq!(store.list_messages(id, 0, 10).await.unwrap().len(), 3);
    assert_eq!(
        db.count("idempotency_keys", &format!("session_id = '{id}'"))
            .await,
        1
    );
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
    lock_row(&mut blocker, &session).await;

    let error = store
        .claim_turn(&turn_claim(session.id, 10))
        .await
        .expect_err("the row is locked");
    assert!(matches!(error, RepositoryError::Timeout(_)), "{error:?}");
    blocker.batch_execute("ROLLBACK").await.unwrap();

    let turn = claim(&store, session.id).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM sessions WHERE id = '{}' FOR UPDATE",
            session.id
        ))
        .await
        .unwrap();
    let error = store
        .release_turn(&turn.lease, Some(&failure(&session, "hello")))
        .await
        .expect_err("the row is locked");
    assert!(matches!(error, RepositoryError::Timeout(_)), "{error:?}");
    assert_eq!(store.failed_turns(session.id).await.unwrap(), vec![]);

    blocker.batch_execute("ROLLBACK").await.unwrap();
    store.release_turn(&turn.lease, None).await.unwrap();
    let turn = claim(&store, session.id).await;
    store.release_turn(&turn.lease, None).await.unwrap();
    db.wait_until_no_open_transaction().await;
}

#[tokio::test]
async fn a_claimed_turn_holds_no_connection_no_transaction_and_no_lock() {
    let db = TestDb::new().await;
    let store = db
        .store_with(PgConfig {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(500),
            ..db.config()
        })
        .await;
    let session = session_in(&store).await;
    let second = first_turn(new_session(session.script_id, "user-2"));
    store.create(&second).await.unwrap();
    let other = second.session;

    let turns = [
        claim(&store, session.id).await,
        claim(&store, other.id).await,
    ];
    let stats = store.pool_stats();
    assert_eq!((stats.max_size, stats.in_use), (1, 0), "{stats:?}");
    assert!(db.backends_in_state("idle in transaction").await.is_empty());
    // Another client can write the claimed rows at once: no row lock is held.
    let mut outsider = db.connection().await;
    outsider
        .batch_execute(&format!(
            "SET lock_timeout = '200ms'; UPDATE sessions SET updated_at = updated_at WHERE id = '{}'",
            session.id
        ))
        .await
        .expect("no lock on a claimed session");
    // The single pooled connection serves everything else meanwhile.
    assert_eq!(
        SessionRepository::get(&store, other.id).await.unwrap(),
        Some(other.clone())
    );
    for turn in &turns {
        let record = next_turn(&turn.session, "fine", &["ok"]);
        store.commit_turn(&turn.lease, &record).await.unwrap();
    }
    assert_eq!(store.pool_stats().size, 1);
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

    // A claim waiting on another client's row lock keeps the only pooled
    // connection busy.
    let mut blocker = db.connection().await;
    lock_row(&mut blocker, &session).await;
    let waiting = {
        let store = store.clone();
        let id = session.id;
        tokio::spawn(async move { store.claim_turn(&turn_claim(id, 10)).await })
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while store.pool_stats().in_use == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the claim took the connection");

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

    blocker.batch_execute("ROLLBACK").await.unwrap();
    let claimed = waiting.await.unwrap().unwrap();
    assert!(matches!(
        claimed,
        heartrule_domain::ClaimOutcome::Claimed(_)
    ));
    assert_eq!(
        SessionRepository::get(&store, session.id)
            .await
            .unwrap()
            .map(|s| s.id),
        Some(session.id)
    );
    assert!(store.pool_stats().acquire_count > before);
    assert_eq!(store.pool_stats().in_use, 0);
    db.wait_until_no_open_transaction().await;
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
