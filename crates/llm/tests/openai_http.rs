//! The `openai` provider and the resilience stack against an in-process
//! OpenAI-compatible server on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures::StreamExt;
use heartrule_domain::llm::{LlmChunk, LlmError, LlmProvider, LlmRequest};
use heartrule_domain::{SensitiveValues, SENSITIVE_MASK};
use heartrule_llm::telemetry::{
    BREAKER_STATE, OPERATION_DURATION_SECONDS, RETRIES_TOTAL, TOKEN_USAGE,
};
use heartrule_llm::{
    build, build_with, BreakerConfig, BreakerState, BuildOptions, FallbackConfig, LlmConfig,
    LlmStack, OpenAiConfig, OpenAiProvider, ProviderKind, ResilienceConfig,
};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::capture::Captured;
use support::fake_server::{completion, refused_base_url, stream_events, FakeServer, Reply};
use support::metrics_log::{Kind, MetricsLog};

const PROMPT: &str = "PRIVATE-PROMPT 我最近总是睡不好";
const REPLY: &str = "PRIVATE-REPLY 听起来你很辛苦";

fn request() -> LlmRequest {
    LlmRequest {
        prompt: PROMPT.to_owned(),
        temperature: 0.25,
        max_tokens: 300,
        purpose: "ai_ask".to_owned(),
        sensitive: heartrule_domain::SensitiveValues::none(),
    }
}

fn openai(base_url: &str, provider_name: &str) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base_url.to_owned(),
        api_key: Some("sk-test-key".to_owned()),
        model: "fake-model".to_owned(),
        timeout: Duration::from_secs(3),
        provider_name: provider_name.to_owned(),
        ..OpenAiConfig::default()
    }
}

fn resilience(max_retries: u32) -> ResilienceConfig {
    ResilienceConfig {
        max_retries,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        concurrency_limit: 8,
        breaker: BreakerConfig {
            failure_threshold: 100,
            open_for: Duration::from_millis(400),
            half_open_max_calls: 1,
        },
    }
}

fn config(base_url: &str, provider_name: &str, max_retries: u32) -> LlmConfig {
    LlmConfig {
        provider: ProviderKind::OpenAi,
        openai: openai(base_url, provider_name),
        resilience: resilience(max_retries),
        fallback: None,
        ..LlmConfig::default()
    }
}

async fn collect(stack: &LlmStack) -> Vec<Result<LlmChunk, LlmError>> {
    stack
        .provider
        .stream(&request())
        .await
        .unwrap()
        .collect()
        .await
}

fn deltas(items: &[Result<LlmChunk, LlmError>]) -> String {
    items
        .iter()
        .filter_map(|item| match item {
            Ok(LlmChunk::Delta(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn complete_sends_one_user_message_and_reads_usage() {
    let metrics = MetricsLog::default();
    let _metrics = metrics::set_default_local_recorder(&metrics);
    let captured = Captured::start();
    let server = FakeServer::always(|| Reply::json(200, &completion(REPLY, 12, 5))).await;

    let mut config = config(server.base_url(), "fake-complete", 0);
    config
        .openai
        .extra_headers
        .insert("X-Project".to_owned(), "heartrule".to_owned());
    let options = BuildOptions {
        header_injector: Some(Arc::new(|headers: &mut reqwest::header::HeaderMap| {
            headers.insert(
                HeaderName::from_static("traceparent"),
                HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            );
        })),
        capture_content: false,
    };
    let stack = build_with(&config, &options).unwrap();
    let response = stack.provider.complete(&request()).await.unwrap();

    assert_eq!(response.text, REPLY);
    assert_eq!(response.model, "fake-model-2024");
    assert_eq!(response.provider, "fake-complete");
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (
            response.usage.prompt_tokens,
            response.usage.completion_tokens,
            response.usage.total_tokens
        ),
        (12, 5, 17)
    );

    let sent = &server.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("x-project"), Some("heartrule"));
    assert_eq!(
        sent.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    let body = sent.json();
    assert_eq!(body["model"], "fake-model");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": PROMPT}])
    );
    assert!((body["temperature"].as_f64().unwrap() - 0.25).abs() < 1e-6);
    assert_eq!(body["max_tokens"], 300);
    assert!(body.get("stream").is_none());

    let labels = [
        ("gen_ai_provider_name", "fake-complete"),
        ("gen_ai_request_model", "fake-model"),
    ];
    let durations = metrics.values(Kind::Histogram, OPERATION_DURATION_SECONDS, &labels);
    assert_eq!(durations.len(), 1);
    assert!(metrics
        .events(OPERATION_DURATION_SECONDS)
        .iter()
        .all(|event| event
            .labels
            .contains(&("error_type".to_owned(), String::new()))
            && event
                .labels
                .contains(&("gen_ai_operation_name".to_owned(), "chat".to_owned()))));
    let input = [labels[0], ("gen_ai_token_type", "input")];
    let output = [labels[0], ("gen_ai_token_type", "output")];
    assert_eq!(metrics.values(Kind::Histogram, TOKEN_USAGE, &input), [12.0]);
    assert_eq!(metrics.values(Kind::Histogram, TOKEN_USAGE, &output), [5.0]);

    let spans = captured.spans("chat");
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.field("otel.name"), Some("chat fake-model"));
    assert_eq!(span.field("otel.kind"), Some("client"));
    assert_eq!(span.field("gen_ai.operation.name"), Some("chat"));
    assert_eq!(span.field("gen_ai.provider.name"), Some("fake-complete"));
    assert_eq!(span.field("gen_ai.request.model"), Some("fake-model"));
    assert_eq!(span.field("gen_ai.response.model"), Some("fake-model-2024"));
    assert_eq!(span.field("gen_ai.usage.input_tokens"), Some("12"));
    assert_eq!(span.field("gen_ai.usage.output_tokens"), Some("5"));
    assert_eq!(span.field("heartrule.llm.retries"), Some("0"));
    assert_eq!(span.field("error.type"), None);
    let text = captured.all_text();
    assert!(
        !text.contains("PRIVATE-PROMPT") && !text.contains("PRIVATE-REPLY"),
        "{text}"
    );
}

#[tokio::test]
async fn streaming_concatenates_deltas_and_reads_usage() {
    let metrics = MetricsLog::default();
    let _metrics = metrics::set_default_local_recorder(&metrics);
    let captured = Captured::start();
    let server = FakeServer::always(|| {
        Reply::sse(&stream_events(
            &["PRIVATE-", "REPLY ", "听起来你很辛苦"],
            9,
            3,
        ))
    })
    .await;
    let stack = build(&config(server.base_url(), "fake-stream", 0)).unwrap();

    let items = collect(&stack).await;
    assert_eq!(deltas(&items), REPLY);
    assert_eq!(items.len(), 4, "three deltas and Done: {items:?}");
    let Some(Ok(LlmChunk::Done(done))) = items.last() else {
        panic!("no Done: {items:?}")
    };
    assert_eq!(done.text, REPLY);
    assert_eq!(done.model, "fake-model-2024");
    assert_eq!(done.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (
            done.usage.prompt_tokens,
            done.usage.completion_tokens,
            done.usage.total_tokens
        ),
        (9, 3, 12)
    );

    let body = server.requests()[0].json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["messages"][0]["content"], PROMPT);

    let labels = [("gen_ai_provider_name", "fake-stream"), ("error_type", "")];
    assert_eq!(
        metrics
            .values(Kind::Histogram, OPERATION_DURATION_SECONDS, &labels)
            .len(),
        1
    );
    let output = [
        ("gen_ai_provider_name", "fake-stream"),
        ("gen_ai_token_type", "output"),
    ];
    assert_eq!(metrics.values(Kind::Histogram, TOKEN_USAGE, &output), [3.0]);
    let span = &captured.spans("chat")[0];
    assert_eq!(span.field("gen_ai.usage.input_tokens"), Some("9"));
    let text = captured.all_text();
    assert!(
        !text.contains("PRIVATE-PROMPT") && !text.contains("PRIVATE-"),
        "{text}"
    );
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_succeeds() {
    let metrics = MetricsLog::default();
    let _metrics = metrics::set_default_local_recorder(&metrics);
    let captured = Captured::start();
    let server = FakeServer::start(|index, _| match index {
        0 => {
            Reply::json(429, &json!({"error": {"message": "slow down"}})).header("retry-after", "1")
        }
        _ => Reply::json(200, &completion("ok", 1, 1)),
    })
    .await;
    let mut config = config(server.base_url(), "fake-429", 3);
    config.resilience.max_backoff = Duration::from_secs(2);
    let stack = build(&config).unwrap();

    let started = Instant::now();
    let response = stack.provider.complete(&request()).await.unwrap();
    let waited = started.elapsed();

    assert_eq!(response.text, "ok");
    assert_eq!(server.request_count(), 2);
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "waited too long: {waited:?}"
    );
    assert_eq!(
        metrics.counter_total(RETRIES_TOTAL, &[("provider", "fake-429")]),
        1.0
    );
    assert_eq!(
        captured.spans("chat")[0].field("heartrule.llm.retries"),
        Some("1")
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_unavailable() {
    let metrics = MetricsLog::default();
    let _metrics = metrics::set_default_local_recorder(&metrics);
    let captured = Captured::start();
    let server =
        FakeServer::always(|| Reply::json(500, &json!({"error": {"message": "boom"}}))).await;
    let stack = build(&config(server.base_url(), "fake-500", 2)).unwrap();

    let error = stack.provider.complete(&request()).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Unavailable(text) if text.contains("500") && text.contains("boom")),
        "{error:?}"
    );
    assert_eq!(server.request_count(), 3);
    assert_eq!(
        metrics.counter_total(RETRIES_TOTAL, &[("provider", "fake-500")]),
        2.0
    );
    let failed = [
        ("gen_ai_provider_name", "fake-500"),
        ("error_type", "unavailable"),
    ];
    assert_eq!(
        metrics
            .values(Kind::Histogram, OPERATION_DURATION_SECONDS, &failed)
            .len(),
        1
    );
    assert!(metrics
        .values(
            Kind::Histogram,
            TOKEN_USAGE,
            &[("gen_ai_provider_name", "fake-500")]
        )
        .is_empty());
    let span = &captured.spans("chat")[0];
    assert_eq!(span.field("error.type"), Some("unavailable"));
    assert_eq!(span.field("heartrule.llm.retries"), Some("2"));

    // Streaming is retried the same way before anything was delivered.
    assert!(matches!(
        stack.provider.stream(&request()).await,
        Err(LlmError::Unavailable(_))
    ));
    assert_eq!(server.request_count(), 6);
}

#[tokio::test]
async fn client_errors_are_rejected_without_retry_or_breaker_failure() {
    let server =
        FakeServer::always(|| Reply::json(401, &json!({"error": {"message": "invalid api key"}})))
            .await;
    let mut config = config(server.base_url(), "fake-401", 3);
    config.resilience.breaker.failure_threshold = 1;
    let stack = build(&config).unwrap();

    let error = stack.provider.complete(&request()).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Rejected(text) if text.contains("401") && text.contains("invalid api key")),
        "{error:?}"
    );
    assert_eq!(server.request_count(), 1);
    assert_eq!(stack.status.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_server_that_hangs_times_out() {
    let server = FakeServer::always(Reply::hang).await;
    let mut config = config(server.base_url(), "fake-hang", 0);
    config.openai.timeout = Duration::from_millis(300);
    let stack = build(&config).unwrap();

    let started = Instant::now();
    let error = stack.provider.complete(&request()).await.unwrap_err();
    assert_eq!(error, LlmError::Timeout(Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_secs(2));

    let error = stack.provider.stream(&request()).await.err();
    assert_eq!(error, Some(LlmError::Timeout(Duration::from_millis(300))));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_stream_that_stalls_after_its_first_piece_times_out() {
    let events = stream_events(&["你好"], 1, 1);
    let server = FakeServer::always(move || Reply::sse(&events[..2]).then_hang()).await;
    let provider = OpenAiProvider::new(&OpenAiConfig {
        timeout: Duration::from_millis(300),
        ..openai(server.base_url(), "fake-stall")
    })
    .unwrap();

    let items: Vec<_> = provider.stream(&request()).await.unwrap().collect().await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], Ok(LlmChunk::Delta("你好".to_owned())));
    assert_eq!(items[1], Err(LlmError::Timeout(Duration::from_millis(300))));
}

#[tokio::test]
async fn malformed_json_is_an_invalid_response_and_not_retried() {
    let server = FakeServer::always(|| {
        Reply::text(200, "{\"choices\": [").header("content-type", "application/json")
    })
    .await;
    let stack = build(&config(server.base_url(), "fake-bad-json", 3)).unwrap();
    let error = stack.provider.complete(&request()).await.unwrap_err();
    assert!(matches!(error, LlmError::InvalidResponse(_)), "{error:?}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn malformed_streams_are_invalid_responses() {
    // A broken first event: the stream fails before delivering anything.
    let broken =
        FakeServer::always(|| Reply::raw_stream(&["data: {\"choices\": [{\"delta\"\n\n"])).await;
    let stack = build(&config(broken.base_url(), "fake-bad-sse", 0)).unwrap();
    assert!(matches!(
        stack.provider.stream(&request()).await,
        Err(LlmError::InvalidResponse(_))
    ));

    // A plain JSON body where an event stream was asked for.
    let not_sse = FakeServer::always(|| Reply::json(200, &completion("x", 1, 1))).await;
    let stack = build(&config(not_sse.base_url(), "fake-not-sse", 0)).unwrap();
    assert!(matches!(
        stack.provider.stream(&request()).await,
        Err(LlmError::InvalidResponse(_))
    ));

    // A stream cut off before `[DONE]`: what arrived is delivered, then the error.
    let events = stream_events(&["半句"], 1, 1);
    let truncated = FakeServer::always(move || Reply::sse(&events[..2])).await;
    let stack = build(&config(truncated.base_url(), "fake-truncated", 0)).unwrap();
    let items = collect(&stack).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], Ok(LlmChunk::Delta("半句".to_owned())));
    assert!(matches!(items[1], Err(LlmError::InvalidResponse(_))));
    assert_eq!(
        truncated.request_count(),
        1,
        "no retry once a piece was delivered"
    );
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_closes_after_a_successful_probe() {
    let metrics = MetricsLog::default();
    let _metrics = metrics::set_default_local_recorder(&metrics);
    let server = FakeServer::start(|index, _| match index {
        0..=2 => Reply::json(503, &json!({"error": "overloaded"})),
        _ => Reply::json(200, &completion("back", 1, 1)),
    })
    .await;
    let mut config = config(server.base_url(), "fake-breaker", 0);
    config.resilience.breaker.failure_threshold = 3;
    let stack = build(&config).unwrap();
    let gauge = [("provider", "fake-breaker")];
    assert_eq!(metrics.last_gauge(BREAKER_STATE, &gauge), Some(0.0));

    for _ in 0..3 {
        assert!(matches!(
            stack.provider.complete(&request()).await,
            Err(LlmError::Unavailable(_))
        ));
    }
    assert_eq!(stack.status.breaker_state(), BreakerState::Open);
    assert_eq!(metrics.last_gauge(BREAKER_STATE, &gauge), Some(2.0));

    let started = Instant::now();
    assert_eq!(
        stack.provider.complete(&request()).await.unwrap_err(),
        LlmError::CircuitOpen
    );
    assert!(matches!(
        stack.provider.stream(&request()).await,
        Err(LlmError::CircuitOpen)
    ));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(
        server.request_count(),
        3,
        "an open breaker must not reach the server"
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(stack.status.breaker_state(), BreakerState::HalfOpen);
    assert_eq!(metrics.last_gauge(BREAKER_STATE, &gauge), Some(1.0));
    let response = stack.provider.complete(&request()).await.unwrap();
    assert_eq!(response.text, "back");
    assert_eq!(server.request_count(), 4);
    assert_eq!(stack.status.breaker_state(), BreakerState::Closed);
    assert_eq!(
        metrics.values(Kind::Gauge, BREAKER_STATE, &gauge),
        [0.0, 2.0, 1.0, 0.0]
    );
}

#[tokio::test]
async fn the_mock_fallback_answers_while_the_primary_is_down() {
    let metrics = MetricsLog::default();
    let _metrics = metrics::set_default_local_recorder(&metrics);
    let mut config = config(&refused_base_url().await, "fake-down", 1);
    config.resilience.breaker.failure_threshold = 2;
    config.fallback = Some(FallbackConfig::default());
    let stack = build(&config).unwrap();

    let prompt_with_task = LlmRequest {
        prompt: "<task>\n你今天感觉怎么样？\n</task>".to_owned(),
        ..request()
    };
    let response = stack.provider.complete(&prompt_with_task).await.unwrap();
    assert_eq!(response.provider, "mock");
    let reply: serde_json::Value = serde_json::from_str(&response.text).unwrap();
    assert_eq!(reply["content"], "你今天感觉怎么样？");
    assert_eq!(
        stack.status.breaker_state(),
        BreakerState::Open,
        "two refused attempts open it"
    );
    assert_eq!(
        stack.status.fallback_breaker_state(),
        Some(BreakerState::Closed)
    );
    let primary_failure = [
        ("gen_ai_provider_name", "fake-down"),
        ("error_type", "unavailable"),
    ];
    assert_eq!(
        metrics
            .values(
                Kind::Histogram,
                OPERATION_DURATION_SECONDS,
                &primary_failure
            )
            .len(),
        1
    );

    // With the breaker open the fallback answers at once, streaming too.
    let items = collect(&stack).await;
    assert!(matches!(items.last(), Some(Ok(LlmChunk::Done(done))) if done.provider == "mock"));
    let fast_fail = [
        ("gen_ai_provider_name", "fake-down"),
        ("error_type", "circuit_open"),
    ];
    assert_eq!(
        metrics
            .values(Kind::Histogram, OPERATION_DURATION_SECONDS, &fast_fail)
            .len(),
        1
    );
}

#[tokio::test]
async fn a_second_openai_endpoint_can_be_the_fallback() {
    let primary =
        FakeServer::always(|| Reply::json(503, &json!({"error": {"message": "down"}}))).await;
    let secondary = FakeServer::always(|| Reply::json(200, &completion("from backup", 2, 2))).await;
    let mut config = config(primary.base_url(), "primary-a", 1);
    config.fallback = Some(FallbackConfig {
        provider: ProviderKind::OpenAi,
        openai: openai(secondary.base_url(), "backup-b"),
        resilience: resilience(0),
    });
    let stack = build(&config).unwrap();

    let response = stack.provider.complete(&request()).await.unwrap();
    assert_eq!(
        (response.text.as_str(), response.provider.as_str()),
        ("from backup", "backup-b")
    );
    assert_eq!(primary.request_count(), 2);
    assert_eq!(secondary.request_count(), 1);
    assert_eq!(
        secondary.requests()[0].json()["messages"][0]["content"],
        PROMPT
    );
}

#[tokio::test]
async fn the_concurrency_limit_bounds_requests_in_flight() {
    let server = FakeServer::always(|| {
        Reply::json(200, &completion("ok", 1, 1)).delayed(Duration::from_millis(150))
    })
    .await;
    let mut config = config(server.base_url(), "fake-limit", 0);
    config.resilience.concurrency_limit = 3;
    let stack = build(&config).unwrap();

    let started = Instant::now();
    let request = request();
    let results =
        futures::future::join_all((0..9).map(|_| stack.provider.complete(&request))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.request_count(), 9);
    assert_eq!(server.max_in_flight(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "9 calls, 3 at a time, 150 ms each"
    );
}

#[tokio::test]
async fn streams_hold_their_permit_until_they_end() {
    let events = stream_events(&["a", "b", "c", "d"], 1, 1);
    let server =
        FakeServer::always(move || Reply::sse(&events).delayed(Duration::from_millis(50))).await;
    let mut config = config(server.base_url(), "fake-stream-limit", 0);
    config.resilience.concurrency_limit = 2;
    let stack = build(&config).unwrap();

    let runs = futures::future::join_all((0..6).map(|_| collect(&stack))).await;
    assert!(runs.iter().all(|items| deltas(items) == "abcd"));
    assert_eq!(server.request_count(), 6);
    assert!(
        server.max_in_flight() <= 2,
        "max in flight {}",
        server.max_in_flight()
    );
}

#[tokio::test]
async fn connection_refused_is_unavailable_after_retries() {
    let metrics = MetricsLog::default();
    let _metrics = metrics::set_default_local_recorder(&metrics);
    let stack = build(&config(&refused_base_url().await, "fake-refused", 1)).unwrap();
    let error = stack.provider.complete(&request()).await.unwrap_err();
    assert!(matches!(error, LlmError::Unavailable(_)), "{error:?}");
    assert_eq!(
        metrics.counter_total(RETRIES_TOTAL, &[("provider", "fake-refused")]),
        1.0
    );
}

#[tokio::test]
async fn capture_content_records_prompt_and_completion_on_the_chat_span() {
    let captured = Captured::start();
    let server = FakeServer::always(|| Reply::json(200, &completion(REPLY, 12, 5))).await;
    let options = BuildOptions {
        capture_content: true,
        ..BuildOptions::default()
    };
    let stack = build_with(&config(server.base_url(), "fake-capture", 0), &options).unwrap();
    stack.provider.complete(&request()).await.unwrap();

    let stream_server = FakeServer::always(|| {
        Reply::sse(&stream_events(
            &["PRIVATE-", "REPLY ", "听起来你很辛苦"],
            9,
            3,
        ))
    })
    .await;
    let stream_stack = build_with(
        &config(stream_server.base_url(), "fake-capture-stream", 0),
        &options,
    )
    .unwrap();
    let items = collect(&stream_stack).await;
    assert!(items.iter().all(Result::is_ok), "{items:?}");

    let spans = captured.spans("chat");
    assert_eq!(spans.len(), 2, "{spans:?}");
    for span in &spans {
        assert_eq!(span.field("gen_ai.prompt"), Some(PROMPT), "{span:?}");
        assert_eq!(span.field("gen_ai.completion"), Some(REPLY), "{span:?}");
    }
}

#[tokio::test]
async fn captured_content_never_holds_a_sensitive_value() {
    const SECRET: &str = "ID-7731-SECRET";
    let captured = Captured::start();
    let reply = format!("Noted {SECRET}, thank you");
    let server = FakeServer::always(move || Reply::json(200, &completion(&reply, 12, 5))).await;
    let options = BuildOptions {
        capture_content: true,
        ..BuildOptions::default()
    };
    let stack = build_with(&config(server.base_url(), "fake-sensitive", 0), &options).unwrap();
    // A call whose prompt holds a known sensitive value: masked, the rest kept.
    let known = LlmRequest {
        prompt: format!("Thank the user for the id {SECRET}"),
        sensitive: SensitiveValues::from_values(&[serde_json::json!(SECRET)]),
        ..request()
    };
    let response = stack.provider.complete(&known).await.unwrap();
    assert!(
        response.text.contains(SECRET),
        "the caller gets the reply whole"
    );
    // A call that extracts a sensitive value not known yet: withheld whole.
    let extracting = LlmRequest {
        prompt: format!("my id is {SECRET}"),
        sensitive: SensitiveValues::none().withholding_all(true),
        ..request()
    };
    stack.provider.complete(&extracting).await.unwrap();

    let spans = captured.spans("chat");
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(
        spans[0].field("gen_ai.prompt"),
        Some("Thank the user for the id [sensitive]")
    );
    assert_eq!(
        spans[0].field("gen_ai.completion"),
        Some("Noted [sensitive], thank you")
    );
    assert_eq!(spans[1].field("gen_ai.prompt"), Some(SENSITIVE_MASK));
    assert_eq!(spans[1].field("gen_ai.completion"), Some(SENSITIVE_MASK));
    assert!(!format!("{spans:?}").contains(SECRET));
}
