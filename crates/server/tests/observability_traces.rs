//! One request, one trace: `POST /api/sessions/{id}/messages` against the
//! real server (PostgreSQL, Redis, a fake OpenAI server) exports over
//! OTLP/HTTP a single trace covering HTTP, the SessionManager, an engine
//! action, the LLM call, repository and cache calls; a caller's
//! `traceparent` is continued and passed on to the LLM; JSON log lines carry
//! the trace id; and with the default config the user's words appear in
//! neither logs nor spans. One global telemetry init per test binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support_obs;

use heartrule_telemetry::testing::CapturedLogs;
use heartrule_telemetry::Telemetry;
use heartrule_testkit::otlp::{OtlpTestReceiver, ReceivedSpan};
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support_obs::{TracedServer, FAKE_MODEL, SECRET_MESSAGE};

const MESSAGES_ROUTE: &str = "/api/sessions/{id}/messages";
const HTTP_SPAN_NAME: &str = "HTTP POST /api/sessions/{id}/messages";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Flushes until the server span of a `POST …/messages` in `trace` (any
/// trace when `None`) has arrived; returns every span received so far.
fn spans_after_request(
    telemetry: &Telemetry,
    receiver: &OtlpTestReceiver,
    trace: Option<&str>,
    already_seen: usize,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The server span ends just after the response is written.
        tokio::task::block_in_place(|| telemetry.flush()).expect("spans are exported");
        let spans = receiver.spans();
        let arrived = spans[already_seen..].iter().any(|span| {
            span.name == HTTP_SPAN_NAME && trace.is_none_or(|trace| span.trace_id == trace)
        });
        if arrived {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "no `{HTTP_SPAN_NAME}` span arrived; receiver errors: {:?}",
            receiver.errors()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn names(spans: &[&ReceivedSpan]) -> Vec<String> {
    spans.iter().map(|span| span.name.clone()).collect()
}

/// Asserts `spans` form one tree under the server span and returns it.
fn assert_one_tree<'a>(spans: &[&'a ReceivedSpan]) -> &'a ReceivedSpan {
    let ids: HashSet<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
    let roots: Vec<&&ReceivedSpan> = spans
        .iter()
        .filter(|span| {
            span.parent_span_id
                .as_deref()
                .is_none_or(|parent| !ids.contains(parent))
        })
        .collect();
    assert_eq!(roots.len(), 1, "one root in {:#?}", names(spans));
    let root = *roots[0];
    assert_eq!(root.name, HTTP_SPAN_NAME, "the HTTP span is the root");
    assert_eq!(root.kind, "SPAN_KIND_SERVER");
    root
}

fn assert_covers_every_layer(spans: &[&ReceivedSpan]) {
    let has = |prefix: &str| spans.iter().any(|span| span.name.starts_with(prefix));
    for prefix in [
        "session_manager.process_input",
        "engine.action",
        "chat ",
        "db.",
        "cache.",
    ] {
        assert!(has(prefix), "a `{prefix}…` span in {:#?}", names(spans));
    }
    let chat = spans
        .iter()
        .find(|span| span.name.starts_with("chat "))
        .unwrap();
    assert_eq!(chat.kind, "SPAN_KIND_CLIENT");
    assert_eq!(chat.attributes["gen_ai.request.model"], FAKE_MODEL);
    assert_eq!(chat.attributes["gen_ai.operation.name"], "chat");
    let db = spans
        .iter()
        .find(|span| span.name.starts_with("db."))
        .unwrap();
    assert_eq!(db.attributes["db.system"], "postgresql");
    let cache = spans
        .iter()
        .find(|span| span.name.starts_with("cache."))
        .unwrap();
    assert_eq!(cache.attributes["db.system"], "redis");
}

/// The parent span id of a W3C `traceparent` whose trace is `trace`.
fn traceparent_parent<'a>(traceparent: &'a str, trace: &str) -> &'a str {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], trace, "the LLM call joins the request's trace");
    parts[2]
}

fn log_lines_of_trace(logs: &CapturedLogs, trace: &str) -> Vec<Value> {
    logs.json_lines()
        .expect("every log line is a JSON document")
        .into_iter()
        .filter(|line| line["trace_id"] == trace)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_exports_one_trace_continues_callers_and_keeps_words_private() {
    let traced = TracedServer::start(false).await;
    let TracedServer {
        receiver,
        logs,
        telemetry,
        llm,
        client,
        session_id,
        seen_before,
        ..
    } = &traced;
    let seen_before = *seen_before;
    let llm_calls_before = llm.request_count();

    // 1. A request without traceparent: a new trace, one tree, every layer.
    let reply = client.post_message(session_id, SECRET_MESSAGE, None).await;
    let request_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    let spans = spans_after_request(telemetry, receiver, None, seen_before);
    let new_spans: Vec<&ReceivedSpan> = spans[seen_before..].iter().collect();
    let trace = new_spans
        .iter()
        .find(|span| span.name == HTTP_SPAN_NAME)
        .unwrap()
        .trace_id
        .clone();
    assert!(
        new_spans.iter().all(|span| span.trace_id == trace),
        "the request exported exactly one trace: {:#?}",
        new_spans
            .iter()
            .map(|span| (&span.name, &span.trace_id))
            .collect::<Vec<_>>()
    );
    let root = assert_one_tree(&new_spans);
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.attributes["http.route"], MESSAGES_ROUTE);
    assert_eq!(root.attributes["http.request.method"], "POST");
    assert_eq!(root.attributes["http.response.status_code"], "200");
    assert_eq!(root.attributes["request_id"], request_id);
    assert_covers_every_layer(&new_spans);
    let ids: HashSet<&str> = new_spans.iter().map(|span| span.span_id.as_str()).collect();
    assert_eq!(ids.len(), new_spans.len(), "span ids are unique");

    // The LLM was called with a traceparent of this trace, parented on the
    // chat span.
    let calls = llm.requests();
    assert!(calls.len() > llm_calls_before, "the turn called the LLM");
    let chat_ids: HashSet<&str> = new_spans
        .iter()
        .filter(|span| span.name.starts_with("chat "))
        .map(|span| span.span_id.as_str())
        .collect();
    for call in &calls[llm_calls_before..] {
        let traceparent = call
            .header("traceparent")
            .expect("traceparent sent to the LLM");
        let parent = traceparent_parent(traceparent, &trace);
        assert!(chat_ids.contains(parent), "{traceparent} names a chat span");
    }

    // Logs: JSON lines; the access line and business events carry the trace.
    let lines = log_lines_of_trace(logs, &trace);
    let access = lines
        .iter()
        .find(|line| line["target"] == "heartrule::access")
        .unwrap_or_else(|| panic!("an access-log line in trace {trace}: {}", logs.text()));
    assert_eq!(access["method"], "POST");
    assert_eq!(access["route"], MESSAGES_ROUTE);
    assert_eq!(access["status"], 200);
    assert!(
        access["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{access}"
    );
    assert_eq!(access["client_ip"], "127.0.0.1");
    assert_eq!(access["request_id"], request_id.as_str());
    assert!(
        lines.iter().any(|line| line["event"] == "turn_committed"),
        "the turn_committed event carries the trace: {lines:#?}"
    );

    // 2. A request with a caller's traceparent continues that trace.
    let seen_before = spans.len();
    let llm_calls_before = llm.request_count();
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    client
        .post_message(session_id, "second answer", Some(&caller))
        .await;
    let spans = spans_after_request(telemetry, receiver, Some(CALLER_TRACE), seen_before);
    let continued: Vec<&ReceivedSpan> = spans[seen_before..]
        .iter()
        .filter(|span| span.trace_id == CALLER_TRACE)
        .collect();
    assert_eq!(
        continued.len(),
        spans.len() - seen_before,
        "every span of the request continues the caller's trace"
    );
    let root = assert_one_tree(&continued);
    assert_eq!(root.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_covers_every_layer(&continued);
    let chat_ids: HashSet<&str> = continued
        .iter()
        .filter(|span| span.name.starts_with("chat "))
        .map(|span| span.span_id.as_str())
        .collect();
    let calls = llm.requests();
    assert!(
        calls.len() > llm_calls_before,
        "the second turn called the LLM"
    );
    for call in &calls[llm_calls_before..] {
        let traceparent = call
            .header("traceparent")
            .expect("traceparent sent to the LLM");
        assert!(chat_ids.contains(traceparent_parent(traceparent, CALLER_TRACE)));
    }

    // 3. Privacy by default: the user's words are in no log line and no span.
    assert!(
        calls
            .iter()
            .any(|call| String::from_utf8_lossy(&call.body).contains(SECRET_MESSAGE)),
        "the message reached the LLM prompt (so its absence below means something)"
    );
    let log_text = logs.text();
    assert!(!log_text.contains(SECRET_MESSAGE), "{log_text}");
    for span in receiver.spans() {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(SECRET_MESSAGE) && !key.contains(SECRET_MESSAGE),
                "span {} attribute {key}={value}",
                span.name
            );
        }
        assert!(
            !span.name.contains(SECRET_MESSAGE)
                && span
                    .events
                    .iter()
                    .all(|event| !event.contains(SECRET_MESSAGE)),
            "{span:?}"
        );
        assert!(!span.attributes.contains_key("gen_ai.prompt"));
        assert!(!span.attributes.contains_key("gen_ai.completion"));
    }
    assert!(receiver.errors().is_empty(), "{:?}", receiver.errors());

    traced.stop().await;
}
