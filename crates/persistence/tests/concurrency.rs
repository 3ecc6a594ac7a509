//! Concurrent turns on one session serialise through the session's lease:
//! a claim never waits, the losers retry, and there is no lost update, no
//! gap or duplicate in the message sequence. Run on both adapters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::{
    ClaimOutcome, MessageHistory, MessageRole, ScriptRepository, SessionRepository, TurnId,
};
use heartrule_persistence::MemoryStore;
use std::time::Duration;
use support::fixtures::*;
use support::TestDb;
use tokio::task::JoinSet;

const TURNS: i64 = 50;

trait Store: ScriptRepository + SessionRepository + MessageHistory + Clone + 'static {}
impl<T: ScriptRepository + SessionRepository + MessageHistory + Clone + 'static> Store for T {}

/// Each task claims the session (retrying while another turn holds it),
/// reads the counter from the claimed state, yields (inviting a lost
/// update), then commits the counter + 1 with one user and one AI message
/// numbered after the claimed session's last seq.
async fn concurrent_turns_serialise<S: Store>(store: S) {
    let script = session_script("concurrency");
    store.insert(&script).await.unwrap();
    let record = silent_first_turn(new_session(script.id, "user-1"));
    let id = record.session.id;
    store.create(&record).await.unwrap();

    let mut tasks = JoinSet::new();
    for i in 0..TURNS {
        let store = store.clone();
        tasks.spawn(async move {
            let turn = loop {
                match store.claim_turn(&turn_claim(id, 20)).await? {
                    ClaimOutcome::Claimed(turn) => break turn,
                    ClaimOutcome::Busy { .. } => tokio::time::sleep(Duration::from_millis(1)).await,
                    other => panic!("unexpected claim outcome {other:?}"),
                }
            };
            let record = next_turn(&turn.session, &format!("user {i}"), &[&format!("ai {i}")]);
            tokio::time::sleep(Duration::from_millis(1)).await;
            store.commit_turn(&turn.lease, &record).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("turn task panicked").expect("turn committed");
    }

    let session = SessionRepository::get(&store, id).await.unwrap().unwrap();
    assert_eq!(counter(&session), TURNS, "every increment survived");
    assert_eq!(session.turn_count, u64::try_from(TURNS).unwrap());
    assert_eq!(session.last_message_seq, 2 * TURNS);

    let messages = store.list_messages(id, 0, 1_000).await.unwrap();
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=2 * TURNS).collect::<Vec<_>>(),
        "contiguous, no gaps or duplicates"
    );
    for pair in messages.chunks(2) {
        assert_eq!(pair[0].role, MessageRole::User);
        assert_eq!(pair[1].role, MessageRole::Assistant);
        assert_eq!(
            pair[0].turn_id, pair[1].turn_id,
            "a turn's messages stay together"
        );
    }
    let turns: std::collections::HashSet<TurnId> = messages.iter().map(|m| m.turn_id).collect();
    assert_eq!(turns.len(), usize::try_from(TURNS).unwrap());
    assert_eq!(
        store.list_variable_snapshots(id).await.unwrap().len(),
        usize::try_from(TURNS).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_turns_serialise() {
    concurrent_turns_serialise(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_turns_serialise() {
    let db = TestDb::new().await;
    concurrent_turns_serialise(db.store().await).await;
}
