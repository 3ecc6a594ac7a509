//! An LLM provider that answers from a case's scripted replies first and
//! hands every other call to the runner's provider.

use super::format::ScriptedReply;
use async_trait::async_trait;
use heartrule_domain::{LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream};
use heartrule_llm::mock::estimate_usage;
use std::sync::{Arc, Mutex, PoisonError};

/// The provider and model name scripted replies carry.
pub const SCRIPTED: &str = "scripted";

pub struct ScriptedLlm {
    inner: Arc<dyn LlmProvider>,
    replies: Mutex<Vec<ScriptedReply>>,
}

impl ScriptedLlm {
    pub fn new(inner: Arc<dyn LlmProvider>, replies: Vec<ScriptedReply>) -> Self {
        Self {
            inner,
            replies: Mutex::new(replies),
        }
    }

    /// The first unused reply for `purpose` (or for any purpose), removed.
    fn take(&self, purpose: &str) -> Option<String> {
        let mut replies = self.replies.lock().unwrap_or_else(PoisonError::into_inner);
        let index = replies
            .iter()
            .position(|r| r.purpose.as_deref().is_none_or(|p| p == purpose))?;
        Some(replies.remove(index).text())
    }

    /// How many scripted replies no call has used.
    pub fn unused(&self) -> usize {
        self.replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn response(request: &LlmRequest, text: String) -> LlmResponse {
        LlmResponse {
            usage: estimate_usage(&request.prompt, &text),
            text,
            model: SCRIPTED.to_owned(),
            provider: SCRIPTED.to_owned(),
            finish_reason: Some("stop".to_owned()),
        }
    }
}

#[async_trait]
impl LlmProvider for ScriptedLlm {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        match self.take(&request.purpose) {
            Some(text) => Ok(Self::response(request, text)),
            None => self.inner.complete(request).await,
        }
    }

    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        match self.take(&request.purpose) {
            Some(text) => {
                let response = Self::response(request, text.clone());
                let chunks = vec![Ok(LlmChunk::Delta(text)), Ok(LlmChunk::Done(response))];
                Ok(Box::pin(futures::stream::iter(chunks)))
            }
            None => self.inner.stream(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_llm::mock::MockProvider;
    use serde_json::json;

    fn request(purpose: &str) -> LlmRequest {
        LlmRequest {
            prompt: "p".into(),
            temperature: 0.0,
            max_tokens: 10,
            purpose: purpose.into(),
            sensitive: heartrule_domain::SensitiveValues::none(),
        }
    }

    #[tokio::test]
    async fn replies_go_to_their_purpose_in_order_then_the_provider_answers() {
        let llm = ScriptedLlm::new(
            Arc::new(MockProvider::new()),
            vec![
                ScriptedReply {
                    purpose: Some("extract".into()),
                    reply: json!("first"),
                },
                ScriptedReply {
                    purpose: None,
                    reply: json!({"content": "any"}),
                },
                ScriptedReply {
                    purpose: Some("extract".into()),
                    reply: json!("second"),
                },
            ],
        );
        assert_eq!(
            llm.complete(&request("extract")).await.unwrap().text,
            "first"
        );
        assert_eq!(
            llm.complete(&request("ai_ask")).await.unwrap().text,
            r#"{"content":"any"}"#
        );
        let scripted = llm.complete(&request("extract")).await.unwrap();
        assert_eq!(
            (scripted.text.as_str(), scripted.provider.as_str()),
            ("second", SCRIPTED)
        );
        assert_eq!(llm.unused(), 0);
        let mocked = llm.complete(&request("extract")).await.unwrap();
        assert_eq!(mocked.provider, MockProvider::NAME);
    }
}
