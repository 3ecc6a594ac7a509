//! Why telemetry could not start.

/// Failures of [`crate::init`] and [`crate::build_subscriber`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error("invalid telemetry setting `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    #[error("invalid log filter `{directives}`: {reason}")]
    InvalidLogFilter { directives: String, reason: String },
    #[error("cannot open the log directory {directory}: {reason}")]
    LogFile { directory: String, reason: String },
    #[error(
        "gRPC trace export needs a Tokio runtime: call init inside one (or use http_protobuf)"
    )]
    NoTokioRuntime,
    #[error("cannot build the OTLP trace exporter: {0}")]
    TraceExporter(String),
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet,
    #[error("invalid metrics catalogue: {0}")]
    Catalogue(String),
    #[error("cannot install the Prometheus recorder: {0}")]
    MetricsRecorder(String),
    #[error("cannot start the metrics upkeep thread: {0}")]
    UpkeepThread(String),
    #[error("flushing spans failed: {0}")]
    Flush(String),
}

impl TelemetryError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
