//! A scripted in-process LLM behind the domain's [`LlmProvider`] port: a
//! FIFO queue of replies (texts or errors), every call recorded.
//!
//! What a call finds when nothing is queued is the test's choice:
//! [`FakeLlm::new`] panics, failing the test at the unexpected call (the
//! engine's tests, which drive it directly); [`FakeLlm::failing_when_empty`]
//! answers [`LlmError::Unavailable`], which fails the turn the test checks
//! (the HTTP adapter's tests, where a panic would only surface as a broken
//! connection).

use async_trait::async_trait;
use futures::StreamExt;
use heartrule_domain::{
    LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream, TokenUsage,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// One call the fake LLM received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub prompt: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub purpose: String,
    pub streamed: bool,
    /// What the request asked telemetry to keep out.
    pub sensitive: heartrule_domain::SensitiveValues,
}

/// What a call does when no reply is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenEmpty {
    #[default]
    Panic,
    FailUnavailable,
}

#[derive(Default)]
pub struct FakeLlm {
    replies: Mutex<VecDeque<Result<String, LlmError>>>,
    calls: Mutex<Vec<RecordedCall>>,
    when_empty: WhenEmpty,
    /// When set, streams stop halfway until a permit is added.
    gate: Mutex<Option<Arc<Semaphore>>>,
}

impl FakeLlm {
    /// Panics at a call with no reply queued.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Answers a call with no reply queued with [`LlmError::Unavailable`].
    pub fn failing_when_empty() -> Arc<Self> {
        Arc::new(Self {
            when_empty: WhenEmpty::FailUnavailable,
            ..Self::default()
        })
    }

    pub fn reply(&self, text: impl Into<String>) {
        self.replies.lock().unwrap().push_back(Ok(text.into()));
    }

    pub fn replies<I, S>(&self, texts: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for text in texts {
            self.reply(text);
        }
    }

    pub fn fail(&self, error: LlmError) {
        self.replies.lock().unwrap().push_back(Err(error));
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn last_call(&self) -> RecordedCall {
        self.calls().last().cloned().expect("no LLM call was made")
    }

    pub fn pending_replies(&self) -> usize {
        self.replies.lock().unwrap().len()
    }

    /// Holds every following stream halfway (after some message text has
    /// been sent); add a permit to the returned semaphore to let one finish.
    pub fn hold_streams(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(Arc::clone(&gate));
        gate
    }

    fn next(&self, request: &LlmRequest, streamed: bool) -> Result<LlmResponse, LlmError> {
        self.calls.lock().unwrap().push(RecordedCall {
            prompt: request.prompt.clone(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            purpose: request.purpose.clone(),
            streamed,
            sensitive: request.sensitive.clone(),
        });
        let next = self.replies.lock().unwrap().pop_front();
        let next = match (next, self.when_empty) {
            (Some(next), _) => next,
            (None, WhenEmpty::Panic) => panic!(
                "FakeLlm: unexpected `{}` call, no reply queued",
                request.purpose
            ),
            (None, WhenEmpty::FailUnavailable) => Err(LlmError::Unavailable(format!(
                "FakeLlm: unexpected `{}` call, no reply queued",
                request.purpose
            ))),
        };
        next.map(|text| LlmResponse {
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
            },
            text,
            model: "fake-model".into(),
            provider: "fake".into(),
            finish_reason: Some("stop".into()),
        })
    }
}

#[async_trait]
impl LlmProvider for FakeLlm {
    fn name(&self) -> &str {
        "fake"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        self.next(request, false)
    }

    /// Yields the reply in deltas of three characters, then `Done`; with
    /// [`FakeLlm::hold_streams`], the second half waits for a permit.
    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let response = self.next(request, true)?;
        let chars: Vec<char> = response.text.chars().collect();
        let mut head: Vec<Result<LlmChunk, LlmError>> = chars
            .chunks(3)
            .map(|c| Ok(LlmChunk::Delta(c.iter().collect())))
            .collect();
        let mut tail = head.split_off(head.len() / 2);
        tail.push(Ok(LlmChunk::Done(response)));
        let Some(gate) = self.gate.lock().unwrap().clone() else {
            head.extend(tail);
            return Ok(Box::pin(futures::stream::iter(head)));
        };
        let wait = futures::stream::once(async move {
            gate.acquire().await.unwrap().forget();
        })
        .filter_map(|()| async { None });
        Ok(Box::pin(
            futures::stream::iter(head)
                .chain(wait)
                .chain(futures::stream::iter(tail)),
        ))
    }
}
