//! Export then erase a user on real PostgreSQL and Redis: nothing of theirs
//! is left in any table (every table of the schema is scanned, whatever it
//! is) or under the test's Redis prefix, another user's data stays, and the
//! audit record of the erasure remains.

use crate::support::{redis_keys, redis_url, Services, TestApp, TestDb};
use serde_json::{json, Value};

const GONE: &str = "privacy-erase-me";
const KEPT: &str = "privacy-keep-me";

/// Two sessions of `user` on hello.yaml, each answered once with an
/// `Idempotency-Key` and read back (which caches its snapshot); their ids.
async fn conversations(app: &TestApp, script_id: &str, user: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..2 {
        let created = app
            .post(
                "/api/sessions",
                &json!({"userId": user, "scriptId": script_id}),
            )
            .await
            .ok();
        let id = created["sessionId"].as_str().unwrap().to_owned();
        let answered = app
            .http
            .post(app.at(&format!("/api/sessions/{id}/messages")))
            .header("Idempotency-Key", format!("{user}-{n}"))
            .json(&json!({"content": format!("{user} here")}))
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 200, "{}", answered.text().await.unwrap());
        app.get(&format!("/api/sessions/{id}")).await.ok();
        ids.push(id);
    }
    ids
}

/// Every base table of the public schema.
async fn tables(db: &TestDb) -> Vec<String> {
    db.rows(
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .await
    .into_iter()
    .map(|row| row["name"].as_str().unwrap().to_owned())
    .collect()
}

/// Rows of `table` whose text (every column, JSON included) holds one of
/// `needles`.
async fn rows_holding(db: &TestDb, table: &str, needles: &[&str]) -> i64 {
    let patterns = needles
        .iter()
        .map(|n| format!("'%{n}%'"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = db
        .rows(&format!(
            "SELECT count(*)::bigint AS n FROM \"{table}\" AS r \
             WHERE r::text LIKE ANY (ARRAY[{patterns}])"
        ))
        .await;
    rows[0]["n"].as_i64().unwrap()
}

/// Every key under `prefix` with its value (strings and hashes), as text.
fn redis_contents(prefix: &str) -> Vec<(String, String)> {
    let mut connection = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis_keys(prefix)
        .into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut connection).unwrap();
            let value = match kind.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query::<Option<String>>(&mut connection)
                    .unwrap()
                    .unwrap_or_default(),
                "hash" => redis::cmd("HGETALL")
                    .arg(&key)
                    .query::<Vec<String>>(&mut connection)
                    .unwrap()
                    .join("\n"),
                // Expired between the scan and the read.
                "none" => String::new(),
                other => panic!("unexpected Redis type {other} of {key}"),
            };
            (key, value)
        })
        .collect()
}

fn sorted(value: &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session"]["sessionId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn export_then_erase_a_user_leaves_nothing_of_theirs_but_the_audit_record() {
    let services = Services::new().await;
    let app = TestApp::start(&services.env()).await;
    let db = &services.db;
    let script_id = app.script_id("hello").await;
    let mut gone = conversations(&app, &script_id, GONE).await;
    let kept = conversations(&app, &script_id, KEPT).await;
    gone.sort();

    // The data is there to be found: rows in the tables and cached snapshots.
    let mut needles: Vec<&str> = gone.iter().map(String::as_str).collect();
    needles.push(GONE);
    assert!(rows_holding(db, "messages", &needles).await >= 4);
    assert_eq!(rows_holding(db, "idempotency_keys", &needles).await, 2);
    let cached = redis_contents(&services.redis_prefix);
    for id in &gone {
        assert!(
            cached
                .iter()
                .any(|(key, _)| key.ends_with(&format!("session:{id}"))),
            "the snapshot of {id} is cached: {cached:?}"
        );
    }

    let export = app
        .get(&format!(
            "/api/admin/users/{GONE}/export?includeSensitive=true"
        ))
        .await
        .ok();
    assert_eq!(export["userId"], GONE);
    assert_eq!(sorted(&export["sessions"]), gone);
    for session in export["sessions"].as_array().unwrap() {
        assert!(
            session["messages"].as_array().unwrap().len() >= 2,
            "{session}"
        );
        assert!(!session["variableHistory"].as_array().unwrap().is_empty());
    }

    let erased = app
        .http
        .delete(app.at(&format!("/api/admin/users/{GONE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let erased: Value = erased.json().await.unwrap();
    assert_eq!(erased["erased"]["sessions"], 2, "{erased}");
    assert_eq!(erased["erased"]["idempotencyKeys"], 2, "{erased}");
    assert!(
        erased["erased"]["cacheKeys"].as_u64().unwrap() >= 2,
        "{erased}"
    );

    // No table holds a row naming the user or one of their sessions, except
    // the audit log, which names the user (never a session) in its records.
    let all_tables = tables(db).await;
    assert!(
        all_tables.contains(&"sessions".to_owned()),
        "{all_tables:?}"
    );
    for table in &all_tables {
        let left = if table == "audit_events" {
            rows_holding(
                db,
                table,
                &gone.iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .await
        } else {
            rows_holding(db, table, &needles).await
        };
        assert_eq!(left, 0, "{table} still holds data of {GONE}");
    }
    for (key, value) in redis_contents(&services.redis_prefix) {
        for needle in &needles {
            assert!(
                !key.contains(needle) && !value.contains(needle),
                "Redis key {key} still holds {needle}"
            );
        }
    }

    // The audit record of the erasure (and of the export) remains.
    let audit = db
        .rows(&format!(
            "SELECT action, actor_subject FROM audit_events \
             WHERE target_type = 'user' AND target_id = '{GONE}' ORDER BY occurred_at"
        ))
        .await;
    assert_eq!(
        audit,
        vec![
            json!({"action": "user.export", "actor_subject": "local-operator"}),
            json!({"action": "user.erase", "actor_subject": "local-operator"}),
        ]
    );
    let listed = app
        .get(&format!(
            "/api/admin/audit-events?targetType=user&targetId={GONE}&action=user.erase"
        ))
        .await
        .ok();
    assert_eq!(listed["events"][0]["id"], erased["auditEventId"]);

    // The other user is untouched, in the store and in the cache.
    for id in &kept {
        app.get(&format!("/api/sessions/{id}")).await.ok();
    }
    let kept_export = app
        .get(&format!("/api/admin/users/{KEPT}/export"))
        .await
        .ok();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(sorted(&kept_export["sessions"]), kept_sorted);
    let kept_needles: Vec<&str> = kept.iter().map(String::as_str).collect();
    assert!(rows_holding(db, "messages", &kept_needles).await >= 4);
    let cached = redis_contents(&services.redis_prefix);
    assert!(cached
        .iter()
        .any(|(key, _)| key.ends_with(&format!("session:{}", kept[0]))));

    app.stop().await;
}
