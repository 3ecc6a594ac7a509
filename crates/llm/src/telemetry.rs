//! Metrics and span fields of LLM calls, named after the OpenTelemetry
//! GenAI semantic conventions. Prompt and completion text appear only as the
//! `gen_ai.prompt` / `gen_ai.completion` span fields, and only when content
//! capture is switched on (`telemetry.capture_content`).

use heartrule_domain::llm::{LlmError, LlmResponse};
use heartrule_domain::metric::{GEN_AI_DURATION_BUCKETS, TOKEN_BUCKETS};
use heartrule_domain::{MetricDecl, MetricSet, SensitiveValues};
use metrics::Unit;
use std::time::Duration;
use tracing::Span;

/// Histogram (seconds) per logical call, retries included:
/// `{gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, error_type}`
/// with `error_type = ""` on success.
pub const OPERATION_DURATION_SECONDS: &str = "gen_ai_client_operation_duration_seconds";
/// Histogram (tokens) per successful call:
/// `{gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, gen_ai_token_type}`
/// with `gen_ai_token_type = "input" | "output"`.
pub const TOKEN_USAGE: &str = "gen_ai_client_token_usage";
/// Counter of retried attempts `{provider}`.
pub const RETRIES_TOTAL: &str = "heartrule_llm_retries_total";
/// Gauge `{provider}`: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "heartrule_llm_breaker_state";
/// Counter `{provider, fallback}` of logical calls the primary failed and
/// handed to the fallback provider.
pub const FALLBACK_TOTAL: &str = "heartrule_llm_fallback_total";

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

/// The metrics this crate records.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::histogram(
            OPERATION_DURATION_SECONDS,
            Unit::Seconds,
            GEN_AI_LABELS,
            GEN_AI_DURATION_BUCKETS,
            "Duration of GenAI client operations, retries included; error_type is empty on success.",
        ),
        MetricDecl::histogram(
            TOKEN_USAGE,
            Unit::Count,
            GEN_AI_TOKEN_LABELS,
            TOKEN_BUCKETS,
            "Tokens used per GenAI client operation, by token type (input or output).",
        ),
        MetricDecl::counter(
            RETRIES_TOTAL,
            &["provider"],
            "LLM call attempts that were retried.",
        ),
        MetricDecl::gauge(
            BREAKER_STATE,
            None,
            &["provider"],
            "LLM circuit breaker state: 0 closed, 1 half-open, 2 open.",
        ),
        MetricDecl::counter(
            FALLBACK_TOTAL,
            &["provider", "fallback"],
            "LLM calls the provider failed (after its retries, or refused by its open breaker) and handed to the fallback provider.",
        ),
    ],
};

/// The GenAI operation all calls of this crate perform.
pub const OPERATION_CHAT: &str = "chat";

/// `error_type` label / `error.type` span field of a call that ended
/// because its consumer dropped a stream before the end.
pub const ERROR_TYPE_CANCELLED: &str = "cancelled";

/// The stable, low-cardinality name of an error for labels and spans.
#[must_use]
pub fn error_type(error: &LlmError) -> &'static str {
    match error {
        LlmError::Timeout(_) => "timeout",
        LlmError::RateLimited { .. } => "rate_limited",
        LlmError::Unavailable(_) => "unavailable",
        LlmError::CircuitOpen => "circuit_open",
        LlmError::Rejected(_) => "rejected",
        LlmError::InvalidResponse(_) => "invalid_response",
        LlmError::NotConfigured(_) => "not_configured",
    }
}

/// The span around one logical call. Its name is `chat`; `otel.name`
/// makes exporters show `chat <model>` as the conventions ask. `prompt` is
/// recorded as `gen_ai.prompt` only when given (content capture on).
pub(crate) fn chat_span(provider: &str, model: &str, purpose: &str, prompt: Option<&str>) -> Span {
    let span = tracing::info_span!(
        "chat",
        otel.name = %format_args!("{OPERATION_CHAT} {model}"),
        otel.kind = "client",
        gen_ai.operation.name = OPERATION_CHAT,
        gen_ai.provider.name = %provider,
        gen_ai.request.model = %model,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        heartrule.llm.purpose = %purpose,
        heartrule.llm.retries = tracing::field::Empty,
        error.type = tracing::field::Empty,
        gen_ai.prompt = tracing::field::Empty,
        gen_ai.completion = tracing::field::Empty,
    );
    if let Some(prompt) = prompt {
        span.record("gen_ai.prompt", prompt);
    }
    span
}

/// How a logical call ended.
pub(crate) enum CallOutcome<'a> {
    Success(&'a LlmResponse),
    Failure(&'a LlmError),
    Cancelled,
}

/// Records the duration (and on success the token usage, and the completion
/// text with its sensitive values masked when `capture` is given) of one logical call as metrics and as fields
/// of `span`.
pub(crate) fn finish_call(
    span: &Span,
    provider: &str,
    model: &str,
    elapsed: Duration,
    retries: u32,
    outcome: &CallOutcome<'_>,
    capture: Option<&SensitiveValues>,
) {
    let error_type = match outcome {
        CallOutcome::Success(_) => "",
        CallOutcome::Failure(error) => error_type(error),
        CallOutcome::Cancelled => ERROR_TYPE_CANCELLED,
    };
    metrics::histogram!(
        OPERATION_DURATION_SECONDS,
        "gen_ai_operation_name" => OPERATION_CHAT,
        "gen_ai_provider_name" => provider.to_owned(),
        "gen_ai_request_model" => model.to_owned(),
        "error_type" => error_type,
    )
    .record(elapsed.as_secs_f64());
    span.record("heartrule.llm.retries", retries);
    match outcome {
        CallOutcome::Success(response) => {
            for (token_type, tokens) in [
                ("input", response.usage.prompt_tokens),
                ("output", response.usage.completion_tokens),
            ] {
                metrics::histogram!(
                    TOKEN_USAGE,
                    "gen_ai_operation_name" => OPERATION_CHAT,
                    "gen_ai_provider_name" => provider.to_owned(),
                    "gen_ai_request_model" => model.to_owned(),
                    "gen_ai_token_type" => token_type,
                )
                .record(f64::from(tokens));
            }
            span.record("gen_ai.response.model", response.model.as_str());
            span.record("gen_ai.usage.input_tokens", response.usage.prompt_tokens);
            span.record(
                "gen_ai.usage.output_tokens",
                response.usage.completion_tokens,
            );
            if let Some(sensitive) = capture {
                span.record("gen_ai.completion", sensitive.mask(&response.text).as_str());
            }
        }
        CallOutcome::Failure(error) => {
            span.record("error.type", error_type);
            // The error texts carry statuses and provider messages, never prompt or reply text.
            span.in_scope(|| {
                tracing::warn!(error.type = error_type, error = %error, retries, "LLM call failed");
            });
        }
        CallOutcome::Cancelled => {
            span.record("error.type", error_type);
        }
    }
}

pub(crate) fn record_retry(provider: &str) {
    metrics::counter!(RETRIES_TOTAL, "provider" => provider.to_owned()).increment(1);
}

pub(crate) fn record_fallback(provider: &str, fallback: &str) {
    metrics::counter!(
        FALLBACK_TOTAL,
        "provider" => provider.to_owned(),
        "fallback" => fallback.to_owned(),
    )
    .increment(1);
}

pub(crate) fn record_breaker_state(provider: &str, gauge_value: f64) {
    metrics::gauge!(BREAKER_STATE, "provider" => provider.to_owned()).set(gauge_value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn error_types_are_distinct_snake_case_names() {
        let errors = [
            LlmError::Timeout(Duration::from_secs(1)),
            LlmError::RateLimited { retry_after: None },
            LlmError::Unavailable(String::new()),
            LlmError::CircuitOpen,
            LlmError::Rejected(String::new()),
            LlmError::InvalidResponse(String::new()),
            LlmError::NotConfigured(String::new()),
        ];
        let mut names: Vec<&str> = errors.iter().map(error_type).collect();
        assert!(names
            .iter()
            .all(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), errors.len());
    }
}
