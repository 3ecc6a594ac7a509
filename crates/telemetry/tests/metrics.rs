//! Global `init` with metrics on and trace export off: the Prometheus text
//! parses, histograms use the catalogue's buckets, build info and process
//! metrics are present, and the trace helpers return nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_telemetry::testing::{CapturedLogs, Exposition};
use heartrule_telemetry::{
    continue_trace, init_with_writer, inject_trace_headers, trace_id, Catalogue, MetricDecl,
    MetricKind, MetricSet, Telemetry, TelemetryConfig, DURATION_BUCKETS, GEN_AI_DURATION_BUCKETS,
    TOKEN_BUCKETS,
};
use metrics::Unit;
use std::sync::OnceLock;

/// Stand-ins for what other crates declare (this crate depends on none of
/// them): the recorder must take help texts and buckets from any set.
const OTHERS: MetricSet = MetricSet {
    emitted_by: "heartrule-test",
    metrics: &[
        MetricDecl::histogram(
            "http_server_request_duration_seconds",
            Unit::Seconds,
            &["method", "route", "status"],
            DURATION_BUCKETS,
            "Duration of HTTP server requests (test).",
        ),
        MetricDecl::histogram(
            "gen_ai_client_operation_duration_seconds",
            Unit::Seconds,
            &[
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "error_type",
            ],
            GEN_AI_DURATION_BUCKETS,
            "Duration of GenAI client operations (test).",
        ),
        MetricDecl::histogram(
            "gen_ai_client_token_usage",
            Unit::Count,
            &[
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "gen_ai_token_type",
            ],
            TOKEN_BUCKETS,
            "Tokens used per GenAI client operation (test).",
        ),
        MetricDecl::histogram(
            "heartrule_db_query_duration_seconds",
            Unit::Seconds,
            &["operation", "table"],
            DURATION_BUCKETS,
            "Duration of database queries (test).",
        ),
        MetricDecl::counter("heartrule_turns_total", &["outcome"], "Turns (test)."),
        MetricDecl::counter(
            "heartrule_cache_requests_total",
            &["cache", "result"],
            "Cache lookups (test).",
        ),
        MetricDecl::gauge(
            "heartrule_sessions_waiting",
            Some(Unit::Count),
            &[],
            "Waiting sessions (test).",
        ),
        MetricDecl::gauge(
            "heartrule_db_pool_connections",
            Some(Unit::Count),
            &["state"],
            "Pool connections (test).",
        ),
        MetricDecl::counter(
            "heartrule_sessions_created_total",
            &[],
            "Sessions created (test).",
        ),
    ],
};

struct Global {
    telemetry: Telemetry,
    logs: CapturedLogs,
    catalogue: Catalogue,
}

fn metric_doc(name: &str) -> Option<&'static MetricDecl> {
    global().catalogue.get(name)
}

/// One global init for every test of this file.
fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let config = TelemetryConfig {
            service_version: "7.7.7".to_owned(),
            ..TelemetryConfig::default()
        };
        let logs = CapturedLogs::default();
        let catalogue = Catalogue::new([OTHERS]).unwrap();
        let telemetry = init_with_writer(&config, &catalogue, logs.clone()).unwrap();
        Global {
            telemetry,
            logs,
            catalogue,
        }
    })
}

/// Renders and parses strictly: any unreadable line fails the test.
fn scrape() -> Exposition {
    let text = global()
        .telemetry
        .render_metrics()
        .expect("metrics are enabled");
    Exposition::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

/// The finite bucket bounds and all cumulative counts (+Inf last).
fn buckets(scrape: &Exposition, name: &str, labels: &[(&str, &str)]) -> (Vec<f64>, Vec<f64>) {
    let buckets = scrape.histogram_buckets(name, labels);
    assert!(!buckets.is_empty(), "no {name} histogram with {labels:?}");
    assert_eq!(
        scrape.types.get(name).map(String::as_str),
        Some("histogram"),
        "{name}"
    );
    assert_eq!(
        buckets.last().map(|bucket| bucket.0),
        Some(f64::INFINITY),
        "{name} ends with +Inf"
    );
    (
        buckets
            .iter()
            .map(|bucket| bucket.0)
            .filter(|bound| bound.is_finite())
            .collect(),
        buckets.iter().map(|bucket| bucket.1).collect(),
    )
}

#[test]
fn histograms_render_with_the_recommended_buckets_and_labels() {
    let _ = global();
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "method" => "POST", "route" => "/api/sessions/{id}/messages", "status" => "200"
    )
    .record(0.03);
    metrics::histogram!(
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_operation_name" => "chat", "gen_ai_provider_name" => "mock",
        "gen_ai_request_model" => "mock-model", "error_type" => ""
    )
    .record(1.5);
    metrics::histogram!(
        "gen_ai_client_token_usage",
        "gen_ai_operation_name" => "chat", "gen_ai_provider_name" => "mock",
        "gen_ai_request_model" => "mock-model", "gen_ai_token_type" => "input"
    )
    .record(300.0);
    metrics::histogram!("heartrule_db_query_duration_seconds", "operation" => "select", "table" => "sessions")
        .record(0.002);
    metrics::histogram!("some_uncatalogued_histogram_seconds").record(0.2);

    let scrape = scrape();
    let route = ("route", "/api/sessions/{id}/messages");
    let http = scrape
        .find("http_server_request_duration_seconds_count", &[route])
        .expect("the request histogram");
    assert_eq!(http.labels["method"], "POST");
    assert_eq!(http.labels["status"], "200");
    assert_eq!(http.value, 1.0);
    let (bounds, counts) = buckets(&scrape, "http_server_request_duration_seconds", &[route]);
    assert_eq!(bounds, DURATION_BUCKETS);
    // 0.03 falls in (0.025, 0.05]: the le=0.025 bucket is 0, le=0.05 is 1.
    assert_eq!(counts[2], 0.0);
    assert_eq!(counts[3], 1.0);
    assert_eq!(counts.last().copied(), Some(1.0), "+Inf counts everything");
    assert_eq!(
        scrape.value("http_server_request_duration_seconds_sum", &[route]),
        Some(0.03)
    );

    let mock = ("gen_ai_provider_name", "mock");
    let (bounds, _) = buckets(
        &scrape,
        "gen_ai_client_operation_duration_seconds",
        &[mock, ("error_type", "")],
    );
    assert_eq!(bounds, GEN_AI_DURATION_BUCKETS);
    let (bounds, counts) = buckets(
        &scrape,
        "gen_ai_client_token_usage",
        &[mock, ("gen_ai_token_type", "input")],
    );
    assert_eq!(bounds, TOKEN_BUCKETS);
    assert_eq!(counts[4], 0.0, "300 > 256");
    assert_eq!(counts[5], 1.0, "300 <= 1024");
    let (bounds, _) = buckets(
        &scrape,
        "heartrule_db_query_duration_seconds",
        &[("table", "sessions"), ("operation", "select")],
    );
    assert_eq!(bounds, DURATION_BUCKETS);
    let (bounds, _) = buckets(&scrape, "some_uncatalogued_histogram_seconds", &[]);
    assert_eq!(
        bounds, DURATION_BUCKETS,
        "no histogram renders as a summary"
    );

    // Help texts come from the catalogue.
    for name in [
        "http_server_request_duration_seconds",
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_token_usage",
        "heartrule_db_query_duration_seconds",
    ] {
        assert_eq!(
            scrape.help.get(name).map(String::as_str),
            metric_doc(name).map(|doc| doc.help),
            "{name}"
        );
    }
}

#[test]
fn counters_and_gauges_render_with_their_help() {
    let _ = global();
    metrics::counter!("heartrule_turns_total", "outcome" => "committed").increment(3);
    metrics::counter!("heartrule_cache_requests_total", "cache" => "script", "result" => "hit")
        .increment(1);
    metrics::gauge!("heartrule_sessions_waiting").set(4.0);
    metrics::gauge!("heartrule_db_pool_connections", "state" => "idle").set(2.0);

    let scrape = scrape();
    assert_eq!(
        scrape.value("heartrule_turns_total", &[("outcome", "committed")]),
        Some(3.0)
    );
    assert_eq!(
        scrape.value(
            "heartrule_cache_requests_total",
            &[("cache", "script"), ("result", "hit")]
        ),
        Some(1.0)
    );
    assert_eq!(scrape.value("heartrule_sessions_waiting", &[]), Some(4.0));
    assert_eq!(
        scrape.value("heartrule_db_pool_connections", &[("state", "idle")]),
        Some(2.0)
    );
    for name in [
        "heartrule_turns_total",
        "heartrule_sessions_waiting",
        "heartrule_db_pool_connections",
    ] {
        let doc = metric_doc(name).unwrap();
        assert_eq!(
            scrape.help.get(name).map(String::as_str),
            Some(doc.help),
            "{name}"
        );
        let expected_type = match doc.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some(expected_type),
            "{name}"
        );
    }
}

#[test]
fn build_info_and_process_metrics_are_always_there() {
    let scrape = scrape();
    let build = scrape.samples_named("heartrule_build_info");
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].value, 1.0);
    assert_eq!(build[0].labels["version"], "7.7.7");
    assert!(
        build[0].labels["rustc"].starts_with("rustc "),
        "{:?}",
        build[0].labels
    );

    let value = |name: &str| {
        scrape
            .value(name, &[])
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_threads") >= 1.0);
    assert!(value("process_start_time_seconds") > 1_600_000_000.0);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert_eq!(
        scrape
            .types
            .get("process_cpu_seconds_total")
            .map(String::as_str),
        Some("counter")
    );
}

#[test]
fn the_shared_renderer_renders_the_same_registry() {
    let renderer = global()
        .telemetry
        .metrics_renderer()
        .expect("metrics are enabled");
    metrics::counter!("heartrule_sessions_created_total").increment(1);
    let text = renderer();
    assert!(text.contains("heartrule_sessions_created_total"), "{text}");
    assert!(text.contains("# TYPE heartrule_sessions_created_total counter"));
}

#[test]
fn with_trace_export_off_the_helpers_return_nothing_and_logs_have_no_trace_ids() {
    let global = global();
    let span = tracing::info_span!("http.request", request_id = "r-untraced");
    continue_trace(
        &|name| {
            (name == "traceparent")
                .then(|| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())
        },
        &span,
    );
    assert_eq!(trace_id(&span), None);
    let mut written = Vec::new();
    inject_trace_headers(&span, &mut |name, _| written.push(name.to_owned()));
    assert!(written.is_empty());
    span.in_scope(|| {
        tracing::info!(
            event = "session_created",
            request_id = "r-untraced",
            "untraced"
        )
    });

    let line = global
        .logs
        .json_lines()
        .unwrap()
        .into_iter()
        .find(|line| line["request_id"] == "r-untraced")
        .expect("the line of the untraced request");
    assert_eq!(line["event"], "session_created");
    assert!(line.get("trace_id").is_none(), "{line}");
}
