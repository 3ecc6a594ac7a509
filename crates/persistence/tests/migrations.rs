//! The migrations: up → down (all) → up leaves the same schema, every
//! migration is reversible, and the checked-in `src/schema.rs` matches what
//! the migrations build.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use heartrule_persistence::{revert_all_migrations, run_migrations};
use std::collections::BTreeSet;
use support::{database_url, TestDb};

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

async fn lines(conn: &mut AsyncPgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|l| l.line)
        .collect()
}

/// Columns, constraints and indexes of the public schema, one line each.
async fn schema_snapshot(db: &TestDb) -> Vec<String> {
    let mut conn = db.connection().await;
    let mut snapshot = lines(
        &mut conn,
        "SELECT concat_ws(' | ', 'column', table_name, column_name, data_type, is_nullable,
                coalesce(column_default, '-'), coalesce(character_maximum_length::text, '-'),
                is_identity) AS line
         FROM information_schema.columns WHERE table_schema = 'public'
         ORDER BY table_name, ordinal_position",
    )
    .await;
    snapshot.extend(
        lines(
            &mut conn,
            "SELECT concat_ws(' | ', 'constraint', conrelid::regclass::text, conname,
                    pg_get_constraintdef(oid)) AS line
             FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1",
        )
        .await,
    );
    snapshot.extend(
        lines(
            &mut conn,
            "SELECT concat_ws(' | ', 'index', tablename, indexname, indexdef) AS line
             FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        )
        .await,
    );
    snapshot.extend(
        lines(
            &mut conn,
            "SELECT concat_ws(' | ', 'storage', c.relname, coalesce(array_to_string(c.reloptions, ','), '-'),
                    a.attname, a.attcompression) AS line
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
               AND a.attnum > 0 AND NOT a.attisdropped
               AND (a.attcompression <> '' OR c.reloptions IS NOT NULL)
             ORDER BY 1",
        )
        .await,
    );
    snapshot
}

/// Whether this PostgreSQL server was built with lz4.
async fn server_has_lz4(conn: &mut AsyncPgConnection) -> bool {
    match diesel::sql_query("CREATE TEMPORARY TABLE lz4_probe (value text COMPRESSION lz4)")
        .execute(conn)
        .await
    {
        Ok(_) => true,
        Err(e) if e.to_string().contains("lz4") => false,
        Err(e) => panic!("probing lz4: {e}"),
    }
}

#[tokio::test]
async fn documents_rewritten_every_turn_are_compressed_with_lz4_when_the_server_can() {
    let db = TestDb::new().await;
    let mut conn = db.connection().await;
    let expected: &[&str] = if server_has_lz4(&mut conn).await {
        &[
            "idempotency_keys.response",
            "messages.metadata",
            "sessions.engine_state",
            "sessions.variables",
        ]
    } else {
        // The migration leaves the server's default in place.
        &[]
    };
    let compressed = lines(
        &mut conn,
        "SELECT c.relname || '.' || a.attname AS line
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE a.attcompression = 'l' AND c.relnamespace = 'public'::regnamespace
         ORDER BY 1",
    )
    .await;
    assert_eq!(compressed, expected);
}

/// The functions and triggers of the public schema, one line each.
async fn routines_and_triggers(db: &TestDb) -> Vec<String> {
    let mut conn = db.connection().await;
    let mut found = lines(
        &mut conn,
        "SELECT 'function | ' || proname AS line FROM pg_proc
         WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
    )
    .await;
    found.extend(
        lines(
            &mut conn,
            "SELECT concat_ws(' | ', 'trigger', tgrelid::regclass::text, tgname,
                    pg_get_triggerdef(oid)) AS line
             FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
        )
        .await,
    );
    found
}

async fn application_tables(db: &TestDb) -> Vec<String> {
    let mut conn = db.connection().await;
    lines(
        &mut conn,
        "SELECT table_name::text AS line FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'
         ORDER BY 1",
    )
    .await
}

/// How many migrations the workspace's `migrations/` folder holds.
fn migration_folders() -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter(|entry| entry.as_ref().unwrap().path().join("up.sql").is_file())
        .count()
}

#[tokio::test]
async fn up_down_up_leaves_the_same_schema() {
    let db = TestDb::empty().await;

    let applied = run_migrations(&db.url).await.unwrap();
    assert_eq!(applied.len(), migration_folders(), "{applied:?}");
    assert!(
        run_migrations(&db.url).await.unwrap().is_empty(),
        "second run applies nothing"
    );
    assert_eq!(
        application_tables(&db).await,
        [
            "audit_events",
            "failed_turns",
            "idempotency_keys",
            "llm_exchanges",
            "messages",
            "safety_deliveries",
            "script_files",
            "script_versions",
            "scripts",
            "sessions",
            "token_usage",
            "variables"
        ]
    );
    let mut first = schema_snapshot(&db).await;
    first.extend(routines_and_triggers(&db).await);
    assert!(first.iter().any(|l| l.contains("scripts_record_version")));
    assert!(first.iter().any(|l| l.contains("messages_session_seq_key")));

    let reverted = revert_all_migrations(&db.url).await.unwrap();
    let mut newest_first = applied.clone();
    newest_first.reverse();
    assert_eq!(reverted, newest_first);
    assert!(
        application_tables(&db).await.is_empty(),
        "down.sql removes everything"
    );
    assert!(
        routines_and_triggers(&db).await.is_empty(),
        "down.sql removes the functions and triggers too"
    );

    assert_eq!(run_migrations(&db.url).await.unwrap(), applied);
    let mut second = schema_snapshot(&db).await;
    second.extend(routines_and_triggers(&db).await);
    assert_eq!(second, first);
}

/// `table.column -> nullable sql type` from the checked-in diesel schema.
fn diesel_schema_columns() -> BTreeSet<String> {
    let source = include_str!("../src/schema.rs");
    let mut columns = BTreeSet::new();
    let mut table = None;
    for line in source.lines().map(str::trim) {
        if let Some(name) = line
            .strip_suffix('{')
            .and_then(|l| l.split_whitespace().next())
        {
            if !name.starts_with("diesel::") {
                table = Some(name.to_owned());
            }
        } else if line == "}" {
            table = None;
        } else if let (Some(table), Some((column, ty))) = (&table, line.split_once(" -> ")) {
            let ty = ty.trim_end_matches(',');
            let (nullable, ty) = match ty.strip_prefix("Nullable<") {
                Some(inner) => ("YES", inner.trim_end_matches('>')),
                None => ("NO", ty),
            };
            let sql = match ty {
                "Uuid" => "uuid",
                "Text" => "text",
                "Varchar" => "character varying",
                "Jsonb" => "jsonb",
                "Int4" => "integer",
                "Int8" => "bigint",
                "Timestamptz" => "timestamp with time zone",
                "Date" => "date",
                other => panic!("unexpected diesel type {other}"),
            };
            columns.insert(format!("{table}.{column} {sql} {nullable}"));
        }
    }
    columns
}

#[tokio::test]
async fn checked_in_diesel_schema_matches_the_migrations() {
    let db = TestDb::new().await;
    let mut conn = db.connection().await;
    let live: BTreeSet<String> = lines(
        &mut conn,
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable AS line
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(
        diesel_schema_columns(),
        live,
        "regenerate src/schema.rs with `diesel print-schema`"
    );
}

#[test]
fn database_urls_keep_credentials_and_options() {
    assert_eq!(
        database_url("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(database_url("postgres://h", "x"), "postgres://h/x");
}
