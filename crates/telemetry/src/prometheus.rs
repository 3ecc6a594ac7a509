//! The metric catalogue (one place for names, kinds, labels, units, help
//! and buckets) and the Prometheus recorder built from it.

use crate::error::TelemetryError;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Bucket upper bounds (seconds) for HTTP, database and lock-wait durations
/// (OpenTelemetry's recommendation for HTTP durations).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bucket upper bounds (seconds) for GenAI operations and whole turns
/// (OpenTelemetry GenAI semantic conventions).
pub const GEN_AI_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bucket upper bounds (tokens) for GenAI token usage (OpenTelemetry GenAI
/// semantic conventions).
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// How a metric behaves, as Prometheus shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// The Prometheus `# TYPE` word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDoc {
    pub name: &'static str,
    pub kind: MetricKind,
    pub unit: Option<Unit>,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// Who records it (crate or component), for the README table.
    pub emitted_by: &'static str,
    /// Histogram bucket upper bounds; `None` for counters and gauges.
    pub buckets: Option<&'static [f64]>,
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    emitted_by: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels,
        help,
        emitted_by,
        buckets: None,
    }
}

const fn gauge(
    name: &'static str,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
    emitted_by: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind: MetricKind::Gauge,
        unit,
        labels,
        help,
        emitted_by,
        buckets: None,
    }
}

const fn histogram(
    name: &'static str,
    unit: Unit,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    help: &'static str,
    emitted_by: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind: MetricKind::Histogram,
        unit: Some(unit),
        labels,
        help,
        emitted_by,
        buckets: Some(buckets),
    }
}

const GEN_AI_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "error_type",
];
const GEN_AI_TOKEN_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_token_type",
];

/// Every metric the service exposes at `/metrics`. The README
/// table and the `describe_*` registrations both come from here.
pub const METRICS: &[MetricDoc] = &[
    // HTTP (http adapter)
    histogram(
        "http_server_request_duration_seconds",
        Unit::Seconds,
        &["method", "route", "status"],
        DURATION_BUCKETS,
        "Duration of HTTP server requests, by method, route template and status code.",
        "http-adapter",
    ),
    gauge(
        "http_server_active_requests",
        Some(Unit::Count),
        &["method", "route"],
        "HTTP server requests in flight, by method and route template.",
        "http-adapter",
    ),
    // LLM (llm crate)
    histogram(
        "gen_ai_client_operation_duration_seconds",
        Unit::Seconds,
        GEN_AI_LABELS,
        GEN_AI_DURATION_BUCKETS,
        "Duration of GenAI client operations, retries included; error_type is empty on success.",
        "llm",
    ),
    histogram(
        "gen_ai_client_token_usage",
        Unit::Count,
        GEN_AI_TOKEN_LABELS,
        TOKEN_BUCKETS,
        "Tokens used per GenAI client operation, by token type (input or output).",
        "llm",
    ),
    counter(
        "heartrule_llm_retries_total",
        &["provider"],
        "LLM call attempts that were retried.",
        "llm",
    ),
    gauge(
        "heartrule_llm_breaker_state",
        None,
        &["provider"],
        "LLM circuit breaker state: 0 closed, 1 half-open, 2 open.",
        "llm",
    ),
    // Database (persistence crate, pool gauges from the server)
    histogram(
        "heartrule_db_query_duration_seconds",
        Unit::Seconds,
        &["operation", "table"],
        DURATION_BUCKETS,
        "Duration of database queries, by operation and table.",
        "persistence",
    ),
    histogram(
        "heartrule_db_pool_acquire_duration_seconds",
        Unit::Seconds,
        &[],
        DURATION_BUCKETS,
        "Time spent waiting for a database connection from the pool.",
        "persistence",
    ),
    counter(
        "heartrule_db_errors_total",
        &["kind"],
        "Database operations that failed, by error kind.",
        "persistence",
    ),
    gauge(
        "heartrule_db_pool_connections",
        Some(Unit::Count),
        &["state"],
        "Database pool connections by state (idle or in_use).",
        "server",
    ),
    gauge(
        "heartrule_db_pool_max_connections",
        Some(Unit::Count),
        &[],
        "Maximum size of the database connection pool.",
        "server",
    ),
    gauge(
        "heartrule_db_pool_waiting",
        Some(Unit::Count),
        &[],
        "Callers waiting for a pooled database connection.",
        "server",
    ),
    // Cache (cache crate)
    counter(
        "heartrule_cache_requests_total",
        &["cache", "result"],
        "Cache lookups by cache (script or session) and result (hit or miss).",
        "cache",
    ),
    counter(
        "heartrule_redis_errors_total",
        &["operation"],
        "Redis operations that failed or timed out (the cache failed open).",
        "cache",
    ),
    // Sessions and turns (server)
    counter(
        "heartrule_sessions_created_total",
        &[],
        "Counseling sessions created.",
        "server",
    ),
    counter(
        "heartrule_turns_total",
        &["outcome"],
        "Conversation turns processed, by outcome (committed, replayed, failed, in_progress).",
        "server",
    ),
    histogram(
        "heartrule_turn_duration_seconds",
        Unit::Seconds,
        &[],
        GEN_AI_DURATION_BUCKETS,
        "Duration of one conversation turn, LLM calls included.",
        "server",
    ),
    gauge(
        "heartrule_sessions_waiting",
        Some(Unit::Count),
        &[],
        "Active sessions waiting for the user's next message.",
        "server",
    ),
    histogram(
        "heartrule_session_lock_wait_seconds",
        Unit::Seconds,
        &[],
        DURATION_BUCKETS,
        "Time a turn took to claim its session's lease; a claim never waits for another turn (a busy session answers TURN_IN_PROGRESS).",
        "server",
    ),
    // Telemetry itself (this crate)
    counter(
        crate::traces::SPANS_TOTAL,
        &["stage"],
        "Spans by stage of the OTLP export pipeline: ended (queued; published with each export), exported, failed. ended outgrowing exported + failed means the batch queue drops spans.",
        "telemetry",
    ),
    // Build and process (this crate)
    gauge(
        BUILD_INFO,
        None,
        &["version", "git_sha", "rustc"],
        "Build information; always 1. git_sha and rustc are present when known at build time.",
        "telemetry",
    ),
    counter(
        "process_cpu_seconds_total",
        &[],
        "Total user and system CPU time spent by the process, in seconds.",
        "telemetry",
    ),
    gauge(
        "process_resident_memory_bytes",
        Some(Unit::Bytes),
        &[],
        "Resident memory size of the process.",
        "telemetry",
    ),
    gauge(
        "process_virtual_memory_bytes",
        Some(Unit::Bytes),
        &[],
        "Virtual memory size of the process.",
        "telemetry",
    ),
    gauge(
        "process_virtual_memory_max_bytes",
        Some(Unit::Bytes),
        &[],
        "Maximum amount of virtual memory available to the process.",
        "telemetry",
    ),
    gauge(
        "process_open_fds",
        Some(Unit::Count),
        &[],
        "Open file descriptors of the process.",
        "telemetry",
    ),
    gauge(
        "process_max_fds",
        Some(Unit::Count),
        &[],
        "Maximum number of open file descriptors of the process.",
        "telemetry",
    ),
    gauge(
        "process_start_time_seconds",
        Some(Unit::Seconds),
        &[],
        "Start time of the process since the Unix epoch, in seconds.",
        "telemetry",
    ),
    gauge(
        "process_threads",
        Some(Unit::Count),
        &[],
        "Operating system threads of the process.",
        "telemetry",
    ),
];

/// `heartrule_build_info{version, git_sha?, rustc?} 1`.
pub const BUILD_INFO: &str = "heartrule_build_info";

/// The catalogue entry of `name`.
#[must_use]
pub fn metric_doc(name: &str) -> Option<&'static MetricDoc> {
    METRICS.iter().find(|doc| doc.name == name)
}

/// Registers unit and help text of every catalogued metric with the
/// installed recorder. Call after the recorder is installed (`init` does).
pub fn describe_metrics() {
    for doc in METRICS {
        match (doc.kind, doc.unit) {
            (MetricKind::Counter, Some(unit)) => {
                metrics::describe_counter!(doc.name, unit, doc.help)
            }
            (MetricKind::Counter, None) => metrics::describe_counter!(doc.name, doc.help),
            (MetricKind::Gauge, Some(unit)) => metrics::describe_gauge!(doc.name, unit, doc.help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(doc.name, doc.help),
            (MetricKind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(doc.name, unit, doc.help);
            }
            (MetricKind::Histogram, None) => metrics::describe_histogram!(doc.name, doc.help),
        }
    }
}

/// A Markdown table of [`METRICS`] (name, type, labels, emitted by, help),
/// for the README.
#[must_use]
pub fn metrics_markdown_table() -> String {
    let mut table = String::from(
        "| Metric | Type | Labels | Emitted by | Description |\n|---|---|---|---|---|\n",
    );
    for doc in METRICS {
        let labels = if doc.labels.is_empty() {
            "—".to_owned()
        } else {
            doc.labels
                .iter()
                .map(|label| format!("`{label}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            doc.name,
            doc.kind.as_str(),
            labels,
            doc.emitted_by,
            doc.help
        ));
    }
    table
}

/// The recorder's configuration: the catalogue's buckets per histogram, and
/// [`DURATION_BUCKETS`] for any other histogram so none renders as a summary.
pub(crate) fn prometheus_builder() -> Result<PrometheusBuilder, TelemetryError> {
    let mut builder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .map_err(|error| TelemetryError::MetricsRecorder(error.to_string()))?;
    for doc in METRICS {
        if let Some(buckets) = doc.buckets {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(doc.name.to_owned()), buckets)
                .map_err(|error| TelemetryError::MetricsRecorder(error.to_string()))?;
        }
    }
    Ok(builder)
}

/// The installed recorder's rendering side.
pub(crate) struct MetricsRenderer {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl MetricsRenderer {
    /// Prometheus text exposition, process metrics refreshed first.
    pub(crate) fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// The global recorder, its upkeep thread and the renderer.
pub(crate) struct MetricsRuntime {
    renderer: Arc<MetricsRenderer>,
    stop_upkeep: Option<mpsc::Sender<()>>,
    upkeep: Option<JoinHandle<()>>,
}

/// How often histogram buffers are drained (the exporter's own default).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

impl MetricsRuntime {
    /// Installs the Prometheus recorder globally, describes the catalogue,
    /// sets `heartrule_build_info` and starts the upkeep thread.
    pub(crate) fn install(service_version: &str) -> Result<Self, TelemetryError> {
        let handle = prometheus_builder()?
            .install_recorder()
            .map_err(|error| TelemetryError::MetricsRecorder(error.to_string()))?;
        describe_metrics();
        record_build_info(service_version);

        let (stop_upkeep, stop_requested) = mpsc::channel::<()>();
        let upkeep_handle = handle.clone();
        let upkeep = std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                // Runs until `stop_upkeep` is sent to or dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stop_requested.recv_timeout(UPKEEP_INTERVAL)
                {
                    upkeep_handle.run_upkeep();
                }
            })
            .map_err(|error| TelemetryError::UpkeepThread(error.to_string()))?;

        Ok(Self {
            renderer: Arc::new(MetricsRenderer {
                handle,
                process: metrics_process::Collector::default(),
            }),
            stop_upkeep: Some(stop_upkeep),
            upkeep: Some(upkeep),
        })
    }

    pub(crate) fn renderer(&self) -> Arc<MetricsRenderer> {
        Arc::clone(&self.renderer)
    }

    /// Stops the upkeep thread; the recorder stays installed (a global
    /// recorder cannot be removed).
    pub(crate) fn stop(&mut self) {
        drop(self.stop_upkeep.take());
        if let Some(upkeep) = self.upkeep.take() {
            if upkeep.join().is_err() {
                tracing::error!("the metrics upkeep thread panicked");
            }
        }
    }
}

impl Drop for MetricsRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The build's identity as labels, the optional ones only when known.
pub(crate) fn build_info_labels(service_version: &str) -> Vec<(&'static str, String)> {
    let mut labels = vec![("version", service_version.to_owned())];
    if let Some(git_sha) = option_env!("HEARTRULE_GIT_SHA") {
        labels.push(("git_sha", git_sha.to_owned()));
    }
    if let Some(rustc) = option_env!("HEARTRULE_RUSTC_VERSION") {
        labels.push(("rustc", rustc.to_owned()));
    }
    labels
}

fn record_build_info(service_version: &str) {
    let labels: Vec<metrics::Label> = build_info_labels(service_version)
        .into_iter()
        .map(|(key, value)| metrics::Label::new(key, value))
        .collect();
    metrics::gauge!(BUILD_INFO, labels).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_catalogue_lists_every_metric_of_the_product_once() {
        let required = [
            "http_server_request_duration_seconds",
            "http_server_active_requests",
            "gen_ai_client_operation_duration_seconds",
            "gen_ai_client_token_usage",
            "heartrule_llm_retries_total",
            "heartrule_llm_breaker_state",
            "heartrule_db_query_duration_seconds",
            "heartrule_db_pool_acquire_duration_seconds",
            "heartrule_db_errors_total",
            "heartrule_cache_requests_total",
            "heartrule_redis_errors_total",
            "heartrule_sessions_created_total",
            "heartrule_turns_total",
            "heartrule_turn_duration_seconds",
            "heartrule_sessions_waiting",
            "heartrule_session_lock_wait_seconds",
            "heartrule_db_pool_connections",
            "heartrule_db_pool_max_connections",
            "heartrule_db_pool_waiting",
            "heartrule_build_info",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ];
        for name in required {
            assert!(metric_doc(name).is_some(), "{name} is not catalogued");
        }
        let unique: HashSet<&str> = METRICS.iter().map(|doc| doc.name).collect();
        assert_eq!(unique.len(), METRICS.len(), "duplicate names");
    }

    #[test]
    fn catalogue_entries_are_well_formed() {
        let valid_name = |name: &str| {
            name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        for doc in METRICS {
            assert!(valid_name(doc.name), "{}", doc.name);
            assert!(!doc.help.trim().is_empty(), "{} has no help", doc.name);
            assert!(
                doc.labels.iter().all(|label| valid_name(label)),
                "{}",
                doc.name
            );
            assert_eq!(
                doc.kind == MetricKind::Counter,
                doc.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                doc.name
            );
            match doc.kind {
                MetricKind::Histogram => {
                    let buckets = doc.buckets.unwrap_or_default();
                    assert!(!buckets.is_empty(), "{} has no buckets", doc.name);
                    assert!(
                        buckets.windows(2).all(|pair| pair[0] < pair[1]),
                        "{} buckets unsorted",
                        doc.name
                    );
                }
                MetricKind::Counter | MetricKind::Gauge => {
                    assert!(doc.buckets.is_none(), "{}", doc.name)
                }
            }
            if doc.name.ends_with("_seconds") {
                assert_eq!(doc.unit, Some(Unit::Seconds), "{}", doc.name);
            }
        }
    }

    #[test]
    fn histograms_use_the_recommended_buckets() {
        let buckets = |name| {
            metric_doc(name)
                .and_then(|doc| doc.buckets)
                .unwrap_or_default()
        };
        assert_eq!(
            buckets("http_server_request_duration_seconds"),
            DURATION_BUCKETS
        );
        assert_eq!(
            buckets("heartrule_db_query_duration_seconds"),
            DURATION_BUCKETS
        );
        assert_eq!(
            buckets("gen_ai_client_operation_duration_seconds"),
            GEN_AI_DURATION_BUCKETS
        );
        assert_eq!(buckets("gen_ai_client_token_usage"), TOKEN_BUCKETS);
        assert_eq!(DURATION_BUCKETS.len(), 14);
        assert_eq!(GEN_AI_DURATION_BUCKETS.len(), 14);
        assert_eq!(TOKEN_BUCKETS.len(), 14);
        // Token buckets are powers of four from 1 to 4^13.
        for (exponent, bound) in TOKEN_BUCKETS.iter().enumerate() {
            assert!(
                (bound - 4f64.powi(i32::try_from(exponent).unwrap_or_default())).abs()
                    < f64::EPSILON
            );
        }
    }

    #[test]
    fn the_markdown_table_has_a_row_per_metric() {
        let table = metrics_markdown_table();
        assert_eq!(table.lines().count(), METRICS.len() + 2);
        assert!(table.contains("| `heartrule_turns_total` | counter | `outcome` | server |"));
    }

    #[test]
    fn build_info_always_names_the_version() {
        let labels = build_info_labels("1.2.3");
        assert_eq!(labels[0], ("version", "1.2.3".to_owned()));
        // The build script found rustc, so the label is there in every build.
        assert!(labels
            .iter()
            .any(|(key, value)| *key == "rustc" && value.starts_with("rustc ")));
    }
}
