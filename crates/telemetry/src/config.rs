//! The `telemetry` section of the server configuration.

use crate::error::TelemetryError;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Logs, traces and metrics settings. Every field has a default, so an empty
/// section is valid: JSON logs at `info`, no trace export, metrics on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// `service.version` of the exported resource and `version` of `heartrule_build_info`.
    pub service_version: String,
    /// `deployment.environment.name` of the exported resource.
    pub environment: String,
    pub log: LogConfig,
    pub traces: TraceConfig,
    pub metrics: MetricsConfig,
    /// Whether prompt and completion text may appear on spans and logs
    /// (counseling conversations are private, so off unless asked for).
    pub capture_content: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "heartrule".to_owned(),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            environment: "development".to_owned(),
            log: LogConfig::default(),
            traces: TraceConfig::default(),
            metrics: MetricsConfig::default(),
            capture_content: false,
        }
    }
}

impl TelemetryConfig {
    /// Rejects settings that would fail later or silently do nothing.
    ///
    /// # Errors
    /// [`TelemetryError::InvalidConfig`] naming the offending field.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if self.service_name.trim().is_empty() {
            return Err(TelemetryError::invalid("service_name", "must not be empty"));
        }
        if let Some(file) = &self.log.file {
            if file.prefix.trim().is_empty() {
                return Err(TelemetryError::invalid(
                    "log.file.prefix",
                    "must not be empty",
                ));
            }
            if file.retention_files == 0 {
                return Err(TelemetryError::invalid(
                    "log.file.retention_files",
                    "must keep at least one file",
                ));
            }
        }
        if self.traces.enabled {
            let ratio = self.traces.sampling_ratio;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(TelemetryError::invalid(
                    "traces.sampling_ratio",
                    format!("{ratio} is not between 0 and 1"),
                ));
            }
            if self.traces.export_timeout.is_zero() {
                return Err(TelemetryError::invalid(
                    "traces.export_timeout",
                    "must be longer than zero",
                ));
            }
            let endpoint = self.traces.endpoint.trim();
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(TelemetryError::invalid(
                    "traces.endpoint",
                    format!("`{endpoint}` is not an http:// or https:// URL"),
                ));
            }
            if self.traces.protocol == OtlpProtocol::Grpc && endpoint.starts_with("https://") {
                // The gRPC exporter is built without TLS (no extra crypto toolchain);
                // HTTP/protobuf reaches TLS collectors through the system OpenSSL.
                return Err(TelemetryError::invalid(
                    "traces.endpoint",
                    "gRPC export supports plain http:// collectors only; use protocol \
                     `http_protobuf` for an https:// collector",
                ));
            }
        }
        Ok(())
    }
}

/// Whether prompt and completion text may be recorded (they are private).
/// Adapters ask this instead of reading the flag, so the rule has one home.
#[must_use]
pub fn capture_content(config: &TelemetryConfig) -> bool {
    config.capture_content
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `EnvFilter` directives, e.g. `info` or `info,heartrule_llm=debug`.
    /// A non-empty `RUST_LOG` replaces them.
    pub level: String,
    /// Also write logs to daily rolling files.
    pub file: Option<FileLogConfig>,
    /// JSON lines also carry the fields of their enclosing spans (next to
    /// the span names they always carry). Off by default: the trace has
    /// those fields under the line's `trace_id`, and rendering them costs
    /// on every span of every request, logged or not. Turn on when no trace
    /// backend is at hand. The pretty format always shows them.
    pub span_fields: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
            file: None,
            span_fields: false,
        }
    }
}

/// `json`: one JSON object per line (production). `pretty`: multi-line human
/// text (development).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

/// Daily rolling log files `<directory>/<prefix>.<YYYY-MM-DD>.log`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogConfig {
    pub directory: PathBuf,
    #[serde(default = "default_file_prefix")]
    pub prefix: String,
    /// How many daily files to keep; older ones are deleted on rotation.
    #[serde(default = "default_retention_files")]
    pub retention_files: usize,
}

fn default_file_prefix() -> String {
    "heartrule".to_owned()
}

fn default_retention_files() -> usize {
    7
}

/// OTLP trace export.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    pub enabled: bool,
    /// The collector's base URL: `http://host:4317` for gRPC,
    /// `http://host:4318` for HTTP (`/v1/traces` is appended unless present).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Fraction of new traces to sample (0..=1); requests that arrive with a
    /// `traceparent` follow their caller's decision.
    pub sampling_ratio: f64,
    /// Upper bound of one export request, and of the final flush at shutdown.
    #[serde(deserialize_with = "deserialize_duration")]
    pub export_timeout: Duration,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://localhost:4317".to_owned(),
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl TraceConfig {
    /// The URL the exporter posts to: as configured for gRPC; for HTTP the
    /// signal path `/v1/traces` is appended when missing (the OTLP convention
    /// for a base endpoint).
    #[must_use]
    pub fn export_url(&self) -> String {
        let endpoint = self.endpoint.trim();
        match self.protocol {
            OtlpProtocol::Grpc => endpoint.to_owned(),
            OtlpProtocol::HttpProtobuf => {
                let base = endpoint.trim_end_matches('/');
                if base.ends_with("/v1/traces") {
                    base.to_owned()
                } else {
                    format!("{base}/v1/traces")
                }
            }
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    /// Protobuf over HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`).
    #[serde(alias = "http/protobuf", alias = "http-protobuf")]
    HttpProtobuf,
}

/// The Prometheus recorder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Accepts `"500ms"`/`"10s"` (humantime) or an integer number of milliseconds.
fn deserialize_duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    struct DurationVisitor;

    impl serde::de::Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a duration such as \"500ms\" or \"10s\", or an integer number of milliseconds",
            )
        }

        fn visit_u64<E: serde::de::Error>(self, millis: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(millis))
        }

        fn visit_i64<E: serde::de::Error>(self, millis: i64) -> Result<Duration, E> {
            u64::try_from(millis)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("a duration cannot be negative ({millis} ms)")))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            let text = text.trim();
            if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                return text
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|error| {
                        E::custom(format!("`{text}` is not a number of milliseconds: {error}"))
                    });
            }
            humantime::parse_duration(text)
                .map_err(|error| E::custom(format!("`{text}` is not a duration: {error}")))
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TelemetryConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_empty_section_gets_the_documented_defaults() {
        let config = parse("{}");
        assert_eq!(config, TelemetryConfig::default());
        assert_eq!(config.service_name, "heartrule");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "info");
        assert!(config.log.file.is_none());
        assert!(!config.traces.enabled);
        assert_eq!(config.traces.protocol, OtlpProtocol::Grpc);
        assert!((config.traces.sampling_ratio - 1.0).abs() < f64::EPSILON);
        assert_eq!(config.traces.export_timeout, Duration::from_secs(10));
        assert!(config.metrics.enabled);
        assert!(!config.capture_content);
        assert!(!capture_content(&config));
        config.validate().unwrap();
    }

    #[test]
    fn a_full_section_is_read() {
        let config = parse(
            r#"{
                "service_name": "hr", "service_version": "1.2.3", "environment": "production",
                "log": {"format": "pretty", "level": "debug",
                        "file": {"directory": "/var/log/hr", "prefix": "engine", "retention_files": 3}},
                "traces": {"enabled": true, "endpoint": "http://otel:4318", "protocol": "http/protobuf",
                           "sampling_ratio": 0.25, "export_timeout": "2s"},
                "metrics": {"enabled": false},
                "capture_content": true
            }"#,
        );
        assert_eq!(config.log.format, LogFormat::Pretty);
        assert_eq!(
            config.log.file,
            Some(FileLogConfig {
                directory: PathBuf::from("/var/log/hr"),
                prefix: "engine".to_owned(),
                retention_files: 3
            })
        );
        assert_eq!(config.traces.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(config.traces.export_timeout, Duration::from_secs(2));
        assert!(!config.metrics.enabled);
        assert!(capture_content(&config));
        config.validate().unwrap();
    }

    #[test]
    fn durations_accept_milliseconds_and_reject_negatives() {
        let config = parse(r#"{"traces": {"export_timeout": 1500}}"#);
        assert_eq!(config.traces.export_timeout, Duration::from_millis(1500));
        let config = parse(r#"{"traces": {"export_timeout": "250"}}"#);
        assert_eq!(config.traces.export_timeout, Duration::from_millis(250));
        assert!(
            serde_json::from_str::<TelemetryConfig>(r#"{"traces": {"export_timeout": -1}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<TelemetryConfig>(
            r#"{"traces": {"export_timeout": "soon"}}"#
        )
        .is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = serde_json::from_str::<TelemetryConfig>(r#"{"traces": {"sample": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("sample"), "{error}");
    }

    #[test]
    fn file_logs_default_their_prefix_and_retention() {
        let config = parse(r#"{"log": {"file": {"directory": "logs"}}}"#);
        let file = config.log.file.unwrap();
        assert_eq!(file.prefix, "heartrule");
        assert_eq!(file.retention_files, 7);
    }

    fn traces(endpoint: &str, protocol: OtlpProtocol, sampling_ratio: f64) -> TelemetryConfig {
        TelemetryConfig {
            traces: TraceConfig {
                enabled: true,
                endpoint: endpoint.to_owned(),
                protocol,
                sampling_ratio,
                export_timeout: Duration::from_secs(1),
            },
            ..TelemetryConfig::default()
        }
    }

    fn invalid_field(config: &TelemetryConfig) -> String {
        match config.validate() {
            Err(TelemetryError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_offending_field() {
        assert_eq!(
            invalid_field(&traces("http://otel:4317", OtlpProtocol::Grpc, 1.5)),
            "traces.sampling_ratio"
        );
        assert_eq!(
            invalid_field(&traces("otel:4317", OtlpProtocol::Grpc, 1.0)),
            "traces.endpoint"
        );
        assert_eq!(
            invalid_field(&traces("https://otel:4317", OtlpProtocol::Grpc, 1.0)),
            "traces.endpoint"
        );
        traces("https://otel:4318", OtlpProtocol::HttpProtobuf, 0.0)
            .validate()
            .unwrap();
        let mut config = TelemetryConfig::default();
        config.log.file = Some(FileLogConfig {
            directory: PathBuf::from("logs"),
            prefix: "x".to_owned(),
            retention_files: 0,
        });
        assert_eq!(invalid_field(&config), "log.file.retention_files");
        // Disabled traces are not checked: their defaults may be anything.
        let mut config = traces("nonsense", OtlpProtocol::Grpc, 7.0);
        config.traces.enabled = false;
        config.validate().unwrap();
    }

    #[test]
    fn http_export_urls_get_the_signal_path_once() {
        let url = |endpoint: &str| {
            traces(endpoint, OtlpProtocol::HttpProtobuf, 1.0)
                .traces
                .export_url()
        };
        assert_eq!(url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(url("http://otel:4318/"), "http://otel:4318/v1/traces");
        assert_eq!(
            url("http://otel:4318/v1/traces"),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            traces("http://otel:4317", OtlpProtocol::Grpc, 1.0)
                .traces
                .export_url(),
            "http://otel:4317"
        );
    }
}
