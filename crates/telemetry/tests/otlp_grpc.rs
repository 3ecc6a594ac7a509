//! Global `init` exporting over OTLP/gRPC (tonic, h2c) to the in-process
//! receiver, with spans carried across `.await`s by `Instrument`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_telemetry::testing::CapturedLogs;
use heartrule_telemetry::{
    init_with_writer, trace_id, Catalogue, LogConfig, LogFormat, MetricsConfig, OtlpProtocol,
    TelemetryConfig, TraceConfig,
};
use heartrule_testkit::otlp::OtlpTestReceiver;
use std::time::Duration;
use tracing::Instrument;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_spans_reach_a_grpc_collector_as_one_trace() {
    let receiver = OtlpTestReceiver::start().unwrap();
    let config = TelemetryConfig {
        log: LogConfig {
            format: LogFormat::Json,
            level: "info".to_owned(),
            ..LogConfig::default()
        },
        traces: TraceConfig {
            enabled: true,
            endpoint: receiver.endpoint(),
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(5),
        },
        metrics: MetricsConfig { enabled: false },
        ..TelemetryConfig::default()
    };
    let logs = CapturedLogs::default();
    let telemetry = init_with_writer(&config, &Catalogue::own(), logs.clone()).unwrap();

    let request = tracing::info_span!("http.request");
    let request_trace = trace_id(&request).expect("sampled at ratio 1");
    async {
        tokio::task::yield_now().await;
        async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tracing::info!(event = "db_write", "saved");
        }
        .instrument(tracing::info_span!(
            "db.query",
            db.operation.name = "INSERT"
        ))
        .await;
    }
    .instrument(request)
    .await;

    // Shutdown blocks until the export finished; tonic needs the runtime meanwhile.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let spans = receiver.spans();
    assert!(receiver.errors().is_empty(), "{:?}", receiver.errors());
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let root = spans
        .iter()
        .find(|span| span.name == "http.request")
        .unwrap();
    let query = spans.iter().find(|span| span.name == "db.query").unwrap();
    assert_eq!(root.trace_id, request_trace);
    assert_eq!(query.trace_id, request_trace);
    assert_eq!(root.parent_span_id, None);
    assert_eq!(query.parent_span_id.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(query.attributes["db.operation.name"], "INSERT");
    assert_eq!(root.resource["service.name"], "heartrule");

    let line = logs
        .json_lines()
        .unwrap()
        .into_iter()
        .find(|line| line["event"] == "db_write")
        .expect("the db_write line");
    assert_eq!(line["trace_id"], request_trace.as_str());
    assert_eq!(line["span_id"], query.span_id.as_str());
}
