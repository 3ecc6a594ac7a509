//! The LLM port. A prompt is one string sent as a single user message.

use crate::sensitive::SensitiveValues;
use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::time::Duration;

/// One completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    pub prompt: String,
    pub temperature: f32,
    pub max_tokens: u32,
    /// What the engine asks for (`ai_ask`, `ai_say`, `rewrite`, `extract`,
    /// `ai_think`); used for metrics and span names, never for routing.
    pub purpose: String,
    /// Sensitive variable values the prompt or the reply may hold: an
    /// adapter recording content (spans, logs) masks them with
    /// [`SensitiveValues::mask`], whatever its content-capture setting.
    #[serde(default, skip_serializing_if = "SensitiveValues::is_empty")]
    pub sensitive: SensitiveValues,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmResponse {
    pub text: String,
    pub model: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub usage: TokenUsage,
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmChunk {
    /// Text as it arrives.
    Delta(String),
    /// The end of the stream with the whole response.
    Done(LlmResponse),
}

pub type LlmStream = Pin<Box<dyn Stream<Item = Result<LlmChunk, LlmError>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LlmError {
    #[error("LLM request timed out after {0:?}")]
    Timeout(Duration),
    #[error("LLM provider rate limited the request")]
    RateLimited { retry_after: Option<Duration> },
    #[error("LLM provider unavailable: {0}")]
    Unavailable(String),
    #[error("LLM circuit breaker is open; requests are rejected until it half-opens")]
    CircuitOpen,
    #[error("LLM provider rejected the request: {0}")]
    Rejected(String),
    #[error("LLM provider sent an invalid response: {0}")]
    InvalidResponse(String),
    #[error("LLM provider is not configured: {0}")]
    NotConfigured(String),
}

impl LlmError {
    /// Whether retrying the same request may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::RateLimited { .. } | Self::Unavailable(_)
        )
    }
}

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// Provider name for metrics (`mock`, `openai`, …).
    fn name(&self) -> &str;
    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError>;
    /// Streams the completion; the last item is [`LlmChunk::Done`].
    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError>;
}
