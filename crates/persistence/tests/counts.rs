//! The waiting-sessions count behind the `heartrule_sessions_waiting` gauge,
//! on both adapters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::{ExecutionStatus, ScriptRepository, SessionRepository, SessionStatus};
use heartrule_persistence::MemoryStore;
use support::fixtures::*;
use support::TestDb;

/// Three sessions: active + waiting, active + running, completed + waiting.
async fn seed<S: ScriptRepository + SessionRepository>(store: &S) {
    let script = session_script("counts");
    store.insert(&script).await.unwrap();
    let cases = [
        (SessionStatus::Active, ExecutionStatus::WaitingInput),
        (SessionStatus::Active, ExecutionStatus::Running),
        (SessionStatus::Completed, ExecutionStatus::WaitingInput),
    ];
    for (i, (status, execution)) in cases.into_iter().enumerate() {
        let mut record = first_turn(new_session(script.id, &format!("user-{i}")));
        record.session.status = status;
        record.session.state.status = execution;
        store.create(&record).await.unwrap();
    }
}

#[tokio::test]
async fn memory_store_counts_only_active_waiting_sessions() {
    let store = MemoryStore::new();
    assert_eq!(store.count_waiting_sessions(), 0);
    seed(&store).await;
    assert_eq!(store.count_waiting_sessions(), 1);
}

#[tokio::test]
async fn pg_store_counts_only_active_waiting_sessions() {
    let db = TestDb::new().await;
    let store = db.store().await;
    assert_eq!(store.count_waiting_sessions().await.unwrap(), 0);
    seed(&store).await;
    assert_eq!(store.count_waiting_sessions().await.unwrap(), 1);
}
