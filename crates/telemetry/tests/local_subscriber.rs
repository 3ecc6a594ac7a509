//! `build_subscriber`: the configured pipeline without global installation
//! (so several can coexist in one process), exporting to the test receiver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_telemetry::testing::CapturedLogs;
use heartrule_telemetry::{
    build_subscriber, continue_trace, trace_id, FileLogConfig, LogConfig, LogFormat, OtlpProtocol,
    TelemetryConfig, TelemetryError, TraceConfig,
};
use heartrule_testkit::otlp::OtlpTestReceiver;
use std::time::Duration;

fn traced(endpoint: String, sampling_ratio: f64, format: LogFormat) -> TelemetryConfig {
    TelemetryConfig {
        log: LogConfig {
            format,
            level: "info".to_owned(),
            ..LogConfig::default()
        },
        traces: TraceConfig {
            enabled: true,
            endpoint,
            protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio,
            export_timeout: Duration::from_secs(5),
        },
        ..TelemetryConfig::default()
    }
}

#[test]
fn ratio_zero_exports_only_traces_whose_caller_sampled_them() {
    let receiver = OtlpTestReceiver::start().unwrap();
    let local = build_subscriber(
        &traced(receiver.endpoint(), 0.0, LogFormat::Json),
        CapturedLogs::default(),
    )
    .unwrap();
    tracing::dispatcher::with_default(local.dispatch(), || {
        for _ in 0..20 {
            let own = tracing::info_span!("http.request", origin = "own");
            assert_eq!(trace_id(&own), None, "ratio 0 samples no new trace");
            own.in_scope(|| tracing::info_span!("db.query").in_scope(|| ()));
        }
        let caller = tracing::info_span!("http.request", origin = "caller");
        continue_trace(
            &|name| {
                (name == "traceparent")
                    .then(|| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())
            },
            &caller,
        );
        caller.in_scope(|| tracing::info_span!("db.query").in_scope(|| ()));
    });
    local.flush().unwrap();
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|span| span.trace_id == "0af7651916cd43dd8448eb211c80319c"));
    assert!(spans.iter().all(|span| span
        .attributes
        .get("origin")
        .is_none_or(|origin| origin == "caller")));
    local.shutdown();
}

#[test]
fn pretty_logs_name_the_exported_trace() {
    let receiver = OtlpTestReceiver::start().unwrap();
    let logs = CapturedLogs::default();
    let local = build_subscriber(
        &traced(receiver.endpoint(), 1.0, LogFormat::Pretty),
        logs.clone(),
    )
    .unwrap();
    tracing::dispatcher::with_default(local.dispatch(), || {
        tracing::info_span!("session_manager.start").in_scope(|| {
            tracing::info!(event = "session_created", "started");
        });
    });
    local.shutdown();
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1);
    let text = logs.text();
    assert!(text.contains("session_created"), "{text}");
    assert!(
        text.contains(&format!(
            "trace_id: {}, span_id: {}",
            spans[0].trace_id, spans[0].span_id
        )),
        "{text}"
    );
}

#[test]
fn file_logs_are_written_next_to_the_console() {
    let directory =
        std::env::temp_dir().join(format!("heartrule-local-logs-{}", std::process::id()));
    let config = TelemetryConfig {
        log: LogConfig {
            format: LogFormat::Json,
            level: "info".to_owned(),
            file: Some(FileLogConfig {
                directory: directory.clone(),
                prefix: "heartrule".to_owned(),
                retention_files: 3,
            }),
            ..LogConfig::default()
        },
        ..TelemetryConfig::default()
    };
    let console = CapturedLogs::default();
    let local = build_subscriber(&config, console.clone()).unwrap();
    tracing::dispatcher::with_default(local.dispatch(), || {
        tracing::warn!(
            event = "turn_failed",
            error.code = "LLM_SERVICE_ERROR",
            "turn failed"
        );
    });
    local.shutdown(); // flushes the file writer
    let console_line = &console.json_lines().unwrap()[0];
    assert_eq!(console_line["error.code"], "LLM_SERVICE_ERROR");
    let file = std::fs::read_dir(&directory)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file_line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
    assert_eq!(file_line["event"], "turn_failed");
    assert_eq!(file_line["message"], console_line["message"]);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn invalid_settings_fail_before_anything_runs() {
    let config = traced("http://127.0.0.1:4318".to_owned(), 2.0, LogFormat::Json);
    match build_subscriber(&config, CapturedLogs::default()) {
        Err(TelemetryError::InvalidConfig { field, .. }) => {
            assert_eq!(field, "traces.sampling_ratio")
        }
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn an_unreachable_collector_never_blocks_spans_and_shutdown_is_bounded() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = traced(format!("http://127.0.0.1:{port}"), 1.0, LogFormat::Json);
    config.traces.export_timeout = Duration::from_millis(500);
    let local = build_subscriber(&config, CapturedLogs::default()).unwrap();

    let started = std::time::Instant::now();
    tracing::dispatcher::with_default(local.dispatch(), || {
        for turn in 0..200 {
            tracing::info_span!("session_manager.process_turn", turn).in_scope(|| {
                tracing::info_span!("db.query").in_scope(|| ());
            });
        }
    });
    let recording = started.elapsed();
    assert!(
        recording < Duration::from_secs(1),
        "spans waited for the network: {recording:?}"
    );

    assert!(local.flush().is_err(), "the export cannot succeed");
    tracing::dispatcher::with_default(local.dispatch(), || {
        tracing::info_span!("after.failed.flush").in_scope(|| ());
    });
    let started = std::time::Instant::now();
    local.shutdown();
    let stopping = started.elapsed();
    // export_timeout bounds the final flush; allow scheduling slack.
    assert!(
        stopping < Duration::from_secs(3),
        "shutdown took {stopping:?}"
    );
}
