//! The metric catalogue, gathered from the declarations of the crates that
//! emit the metrics (names, kinds, labels, units, help and buckets), this
//! crate's own metrics, and the Prometheus recorder built from it.

use crate::error::TelemetryError;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use heartrule_domain::metric::{
    MetricDecl, MetricKind, MetricSet, DURATION_BUCKETS, GEN_AI_DURATION_BUCKETS, TOKEN_BUCKETS,
};

/// `heartrule_build_info{version, git_sha?, rustc?} 1`.
pub const BUILD_INFO: &str = "heartrule_build_info";
/// Gauge of the cgroup memory limit of the process (absent when unlimited).
pub const PROCESS_MEMORY_LIMIT: &str = "heartrule_process_memory_limit_bytes";

/// The metrics this crate records itself: the span pipeline's counter,
/// build info, the `metrics-process` collector's `process_*` gauges and the
/// cgroup memory limit.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::counter(
            crate::traces::SPANS_TOTAL,
            &["stage"],
            "Spans by stage of the OTLP export pipeline: ended (queued; published with each export), exported, failed. ended outgrowing exported + failed means the batch queue drops spans.",
        ),
        MetricDecl::gauge(
            BUILD_INFO,
            None,
            &["version", "git_sha", "rustc"],
            "Build information; always 1. git_sha and rustc are present when known at build time.",
        ),
        // The process_* names are fixed by the `metrics-process` collector
        // (the Prometheus client conventions); declared here for their help.
        MetricDecl::counter(
            "process_cpu_seconds_total",
            &[],
            "Total user and system CPU time spent by the process, in seconds.",
        ),
        MetricDecl::gauge(
            "process_resident_memory_bytes",
            Some(Unit::Bytes),
            &[],
            "Resident memory size of the process.",
        ),
        MetricDecl::gauge(
            "process_virtual_memory_bytes",
            Some(Unit::Bytes),
            &[],
            "Virtual memory size of the process.",
        ),
        MetricDecl::gauge(
            "process_virtual_memory_max_bytes",
            Some(Unit::Bytes),
            &[],
            "Maximum amount of virtual memory available to the process.",
        ),
        MetricDecl::gauge(
            PROCESS_MEMORY_LIMIT,
            Some(Unit::Bytes),
            &[],
            "Memory the process may use: its cgroup's limit (v2 memory.max, v1 memory.limit_in_bytes) or, when smaller or unlimited, the machine's physical memory; read at each scrape.",
        ),
        MetricDecl::gauge(
            "process_open_fds",
            Some(Unit::Count),
            &[],
            "Open file descriptors of the process.",
        ),
        MetricDecl::gauge(
            "process_max_fds",
            Some(Unit::Count),
            &[],
            "Maximum number of open file descriptors of the process.",
        ),
        MetricDecl::gauge(
            "process_start_time_seconds",
            Some(Unit::Seconds),
            &[],
            "Start time of the process since the Unix epoch, in seconds.",
        ),
        MetricDecl::gauge(
            "process_threads",
            Some(Unit::Count),
            &[],
            "Operating system threads of the process.",
        ),
    ],
};

/// Every metric the service exposes at `/metrics`: the sets the emitting
/// crates declare (handed over by the composition root) plus this crate's
/// own [`METRICS`], checked for well-formedness and duplicate names. The
/// recorder's help texts and buckets, the README table and the checks on
/// dashboards and alert rules all read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    sets: Vec<MetricSet>,
}

impl Catalogue {
    /// The catalogue of `sets` followed by this crate's [`METRICS`].
    ///
    /// # Errors
    /// [`TelemetryError::Catalogue`] when a declaration is malformed, a name
    /// is declared twice (in one set or across sets), or a crate hands over
    /// two sets.
    pub fn new(sets: impl IntoIterator<Item = MetricSet>) -> Result<Self, TelemetryError> {
        let mut all: Vec<MetricSet> = sets.into_iter().collect();
        all.push(METRICS);
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (index, set) in all.iter().enumerate() {
            if all[..index]
                .iter()
                .any(|other| other.emitted_by == set.emitted_by)
            {
                return Err(TelemetryError::Catalogue(format!(
                    "{} hands over two metric sets",
                    set.emitted_by
                )));
            }
            for decl in set.metrics {
                decl.check().map_err(TelemetryError::Catalogue)?;
                if let Some((_, first)) = seen.iter().find(|(name, _)| *name == decl.name) {
                    return Err(TelemetryError::Catalogue(format!(
                        "metric `{}` is declared by {first} and again by {}",
                        decl.name, set.emitted_by
                    )));
                }
                seen.push((decl.name, set.emitted_by));
            }
        }
        Ok(Self { sets: all })
    }

    /// Only this crate's own metrics (for tools that install telemetry
    /// without the rest of the service).
    #[must_use]
    pub fn own() -> Self {
        Self {
            sets: vec![METRICS],
        }
    }

    /// Every declaration with the crate that emits it, in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static MetricDecl)> + '_ {
        self.sets
            .iter()
            .flat_map(|set| set.metrics.iter().map(move |decl| (set.emitted_by, decl)))
    }

    /// The declaration of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&'static MetricDecl> {
        self.sets.iter().find_map(|set| set.get(name))
    }

    /// How many metrics are catalogued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sets.iter().map(|set| set.metrics.len()).sum()
    }

    /// Whether nothing is catalogued (never, since this crate's own metrics
    /// are always there).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers unit and help text of every catalogued metric with the
    /// installed recorder (`init` does this).
    pub fn describe(&self) {
        for (_, decl) in self.iter() {
            match (decl.kind, decl.unit) {
                (MetricKind::Counter, Some(unit)) => {
                    metrics::describe_counter!(decl.name, unit, decl.help);
                }
                (MetricKind::Counter, None) => metrics::describe_counter!(decl.name, decl.help),
                (MetricKind::Gauge, Some(unit)) => {
                    metrics::describe_gauge!(decl.name, unit, decl.help);
                }
                (MetricKind::Gauge, None) => metrics::describe_gauge!(decl.name, decl.help),
                (MetricKind::Histogram, Some(unit)) => {
                    metrics::describe_histogram!(decl.name, unit, decl.help);
                }
                (MetricKind::Histogram, None) => {
                    metrics::describe_histogram!(decl.name, decl.help);
                }
            }
        }
    }

    /// A Markdown table (name, type, labels, emitting crate without its
    /// `heartrule-` prefix, help), for the README.
    #[must_use]
    pub fn markdown_table(&self) -> String {
        let mut table = String::from(
            "| Metric | Type | Labels | Emitted by | Description |\n|---|---|---|---|---|\n",
        );
        for (emitted_by, decl) in self.iter() {
            let labels = if decl.labels.is_empty() {
                "—".to_owned()
            } else {
                decl.labels
                    .iter()
                    .map(|label| format!("`{label}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            table.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                decl.name,
                decl.kind.as_str(),
                labels,
                emitted_by.strip_prefix("heartrule-").unwrap_or(emitted_by),
                decl.help
            ));
        }
        table
    }
}

/// The recorder's configuration: the catalogue's buckets per histogram, and
/// [`DURATION_BUCKETS`] for any other histogram so none renders as a summary.
pub(crate) fn prometheus_builder(
    catalogue: &Catalogue,
) -> Result<PrometheusBuilder, TelemetryError> {
    let mut builder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .map_err(|error| TelemetryError::MetricsRecorder(error.to_string()))?;
    for (_, decl) in catalogue.iter() {
        if let Some(buckets) = decl.buckets {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(decl.name.to_owned()), buckets)
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
        // Read at each scrape: a container's limit can be resized in place.
        if let Some(limit) = crate::cgroup::memory_limit_bytes() {
            metrics::gauge!(PROCESS_MEMORY_LIMIT).set(limit as f64);
        }
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
    pub(crate) fn install(
        service_version: &str,
        catalogue: &Catalogue,
    ) -> Result<Self, TelemetryError> {
        let handle = prometheus_builder(catalogue)?
            .install_recorder()
            .map_err(|error| TelemetryError::MetricsRecorder(error.to_string()))?;
        catalogue.describe();
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

    const HTTP: MetricSet = MetricSet {
        emitted_by: "heartrule-http-adapter",
        metrics: &[MetricDecl::histogram(
            "http_server_request_duration_seconds",
            Unit::Seconds,
            &["method", "route", "status"],
            DURATION_BUCKETS,
            "Duration of HTTP server requests.",
        )],
    };

    #[test]
    fn the_catalogue_holds_the_handed_sets_then_its_own() {
        let catalogue = Catalogue::new([HTTP]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(catalogue.len(), 1 + METRICS.metrics.len());
        let first = catalogue.iter().next().map(|(by, decl)| (by, decl.name));
        assert_eq!(
            first,
            Some((
                "heartrule-http-adapter",
                "http_server_request_duration_seconds"
            ))
        );
        for name in [
            BUILD_INFO,
            PROCESS_MEMORY_LIMIT,
            "process_cpu_seconds_total",
        ] {
            assert!(catalogue.get(name).is_some(), "{name}");
        }
        assert_eq!(Catalogue::own().len(), METRICS.metrics.len());
    }

    #[test]
    fn duplicates_and_malformed_declarations_are_refused() {
        let again = MetricSet {
            emitted_by: "heartrule-cache",
            metrics: HTTP.metrics,
        };
        let error = Catalogue::new([HTTP, again]).unwrap_err().to_string();
        assert!(
            error.contains("http_server_request_duration_seconds")
                && error.contains("heartrule-http-adapter")
                && error.contains("heartrule-cache"),
            "{error}"
        );
        assert!(Catalogue::new([HTTP, HTTP]).is_err(), "one set per crate");
        const CLASH: MetricSet = MetricSet {
            emitted_by: "heartrule-server",
            metrics: &[MetricDecl::gauge(BUILD_INFO, None, &[], "Again.")],
        };
        assert!(
            Catalogue::new([CLASH]).is_err(),
            "clash with telemetry's own"
        );
        const MALFORMED: MetricSet = MetricSet {
            emitted_by: "heartrule-server",
            metrics: &[MetricDecl::counter("heartrule_things", &[], "Things.")],
        };
        let error = Catalogue::new([MALFORMED]).unwrap_err().to_string();
        assert!(error.contains("heartrule_things"), "{error}");
    }

    #[test]
    fn the_markdown_table_has_a_row_per_metric_without_the_crate_prefix() {
        let catalogue = Catalogue::new([HTTP]).unwrap_or_else(|e| panic!("{e}"));
        let table = catalogue.markdown_table();
        assert_eq!(table.lines().count(), catalogue.len() + 2);
        assert!(table.contains(
            "| `http_server_request_duration_seconds` | histogram | `method`, `route`, `status` | http-adapter | Duration of HTTP server requests. |"
        ));
        assert!(
            table.contains("| `heartrule_process_memory_limit_bytes` | gauge | — | telemetry |")
        );
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
