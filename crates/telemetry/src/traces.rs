//! OTLP trace export and the W3C trace-context helpers.
//!
//! The helpers take plain closures, so transport adapters (HTTP server, LLM
//! client) continue and propagate traces without depending on OpenTelemetry.
//! They use the W3C `TraceContextPropagator` directly (the same one `init`
//! installs globally), so they behave the same under `build_subscriber`.

use crate::config::{OtlpProtocol, TelemetryConfig};
use crate::error::TelemetryError;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

/// The instrumentation scope of every span this service exports.
const TRACER_NAME: &str = "heartrule";

/// `ParentBased(TraceIdRatioBased(ratio))`: new traces are sampled at
/// `ratio`; continued traces keep their caller's decision.
pub(crate) fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

/// `service.name`, `service.version`, `deployment.environment.name` (plus the
/// SDK's own `telemetry.sdk.*` and any `OTEL_RESOURCE_ATTRIBUTES`).
pub(crate) fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", config.service_version.clone()),
            KeyValue::new("deployment.environment.name", config.environment.clone()),
        ])
        .build()
}

/// The provider with a batching OTLP exporter: spans are queued and sent by
/// the SDK's own thread, so ending a span never waits for the network (a full
/// queue drops spans instead).
pub(crate) fn tracer_provider(
    config: &TelemetryConfig,
) -> Result<SdkTracerProvider, TelemetryError> {
    let traces = &config.traces;
    let exporter = match traces.protocol {
        OtlpProtocol::Grpc => {
            // tonic's channel spawns its connection task on the current runtime.
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(TelemetryError::NoTokioRuntime);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(traces.export_url())
                .with_timeout(traces.export_timeout)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces.export_url())
            .with_timeout(traces.export_timeout)
            .build(),
    }
    .map_err(|error| TelemetryError::TraceExporter(error.to_string()))?;

    Ok(SdkTracerProvider::builder()
        .with_span_processor(CountedProcessor(
            BatchSpanProcessor::builder(CountedExporter(exporter)).build(),
        ))
        .with_sampler(sampler(traces.sampling_ratio))
        .with_resource(resource(config))
        .build())
}

/// Counter of spans by `stage` of the export pipeline: `ended` (handed to
/// the batch queue), `exported` (accepted by the collector), `failed` (the
/// export returned an error). `ended` outgrowing the other two means the
/// queue is dropping spans (`OTEL_BSP_MAX_QUEUE_SIZE` sizes it).
pub(crate) const SPANS_TOTAL: &str = "heartrule_trace_spans_total";

/// Spans ended in this process. Counted with one atomic add per span and
/// published to [`SPANS_TOTAL`] with every export (and so every flush): a
/// metrics lookup per span cost more than the rest of the counting.
static SPANS_ENDED: AtomicU64 = AtomicU64::new(0);

fn publish_spans_ended() {
    metrics::counter!(SPANS_TOTAL, "stage" => "ended")
        .absolute(SPANS_ENDED.load(Ordering::Relaxed));
}

/// Counts the spans that reach the batch queue.
#[derive(Debug)]
struct CountedProcessor<P>(P);

impl<P: SpanProcessor> SpanProcessor for CountedProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        SPANS_ENDED.fetch_add(1, Ordering::Relaxed);
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Counts the spans of each export by its result.
#[derive(Debug)]
struct CountedExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        // First, so a scrape never sees `ended` behind `exported`.
        publish_spans_ended();
        let stage = if result.is_ok() { "exported" } else { "failed" };
        metrics::counter!(SPANS_TOTAL, "stage" => stage).increment(spans);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

pub(crate) fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer(TRACER_NAME)
}

/// Makes `span` continue the caller's trace from its `traceparent` (and
/// `tracestate`) header. Call it right after creating the request's root span
/// and before entering it: an entered span has already started its trace.
/// Without a valid `traceparent`, or with trace export off, the span keeps
/// (or has no) trace of its own.
pub fn continue_trace(header: &dyn Fn(&str) -> Option<String>, span: &tracing::Span) {
    let propagator = TraceContextPropagator::new();
    let carrier: HashMap<String, String> = propagator
        .fields()
        .filter_map(|name| header(name).map(|value| (name.to_owned(), value)))
        .collect();
    if carrier.is_empty() {
        return;
    }
    let parent = propagator.extract(&carrier);
    if !parent.span().span_context().is_valid() {
        // A malformed traceparent: the W3C rule is to start a new trace.
        return;
    }
    match span.set_parent(parent) {
        Ok(()) => {}
        // Trace export is off, or the span is filtered out: there is no
        // trace to continue, by configuration.
        Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
        Err(error @ SetParentError::AlreadyStarted) => {
            tracing::warn!(
                error = %error,
                "traceparent ignored: continue_trace was called after the span was entered"
            );
        }
    }
}

/// The span's trace id (32 lowercase hex digits) when it is being recorded:
/// `None` when trace export is off, the span is filtered out, or its trace
/// was not sampled.
#[must_use]
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    (span_context.is_valid() && span_context.is_sampled())
        .then(|| span_context.trace_id().to_string())
}

/// Writes `traceparent` (and `tracestate` when present) for an outgoing call
/// made inside `span`, so the callee joins the trace. Writes nothing when the
/// span has no trace (export off or span filtered out); an unsampled trace is
/// still propagated, flagged as unsampled.
pub fn inject_trace_headers(span: &tracing::Span, set: &mut dyn FnMut(&str, String)) {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return;
    }
    let mut injector = FnInjector(set);
    TraceContextPropagator::new().inject_context(&context, &mut injector);
}

struct FnInjector<'a>(&'a mut dyn FnMut(&str, String));

impl opentelemetry::propagation::Injector for FnInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        (self.0)(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TraceConfig;
    use crate::logs;
    use crate::testing::CapturedLogs;
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
    use std::time::Duration;

    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";

    fn dispatch_with(
        sampling_ratio: f64,
        traced: bool,
    ) -> (tracing::Dispatch, Option<SdkTracerProvider>) {
        let provider = traced.then(|| {
            SdkTracerProvider::builder()
                .with_sampler(sampler(sampling_ratio))
                .build()
        });
        let dispatch = logs::assemble(
            crate::LogFormat::Json,
            false,
            "info",
            CapturedLogs::default(),
            None,
            provider.as_ref().map(tracer),
        )
        .unwrap();
        (dispatch, provider)
    }

    fn headers(traceparent: &str) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| match name {
            "traceparent" => Some(traceparent.to_owned()),
            "tracestate" => Some("vendor=opaque".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn the_sampler_follows_the_parent_and_samples_new_traces_by_ratio() {
        let decide = |ratio: f64, trace_id: u128| {
            sampler(ratio)
                .should_sample(
                    None,
                    TraceId::from(trace_id),
                    "root",
                    &SpanKind::Server,
                    &[],
                    &[],
                )
                .decision
        };
        assert_eq!(decide(1.0, 42), SamplingDecision::RecordAndSample);
        assert_eq!(decide(0.0, 42), SamplingDecision::Drop);
        let (dispatch, _provider) = dispatch_with(0.0, true);
        tracing::dispatcher::with_default(&dispatch, || {
            let sampled_parent = tracing::info_span!("request");
            continue_trace(
                &headers(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
                &sampled_parent,
            );
            assert_eq!(
                trace_id(&sampled_parent).as_deref(),
                Some(CALLER_TRACE),
                "a sampled caller wins over ratio 0"
            );
            let fresh = tracing::info_span!("request");
            assert_eq!(trace_id(&fresh), None, "ratio 0 samples no new trace");
        });
    }

    #[test]
    fn continue_trace_adopts_the_callers_trace_and_inject_propagates_it() {
        let (dispatch, _provider) = dispatch_with(1.0, true);
        tracing::dispatcher::with_default(&dispatch, || {
            let request = tracing::info_span!("http.request");
            continue_trace(
                &headers(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
                &request,
            );
            assert_eq!(trace_id(&request).as_deref(), Some(CALLER_TRACE));
            let _entered = request.enter();
            let llm_call = tracing::info_span!("chat");
            let mut outgoing = HashMap::new();
            inject_trace_headers(&llm_call, &mut |name, value| {
                outgoing.insert(name.to_owned(), value);
            });
            let traceparent = &outgoing["traceparent"];
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!(parts.len(), 4, "{traceparent}");
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1], CALLER_TRACE);
            assert_ne!(parts[2], CALLER_SPAN, "the callee's parent is our span");
            assert_eq!(parts[3], "01");
            assert_eq!(outgoing["tracestate"], "vendor=opaque");
        });
    }

    #[test]
    fn an_unsampled_caller_is_propagated_but_has_no_trace_id() {
        let (dispatch, _provider) = dispatch_with(1.0, true);
        tracing::dispatcher::with_default(&dispatch, || {
            let request = tracing::info_span!("http.request");
            continue_trace(
                &headers(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00")),
                &request,
            );
            assert_eq!(trace_id(&request), None);
            let mut outgoing = HashMap::new();
            inject_trace_headers(&request, &mut |name, value| {
                outgoing.insert(name.to_owned(), value);
            });
            let traceparent = &outgoing["traceparent"];
            assert!(
                traceparent.starts_with(&format!("00-{CALLER_TRACE}-")),
                "{traceparent}"
            );
            assert!(traceparent.ends_with("-00"), "{traceparent}");
        });
    }

    #[test]
    fn malformed_or_missing_headers_start_a_new_trace() {
        let (dispatch, _provider) = dispatch_with(1.0, true);
        tracing::dispatcher::with_default(&dispatch, || {
            for traceparent in [
                "garbage",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ] {
                let span = tracing::info_span!("http.request");
                continue_trace(&headers(traceparent), &span);
                let id = trace_id(&span).unwrap();
                assert_eq!(id.len(), 32);
                assert_ne!(id, CALLER_TRACE);
            }
            let span = tracing::info_span!("http.request");
            continue_trace(&|_| None, &span);
            assert!(trace_id(&span).is_some());
        });
    }

    #[test]
    fn continuing_after_entering_keeps_the_own_trace() {
        let (dispatch, _provider) = dispatch_with(1.0, true);
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("http.request");
            let own = {
                let _entered = span.enter();
                trace_id(&span)
            };
            continue_trace(
                &headers(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
                &span,
            );
            assert_eq!(trace_id(&span), own);
        });
    }

    #[test]
    fn without_trace_export_the_helpers_do_nothing() {
        let (dispatch, _provider) = dispatch_with(1.0, false);
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("http.request");
            continue_trace(
                &headers(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
                &span,
            );
            assert_eq!(trace_id(&span), None);
            let mut written = Vec::new();
            inject_trace_headers(&span, &mut |name, _| written.push(name.to_owned()));
            assert!(written.is_empty());
        });
        // And with no subscriber at all.
        let span = tracing::Span::none();
        continue_trace(
            &headers(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
            &span,
        );
        assert_eq!(trace_id(&span), None);
        inject_trace_headers(&span, &mut |name, _| {
            panic!("nothing to inject, got {name}")
        });
    }

    /// An exporter that accepts or refuses every batch.
    #[derive(Debug)]
    struct FixedExporter {
        accept: bool,
    }

    impl SpanExporter for FixedExporter {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.accept {
                Ok(())
            } else {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "collector unavailable".to_owned(),
                ))
            }
        }
    }

    #[test]
    fn the_pipeline_counts_spans_ended_exported_and_failed() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for (accept, spans) in [(true, 3), (false, 2)] {
                // The simple processor exports on this thread, where the
                // local recorder is.
                let processor = opentelemetry_sdk::trace::SimpleSpanProcessor::new(
                    CountedExporter(FixedExporter { accept }),
                );
                let provider = SdkTracerProvider::builder()
                    .with_span_processor(CountedProcessor(processor))
                    .build();
                let tracer = provider.tracer("test");
                for _ in 0..spans {
                    use opentelemetry::trace::{Span as _, Tracer as _};
                    tracer.start("work").end();
                }
            }
        });
        let text = handle.render();
        let value = |stage: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{SPANS_TOTAL}{{stage=\"{stage}\"}}")))
                .and_then(|line| line.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(value("ended").as_deref(), Some("5"), "{text}");
        assert_eq!(value("exported").as_deref(), Some("3"), "{text}");
        assert_eq!(value("failed").as_deref(), Some("2"), "{text}");
    }

    #[test]
    fn the_resource_names_service_version_and_environment() {
        let config = TelemetryConfig {
            service_name: "hr-test".to_owned(),
            service_version: "9.9.9".to_owned(),
            environment: "staging".to_owned(),
            ..TelemetryConfig::default()
        };
        let resource = resource(&config);
        let get = |key: &'static str| {
            resource
                .get(&opentelemetry::Key::from_static_str(key))
                .map(|value| value.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("hr-test"));
        assert_eq!(get("service.version").as_deref(), Some("9.9.9"));
        assert_eq!(
            get("deployment.environment.name").as_deref(),
            Some("staging")
        );
    }

    #[test]
    fn grpc_export_outside_a_tokio_runtime_is_a_typed_error() {
        let config = TelemetryConfig {
            traces: TraceConfig {
                enabled: true,
                protocol: OtlpProtocol::Grpc,
                export_timeout: Duration::from_secs(1),
                ..TraceConfig::default()
            },
            ..TelemetryConfig::default()
        };
        assert!(matches!(
            tracer_provider(&config),
            Err(TelemetryError::NoTokioRuntime)
        ));
    }

    #[test]
    fn an_unparsable_endpoint_is_a_typed_error() {
        let config = TelemetryConfig {
            traces: TraceConfig {
                enabled: true,
                endpoint: "http://exa mple:4318".to_owned(),
                protocol: OtlpProtocol::HttpProtobuf,
                ..TraceConfig::default()
            },
            ..TelemetryConfig::default()
        };
        match tracer_provider(&config) {
            Err(TelemetryError::TraceExporter(reason)) => {
                assert!(reason.contains("endpoint"), "{reason}")
            }
            other => panic!("expected an exporter error, got {:?}", other.err()),
        }
    }
}
