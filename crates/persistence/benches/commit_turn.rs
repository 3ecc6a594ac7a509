//! Turns per second through `PgStore` (claim_turn + commit_turn: two round
//! trips, no transaction held) against the statements of a lock-holding turn
//! sent raw through diesel-async `sql_query`, with the same number of
//! connections, in one run.
//!
//! ```text
//! cargo bench -p heartrule-persistence --bench commit_turn
//! ```
//!
//! Each worker runs turns on its own session (so the figure is the cost of
//! the storage path, not of lease conflicts). The raw path is the design the
//! lease replaced: BEGIN, SELECT … FOR UPDATE, INSERT of one user and one AI
//! message, INSERT of one variable snapshot, UPDATE of the session row,
//! COMMIT. Rounds alternate between the two paths and
//! the medians are compared. Settings (environment):
//! `HEARTRULE_BENCH_CONNECTIONS` (4), `HEARTRULE_BENCH_TURNS` per worker and
//! round (300), `HEARTRULE_BENCH_ROUNDS` (3), and the server through
//! `HEARTRULE_TEST_DATABASE_URL` like the tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use heartrule_domain::{ScriptRepository, Session, SessionRepository};
use heartrule_persistence::{PgConfig, PgStore};
use heartrule_testkit::db::TestDb;
use heartrule_testkit::fixtures::{
    claim, new_session, next_turn, session_script, silent_first_turn,
};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The session row as the raw path reads it: columns, no domain decoding
/// beyond what the driver does.
#[derive(QueryableByName)]
#[allow(dead_code)]
struct RawSessionRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = SqlUuid)]
    script_id: Uuid,
    #[diesel(sql_type = Text)]
    script_hash: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    execution_status: String,
    #[diesel(sql_type = Jsonb)]
    position: Value,
    #[diesel(sql_type = Jsonb)]
    variables: Value,
    #[diesel(sql_type = Jsonb)]
    engine_state: Value,
    #[diesel(sql_type = BigInt)]
    turn_count: i64,
    #[diesel(sql_type = BigInt)]
    last_message_seq: i64,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    completed_at: Option<DateTime<Utc>>,
}

const SELECT_FOR_UPDATE: &str =
    "SELECT id, user_id, script_id, script_hash, status, execution_status, \
     position, variables, engine_state, turn_count, last_message_seq, last_error, created_at, \
     updated_at, completed_at FROM sessions WHERE id = $1 FOR UPDATE";
const INSERT_MESSAGES: &str = "INSERT INTO messages (id, session_id, seq, turn_id, role, content, \
     action_id, action_type, metadata, created_at) VALUES \
     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20)";
const INSERT_VARIABLE: &str = "INSERT INTO variables (session_id, turn_id, variable_name, scope, \
     scope_key, value, value_type, source, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const UPDATE_SESSION: &str = "UPDATE sessions SET script_hash = $1, status = $2, \
     execution_status = $3, position = $4, variables = $5, engine_state = $6, turn_count = $7, \
     last_message_seq = $8, last_error = NULL, updated_at = $9, completed_at = $10 WHERE id = $11";

/// One turn through the store, as the session manager runs it.
async fn store_turn(store: &PgStore, session: &Session) {
    let turn = claim(store, session.id).await;
    let record = next_turn(&turn.session, "How are you?", &["Fine, thanks."]);
    store.commit_turn(&turn.lease, &record).await.unwrap();
}

/// The same statements sent raw. `session` is the worker's copy of the row,
/// kept current so the record (and its seqs) match what the store would
/// build.
async fn raw_turn(conn: &mut AsyncPgConnection, session: &mut Session) {
    conn.batch_execute("BEGIN").await.unwrap();
    let row: RawSessionRow = diesel::sql_query(SELECT_FOR_UPDATE)
        .bind::<SqlUuid, _>(session.id.as_uuid())
        .get_result(conn)
        .await
        .unwrap();
    assert_eq!(row.last_message_seq, session.last_message_seq);
    let record = next_turn(session, "How are you?", &["Fine, thanks."]);

    let [user, ai] = [&record.messages[0], &record.messages[1]];
    let mut insert = diesel::sql_query(INSERT_MESSAGES).into_boxed();
    for m in [user, ai] {
        insert = insert
            .bind::<SqlUuid, _>(m.id.as_uuid())
            .bind::<SqlUuid, _>(m.session_id.as_uuid())
            .bind::<BigInt, _>(m.seq)
            .bind::<SqlUuid, _>(m.turn_id.as_uuid())
            .bind::<Text, _>(m.role.as_str())
            .bind::<Text, _>(m.content.clone())
            .bind::<Nullable<Text>, _>(m.action_id.clone())
            .bind::<Nullable<Text>, _>(m.action_type.map(|t| t.as_str()))
            .bind::<Jsonb, _>(m.metadata.clone())
            .bind::<Timestamptz, _>(m.created_at);
    }
    insert.execute(conn).await.unwrap();

    let v = &record.variables[0];
    diesel::sql_query(INSERT_VARIABLE)
        .bind::<SqlUuid, _>(v.session_id.as_uuid())
        .bind::<SqlUuid, _>(v.turn_id.as_uuid())
        .bind::<Text, _>(&v.name)
        .bind::<Text, _>(v.scope.as_str())
        .bind::<Nullable<Text>, _>(v.scope_key.as_deref())
        .bind::<Jsonb, _>(&v.value)
        .bind::<Text, _>(v.value_type.as_str())
        .bind::<Text, _>(&v.source)
        .bind::<Timestamptz, _>(v.created_at)
        .execute(conn)
        .await
        .unwrap();

    let next = &record.session;
    let mut rest = serde_json::to_value(&next.state).unwrap();
    let rest_map = rest.as_object_mut().unwrap();
    rest_map.remove("status");
    let position = rest_map.remove("position").unwrap();
    let variables = rest_map.remove("variables").unwrap();
    diesel::sql_query(UPDATE_SESSION)
        .bind::<Text, _>(&next.script_hash)
        .bind::<Text, _>(next.status.as_str())
        .bind::<Text, _>(next.state.status.as_str())
        .bind::<Jsonb, _>(position)
        .bind::<Jsonb, _>(variables)
        .bind::<Jsonb, _>(rest)
        .bind::<BigInt, _>(i64::try_from(next.turn_count).unwrap())
        .bind::<BigInt, _>(next.last_message_seq)
        .bind::<Timestamptz, _>(next.updated_at)
        .bind::<Nullable<Timestamptz>, _>(next.completed_at)
        .bind::<SqlUuid, _>(next.id.as_uuid())
        .execute(conn)
        .await
        .unwrap();
    conn.batch_execute("COMMIT").await.unwrap();
    *session = record.session;
}

async fn run_store_round(store: &PgStore, sessions: &[Session], turns: usize) -> f64 {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for session in sessions {
        let (store, session) = (store.clone(), session.clone());
        workers.spawn(async move {
            for _ in 0..turns {
                store_turn(&store, &session).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    (sessions.len() * turns) as f64 / started.elapsed().as_secs_f64()
}

async fn run_raw_round(connections: &mut Vec<(AsyncPgConnection, Session)>, turns: usize) -> f64 {
    let count = connections.len();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (mut conn, mut session) in connections.drain(..) {
        workers.spawn(async move {
            for _ in 0..turns {
                raw_turn(&mut conn, &mut session).await;
            }
            (conn, session)
        });
    }
    while let Some(done) = workers.join_next().await {
        connections.push(done.unwrap());
    }
    (count * turns) as f64 / started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn create_sessions(store: &PgStore, count: usize, label: &str) -> Vec<Session> {
    let script = session_script(&format!("bench-{label}"));
    store.insert(&script).await.unwrap();
    let mut sessions = Vec::new();
    for i in 0..count {
        let record = silent_first_turn(new_session(script.id, &format!("bench-{i}")));
        store.create(&record).await.unwrap();
        sessions.push(record.session);
    }
    sessions
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and should only check that this builds and runs one tiny round.
    let quick = !std::env::args().any(|a| a == "--bench");
    let connections = setting("HEARTRULE_BENCH_CONNECTIONS", 4);
    let turns = if quick {
        5
    } else {
        setting("HEARTRULE_BENCH_TURNS", 300)
    };
    let rounds = if quick {
        1
    } else {
        setting("HEARTRULE_BENCH_ROUNDS", 3)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = TestDb::new().await;
        let store = PgStore::connect(PgConfig {
            max_connections: connections,
            acquire_timeout: Duration::from_secs(30),
            ..db.config()
        })
        .await
        .unwrap();
        let store_sessions = create_sessions(&store, connections, "store").await;
        let mut raw = Vec::new();
        for session in create_sessions(&store, connections, "raw").await {
            let conn = AsyncPgConnection::establish(&db.url).await.unwrap();
            raw.push((conn, session));
        }

        println!(
            "commit-turn benchmark: {connections} connections, {turns} turns per worker, {rounds} rounds"
        );
        // Warm-up: fills both statement caches and the pool.
        run_store_round(&store, &store_sessions, turns.min(20)).await;
        run_raw_round(&mut raw, turns.min(20)).await;

        let (mut through_store, mut through_raw) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let s = run_store_round(&store, &store_sessions, turns).await;
            let r = run_raw_round(&mut raw, turns).await;
            println!("round {round}: PgStore {s:>8.1} turns/s | raw SQL {r:>8.1} turns/s");
            through_store.push(s);
            through_raw.push(r);
        }
        let (s, r) = (median(&mut through_store), median(&mut through_raw));
        let ratio = s / r;
        println!(
            "median: PgStore {s:.1} turns/s, raw SQL {r:.1} turns/s, ratio {ratio:.2} (goal >= 0.80: {})",
            if ratio >= 0.8 { "met" } else { "NOT met" }
        );
        drop(raw);
        drop(store);
    });
}
