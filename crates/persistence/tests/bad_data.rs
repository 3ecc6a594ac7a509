//! Data PostgreSQL holds but the domain cannot use, and data PostgreSQL
//! refuses: both end in typed errors, never a panic or a partial write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use diesel_async::SimpleAsyncConnection;
use heartrule_domain::{
    MessageHistory, RepositoryError, ScriptFilter, ScriptRepository, SessionRepository,
    VariableScope, VariableValue,
};
use heartrule_persistence::PgStore;
use serde_json::json;
use support::fixtures::*;
use support::TestDb;

async fn session_in(store: &PgStore) -> heartrule_domain::Session {
    let script = session_script("bad-data");
    store.insert(&script).await.unwrap();
    let record = first_turn(new_session(script.id, "user-1"));
    store.create(&record).await.unwrap();
    record.session
}

fn is_corrupt<T: std::fmt::Debug>(result: Result<T, RepositoryError>) -> bool {
    matches!(result, Err(RepositoryError::Corrupt(_)))
}

#[tokio::test]
async fn a_20_mb_value_is_stored_whole_or_refused_whole() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let session = session_in(&store).await;
    let huge = "x".repeat(20 * 1024 * 1024);

    let turn = claim(&store, session.id).await;
    let mut record = next_turn(&turn.session, "here is a lot", &["ok"]);
    let at = record.session.updated_at;
    record.session.state.variables.set(
        "essay",
        VariableScope::Session,
        None,
        VariableValue::new(json!(huge), "ask", VariableScope::Session, at),
    );
    record.variables[0].value = json!({ "essay": huge });
    let outcome = store.commit_turn(&turn.lease, &record).await;

    let stored = SessionRepository::get(&store, session.id)
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "20 MB turn: {:?}",
        outcome.as_ref().map_err(ToString::to_string)
    );
    match outcome {
        Ok(()) => {
            assert_eq!(stored, record.session);
            let snapshots = store.list_variable_snapshots(session.id).await.unwrap();
            assert_eq!(snapshots, record.variables);
        }
        Err(error) => {
            assert!(
                matches!(
                    error,
                    RepositoryError::Query(_) | RepositoryError::Timeout(_)
                ),
                "{error:?}"
            );
            assert_eq!(stored, session);
        }
    }
}

#[tokio::test]
async fn unknown_enum_text_written_behind_the_store_is_corrupt() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let session = session_in(&store).await;
    let id = session.id;

    let mut conn = db.connection().await;
    conn.batch_execute(&format!(
        "ALTER TABLE sessions DROP CONSTRAINT sessions_status_check;
         ALTER TABLE scripts DROP CONSTRAINT scripts_script_type_check;
         ALTER TABLE messages DROP CONSTRAINT messages_role_check;
         UPDATE sessions SET status = 'zombie' WHERE id = '{id}';
         UPDATE scripts SET script_type = 'poem';
         UPDATE messages SET role = 'narrator' WHERE session_id = '{id}';"
    ))
    .await
    .unwrap();

    assert!(is_corrupt(SessionRepository::get(&store, id).await));
    assert!(is_corrupt(store.list_for_user("user-1", 10).await));
    assert!(is_corrupt(store.claim_turn(&turn_claim(id, 10)).await));
    db.wait_until_no_open_transaction().await;
    assert!(is_corrupt(
        ScriptRepository::get(&store, session.script_id).await
    ));
    assert!(is_corrupt(store.list(&ScriptFilter::default()).await));
    assert!(is_corrupt(store.list_messages(id, 0, 10).await));
    assert_eq!(store.pool_stats().in_use, 0);
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_corrupt() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let session = session_in(&store).await;
    let id = session.id;
    let mut conn = db.connection().await;

    for (column, value) in [
        ("engine_state", "'[1, 2]'"),
        ("engine_state", r#"'{"version": "one"}'"#),
        ("position", r#"'"start"'"#),
        ("variables", r#"'{"session": 5}'"#),
    ] {
        conn.batch_execute(&format!(
            "UPDATE sessions SET {column} = {value} WHERE id = '{id}'"
        ))
        .await
        .unwrap();
        let result = SessionRepository::get(&store, id).await;
        assert!(is_corrupt(result), "{column} = {value}");
        // Restore a good row for the next case.
        conn.batch_execute(&format!("DELETE FROM sessions WHERE id = '{id}'"))
            .await
            .unwrap();
        store.create(&first_turn(session.clone())).await.unwrap();
    }

    conn.batch_execute(&format!(
        r#"UPDATE scripts SET parsed_content = '{{"kind": "sonnet"}}' WHERE id = '{}'"#,
        session.script_id
    ))
    .await
    .unwrap();
    assert!(is_corrupt(
        ScriptRepository::get(&store, session.script_id).await
    ));
    conn.batch_execute(r#"UPDATE scripts SET parsed_content = '{}', tags = '[1, 2]'"#)
        .await
        .unwrap();
    assert!(is_corrupt(store.find_by_name("bad-data").await));
}

#[tokio::test]
async fn text_postgres_refuses_is_a_typed_error_and_nothing_lands() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let session = session_in(&store).await;

    // PostgreSQL text and jsonb cannot hold U+0000.
    for poison in ["nul \u{0} in text", "fine"] {
        let turn = claim(&store, session.id).await;
        let mut record = next_turn(&turn.session, poison, &["ok"]);
        if poison == "fine" {
            record.variables[0].value = json!({ "nul": "\u{0}" });
        }
        let error = store
            .commit_turn(&turn.lease, &record)
            .await
            .expect_err("PostgreSQL refuses NUL");
        assert!(matches!(error, RepositoryError::Query(_)), "{error:?}");
        store.release_turn(&turn.lease, None).await.unwrap();
    }
    db.wait_until_no_open_transaction().await;
    assert_eq!(
        SessionRepository::get(&store, session.id).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store.list_messages(session.id, 0, 10).await.unwrap().len(),
        1
    );

    // The store is fine afterwards.
    let turn = claim(&store, session.id).await;
    let record = next_turn(&turn.session, "clean", &["ok"]);
    store.commit_turn(&turn.lease, &record).await.unwrap();
}
