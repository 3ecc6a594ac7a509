//! What recording a turn's LLM exchanges adds to its commit: turns per second
//! through `PgStore` (claim_turn + commit_turn) whose records carry no
//! exchange against records carrying `HEARTRULE_BENCH_EXCHANGES` (3) of them,
//! each with a response of `HEARTRULE_BENCH_RESPONSE_CHARS` (600) characters
//! and, with `HEARTRULE_BENCH_PROMPTS=1`, a 4 000-character prompt (content
//! capture on). Rounds alternate between the two and the medians are
//! compared.
//!
//! ```text
//! cargo bench -p heartrule-persistence --bench commit_exchanges
//! ```
//!
//! Other settings as the `commit_turn` bench: `HEARTRULE_BENCH_CONNECTIONS`
//! (4), `HEARTRULE_BENCH_TURNS` per worker and round (300),
//! `HEARTRULE_BENCH_ROUNDS` (3), `HEARTRULE_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_domain::{ScriptRepository, Session, SessionRepository};
use heartrule_persistence::{PgConfig, PgStore};
use heartrule_testkit::db::TestDb;
use heartrule_testkit::fixtures::{
    claim, new_session, next_turn, session_script, silent_first_turn, with_exchanges,
};
use std::time::{Duration, Instant};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What each turn records.
#[derive(Clone)]
struct Recording {
    responses: Vec<String>,
    prompts: bool,
}

async fn store_turn(store: &PgStore, session: &Session, recording: &Recording) {
    let turn = claim(store, session.id).await;
    let record = next_turn(&turn.session, "How are you?", &["Fine, thanks."]);
    let responses: Vec<&str> = recording.responses.iter().map(String::as_str).collect();
    let mut record = with_exchanges(record, &responses, recording.prompts);
    for exchange in &mut record.llm_exchanges {
        if let Some(prompt) = &mut exchange.prompt {
            *prompt = prompt.repeat(4_000 / prompt.len().max(1));
        }
    }
    store.commit_turn(&turn.lease, &record).await.unwrap();
}

async fn run_round(
    store: &PgStore,
    sessions: &[Session],
    turns: usize,
    recording: &Recording,
) -> f64 {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for session in sessions {
        let (store, session, recording) = (store.clone(), session.clone(), recording.clone());
        workers.spawn(async move {
            for _ in 0..turns {
                store_turn(&store, &session, &recording).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    (sessions.len() * turns) as f64 / started.elapsed().as_secs_f64()
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
        let record = silent_first_turn(new_session(script.id, &format!("bench-{label}-{i}")));
        store.create(&record).await.unwrap();
        sessions.push(record.session);
    }
    sessions
}

fn main() {
    // `cargo test --benches` passes no `--bench`: one tiny round only.
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
    let exchanges = setting("HEARTRULE_BENCH_EXCHANGES", 3);
    let chars = setting("HEARTRULE_BENCH_RESPONSE_CHARS", 600);
    let with = Recording {
        responses: (0..exchanges)
            .map(|i| format!("{i}").repeat(chars))
            .collect(),
        prompts: setting("HEARTRULE_BENCH_PROMPTS", 0) == 1,
    };
    let without = Recording {
        responses: Vec::new(),
        prompts: false,
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
        let plain = create_sessions(&store, connections, "plain").await;
        let recorded = create_sessions(&store, connections, "recorded").await;
        println!(
            "commit-exchanges benchmark: {connections} connections, {turns} turns per worker, \
             {rounds} rounds, {exchanges} exchanges of {chars} chars per turn, prompts {}",
            with.prompts
        );
        run_round(&store, &plain, turns.min(20), &without).await;
        run_round(&store, &recorded, turns.min(20), &with).await;

        let (mut plain_rates, mut recorded_rates) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let p = run_round(&store, &plain, turns, &without).await;
            let r = run_round(&store, &recorded, turns, &with).await;
            println!(
                "round {round}: no exchanges {p:>8.1} turns/s | with exchanges {r:>8.1} turns/s"
            );
            plain_rates.push(p);
            recorded_rates.push(r);
        }
        let (p, r) = (median(&mut plain_rates), median(&mut recorded_rates));
        println!(
            "median: no exchanges {p:.1} turns/s ({:.3} ms/turn), with exchanges {r:.1} turns/s \
             ({:.3} ms/turn), ratio {:.2}",
            1_000.0 * connections as f64 / p,
            1_000.0 * connections as f64 / r,
            r / p
        );
        drop(store);
    });
}
