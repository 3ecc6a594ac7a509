//! Log lines: the level filter, the JSON and pretty event formats (both
//! carrying `trace_id`/`span_id`), rolling files, and the subscriber stack.
//!
//! How log lines get their trace ids: the formatters look up the OTel
//! context of the event's innermost traced span through the dispatch the
//! subscriber was installed as ([`TraceIdSource`]). The OTel layer's
//! "context activation" (attaching the OTel context to the thread on every
//! span enter, i.e. on every poll of an instrumented future) is turned off:
//! it cost more than looking the ids up for the few events a request logs.
//! Without trace export there is no OTel context and the fields are left out.

mod json;

use crate::config::{FileLogConfig, LogConfig, LogFormat};
use crate::error::TelemetryError;
use json::{JsonLines, JsonSpanFields};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use std::fmt;
use std::sync::{Arc, OnceLock};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::format::{Format, Pretty, PrettyFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// The filter directives in force: a non-empty `RUST_LOG` wins over the
/// configured level.
pub(crate) fn filter_directives(configured: &str, rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim) {
        Some(from_env) if !from_env.is_empty() => from_env.to_owned(),
        _ => configured.trim().to_owned(),
    }
}

pub(crate) fn env_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|error| TelemetryError::InvalidLogFilter {
            directives: directives.to_owned(),
            reason: error.to_string(),
        })
}

/// The log filter directives from config and the process environment,
/// checked.
pub(crate) fn log_directives(config: &LogConfig) -> Result<String, TelemetryError> {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let directives = filter_directives(&config.level, rust_log.as_deref());
    env_filter(&directives)?;
    Ok(directives)
}

/// A non-blocking writer to daily rolling files; keep the guard alive until
/// shutdown (dropping it flushes the queue).
pub(crate) fn rolling_file_writer(
    file: &FileLogConfig,
) -> Result<(NonBlocking, WorkerGuard), TelemetryError> {
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(&file.prefix)
        .filename_suffix("log")
        .max_log_files(file.retention_files)
        .build(&file.directory)
        .map_err(|error| TelemetryError::LogFile {
            directory: file.directory.display().to_string(),
            reason: error.to_string(),
        })?;
    Ok(tracing_appender::non_blocking(appender))
}

/// Crates that carry the exporter's own traffic. Their spans never become
/// OTel spans: exporting them would produce more exports, forever.
const EXPORT_PIPELINE_TARGETS: &[&str] = &[
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "tonic",
    "tower",
];

fn is_export_pipeline(target: &str) -> bool {
    EXPORT_PIPELINE_TARGETS.iter().any(|crate_name| {
        target
            .strip_prefix(crate_name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Registry + OpenTelemetry layer (when a tracer is given) + console log
/// layer + file log layer (when a file writer is given), as a [`Dispatch`]
/// for `set_global_default` or `with_default`. The log level (`directives`)
/// filters only the log layers: traces keep every span at INFO and above
/// whatever the log level, so `log.level: warn` does not empty the traces.
///
/// Per-layer filters give each layer its own view, but they cost on every
/// span enter, exit, record and close (about a fifth of the telemetry cost
/// of a turn, measured with callgrind). So they are used only where the
/// layers really disagree: without traces, and with traces at the plain
/// `info` level (the default), one filter for all layers means the same.
pub(crate) fn assemble<W>(
    format: LogFormat,
    span_fields: bool,
    directives: &str,
    console: W,
    file: Option<NonBlocking>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Result<Dispatch, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let trace_ids = TraceIdSource::default();
    let log_filter = env_filter(directives)?;
    let subscriber: Box<dyn Subscriber + Send + Sync> = match tracer {
        None => Box::new(
            tracing_subscriber::registry()
                .with(log_filter)
                .with(log_layer(format, span_fields, console, &trace_ids))
                .with(file.map(|writer| log_layer(format, span_fields, writer, &trace_ids))),
        ),
        Some(tracer) if is_plain_info(directives) => Box::new(
            tracing_subscriber::registry()
                // INFO and above for every layer, except the spans of the
                // export pipeline: the trace layer must never see those, and
                // no log line is lost without them (they have no events).
                .with(filter_fn(|metadata| {
                    *metadata.level() <= tracing::Level::INFO
                        && !(metadata.is_span() && is_export_pipeline(metadata.target()))
                }))
                .with(otel_layer(tracer))
                .with(log_layer(format, span_fields, console, &trace_ids))
                .with(file.map(|writer| log_layer(format, span_fields, writer, &trace_ids))),
        ),
        Some(tracer) => {
            let file_layer = match file {
                Some(writer) => Some(
                    log_layer(format, span_fields, writer, &trace_ids)
                        .with_filter(env_filter(directives)?),
                ),
                None => None,
            };
            Box::new(
                tracing_subscriber::registry()
                    .with(otel_layer(tracer).with_filter(filter_fn(|metadata| {
                        *metadata.level() <= tracing::Level::INFO
                            && !is_export_pipeline(metadata.target())
                    })))
                    .with(
                        log_layer(format, span_fields, console, &trace_ids).with_filter(log_filter),
                    )
                    .with(file_layer),
            )
        }
    };
    let dispatch = Dispatch::new(subscriber);
    trace_ids.bind(&dispatch);
    Ok(dispatch)
}

/// `info` and nothing else: the level the trace layer keeps too.
fn is_plain_info(directives: &str) -> bool {
    directives.trim().eq_ignore_ascii_case("info")
}

/// The OpenTelemetry layer. Source location, target (module path), thread
/// and busy/idle attributes are left off: they add several attributes to
/// every span of every request and the span names already say where they
/// come from. Context activation is off too: see the module comment.
fn otel_layer<S>(
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
}

fn log_layer<S, W>(
    format: LogFormat,
    span_fields: bool,
    writer: W,
    trace_ids: &TraceIdSource,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .fmt_fields(JsonSpanFields {
                record: span_fields,
            })
            .event_format(JsonLines {
                trace_ids: trace_ids.clone(),
            })
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .fmt_fields(PrettyFields::new())
            .event_format(PrettyWithTraceIds::new(trace_ids.clone()))
            .boxed(),
    }
}

/// Finds the OTel trace and span ids of an event's innermost traced span,
/// through the dispatch the subscriber was installed as. Weak, so the
/// subscriber does not keep itself alive; bound once by [`assemble`].
#[derive(Clone, Default)]
pub(crate) struct TraceIdSource(Arc<OnceLock<WeakDispatch>>);

impl TraceIdSource {
    fn bind(&self, dispatch: &Dispatch) {
        // Bound right after the dispatch is made, before any event: a second
        // bind cannot happen.
        let _ = self.0.set(dispatch.downgrade());
    }

    /// The ids of the innermost span around the event that the OTel layer
    /// traces (spans it filters out, such as DEBUG ones, are skipped);
    /// `None` outside spans or without trace export. The scope is read from
    /// the registry itself: a log layer's own view leaves out the spans its
    /// level filter rejects, which would lose the ids at `log.level: warn`.
    fn of_event(&self, event: &Event<'_>) -> Option<(TraceId, SpanId)> {
        let dispatch = self.0.get()?.upgrade()?;
        let registry = dispatch.downcast_ref::<Registry>()?;
        let innermost = if event.is_contextual() {
            dispatch.current_span().id()?.clone()
        } else {
            event.parent()?.clone()
        };
        let innermost = registry.span(&innermost)?;
        innermost
            .scope()
            .find_map(|span| Self::ids(&span.id(), &dispatch))
    }

    fn ids(span: &tracing::span::Id, dispatch: &Dispatch) -> Option<(TraceId, SpanId)> {
        let context = tracing_opentelemetry::get_otel_context(span, dispatch)?;
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        span_context
            .is_valid()
            .then(|| (span_context.trace_id(), span_context.span_id()))
    }
}

/// tracing-subscriber's multi-line `Pretty` format plus a
/// `trace_id: …, span_id: …` line for events inside a traced span. Plain
/// text: the inner format is rendered into a buffer to append that line, and
/// a buffer has no colours.
pub(crate) struct PrettyWithTraceIds {
    inner: Format<Pretty>,
    trace_ids: TraceIdSource,
}

impl PrettyWithTraceIds {
    fn new(trace_ids: TraceIdSource) -> Self {
        Self {
            inner: tracing_subscriber::fmt::format().pretty().with_ansi(false),
            trace_ids,
        }
    }
}

impl<S, N> FormatEvent<S, N> for PrettyWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = self.trace_ids.of_event(event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut rendered = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut rendered), event)?;
        writeln!(writer, "{}", rendered.trim_end_matches('\n'))?;
        writeln!(writer, "    trace_id: {trace_id}, span_id: {span_id}")?;
        // The pretty format separates events with an empty line.
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CapturedLogs;
    use crate::traces;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// A tracer that samples everything and exports nowhere: spans get real ids.
    fn local_tracer() -> (
        opentelemetry_sdk::trace::SdkTracerProvider,
        opentelemetry_sdk::trace::SdkTracer,
    ) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(traces::sampler(1.0))
            .build();
        let tracer = provider.tracer("test");
        (provider, tracer)
    }

    fn subscriber(
        format: LogFormat,
        level: &str,
        logs: &CapturedLogs,
        traced: bool,
    ) -> (
        tracing::Dispatch,
        Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    ) {
        let (provider, tracer) = if traced {
            let (provider, tracer) = local_tracer();
            (Some(provider), Some(tracer))
        } else {
            (None, None)
        };
        let dispatch = assemble(format, true, level, logs.clone(), None, tracer).unwrap();
        (dispatch, provider)
    }

    #[test]
    fn rust_log_wins_over_the_configured_level_unless_empty() {
        assert_eq!(filter_directives("info", None), "info");
        assert_eq!(filter_directives("info", Some("  ")), "info");
        assert_eq!(
            filter_directives("info", Some("debug,hyper=warn")),
            "debug,hyper=warn"
        );
        assert!(env_filter("info,heartrule=debug").is_ok());
        match env_filter("info,heartrule=loud") {
            Err(TelemetryError::InvalidLogFilter { directives, .. }) => {
                assert_eq!(directives, "info,heartrule=loud");
            }
            other => panic!("expected an invalid filter, got {other:?}"),
        }
    }

    #[test]
    fn json_lines_carry_fields_spans_and_the_trace_ids_of_the_span() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(LogFormat::Json, "info", &logs, true);
        let expected_ids = tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!(
                "session_manager.process_turn",
                session.id = "s-1",
                turn = 3_u64
            );
            let _entered = span.enter();
            tracing::info!(
                event = "turn_committed",
                session.id = "s-1",
                error.code = tracing::field::Empty,
                latency_ms = 12.5,
                ok = true,
                "turn {} committed",
                3
            );
            let context = span.context();
            let otel_span = context.span();
            let span_context = otel_span.span_context();
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        });

        let lines = logs.json_lines().unwrap();
        assert_eq!(lines.len(), 1, "{:?}", logs.text());
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "turn 3 committed");
        assert_eq!(line["event"], "turn_committed");
        assert_eq!(line["session.id"], "s-1");
        assert_eq!(line["latency_ms"], 12.5);
        assert_eq!(line["ok"], true);
        assert!(
            line.get("error.code").is_none(),
            "empty fields are not recorded"
        );
        assert_eq!(line["trace_id"], expected_ids.0.as_str());
        assert_eq!(line["span_id"], expected_ids.1.as_str());
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
        assert_eq!(line["span"]["name"], "session_manager.process_turn");
        assert_eq!(line["span"]["session.id"], "s-1");
        assert_eq!(line["span"]["turn"], 3);
        assert!(chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn json_lines_list_nested_spans_from_the_root_and_keep_reserved_names() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(LogFormat::Json, "info", &logs, true);
        let (outer_trace, inner_span) = tracing::dispatcher::with_default(&dispatch, || {
            let outer = tracing::info_span!("http.request", request_id = "r-9");
            let _outer = outer.enter();
            let inner = tracing::info_span!("engine.action", action.id = "a1");
            let _inner = inner.enter();
            tracing::warn!(level = "custom", trace_id = "forged", "inside");
            let outer_context = outer.context();
            let inner_context = inner.context();
            (
                outer_context.span().span_context().trace_id().to_string(),
                inner_context.span().span_context().span_id().to_string(),
            )
        });
        let line = &logs.json_lines().unwrap()[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["fields.level"], "custom");
        assert_eq!(line["fields.trace_id"], "forged");
        assert_eq!(
            line["trace_id"],
            outer_trace.as_str(),
            "children share the trace"
        );
        assert_eq!(
            line["span_id"],
            inner_span.as_str(),
            "the innermost span is named"
        );
        let spans = line["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0]["name"], "http.request");
        assert_eq!(spans[0]["request_id"], "r-9");
        assert_eq!(spans[1]["name"], "engine.action");
        assert_eq!(line["span"]["action.id"], "a1");
    }

    #[test]
    fn lines_name_the_nearest_traced_span_and_follow_an_explicit_parent() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(LogFormat::Json, "debug", &logs, true);
        let (request_ids, action_ids) = tracing::dispatcher::with_default(&dispatch, || {
            let request = tracing::info_span!("http.request");
            let action = tracing::info_span!(parent: None, "engine.action");
            let ids = |span: &tracing::Span| {
                let context = span.context();
                let otel_span = context.span();
                let span_context = otel_span.span_context();
                (
                    span_context.trace_id().to_string(),
                    span_context.span_id().to_string(),
                )
            };
            let _request = request.enter();
            // DEBUG spans are not traced: the line names the INFO span around it.
            let chatty = tracing::debug_span!("chatty");
            let _chatty = chatty.enter();
            tracing::info!("inside a debug span");
            // An explicit parent wins over the entered spans.
            tracing::info!(parent: &action, "about the action");
            (ids(&request), ids(&action))
        });
        let lines = logs.json_lines().unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["trace_id"], request_ids.0.as_str());
        assert_eq!(lines[0]["span_id"], request_ids.1.as_str());
        assert_eq!(lines[0]["span"]["name"], "chatty");
        assert_eq!(lines[1]["trace_id"], action_ids.0.as_str());
        assert_eq!(lines[1]["span_id"], action_ids.1.as_str());
        assert_ne!(request_ids.0, action_ids.0, "two separate traces");
    }

    #[test]
    fn by_default_json_lines_name_their_spans_without_the_span_fields() {
        let logs = CapturedLogs::default();
        let (provider, tracer) = local_tracer();
        let dispatch = assemble(
            LogFormat::Json,
            false,
            "info",
            logs.clone(),
            None,
            Some(tracer),
        )
        .unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let outer = tracing::info_span!("http.request", request_id = "r-1");
            let _outer = outer.enter();
            let inner = tracing::info_span!("db.select", db.system = "postgresql");
            let _inner = inner.enter();
            tracing::info!(event = "turn_committed", "committed");
        });
        let line = &logs.json_lines().unwrap()[0];
        assert_eq!(line["event"], "turn_committed");
        assert_eq!(line["span"], serde_json::json!({"name": "db.select"}));
        assert_eq!(
            line["spans"],
            serde_json::json!([{"name": "http.request"}, {"name": "db.select"}])
        );
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
        drop(provider);
    }

    #[test]
    fn json_lines_outside_spans_or_without_tracing_have_no_trace_ids() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(LogFormat::Json, "info", &logs, false);
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(event = "session_created", "outside");
            let span = tracing::info_span!("untraced");
            let _entered = span.enter();
            tracing::info!("inside an untraced span");
        });
        let lines = logs.json_lines().unwrap();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert!(line.get("trace_id").is_none(), "{line}");
            assert!(line.get("span_id").is_none(), "{line}");
        }
        assert!(lines[0].get("span").is_none());
        assert_eq!(lines[1]["span"]["name"], "untraced");
    }

    #[test]
    fn a_quiet_log_level_keeps_info_spans_in_traces() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(LogFormat::Json, "warn", &logs, true);
        let (traced, debug_traced) = tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("db.select");
            let _entered = span.enter();
            tracing::info!("not logged at warn");
            tracing::warn!("logged");
            let debug_span = tracing::debug_span!("chatty");
            (
                crate::trace_id(&span).is_some(),
                crate::trace_id(&debug_span).is_some(),
            )
        });
        assert!(traced, "an INFO span must be traced when logs are at warn");
        assert!(!debug_traced, "DEBUG spans are not traced");
        let lines = logs.json_lines().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["message"], "logged");
        assert!(lines[0].get("trace_id").is_some());
    }

    #[test]
    fn the_level_filter_applies_to_logs() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(
            LogFormat::Json,
            "warn,heartrule_special=debug",
            &logs,
            false,
        );
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("dropped: below warn");
            tracing::debug!("dropped: below warn");
            tracing::warn!("kept: warn");
            tracing::error!("kept: error");
            tracing::debug!(target: "heartrule_special::module", "kept: debug for this target");
            tracing::trace!(target: "heartrule_special", "dropped: below debug");
        });
        let messages: Vec<String> = logs
            .json_lines()
            .unwrap()
            .iter()
            .map(|line| line["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            messages,
            ["kept: warn", "kept: error", "kept: debug for this target"]
        );
    }

    #[test]
    fn pretty_lines_are_readable_and_carry_trace_ids_inside_spans() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(LogFormat::Pretty, "info", &logs, true);
        let trace_id = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(event = "session_created", "before any span");
            let span = tracing::info_span!("session_manager.start", session.id = "s-7");
            let _entered = span.enter();
            tracing::info!(event = "turn_committed", "in the span");
            span.context().span().span_context().trace_id().to_string()
        });
        let text = logs.text();
        assert!(!text.trim_start().starts_with('{'), "not JSON: {text}");
        assert!(!text.contains('\u{1b}'), "no ANSI escapes: {text:?}");
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|chunk| !chunk.trim().is_empty())
            .collect();
        assert_eq!(events.len(), 2, "{text}");
        assert!(events[0].contains("before any span"));
        assert!(events[0].contains("session_created"));
        assert!(!events[0].contains("trace_id"));
        assert!(events[1].contains("in the span"));
        assert!(events[1].contains("session_manager.start"));
        assert!(events[1].contains("s-7"));
        assert!(
            events[1].contains(&format!("trace_id: {trace_id}, span_id: ")),
            "{}",
            events[1]
        );
    }

    #[test]
    fn export_pipeline_crates_are_recognised_by_target() {
        assert!(is_export_pipeline("hyper"));
        assert!(is_export_pipeline("hyper_util::client::legacy"));
        assert!(is_export_pipeline("opentelemetry_sdk"));
        assert!(!is_export_pipeline("hyperdrive"));
        assert!(!is_export_pipeline("heartrule_llm::openai"));
    }

    #[test]
    fn export_pipeline_spans_are_not_traced() {
        // "info" is the single-filter shape, the others per-layer filters.
        for level in ["info", "debug", "info,heartrule=debug"] {
            let logs = CapturedLogs::default();
            let (dispatch, _provider) = subscriber(LogFormat::Json, level, &logs, true);
            let (pipeline_traces, app_trace) = tracing::dispatcher::with_default(&dispatch, || {
                let pipeline_info = tracing::info_span!(target: "hyper::client", "connect");
                let pipeline_debug = tracing::debug_span!(target: "h2::proto", "frame");
                let app = tracing::info_span!("engine.action");
                let _app = app.enter();
                tracing::warn!(target: "reqwest::connect", "a pipeline warning is still logged");
                (
                    [
                        crate::trace_id(&pipeline_info),
                        crate::trace_id(&pipeline_debug),
                    ],
                    crate::trace_id(&app),
                )
            });
            assert_eq!(pipeline_traces, [None, None], "at {level}");
            assert!(app_trace.is_some(), "at {level}");
            let lines = logs.json_lines().unwrap();
            assert!(
                lines.iter().any(
                    |line| line["target"] == "reqwest::connect" && line["trace_id"].is_string()
                ),
                "at {level}: {lines:?}"
            );
        }
    }

    #[test]
    fn at_info_debug_lines_and_spans_stay_out_of_logs_and_traces() {
        let logs = CapturedLogs::default();
        let (dispatch, _provider) = subscriber(LogFormat::Json, " INFO ", &logs, true);
        let (info_traced, debug_traced) = tracing::dispatcher::with_default(&dispatch, || {
            let info = tracing::info_span!("db.select");
            let debug = tracing::debug_span!("chatty");
            tracing::debug!("not logged");
            tracing::info!("logged");
            (
                crate::trace_id(&info).is_some(),
                crate::trace_id(&debug).is_some(),
            )
        });
        assert!(info_traced);
        assert!(!debug_traced);
        let lines = logs.json_lines().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["message"], "logged");
        assert!(is_plain_info(" INFO "));
        assert!(!is_plain_info("info,hyper=warn"));
        assert!(!is_plain_info("warn"));
    }

    #[test]
    fn rolling_files_receive_the_lines() {
        let directory = std::env::temp_dir().join(format!(
            "heartrule-telemetry-logs-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let file = FileLogConfig {
            directory: directory.clone(),
            prefix: "engine".to_owned(),
            retention_files: 2,
        };
        let (writer, guard) = rolling_file_writer(&file).unwrap();
        let dispatch = assemble(
            LogFormat::Json,
            false,
            "info",
            CapturedLogs::default(),
            Some(writer),
            None,
        )
        .unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(event = "session_created", "to the file");
        });
        drop(dispatch);
        drop(guard); // flushes the non-blocking queue
        let files: Vec<_> = std::fs::read_dir(&directory)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("engine.") && name.ends_with(".log"),
            "{name}"
        );
        let content = std::fs::read_to_string(&files[0]).unwrap();
        let line: serde_json::Value = serde_json::from_str(content.trim()).unwrap();
        assert_eq!(line["event"], "session_created");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
