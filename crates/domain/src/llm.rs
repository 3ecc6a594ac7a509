//! The LLM port. A prompt is one string sent as a single user message.

use crate::sensitive::SensitiveValues;
use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

impl LlmRequest {
    /// Hex SHA-256 of everything that selects the answer: the purpose, the
    /// sampling settings and the exact prompt (sensitive values included;
    /// only the hash is kept). A replay reuses a recorded response only for
    /// a call with the same hash.
    #[must_use]
    pub fn prompt_hash(&self) -> String {
        let mut hasher = Sha256::new();
        // Lengths keep the fields apart: no two requests share an input.
        for field in [self.purpose.as_bytes(), self.prompt.as_bytes()] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        hasher.update(self.temperature.to_bits().to_be_bytes());
        hasher.update(self.max_tokens.to_be_bytes());
        hex::encode(hasher.finalize())
    }
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

    /// Whether this error, as the final answer of the whole LLM stack
    /// (retries done, the fallback tried), means no provider could answer:
    /// an open breaker, or a transient failure that outlasted the retries.
    /// A provider that answered badly (`Rejected`, `InvalidResponse`) or a
    /// configuration mistake (`NotConfigured`) is not unavailability: the
    /// same request would fail the same way, so degrading would hide a bug.
    #[must_use]
    pub fn means_unavailable(&self) -> bool {
        matches!(self, Self::CircuitOpen) || self.is_transient()
    }
}

/// What the engine does when the LLM is unavailable (see
/// [`LlmError::means_unavailable`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DegradedMode {
    /// The turn fails with `LLM_SERVICE_ERROR` (503) and the session keeps
    /// its previous state, so the client can retry.
    #[default]
    Off,
    /// The conversation continues on the script's own texts: `ai_say` and
    /// `ai_ask` send their scripted `content`, answers that needed
    /// extraction are stored raw with the source [`UNEXTRACTED_SOURCE`],
    /// `ai_think` writes nothing, and every such message carries `true`
    /// under [`DEGRADED_METADATA_KEY`] in its metadata.
    Scripted,
}

impl DegradedMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Scripted => "scripted",
        }
    }
}

/// Metadata key set to `true` on every AI message (and action result) the
/// engine produced without the LLM, in [`DegradedMode::Scripted`].
pub const DEGRADED_METADATA_KEY: &str = "degraded";

/// The `source` of a variable holding the user's raw answer where the LLM
/// should have extracted a value but was unavailable.
pub const UNEXTRACTED_SOURCE: &str = "unextracted";

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// Provider name for metrics (`mock`, `openai`, …).
    fn name(&self) -> &str;
    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError>;
    /// Streams the completion; the last item is [`LlmChunk::Done`].
    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_no_provider_could_answer_mean_unavailable() {
        let unavailable = [
            LlmError::CircuitOpen,
            LlmError::Timeout(Duration::from_secs(1)),
            LlmError::RateLimited { retry_after: None },
            LlmError::Unavailable("down".to_owned()),
        ];
        assert!(unavailable.iter().all(LlmError::means_unavailable));
        let answered_badly = [
            LlmError::Rejected("bad request".to_owned()),
            LlmError::InvalidResponse("garbage".to_owned()),
            LlmError::NotConfigured("no key".to_owned()),
        ];
        assert!(!answered_badly.iter().any(LlmError::means_unavailable));
    }

    fn request(purpose: &str, prompt: &str, temperature: f32) -> LlmRequest {
        LlmRequest {
            prompt: prompt.to_owned(),
            temperature,
            max_tokens: 100,
            purpose: purpose.to_owned(),
            sensitive: SensitiveValues::none(),
        }
    }

    #[test]
    fn the_prompt_hash_covers_purpose_prompt_and_sampling() {
        let base = request("ai_say", "hello", 0.7);
        assert_eq!(
            base.prompt_hash(),
            request("ai_say", "hello", 0.7).prompt_hash()
        );
        assert_eq!(base.prompt_hash().len(), 64);
        for other in [
            request("ai_ask", "hello", 0.7),
            request("ai_say", "hello!", 0.7),
            request("ai_say", "hello", 0.2),
            // The purpose and the prompt cannot trade characters.
            request("ai_sayh", "ello", 0.7),
        ] {
            assert_ne!(base.prompt_hash(), other.prompt_hash());
        }
        let mut longer = base.clone();
        longer.max_tokens = 200;
        assert_ne!(base.prompt_hash(), longer.prompt_hash());
    }

    #[test]
    fn degraded_mode_reads_its_config_words_and_defaults_to_off() {
        assert_eq!(DegradedMode::default(), DegradedMode::Off);
        let scripted: DegradedMode = serde_json::from_str("\"scripted\"").unwrap();
        assert_eq!(scripted, DegradedMode::Scripted);
        assert_eq!(scripted.as_str(), "scripted");
        assert!(serde_json::from_str::<DegradedMode>("\"on\"").is_err());
    }
}
