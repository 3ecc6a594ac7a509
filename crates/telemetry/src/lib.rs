//! HeartRule's telemetry: everything the server needs to make
//! the engine measurable, traceable and diagnosable. The other crates only
//! emit through facades (`tracing` spans/events, the `metrics` macros); this
//! crate installs what receives them:
//!
//! - **Logs**: a `tracing` subscriber writing JSON lines (production) or
//!   pretty text (development) to stdout through a non-blocking writer, and
//!   optionally to daily rolling files. Lines inside a traced span carry
//!   `trace_id` and `span_id` (see [`logs`](crate#logs) below). The level
//!   comes from config; a non-empty `RUST_LOG` wins.
//! - **Traces**: the `tracing-opentelemetry` layer exporting over OTLP
//!   (gRPC or HTTP/protobuf) with a batching processor, sampler
//!   `ParentBased(TraceIdRatioBased(ratio))`, the resource
//!   `service.name`/`service.version`/`deployment.environment.name`, and the
//!   W3C TraceContext propagator installed globally. [`continue_trace`],
//!   [`trace_id`] and [`inject_trace_headers`] work on plain closures, so
//!   adapters need no OpenTelemetry dependency.
//! - **Metrics**: the `metrics-exporter-prometheus` recorder (no listener of
//!   its own: the server serves [`Telemetry::render_metrics`] at `/metrics`)
//!   with the OpenTelemetry-recommended buckets, `heartrule_build_info`, and
//!   process CPU/memory/fd metrics and the cgroup memory limit refreshed on
//!   every render. Each crate declares the metrics it emits (a
//!   [`MetricSet`] of the domain crate); [`Catalogue`] gathers the sets the
//!   composition root hands over, plus this crate's own [`METRICS`], into
//!   the one list of names, labels, units, help texts and buckets.
//!
//! # Logs
//! The OpenTelemetry layer attaches a span's OTel context to the thread while
//! the span is entered; the event formatters read that context, so every line
//! written inside an entered, traced span names its trace and span. Field
//! names stay as emitted (`event`, `session.id`, `error.code`, …). Nothing in
//! this crate logs message text; [`capture_content`] is the one switch for
//! the adapters that could.
//!
//! # Versions
//! opentelemetry / opentelemetry_sdk / opentelemetry-otlp /
//! opentelemetry-proto 0.33, tracing-opentelemetry 0.34 (built on
//! opentelemetry 0.33), metrics-exporter-prometheus 0.18 (metrics 0.24),
//! metrics-process 2.4, tracing-subscriber 0.3, tracing-appender 0.2.

mod cgroup;
mod config;
mod error;
mod logs;
mod prometheus;
mod traces;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{
    capture_content, FileLogConfig, LogConfig, LogFormat, MetricsConfig, OtlpProtocol,
    TelemetryConfig, TraceConfig,
};
pub use error::TelemetryError;
pub use prometheus::{
    Catalogue, MetricDecl, MetricKind, MetricSet, BUILD_INFO, DURATION_BUCKETS,
    GEN_AI_DURATION_BUCKETS, METRICS, PROCESS_MEMORY_LIMIT, TOKEN_BUCKETS,
};
pub use traces::{continue_trace, inject_trace_headers, trace_id};

use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::MetricsRuntime;
use std::sync::Arc;
use std::time::Duration;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;

/// What renders the Prometheus text exposition (for the `/metrics` route).
pub type MetricsRendererFn = Arc<dyn Fn() -> String + Send + Sync>;

/// The running telemetry of the process. Keep it alive for the process's
/// lifetime and call [`Telemetry::shutdown`] last: it flushes queued spans and
/// log lines. Dropping it does the same.
pub struct Telemetry {
    pipeline: Pipeline,
    metrics: Option<MetricsRuntime>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.pipeline.tracer_provider.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// Installs logs, traces and metrics globally as configured (the
/// recorder's help texts and buckets from `catalogue`), logging to
/// stdout (non-blocking: a stalled stdout drops lines rather than stalling
/// requests).
///
/// With `traces.protocol = grpc` call it inside a Tokio runtime, and keep
/// that runtime running until [`Telemetry::shutdown`] returns.
///
/// # Errors
/// Invalid configuration, an unusable log directory or exporter endpoint, or
/// a subscriber/recorder already installed in this process.
pub fn init(config: &TelemetryConfig, catalogue: &Catalogue) -> Result<Telemetry, TelemetryError> {
    let (stdout, guard) = tracing_appender::non_blocking(std::io::stdout());
    install(config, catalogue, stdout, vec![guard])
}

/// [`init`], with log lines written to `writer` instead of stdout (tests
/// capture them with `testing::CapturedLogs`, behind the `testing` feature).
///
/// # Errors
/// As [`init`].
pub fn init_with_writer<W>(
    config: &TelemetryConfig,
    catalogue: &Catalogue,
    writer: W,
) -> Result<Telemetry, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(config, catalogue, writer, Vec::new())
}

fn install<W>(
    config: &TelemetryConfig,
    catalogue: &Catalogue,
    console: W,
    log_guards: Vec<WorkerGuard>,
) -> Result<Telemetry, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (dispatch, pipeline) = assemble(config, console, log_guards)?;
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|_| TelemetryError::SubscriberAlreadySet)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &pipeline.tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    let metrics = if config.metrics.enabled {
        Some(MetricsRuntime::install(&config.service_version, catalogue)?)
    } else {
        None
    };
    Ok(Telemetry { pipeline, metrics })
}

impl Telemetry {
    /// The Prometheus text exposition of every metric recorded so far
    /// (process metrics refreshed first); `None` when metrics are disabled.
    #[must_use]
    pub fn render_metrics(&self) -> Option<String> {
        self.metrics
            .as_ref()
            .map(|metrics| metrics.renderer().render())
    }

    /// A shareable [`Telemetry::render_metrics`] for the HTTP adapter's
    /// `/metrics` route; `None` when metrics are disabled.
    #[must_use]
    pub fn metrics_renderer(&self) -> Option<MetricsRendererFn> {
        self.metrics.as_ref().map(|metrics| {
            let renderer = metrics.renderer();
            Arc::new(move || renderer.render()) as MetricsRendererFn
        })
    }

    /// Exports the spans queued so far, waiting up to the export timeout.
    ///
    /// # Errors
    /// [`TelemetryError::Flush`] when the exporter failed or timed out.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.pipeline.flush()
    }

    /// Flushes and stops span export (bounded by `traces.export_timeout`),
    /// stops the metrics upkeep thread and flushes queued log lines.
    ///
    /// It blocks: call it outside async code or from a multi-thread runtime
    /// (the gRPC exporter needs the runtime's other threads to make progress).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut metrics) = self.metrics.take() {
            metrics.stop();
        }
        self.pipeline.stop();
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A subscriber built from config but not installed, with the span pipeline
/// behind it: for tests and tools that scope telemetry with
/// `tracing::dispatcher::with_default`. Metrics are not part of it (the
/// `metrics` recorder can only be global).
pub struct LocalTelemetry {
    dispatch: tracing::Dispatch,
    pipeline: Pipeline,
}

impl std::fmt::Debug for LocalTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTelemetry")
            .field("traces", &self.pipeline.tracer_provider.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds the configured subscriber (filter, OTel layer, log format, files)
/// writing log lines to `writer`, without installing anything globally.
/// `RUST_LOG` still overrides `log.level`.
///
/// # Errors
/// As [`init`], except that nothing global can already be set.
pub fn build_subscriber<W>(
    config: &TelemetryConfig,
    writer: W,
) -> Result<LocalTelemetry, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (dispatch, pipeline) = assemble(config, writer, Vec::new())?;
    Ok(LocalTelemetry { dispatch, pipeline })
}

impl LocalTelemetry {
    /// The subscriber, for `tracing::dispatcher::with_default` /
    /// `set_default`.
    #[must_use]
    pub fn dispatch(&self) -> &tracing::Dispatch {
        &self.dispatch
    }

    /// Exports the spans queued so far.
    ///
    /// # Errors
    /// [`TelemetryError::Flush`] when the exporter failed or timed out.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.pipeline.flush()
    }

    /// Flushes and stops span export and flushes queued log lines.
    pub fn shutdown(mut self) {
        self.pipeline.stop();
    }
}

/// The config-driven subscriber plus what must outlive it.
fn assemble<W>(
    config: &TelemetryConfig,
    console: W,
    mut log_guards: Vec<WorkerGuard>,
) -> Result<(tracing::Dispatch, Pipeline), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    config.validate()?;
    let directives = logs::log_directives(&config.log)?;
    let file_writer = match &config.log.file {
        Some(file) => {
            let (writer, guard) = logs::rolling_file_writer(file)?;
            log_guards.push(guard);
            Some(writer)
        }
        None => None,
    };
    let tracer_provider = if config.traces.enabled {
        Some(traces::tracer_provider(config)?)
    } else {
        None
    };
    let dispatch = logs::assemble(
        config.log.format,
        config.log.span_fields,
        &directives,
        console,
        file_writer,
        tracer_provider.as_ref().map(traces::tracer),
    )?;
    Ok((
        dispatch,
        Pipeline {
            tracer_provider,
            log_guards,
            export_timeout: config.traces.export_timeout,
        },
    ))
}

/// Span export and log writers, flushed on stop.
struct Pipeline {
    tracer_provider: Option<SdkTracerProvider>,
    log_guards: Vec<WorkerGuard>,
    export_timeout: Duration,
}

impl Pipeline {
    fn flush(&self) -> Result<(), TelemetryError> {
        match &self.tracer_provider {
            Some(provider) => provider
                .force_flush()
                .map_err(|error| TelemetryError::Flush(error.to_string())),
            None => Ok(()),
        }
    }

    /// Idempotent: the second call finds nothing left to stop.
    fn stop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            if let Err(error) = provider.shutdown_with_timeout(self.export_timeout) {
                tracing::warn!(error = %error, "flushing spans at shutdown failed");
            }
        }
        // Dropping the guards writes out the queued lines.
        self.log_guards.clear();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}
