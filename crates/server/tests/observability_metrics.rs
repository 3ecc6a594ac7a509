//! `/metrics` of the real server (PostgreSQL, Redis, a fake OpenAI server),
//! parsed strictly as Prometheus exposition: known requests move the HTTP,
//! turn, GenAI token and cache series by the expected amounts with the
//! expected labels, and routes are labelled by template, never by id. One
//! global telemetry (metrics recorder) per test binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support_obs;

use heartrule_telemetry::testing::{CapturedLogs, Exposition};
use heartrule_telemetry::{
    init_with_writer, LogConfig, MetricsConfig, TelemetryConfig, TraceConfig,
};
use support_obs::{
    app_config, fake_llm, send, Client, RunningServer, TestDb, TestRedis, COMPLETION_TOKENS,
    FAKE_MODEL, FAKE_PROVIDER, PROMPT_TOKENS,
};

const HTTP_DURATION: &str = "http_server_request_duration_seconds";
const MESSAGES_ROUTE: &str = "/api/sessions/{id}/messages";

fn telemetry_config() -> TelemetryConfig {
    TelemetryConfig {
        log: LogConfig {
            level: "warn".to_owned(),
            ..LogConfig::default()
        },
        traces: TraceConfig {
            enabled: false,
            ..TraceConfig::default()
        },
        metrics: MetricsConfig { enabled: true },
        ..TelemetryConfig::default()
    }
}

async fn scrape(client: &Client) -> Exposition {
    let reply = send(client.get("/metrics")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Exposition::parse(&reply.text).unwrap_or_else(|e| panic!("{e}\n{}", reply.text))
}

/// The value of the sample, 0 when the series does not exist yet.
fn value(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition.value(name, labels).unwrap_or(0.0)
}

fn moved(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_requests_move_http_turn_token_and_cache_metrics() {
    let logs = CapturedLogs::default();
    let telemetry_config = telemetry_config();
    let telemetry = init_with_writer(
        &telemetry_config,
        &heartrule_server::metrics_catalogue().unwrap(),
        logs.clone(),
    )
    .unwrap();
    let database = TestDb::new().await;
    let redis = TestRedis::new().await;
    let llm = fake_llm().await;
    let config = app_config(&database, &redis, &llm, telemetry_config);
    let server = RunningServer::start(&config, telemetry.metrics_renderer()).await;
    let client = Client::new(&server);

    let script_id = client.create_script().await;
    let before = scrape(&client).await;
    let llm_calls_before = llm.request_count();

    let session_id = client.create_session(&script_id).await;
    client.post_message(&session_id, "first answer", None).await;
    client
        .post_message(&session_id, "second answer", None)
        .await;
    // Twice: the last turn dropped the cached snapshot, so the first read
    // refills it and the second finds it.
    for _ in 0..2 {
        let session = send(client.get(&format!("/api/sessions/{session_id}"))).await;
        assert_eq!(session.status, 200, "{}", session.text);
    }
    let missing = send(client.get(&format!("/api/sessions/{session_id}/nowhere"))).await;
    assert_eq!(missing.status, 404);

    let after = scrape(&client).await;
    let llm_calls = (llm.request_count() - llm_calls_before) as f64;
    assert!(llm_calls >= 3.0, "every turn called the LLM ({llm_calls})");

    // HTTP: one histogram observation per request, labelled by template.
    let count = format!("{HTTP_DURATION}_count");
    for (method, route, status, expected) in [
        ("POST", "/api/sessions", "200", 1.0),
        ("POST", MESSAGES_ROUTE, "200", 2.0),
        ("GET", "/api/sessions/{id}", "200", 2.0),
        ("GET", "unmatched", "404", 1.0),
        ("GET", "/metrics", "200", 1.0),
    ] {
        let labels = [("method", method), ("route", route), ("status", status)];
        assert_eq!(
            moved(&before, &after, &count, &labels),
            expected,
            "{method} {route} {status}"
        );
    }
    assert_eq!(before.types[HTTP_DURATION], "histogram");
    let buckets = after.histogram_buckets(
        HTTP_DURATION,
        &[
            ("method", "POST"),
            ("route", MESSAGES_ROUTE),
            ("status", "200"),
        ],
    );
    assert_eq!(buckets.last().map(|bucket| bucket.1), Some(2.0));
    for sample in &after.samples {
        for (label, label_value) in &sample.labels {
            assert!(
                !label_value.contains(&session_id) && !label_value.contains(&script_id),
                "raw id in {}{{{label}={label_value:?}}}",
                sample.name
            );
        }
    }

    // Turns: the session's first turn and two messages were committed.
    assert_eq!(
        moved(
            &before,
            &after,
            "heartrule_turns_total",
            &[("outcome", "committed")]
        ),
        3.0
    );
    assert_eq!(
        moved(&before, &after, "heartrule_sessions_created_total", &[]),
        1.0
    );

    // GenAI tokens: one observation per call and token type, summing the usage
    // the fake LLM reported.
    let tokens = |token_type: &'static str| {
        [
            ("gen_ai_operation_name", "chat"),
            ("gen_ai_provider_name", FAKE_PROVIDER),
            ("gen_ai_request_model", FAKE_MODEL),
            ("gen_ai_token_type", token_type),
        ]
    };
    for (token_type, per_call) in [("input", PROMPT_TOKENS), ("output", COMPLETION_TOKENS)] {
        let labels = tokens(token_type);
        assert_eq!(
            moved(&before, &after, "gen_ai_client_token_usage_count", &labels),
            llm_calls,
            "{token_type}"
        );
        assert_eq!(
            moved(&before, &after, "gen_ai_client_token_usage_sum", &labels),
            llm_calls * f64::from(per_call),
            "{token_type}"
        );
    }

    // Cache: the messages reused the script the session creation parsed
    // (the manager's memo), so they asked the script cache nothing; the
    // last turn dropped the session snapshot, so the first read missed and
    // the second hit.
    let cache = "heartrule_cache_requests_total";
    assert_eq!(
        moved(
            &before,
            &after,
            cache,
            &[("cache", "script"), ("result", "hit")]
        ),
        0.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            cache,
            &[("cache", "script"), ("result", "miss")]
        ),
        0.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            cache,
            &[("cache", "session"), ("result", "hit")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            cache,
            &[("cache", "session"), ("result", "miss")]
        ),
        1.0
    );
    assert!(
        !redis.keys().is_empty(),
        "the server cached under its prefix"
    );

    // A crisis message: the safety counter moves by detector and level, and
    // the business event names level, source and pattern, never the words.
    const CRISIS: &str = "我真的不想活了";
    let crisis_session = client.create_session(&script_id).await;
    let turn = client.post_message(&crisis_session, CRISIS, None).await;
    assert_eq!(turn.status, 200, "{}", turn.text);
    assert_eq!(turn.body["sessionStatus"], "handoff", "{}", turn.text);
    let after_crisis = scrape(&client).await;
    assert_eq!(
        moved(
            &after,
            &after_crisis,
            "heartrule_safety_events_total",
            &[("source", "local"), ("level", "high")]
        ),
        1.0
    );
    let events: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|line| line.contains("safety_protocol"))
        .collect();
    assert_eq!(events.len(), 1, "{:?}", logs.lines());
    assert!(events[0].contains("heartrule::safety"), "{}", events[0]);
    assert!(events[0].contains("zh.not_live"), "{}", events[0]);
    assert!(
        !logs.text().contains(CRISIS),
        "the user's words were logged"
    );

    server.stop().await;
    drop(llm);
    tokio::task::block_in_place(|| telemetry.shutdown());
    drop(redis);
    drop(database);
}
