//! A turn's writes to its session row stay HOT (heap-only tuple) updates: no
//! index covers a column a turn changes on every commit, so PostgreSQL adds
//! no index entries and less WAL per turn. An index on `updated_at` once broke
//! this silently; the retention cleanup now finds idle sessions through the
//! day they were last active instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::{ScriptRepository, SessionRepository};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::fixtures::*;
use support::TestDb;

/// `(updates, hot updates)` of `sessions` as the statistics report them.
async fn session_updates(db: &TestDb) -> (i64, i64) {
    let rows = db
        .rows(
            "SELECT n_tup_upd AS upd, n_tup_hot_upd AS hot \
             FROM pg_stat_user_tables WHERE relname = 'sessions'",
        )
        .await;
    let row = &rows[0];
    let field = |name: &str| row[name].as_i64().unwrap_or_default();
    (field("upd"), field("hot"))
}

#[tokio::test]
async fn turn_claims_and_commits_are_hot_updates() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let script = session_script("hot");
    store.insert(&script).await.unwrap();
    let record = first_turn(new_session(script.id, "user-hot"));
    store.create(&record).await.unwrap();

    const TURNS: i64 = 5;
    let mut session = record.session;
    for turn in 0..TURNS {
        let context = claim(&store, session.id).await;
        let next = next_turn(&context.session, &format!("message {turn}"), &["reply"]);
        store.commit_turn(&context.lease, &next).await.unwrap();
        session = next.session;
    }
    // A claim and a commit per turn.
    let expected = 2 * TURNS;
    let reread = SessionRepository::get(&store, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reread, session);

    // Backends report their statistics shortly after their transactions, and
    // when they end at the latest: close the pool's connections, then wait for
    // the counts to show.
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (updates, hot) = loop {
        let (updates, hot) = session_updates(&db).await;
        if updates >= expected || Instant::now() > deadline {
            break (updates, hot);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(updates, expected, "every claim and commit was counted");
    assert_eq!(
        hot, updates,
        "every update of the session row was HOT; an index on a column a turn changes prevents it"
    );

    let stored: Value = db
        .rows(&format!(
            "SELECT active_on, (updated_at AT TIME ZONE 'UTC')::date AS day \
             FROM sessions WHERE id = '{}'",
            session.id
        ))
        .await
        .remove(0);
    assert_eq!(
        stored["active_on"], stored["day"],
        "active_on is the UTC day of the last change"
    );
}
