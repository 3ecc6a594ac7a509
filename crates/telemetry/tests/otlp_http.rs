//! Global `init` exporting over OTLP/HTTP protobuf to the in-process
//! receiver: span tree, W3C continuation and injection, and JSON log lines
//! carrying the exported trace ids. One global init per process, so one test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_telemetry::testing::CapturedLogs;
use heartrule_telemetry::{
    continue_trace, init_with_writer, inject_trace_headers, trace_id, Catalogue, LogConfig,
    LogFormat, MetricsConfig, OtlpProtocol, TelemetryConfig, TraceConfig,
};
use heartrule_testkit::otlp::{OtlpTestReceiver, ReceivedSpan};
use std::collections::HashMap;
use std::time::Duration;

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn config(endpoint: String) -> TelemetryConfig {
    TelemetryConfig {
        service_name: "heartrule-test".to_owned(),
        service_version: "0.0.0-test".to_owned(),
        environment: "test".to_owned(),
        log: LogConfig {
            format: LogFormat::Json,
            level: "info".to_owned(),
            ..LogConfig::default()
        },
        traces: TraceConfig {
            enabled: true,
            endpoint,
            protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(5),
        },
        metrics: MetricsConfig { enabled: false },
        capture_content: false,
    }
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn only<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "exactly one `{name}` span in {spans:#?}");
    found[0]
}

#[test]
fn spans_trace_headers_and_logs_share_one_trace_over_otlp_http() {
    let receiver = OtlpTestReceiver::start().unwrap();
    let logs = CapturedLogs::default();
    let telemetry = init_with_writer(
        &config(receiver.endpoint()),
        &Catalogue::own(),
        logs.clone(),
    )
    .unwrap();

    // A request: root span, SessionManager, engine action, LLM call.
    let (request_trace, outgoing) = {
        let request =
            tracing::info_span!("http.request", http.route = "/api/sessions/{id}/messages");
        let _request = request.enter();
        let manager = tracing::info_span!("session_manager.process_turn", session.id = "s-1");
        let _manager = manager.enter();
        let action = tracing::info_span!("engine.action", action.id = "greet");
        let _action = action.enter();
        tracing::info!(
            event = "turn_committed",
            session.id = "s-1",
            "turn committed"
        );
        let chat = tracing::info_span!(
            "chat",
            otel.name = "chat mock-model",
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.request.model = "mock-model",
        );
        let mut outgoing = HashMap::new();
        inject_trace_headers(&chat, &mut |name, value| {
            outgoing.insert(name.to_owned(), value);
        });
        (trace_id(&request).expect("sampled at ratio 1"), outgoing)
    };

    // A request that arrives with the caller's trace.
    let continued = tracing::info_span!("http.request", http.route = "/api/chat");
    continue_trace(
        &|name| (name == "traceparent").then(|| format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
        &continued,
    );
    assert_eq!(trace_id(&continued).as_deref(), Some(CALLER_TRACE));
    continued.in_scope(|| tracing::info!(event = "session_created", "continued request"));
    drop(continued);

    // Shutdown is the flush: everything must be at the receiver when it returns.
    telemetry.shutdown();
    let spans = receiver.spans();
    assert!(receiver.errors().is_empty(), "{:?}", receiver.errors());
    assert_eq!(spans.len(), 5, "{spans:#?}");

    // Only the attributes the code gives: no source location, module path,
    // thread or busy/idle timings on every span.
    for span in &spans {
        for added in [
            "code.filepath",
            "code.file.path",
            "code.lineno",
            "code.line.number",
            "code.namespace",
            "target",
            "thread.id",
            "thread.name",
            "busy_ns",
            "idle_ns",
        ] {
            assert!(!span.attributes.contains_key(added), "{added} on {span:#?}");
        }
    }

    // One trace with the right parent chain.
    let requests = named(&spans, "http.request");
    assert_eq!(requests.len(), 2);
    let root = requests
        .iter()
        .find(|span| span.trace_id == request_trace)
        .expect("the first request's root span");
    let manager = only(&spans, "session_manager.process_turn");
    let action = only(&spans, "engine.action");
    let chat = only(&spans, "chat mock-model");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(
        manager.parent_span_id.as_deref(),
        Some(root.span_id.as_str())
    );
    assert_eq!(
        action.parent_span_id.as_deref(),
        Some(manager.span_id.as_str())
    );
    assert_eq!(
        chat.parent_span_id.as_deref(),
        Some(action.span_id.as_str())
    );
    for span in [manager, action, chat] {
        assert_eq!(span.trace_id, request_trace, "{}", span.name);
    }
    assert_eq!(request_trace.len(), 32);

    // Attributes, kind, events and resource.
    assert_eq!(manager.attributes["session.id"], "s-1");
    assert_eq!(chat.attributes["gen_ai.operation.name"], "chat");
    assert_eq!(chat.kind, "SPAN_KIND_CLIENT");
    assert_eq!(action.events, ["turn committed"]);
    assert_eq!(root.resource["service.name"], "heartrule-test");
    assert_eq!(root.resource["service.version"], "0.0.0-test");
    assert_eq!(root.resource["deployment.environment.name"], "test");

    // The LLM call would carry our trace, with the chat span as parent.
    assert_eq!(
        outgoing["traceparent"],
        format!("00-{request_trace}-{}-01", chat.span_id)
    );

    // The continued request joined the caller's trace.
    let continued = requests
        .iter()
        .find(|span| span.trace_id == CALLER_TRACE)
        .expect("the continued request span");
    assert_eq!(continued.parent_span_id.as_deref(), Some(CALLER_SPAN));

    // Log lines name the exported trace and span.
    let lines = logs.json_lines().unwrap();
    let committed = lines
        .iter()
        .find(|line| line["event"] == "turn_committed")
        .expect("the turn_committed line");
    assert_eq!(committed["trace_id"], request_trace.as_str());
    assert_eq!(committed["span_id"], action.span_id.as_str());
    assert_eq!(committed["session.id"], "s-1");
    let created = lines
        .iter()
        .find(|line| line["event"] == "session_created")
        .expect("the session_created line");
    assert_eq!(created["trace_id"], CALLER_TRACE);
    assert_eq!(created["span_id"], continued.span_id.as_str());
}
