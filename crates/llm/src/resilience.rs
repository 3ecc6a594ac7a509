//! The resilience wrapper around any provider: a per-attempt timeout,
//! retries with exponential backoff and full jitter on transient errors
//! (honouring `Retry-After`, capped by `max_backoff`), a concurrency limit,
//! a circuit breaker, an optional fallback provider, and the call's span
//! and metrics.
//!
//! A logical call is one `complete`/`stream` on the wrapper; it makes up to
//! `1 + max_retries` attempts. Each attempt holds one concurrency permit
//! (a stream holds it until it ends) and one breaker ticket. Streams are
//! retried only until their first piece arrived; what was delivered is
//! never repeated. The fallback runs when the primary's logical call fails
//! for any reason (including an open breaker).

use crate::breaker::{BreakerState, BreakerTicket, CircuitBreaker};
use crate::config::ResilienceConfig;
use crate::telemetry::{self, CallOutcome};
use async_trait::async_trait;
use futures::{Stream, StreamExt};
use heartrule_domain::llm::{LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream};
use heartrule_domain::SensitiveValues;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, Span};

pub struct ResilientProvider {
    inner: Arc<dyn LlmProvider>,
    provider_name: String,
    model: String,
    attempt_timeout: Duration,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    permits: Arc<Semaphore>,
    breaker: Arc<CircuitBreaker>,
    fallback: Option<Arc<dyn LlmProvider>>,
    /// Record prompt and completion text on the call's span.
    capture_content: bool,
}

impl std::fmt::Debug for ResilientProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientProvider")
            .field("provider", &self.provider_name)
            .field("model", &self.model)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_retries", &self.max_retries)
            .field("breaker", &self.breaker.state())
            .field(
                "fallback",
                &self.fallback.as_ref().map(|fallback| fallback.name()),
            )
            .finish_non_exhaustive()
    }
}

impl ResilientProvider {
    /// Wraps `inner` (whose `name()` labels metrics); `model` is the
    /// `gen_ai.request.model` label. `config.concurrency_limit` must be
    /// between 1 and `Semaphore::MAX_PERMITS` (see [`crate::build`], which checks it).
    #[must_use]
    pub fn new(
        inner: Arc<dyn LlmProvider>,
        model: &str,
        config: &ResilienceConfig,
        attempt_timeout: Duration,
    ) -> Self {
        let provider_name = inner.name().to_owned();
        let permits = config.concurrency_limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            breaker: Arc::new(CircuitBreaker::new(&provider_name, &config.breaker)),
            inner,
            provider_name,
            model: model.to_owned(),
            attempt_timeout,
            max_retries: config.max_retries,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            permits: Arc::new(Semaphore::new(permits)),
            fallback: None,
            capture_content: false,
        }
    }

    /// Records the prompt (`gen_ai.prompt`) and the completion
    /// (`gen_ai.completion`) on each call's span. Off by default: counseling
    /// conversations are private.
    #[must_use]
    pub fn with_content_capture(mut self, capture_content: bool) -> Self {
        self.capture_content = capture_content;
        self
    }

    fn chat_span(&self, request: &LlmRequest) -> Span {
        // Captured content never holds a sensitive variable value.
        let prompt = self
            .capture_content
            .then(|| request.sensitive.mask(&request.prompt));
        telemetry::chat_span(
            &self.provider_name,
            &self.model,
            &request.purpose,
            prompt.as_deref(),
        )
    }

    /// What the call's span may record of the completion: `None` when
    /// content capture is off, else what to mask in it.
    fn capture<'r>(&self, request: &'r LlmRequest) -> Option<&'r SensitiveValues> {
        self.capture_content.then_some(&request.sensitive)
    }

    /// Used when a logical call of this provider fails.
    #[must_use]
    pub fn with_fallback(mut self, fallback: Arc<dyn LlmProvider>) -> Self {
        self.fallback = Some(fallback);
        self
    }

    #[must_use]
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    fn should_retry(&self, error: &LlmError, retries: u32) -> bool {
        error.is_transient()
            && retries < self.max_retries
            && self.breaker.state() != BreakerState::Open
    }

    /// `Retry-After` when the provider sent one, else full jitter over the
    /// exponential step; both capped by `max_backoff`.
    fn backoff(&self, retries: u32, error: &LlmError) -> Duration {
        if let LlmError::RateLimited {
            retry_after: Some(wait),
        } = error
        {
            return (*wait).min(self.max_backoff);
        }
        let factor = 2u32.saturating_pow(retries);
        let step = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        full_jitter(step)
    }

    async fn acquire_permit(&self) -> Result<OwnedSemaphorePermit, LlmError> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| LlmError::Unavailable("the LLM concurrency limiter was closed".to_owned()))
    }

    async fn wait_before_retry(&self, retries: &mut u32, error: &LlmError) {
        let delay = self.backoff(*retries, error);
        *retries += 1;
        telemetry::record_retry(&self.provider_name);
        tracing::debug!(
            provider = %self.provider_name,
            retry = *retries,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error.type = telemetry::error_type(error),
            "retrying LLM call"
        );
        tokio::time::sleep(delay).await;
    }

    async fn attempt_complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let ticket = self.breaker.try_acquire()?;
        let _permit = self.acquire_permit().await?;
        let result = tokio::time::timeout(self.attempt_timeout, self.inner.complete(request))
            .await
            .unwrap_or(Err(LlmError::Timeout(self.attempt_timeout)));
        ticket.settle(result.as_ref().err());
        result
    }

    async fn complete_with_retries(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let started = Instant::now();
        let mut retries = 0;
        let result = loop {
            match self.attempt_complete(request).await {
                Err(error) if self.should_retry(&error, retries) => {
                    self.wait_before_retry(&mut retries, &error).await;
                }
                other => break other,
            }
        };
        let outcome = match &result {
            Ok(response) => CallOutcome::Success(response),
            Err(error) => CallOutcome::Failure(error),
        };
        telemetry::finish_call(
            &Span::current(),
            &self.provider_name,
            &self.model,
            started.elapsed(),
            retries,
            &outcome,
            self.capture(request),
        );
        result
    }

    /// One attempt up to and including the first piece of the stream.
    async fn attempt_stream(&self, request: &LlmRequest) -> Result<OpenedStream, LlmError> {
        let ticket = self.breaker.try_acquire()?;
        let permit = self.acquire_permit().await?;
        let opening = async {
            let mut stream = self.inner.stream(request).await?;
            match stream.next().await {
                Some(Ok(first)) => Ok((first, stream)),
                Some(Err(error)) => Err(error),
                None => Err(LlmError::InvalidResponse(
                    "the stream ended without any data".to_owned(),
                )),
            }
        };
        match tokio::time::timeout(self.attempt_timeout, opening)
            .await
            .unwrap_or(Err(LlmError::Timeout(self.attempt_timeout)))
        {
            Ok((first, rest)) => Ok(OpenedStream {
                first,
                rest,
                ticket,
                permit,
            }),
            Err(error) => {
                ticket.settle(Some(&error));
                Err(error)
            }
        }
    }

    async fn stream_with_retries(
        &self,
        request: &LlmRequest,
        span: Span,
    ) -> Result<LlmStream, LlmError> {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            match self.attempt_stream(request).await {
                Ok(opened) => {
                    return Ok(Box::pin(GuardedStream {
                        first: Some(opened.first),
                        rest: opened.rest,
                        ticket: Some(opened.ticket),
                        permit: Some(opened.permit),
                        span,
                        provider_name: self.provider_name.clone(),
                        model: self.model.clone(),
                        started,
                        retries,
                        finished: false,
                        capture: self.capture(request).cloned(),
                    }));
                }
                Err(error) if self.should_retry(&error, retries) => {
                    self.wait_before_retry(&mut retries, &error).await;
                }
                Err(error) => {
                    telemetry::finish_call(
                        &span,
                        &self.provider_name,
                        &self.model,
                        started.elapsed(),
                        retries,
                        &CallOutcome::Failure(&error),
                        self.capture(request),
                    );
                    return Err(error);
                }
            }
        }
    }

    fn fallback_for(&self, error: &LlmError) -> Option<&Arc<dyn LlmProvider>> {
        let fallback = self.fallback.as_ref()?;
        tracing::warn!(
            provider = %self.provider_name,
            fallback = %fallback.name(),
            error.type = telemetry::error_type(error),
            "LLM provider failed; using the fallback provider"
        );
        telemetry::record_fallback(&self.provider_name, fallback.name());
        Some(fallback)
    }
}

#[async_trait]
impl LlmProvider for ResilientProvider {
    fn name(&self) -> &str {
        &self.provider_name
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let span = self.chat_span(request);
        match self.complete_with_retries(request).instrument(span).await {
            Err(error) => match self.fallback_for(&error) {
                Some(fallback) => fallback.complete(request).await,
                None => Err(error),
            },
            ok => ok,
        }
    }

    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let span = self.chat_span(request);
        let opened = self
            .stream_with_retries(request, span.clone())
            .instrument(span)
            .await;
        match opened {
            Err(error) => match self.fallback_for(&error) {
                Some(fallback) => fallback.stream(request).await,
                None => Err(error),
            },
            ok => ok,
        }
    }
}

fn full_jitter(cap: Duration) -> Duration {
    let cap_micros = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(fastrand::u64(0..=cap_micros))
}

struct OpenedStream {
    first: LlmChunk,
    rest: LlmStream,
    ticket: BreakerTicket,
    permit: OwnedSemaphorePermit,
}

/// A started stream that keeps its concurrency permit and breaker ticket
/// until it ends, then settles them and records the call.
struct GuardedStream {
    first: Option<LlmChunk>,
    rest: LlmStream,
    ticket: Option<BreakerTicket>,
    permit: Option<OwnedSemaphorePermit>,
    span: Span,
    provider_name: String,
    model: String,
    started: Instant,
    retries: u32,
    finished: bool,
    /// What to mask in the captured completion; `None`: capture is off.
    capture: Option<SensitiveValues>,
}

impl GuardedStream {
    fn settle(&mut self, outcome: &CallOutcome<'_>) {
        self.finished = true;
        self.permit = None;
        if let Some(ticket) = self.ticket.take() {
            match outcome {
                CallOutcome::Failure(error) => ticket.settle(Some(error)),
                CallOutcome::Success(_) => ticket.settle(None),
                // Dropping frees a probe slot without judging the provider.
                CallOutcome::Cancelled => drop(ticket),
            }
        }
        telemetry::finish_call(
            &self.span,
            &self.provider_name,
            &self.model,
            self.started.elapsed(),
            self.retries,
            outcome,
            self.capture.as_ref(),
        );
    }
}

impl Stream for GuardedStream {
    type Item = Result<LlmChunk, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let item = match this.first.take() {
            Some(first) => Ok(first),
            None => {
                let _entered = this.span.enter();
                match this.rest.as_mut().poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(item)) => item,
                    Poll::Ready(None) => Err(LlmError::InvalidResponse(
                        "the stream ended without a final response".to_owned(),
                    )),
                }
            }
        };
        match &item {
            Ok(LlmChunk::Done(response)) => this.settle(&CallOutcome::Success(response)),
            Err(error) => this.settle(&CallOutcome::Failure(error)),
            Ok(LlmChunk::Delta(_)) => {}
        }
        Poll::Ready(Some(item))
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        if !self.finished {
            self.settle(&CallOutcome::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BreakerConfig;
    use crate::mock::MockProvider;
    use heartrule_domain::llm::MockLlmProvider;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn config(max_retries: u32, threshold: u32) -> ResilienceConfig {
        ResilienceConfig {
            max_retries,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            concurrency_limit: 4,
            breaker: BreakerConfig {
                failure_threshold: threshold,
                open_for: Duration::from_secs(60),
                half_open_max_calls: 1,
            },
        }
    }

    fn request() -> LlmRequest {
        LlmRequest {
            prompt: "p".to_owned(),
            temperature: 0.5,
            max_tokens: 10,
            purpose: "ai_say".to_owned(),
            sensitive: heartrule_domain::SensitiveValues::none(),
        }
    }

    fn failing(name: &'static str, error: LlmError, calls: Arc<AtomicU32>) -> Arc<dyn LlmProvider> {
        let mut mock = MockLlmProvider::new();
        mock.expect_name().return_const(name.to_owned());
        let stream_calls = Arc::clone(&calls);
        let stream_error = error.clone();
        mock.expect_complete().returning(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(error.clone())
        });
        mock.expect_stream().returning(move |_| {
            stream_calls.fetch_add(1, Ordering::SeqCst);
            Err(stream_error.clone())
        });
        Arc::new(mock)
    }

    #[tokio::test]
    async fn transient_errors_are_retried_then_returned() {
        let calls = Arc::new(AtomicU32::new(0));
        let inner = failing(
            "unit-transient",
            LlmError::Unavailable("503".to_owned()),
            Arc::clone(&calls),
        );
        let provider = ResilientProvider::new(inner, "m", &config(2, 100), Duration::from_secs(5));
        let error = provider.complete(&request()).await.unwrap_err();
        assert_eq!(error, LlmError::Unavailable("503".to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn rejections_are_not_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let inner = failing(
            "unit-rejected",
            LlmError::Rejected("400".to_owned()),
            Arc::clone(&calls),
        );
        let provider = ResilientProvider::new(inner, "m", &config(3, 100), Duration::from_secs(5));
        assert!(matches!(
            provider.stream(&request()).await,
            Err(LlmError::Rejected(_))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_open_breaker_stops_retrying_and_fails_fast() {
        let calls = Arc::new(AtomicU32::new(0));
        let inner = failing(
            "unit-breaker",
            LlmError::Timeout(Duration::from_secs(1)),
            Arc::clone(&calls),
        );
        let provider = ResilientProvider::new(inner, "m", &config(5, 2), Duration::from_secs(5));
        let first = provider.complete(&request()).await.unwrap_err();
        assert_eq!(first, LlmError::Timeout(Duration::from_secs(1)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "retries stop once the breaker opens"
        );
        assert_eq!(provider.breaker_state(), BreakerState::Open);
        assert_eq!(
            provider.complete(&request()).await.unwrap_err(),
            LlmError::CircuitOpen
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_fallback_answers_when_the_primary_fails() {
        let calls = Arc::new(AtomicU32::new(0));
        let inner = failing(
            "unit-fallback",
            LlmError::Unavailable("down".to_owned()),
            Arc::clone(&calls),
        );
        let provider = ResilientProvider::new(inner, "m", &config(0, 100), Duration::from_secs(5))
            .with_fallback(Arc::new(MockProvider::new()));
        let response = provider.complete(&request()).await.unwrap();
        assert_eq!(response.provider, "mock");
        let stream = provider.stream(&request()).await.unwrap();
        let items: Vec<_> = stream.collect().await;
        assert!(matches!(items.last(), Some(Ok(LlmChunk::Done(done))) if done.provider == "mock"));
    }

    /// The counters a test recorded (name, labels as `key=value`, value), each
    /// series checked against this crate's declarations.
    fn counters(
        snapshotter: &metrics_util::debugging::Snapshotter,
    ) -> Vec<(String, Vec<String>, u64)> {
        let mut counters = Vec::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            crate::METRICS
                .check_series(key.name(), key.labels().map(metrics::Label::key))
                .unwrap_or_else(|problem| panic!("{problem}"));
            if let metrics_util::debugging::DebugValue::Counter(count) = value {
                let labels = key
                    .labels()
                    .map(|label| format!("{}={}", label.key(), label.value()))
                    .collect();
                counters.push((key.name().to_owned(), labels, count));
            }
        }
        counters
    }

    #[tokio::test]
    async fn each_call_handed_to_the_fallback_is_counted_by_provider_and_fallback() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Thread-local, and a current-thread test runtime polls on this thread.
        let _recording = metrics::set_default_local_recorder(&recorder);
        let failing_primary = ResilientProvider::new(
            failing(
                "unit-fallback-count",
                LlmError::Unavailable("down".to_owned()),
                Arc::new(AtomicU32::new(0)),
            ),
            "m",
            &config(0, 100),
            Duration::from_secs(5),
        )
        .with_fallback(Arc::new(MockProvider::new()));
        failing_primary.complete(&request()).await.unwrap();
        let stream = failing_primary.stream(&request()).await.unwrap();
        let _: Vec<_> = stream.collect().await;

        // A primary that answers never touches its fallback.
        let healthy_primary = ResilientProvider::new(
            Arc::new(MockProvider::new()),
            "m",
            &config(0, 100),
            Duration::from_secs(5),
        )
        .with_fallback(Arc::new(MockProvider::new()));
        healthy_primary.complete(&request()).await.unwrap();

        let fallbacks: Vec<_> = counters(&snapshotter)
            .into_iter()
            .filter(|(name, _, _)| name == telemetry::FALLBACK_TOTAL)
            .collect();
        assert_eq!(
            fallbacks,
            vec![(
                telemetry::FALLBACK_TOTAL.to_owned(),
                vec![
                    "provider=unit-fallback-count".to_owned(),
                    "fallback=mock".to_owned()
                ],
                2
            )]
        );
    }

    /// Never answers, like a server that accepted the connection and went silent.
    struct HangingProvider;

    #[async_trait]
    impl LlmProvider for HangingProvider {
        fn name(&self) -> &str {
            "unit-hang"
        }

        async fn complete(&self, _request: &LlmRequest) -> Result<LlmResponse, LlmError> {
            std::future::pending().await
        }

        async fn stream(&self, _request: &LlmRequest) -> Result<LlmStream, LlmError> {
            Ok(Box::pin(futures::stream::pending()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_times_out_for_complete_and_stream() {
        let timeout = Duration::from_secs(30);
        let provider =
            ResilientProvider::new(Arc::new(HangingProvider), "m", &config(1, 100), timeout);
        let started = tokio::time::Instant::now();
        assert_eq!(
            provider.complete(&request()).await.unwrap_err(),
            LlmError::Timeout(timeout)
        );
        assert!(
            started.elapsed() >= timeout * 2,
            "both attempts ran to their timeout"
        );
        assert!(
            matches!(provider.stream(&request()).await, Err(LlmError::Timeout(t)) if t == timeout)
        );
    }

    #[tokio::test]
    async fn a_stream_dropped_early_releases_its_permit_and_probe() {
        let mut config = config(0, 1);
        config.concurrency_limit = 1;
        config.breaker.open_for = Duration::ZERO;
        let provider = ResilientProvider::new(
            Arc::new(MockProvider::new()),
            "mock",
            &config,
            Duration::from_secs(5),
        );
        // Open the breaker, which half-opens at once (open_for = 0).
        provider.breaker.record_at(false, true, Instant::now());
        assert_eq!(provider.breaker_state(), BreakerState::HalfOpen);
        let mut stream = provider.stream(&request()).await.unwrap();
        assert!(matches!(stream.next().await, Some(Ok(LlmChunk::Delta(_)))));
        assert_eq!(provider.permits.available_permits(), 0);
        drop(stream);
        assert_eq!(provider.permits.available_permits(), 1);
        // The probe slot is free again, and a finished probe closes the breaker.
        let response = provider.complete(&request()).await.unwrap();
        assert_eq!(response.provider, "mock");
        assert_eq!(provider.breaker_state(), BreakerState::Closed);
    }

    #[test]
    fn backoff_is_jittered_capped_and_honours_retry_after() {
        let inner: Arc<dyn LlmProvider> = Arc::new(MockProvider::new());
        let mut config = config(3, 5);
        config.initial_backoff = Duration::from_millis(100);
        config.max_backoff = Duration::from_millis(300);
        let provider = ResilientProvider::new(inner, "mock", &config, Duration::from_secs(1));
        let unavailable = LlmError::Unavailable(String::new());
        for retries in 0..6 {
            let step =
                Duration::from_millis(100 * 2u64.pow(retries)).min(Duration::from_millis(300));
            for _ in 0..50 {
                assert!(provider.backoff(retries, &unavailable) <= step);
            }
        }
        let distinct: std::collections::HashSet<Duration> =
            (0..50).map(|_| provider.backoff(2, &unavailable)).collect();
        assert!(distinct.len() > 1, "backoff must be jittered");
        let limited = |secs| LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(provider.backoff(0, &limited(0)), Duration::ZERO);
        assert_eq!(provider.backoff(0, &limited(9)), Duration::from_millis(300));
    }
}
