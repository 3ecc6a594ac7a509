//! `telemetry.capture_content: true`: the LLM call's span carries the prompt
//! (`gen_ai.prompt`, which holds the user's words) and the completion
//! (`gen_ai.completion`); the HTTP layer records nothing more than with the
//! default. One global telemetry init per test binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support_obs;

use heartrule_telemetry::testing::{CapturedLogs, OtlpTestReceiver, ReceivedSpan};
use heartrule_telemetry::{
    init_with_writer, LogConfig, LogFormat, MetricsConfig, OtlpProtocol, TelemetryConfig,
    TraceConfig,
};
use std::time::{Duration, Instant};
use support_obs::{
    app_config, fake_reply_text, Client, FakeLlm, RunningServer, TestDatabase, TestRedis,
    SECRET_MESSAGE,
};

const HTTP_SPAN_NAME: &str = "HTTP POST /api/sessions/{id}/messages";

fn telemetry_config(endpoint: String) -> TelemetryConfig {
    TelemetryConfig {
        log: LogConfig {
            format: LogFormat::Json,
            level: "info".to_owned(),
            file: None,
            // Span fields rendered too: the strictest place for content to leak.
            span_fields: true,
        },
        traces: TraceConfig {
            enabled: true,
            endpoint,
            protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(5),
        },
        metrics: MetricsConfig { enabled: false },
        capture_content: true,
        ..TelemetryConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capture_content_puts_prompt_and_completion_on_the_llm_span_only() {
    let receiver = OtlpTestReceiver::start().unwrap();
    let logs = CapturedLogs::default();
    let telemetry_config = telemetry_config(receiver.endpoint());
    let telemetry = init_with_writer(&telemetry_config, logs.clone()).unwrap();
    let database = TestDatabase::create().await;
    let redis = TestRedis::new().await;
    let llm = FakeLlm::start();
    let config = app_config(&database, &redis, &llm, telemetry_config);
    let server = RunningServer::start(&config, None).await;
    let client = Client::new(&server);

    let script_id = client.create_script().await;
    let session_id = client.create_session(&script_id).await;
    tokio::task::block_in_place(|| telemetry.flush()).unwrap();
    let seen_before = receiver.spans().len();
    client.post_message(&session_id, SECRET_MESSAGE, None).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let spans: Vec<ReceivedSpan> = loop {
        tokio::task::block_in_place(|| telemetry.flush()).unwrap();
        let spans = receiver.spans();
        if spans[seen_before..]
            .iter()
            .any(|span| span.name == HTTP_SPAN_NAME)
        {
            break spans[seen_before..].to_vec();
        }
        assert!(Instant::now() < deadline, "{:?}", receiver.errors());
        std::thread::sleep(Duration::from_millis(50));
    };

    let chats: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.name.starts_with("chat "))
        .collect();
    assert!(!chats.is_empty(), "the turn called the LLM");
    for chat in &chats {
        assert!(chat.attributes.contains_key("gen_ai.prompt"), "{chat:?}");
        assert_eq!(chat.attributes["gen_ai.completion"], fake_reply_text());
    }
    assert!(
        chats
            .iter()
            .any(|chat| chat.attributes["gen_ai.prompt"].contains(SECRET_MESSAGE)),
        "the user's words are in a captured prompt: {chats:#?}"
    );
    // Only the LLM spans carry conversation text.
    for span in spans.iter().filter(|span| !span.name.starts_with("chat ")) {
        assert!(
            span.attributes
                .values()
                .all(|value| !value.contains(SECRET_MESSAGE)),
            "{span:#?}"
        );
    }
    let http = spans
        .iter()
        .find(|span| span.name == HTTP_SPAN_NAME)
        .unwrap();
    assert!(
        !http.attributes.keys().any(|key| key.starts_with("gen_ai.")),
        "{http:#?}"
    );
    // Log lines outside the LLM span stay free of the words too.
    let lines = logs.json_lines().expect("JSON log lines");
    for line in lines.iter().filter(|line| line["span"]["name"] != "chat") {
        assert!(!line.to_string().contains(SECRET_MESSAGE), "{line}");
    }

    server.stop().await;
    llm.stop().await;
    tokio::task::block_in_place(|| telemetry.shutdown());
    drop(redis);
    drop(database);
}
