//! Turns hold nothing while the LLM thinks: a session is claimed with a
//! lease, not a row lock, so a small pool serves many slow turns, a second
//! message to a busy session is answered at once with `TURN_IN_PROGRESS`,
//! a dead instance's lease lapses, a late commit is refused by the fence,
//! and two server processes on one database never lose or duplicate a
//! message.

use crate::process::{answers_health, serving};
use crate::support::counselor::counselor;
use crate::support::{
    closed_port, eventually, require_redis, rows, FakeServer, Response, Services, TestApp, TestDb,
};
use futures::future::join_all;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Stores the question script through `base` and returns its id.
async fn store_question_script(http: &reqwest::Client, base: &str, questions: usize) -> String {
    let stored = Response::read(
        http.post(format!("{base}/api/scripts"))
            .json(&json!({
                "scriptName": format!("questions-{}", heartrule_domain::ScriptId::new_random()),
                "scriptType": "session",
                "scriptContent": heartrule_testkit::question_script("lease_test", questions),
                "author": "lease tests",
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    stored.json()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("script not stored: {}", stored.text))
        .to_owned()
}

async fn create_session(http: &reqwest::Client, base: &str, script_id: &str) -> String {
    let created = Response::read(
        http.post(format!("{base}/api/sessions"))
            .json(&json!({"userId": "lease-user", "scriptId": script_id}))
            .send()
            .await
            .unwrap(),
    )
    .await
    .ok();
    created["sessionId"].as_str().unwrap().to_owned()
}

async fn send(http: &reqwest::Client, base: &str, session: &str, content: &str) -> Response {
    Response::read(
        http.post(format!("{base}/api/sessions/{session}/messages"))
            .json(&json!({ "content": content }))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The stored conversation of `session`, oldest first: (seq, role, content).
async fn history(db: &TestDb, session: &str) -> Vec<(i64, String, String)> {
    rows(
        db,
        &format!(
            "SELECT seq, role, content FROM messages WHERE session_id = '{session}' ORDER BY seq"
        ),
    )
    .await
    .into_iter()
    .map(|row| {
        (
            row["seq"].as_i64().unwrap(),
            row["role"].as_str().unwrap().to_owned(),
            row["content"].as_str().unwrap().to_owned(),
        )
    })
    .collect()
}

fn user_messages(history: &[(i64, String, String)]) -> Vec<String> {
    history
        .iter()
        .filter(|(_, role, _)| role == "user")
        .map(|(_, _, content)| content.clone())
        .collect()
}

fn assert_contiguous(history: &[(i64, String, String)]) {
    let seqs: Vec<i64> = history.iter().map(|(seq, _, _)| *seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(seqs.len()).unwrap()).collect();
    assert_eq!(seqs, expected, "seq is contiguous from 1");
}

/// A fake LLM that answers like a counselor after a delay the test can change.
async fn slow_llm(delay: &Arc<AtomicU64>) -> FakeServer {
    let delay = Arc::clone(delay);
    FakeServer::start(move |_, request| {
        counselor(request).delayed(Duration::from_millis(delay.load(Ordering::SeqCst)))
    })
    .await
}

/// An in-process server on the `openai` provider against [`slow_llm`], and
/// a session on a five-question script.
async fn app_with_a_session(
    services: &Services,
    delay: &Arc<AtomicU64>,
) -> (FakeServer, TestApp, String) {
    let llm = slow_llm(delay).await;
    let app = TestApp::start(
        &services
            .env()
            .openai(llm.base_url())
            .set("HEARTRULE__LLM__OPENAI__TIMEOUT", "10s"),
    )
    .await;
    let script = store_question_script(&app.http, &app.url, 5).await;
    let session = create_session(&app.http, &app.url, &script).await;
    (llm, app, session)
}

#[actix_web::test]
async fn a_pool_of_four_serves_64_sessions_whose_llm_takes_300ms() {
    let services = Services::new().await;
    let delay = Arc::new(AtomicU64::new(300));
    let llm = slow_llm(&delay).await;
    let app = TestApp::start(
        &services
            .env()
            .openai(llm.base_url())
            .set("HEARTRULE__LLM__OPENAI__TIMEOUT", "10s")
            .set("HEARTRULE__LLM__RESILIENCE__CONCURRENCY_LIMIT", "256")
            .set("HEARTRULE__DATABASE__MAX_CONNECTIONS", "4")
            .set("HEARTRULE__DATABASE__ACQUIRE_TIMEOUT", "2s")
            // 256 LLM-calling requests at once from one address: this
            // measures the pool, not the rate limits.
            .set("HEARTRULE__RATE_LIMITS__ENABLED", "false"),
    )
    .await;
    let script = store_question_script(&app.http, &app.url, 10).await;

    const SESSIONS: usize = 64;
    const TURNS: usize = 3;
    let runs = (0..SESSIONS).map(|client| {
        let (http, base, script) = (app.http.clone(), app.url.clone(), script.clone());
        async move {
            let session = create_session(&http, &base, &script).await;
            let mut statuses = Vec::new();
            for turn in 0..TURNS {
                let response = send(&http, &base, &session, &format!("c{client} t{turn}")).await;
                statuses.push((response.status.as_u16(), response.text));
            }
            (session, statuses)
        }
    });
    let results = join_all(runs).await;
    for (session, statuses) in &results {
        for (status, body) in statuses {
            assert_eq!(*status, 200, "session {session}: {body}");
        }
        let stored = history(&services.db, session).await;
        assert_contiguous(&stored);
        assert_eq!(user_messages(&stored).len(), TURNS);
    }
    assert!(
        llm.max_in_flight() > 4,
        "more LLM calls ran at once ({}) than the pool has connections: turns hold none",
        llm.max_in_flight()
    );
    app.stop().await;
}

#[actix_web::test]
async fn twenty_messages_at_once_on_one_session_commit_one_and_answer_19_with_409_at_once() {
    let services = Services::new().await;
    let delay = Arc::new(AtomicU64::new(0));
    let (_llm, app, session) = app_with_a_session(&services, &delay).await;
    let latency = Duration::from_millis(1000);
    delay.store(
        u64::try_from(latency.as_millis()).unwrap(),
        Ordering::SeqCst,
    );

    let sends = (0..20).map(|i| {
        let (http, base, session) = (app.http.clone(), app.url.clone(), session.clone());
        async move {
            let started = Instant::now();
            let response = send(&http, &base, &session, &format!("message {i}")).await;
            (i, response, started.elapsed())
        }
    });
    let outcomes = join_all(sends).await;
    let mut committed = Vec::new();
    for (i, response, took) in &outcomes {
        match response.status.as_u16() {
            200 => committed.push(format!("message {i}")),
            409 => {
                let body = response.error(409, "TURN_IN_PROGRESS");
                assert_eq!(body["error"]["recovery"]["canRetry"], true, "{body}");
                assert_eq!(response.header("retry-after"), Some("1"));
                assert!(
                    *took < latency,
                    "a busy session answers before the running turn's LLM call ({took:?})"
                );
            }
            other => panic!("message {i}: unexpected {other}: {}", response.text),
        }
    }
    assert_eq!(committed.len(), 1, "exactly one message commits");
    let stored = history(&services.db, &session).await;
    assert_contiguous(&stored);
    assert_eq!(user_messages(&stored), committed);
    app.stop().await;
}

#[actix_web::test]
async fn an_idempotent_retry_is_409_while_the_first_runs_then_the_stored_replay() {
    let services = Services::new().await;
    let delay = Arc::new(AtomicU64::new(0));
    let (llm, app, session) = app_with_a_session(&services, &delay).await;
    delay.store(800, Ordering::SeqCst);

    let keyed = |content: &str| {
        app.http
            .post(app.at(&format!("/api/sessions/{session}/messages")))
            .header("Idempotency-Key", "retry-1")
            .json(&json!({ "content": content }))
            .send()
    };
    let first = tokio::spawn(keyed("only once"));
    eventually(
        Duration::from_secs(5),
        "the first turn reaches the LLM",
        || {
            let seen = llm.request_count();
            async move { seen >= 3 }
        },
    )
    .await;
    let retry = Response::read(keyed("only once").await.unwrap()).await;
    retry.error(409, "TURN_IN_PROGRESS");

    let first = Response::read(first.await.unwrap().unwrap()).await;
    let first_body = first.ok();
    let replay = Response::read(keyed("only once").await.unwrap()).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let replay_body = replay.ok();
    assert_eq!(replay_body["aiMessage"], first_body["aiMessage"]);
    let stored = history(&services.db, &session).await;
    assert_eq!(user_messages(&stored), ["only once"]);
    app.stop().await;
}

/// A `heartrule` server process.
struct Instance {
    child: Child,
    pid: u32,
    base: String,
}

impl Instance {
    async fn start(db: &TestDb, llm: &FakeServer, redis_prefix: &str) -> Self {
        let port = closed_port();
        let mut child = serving(&db.url, llm.base_url(), redis_prefix, port)
            .env("RUST_LOG", "error")
            .env("HEARTRULE__SERVER__WORKERS", "2")
            .env("HEARTRULE__ENGINE__TURN_LEASE", "2s")
            .env("HEARTRULE__LLM__OPENAI__TIMEOUT", "10s")
            .env("HEARTRULE__LLM__RESILIENCE__MAX_RETRIES", "0")
            // Clients retry each 409 within milliseconds, from one address:
            // limits would answer 429 and say nothing about leases.
            .env("HEARTRULE__RATE_LIMITS__ENABLED", "false")
            .spawn()
            .expect("the heartrule binary starts");
        let pid = child.id().expect("a running child");
        let base = format!("http://127.0.0.1:{port}");
        answers_health(&base).await;
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited at start-up: {status}");
        }
        Self { child, pid, base }
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }
}

fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[actix_web::test]
async fn a_dead_instance_lease_lapses_and_a_late_commit_is_refused_by_the_fence() {
    require_redis().await;
    let services = Services::new().await;
    let delay = Arc::new(AtomicU64::new(0));
    let llm = slow_llm(&delay).await;
    let frozen = Instance::start(&services.db, &llm, &services.redis_prefix).await;
    let survivor = Instance::start(&services.db, &llm, &services.redis_prefix).await;
    let http = patient_client();
    let script = store_question_script(&http, &survivor.base, 10).await;
    let session = create_session(&http, &survivor.base, &script).await;

    // A turn on the frozen instance reaches the LLM, then its process stops
    // (as a stalled VM would) for longer than the lease.
    delay.store(300, Ordering::SeqCst);
    let before = llm.request_count();
    let late = tokio::spawn({
        let (http, base, session) = (http.clone(), frozen.base.clone(), session.clone());
        async move { send(&http, &base, &session, "the late words").await }
    });
    eventually(Duration::from_secs(5), "the turn reaches the LLM", || {
        let seen = llm.request_count();
        async move { seen > before }
    })
    .await;
    frozen.signal("STOP");
    delay.store(0, Ordering::SeqCst);
    send(&http, &survivor.base, &session, "too early")
        .await
        .error(409, "TURN_IN_PROGRESS");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The lease lapsed: the other instance takes the session over.
    send(&http, &survivor.base, &session, "taken over")
        .await
        .ok();
    frozen.signal("CONT");
    let late = late.await.unwrap();
    let body = late.error(409, "CONFLICT");
    assert_eq!(body["error"]["recovery"]["canRetry"], true, "{body}");
    let stored = history(&services.db, &session).await;
    assert_contiguous(&stored);
    assert_eq!(user_messages(&stored), ["taken over"]);
    let failed = rows(
        &services.db,
        &format!("SELECT user_input FROM failed_turns WHERE session_id = '{session}'"),
    )
    .await;
    assert_eq!(failed, [json!({"user_input": "the late words"})]);

    // SIGKILL mid-turn: the dead instance's lease holds the session until
    // it lapses, then the session is free again.
    delay.store(3000, Ordering::SeqCst);
    let before = llm.request_count();
    let dying = tokio::spawn({
        let (http, base, session) = (http.clone(), frozen.base.clone(), session.clone());
        async move {
            http.post(format!("{base}/api/sessions/{session}/messages"))
                .json(&json!({"content": "never answered"}))
                .send()
                .await
        }
    });
    eventually(Duration::from_secs(5), "the turn reaches the LLM", || {
        let seen = llm.request_count();
        async move { seen > before }
    })
    .await;
    frozen.signal("KILL");
    assert!(
        dying.await.unwrap().is_err(),
        "the killed server never answers"
    );
    delay.store(0, Ordering::SeqCst);
    send(&http, &survivor.base, &session, "still held")
        .await
        .error(409, "TURN_IN_PROGRESS");
    let lease_claimed = Instant::now();
    let mut after_lapse = send(&http, &survivor.base, &session, "after the lapse").await;
    while after_lapse.status == 409 && lease_claimed.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after_lapse = send(&http, &survivor.base, &session, "after the lapse").await;
    }
    after_lapse.ok();
    let stored = history(&services.db, &session).await;
    assert_contiguous(&stored);
    assert_eq!(user_messages(&stored), ["taken over", "after the lapse"]);
    drop(frozen.child);
}

#[actix_web::test]
async fn two_server_processes_on_one_database_lose_and_duplicate_nothing() {
    require_redis().await;
    let services = Services::new().await;
    let delay = Arc::new(AtomicU64::new(20));
    let llm = slow_llm(&delay).await;
    let a = Instance::start(&services.db, &llm, &services.redis_prefix).await;
    let b = Instance::start(&services.db, &llm, &services.redis_prefix).await;
    let bases = [a.base.clone(), b.base.clone()];
    let http = patient_client();
    let script = store_question_script(&http, &a.base, 30).await;

    const SESSIONS: usize = 3;
    const CLIENTS: usize = 4;
    const TURNS_PER_CLIENT: usize = 4;
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(create_session(&http, &a.base, &script).await);
    }
    let clients = sessions.iter().flat_map(|session| {
        (0..CLIENTS).map(|client| {
            let (http, bases, session) = (http.clone(), bases.clone(), session.clone());
            async move {
                let mut sent = Vec::new();
                let mut attempt = 0usize;
                while sent.len() < TURNS_PER_CLIENT {
                    // Alternate instances, so every session is driven
                    // through both at once.
                    let base = &bases[(client + attempt) % bases.len()];
                    attempt += 1;
                    let content = format!("client {client} turn {}", sent.len());
                    let response = send(&http, base, &session, &content).await;
                    match response.status.as_u16() {
                        200 => sent.push(content),
                        409 => {
                            response.error(409, "TURN_IN_PROGRESS");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        other => panic!("unexpected {other}: {}", response.text),
                    }
                    assert!(attempt < 10_000, "a client made no progress");
                }
                (session, sent)
            }
        })
    });
    let results: Vec<(String, Vec<String>)> = join_all(clients).await;
    for session in &sessions {
        let mut expected: Vec<String> = results
            .iter()
            .filter(|(s, _)| s == session)
            .flat_map(|(_, sent)| sent.clone())
            .collect();
        let stored = history(&services.db, session).await;
        assert_contiguous(&stored);
        let mut users = user_messages(&stored);
        assert_eq!(
            users.len(),
            CLIENTS * TURNS_PER_CLIENT,
            "nothing lost or doubled"
        );
        users.sort();
        expected.sort();
        assert_eq!(users, expected);
        let turns: Vec<Value> = rows(
            &services.db,
            &format!("SELECT turn_count, lease_owner FROM sessions WHERE id = '{session}'"),
        )
        .await;
        assert_eq!(
            turns[0]["turn_count"],
            json!(1 + CLIENTS * TURNS_PER_CLIENT),
            "every committed turn counted once"
        );
        assert_eq!(turns[0]["lease_owner"], Value::Null, "no lease left behind");
    }
}

#[actix_web::test]
async fn a_busy_session_is_409_for_sse_before_any_event_and_an_error_frame_on_websocket() {
    use awc::ws::{Frame, Message};
    use futures::{SinkExt, StreamExt};

    let services = Services::new().await;
    let delay = Arc::new(AtomicU64::new(0));
    let (llm, app, session) = app_with_a_session(&services, &delay).await;
    delay.store(1500, Ordering::SeqCst);
    let before = llm.request_count();
    let running = tokio::spawn({
        let (http, base, session) = (app.http.clone(), app.url.clone(), session.clone());
        async move { send(&http, &base, &session, "the running turn").await }
    });
    eventually(Duration::from_secs(5), "the turn reaches the LLM", || {
        let seen = llm.request_count();
        async move { seen > before }
    })
    .await;

    // SSE: a plain JSON 409, not a 200 stream with an error event.
    let stream = Response::read(
        app.http
            .post(app.at("/api/chat/stream"))
            .json(&json!({"sessionId": session, "message": "streamed meanwhile"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    stream.error(409, "TURN_IN_PROGRESS");
    assert_eq!(stream.header("retry-after"), Some("1"));

    // WebSocket: the socket stays open and answers with an error frame.
    let ws_url = app
        .at(&format!("/api/sessions/{session}/ws"))
        .replace("http://", "ws://");
    let (_, mut socket) = awc::Client::new().ws(ws_url).connect().await.unwrap();
    socket
        .send(Message::Text(
            json!({"type": "message", "content": "typed meanwhile"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let error = loop {
        let frame = tokio::time::timeout(Duration::from_secs(1), socket.next())
            .await
            .expect("an answer before the running turn ends")
            .expect("the socket stays open")
            .unwrap();
        match frame {
            Frame::Text(bytes) => break serde_json::from_slice::<Value>(&bytes).unwrap(),
            Frame::Ping(bytes) => socket.send(Message::Pong(bytes)).await.unwrap(),
            other => panic!("unexpected frame {other:?}"),
        }
    };
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["code"], "TURN_IN_PROGRESS", "{error}");
    socket.send(Message::Close(None)).await.unwrap();

    running.await.unwrap().ok();
    let stored = history(&services.db, &session).await;
    assert_eq!(user_messages(&stored), ["the running turn"]);
    app.stop().await;
}
