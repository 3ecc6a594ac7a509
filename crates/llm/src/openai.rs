//! The `openai` provider: any OpenAI-compatible `POST {base_url}/chat/completions`
//! endpoint (OpenAI, DeepSeek, Volcano Ark, vLLM, Ollama).
//!
//! The prompt is sent as one user message. `temperature` comes from the
//! request unless it is not a finite non-negative number, `max_tokens` from
//! the request unless it is 0; in those cases the configured defaults apply
//! (and the field is omitted when there is no default either).
//!
//! Error mapping: 429 → `RateLimited` (with `Retry-After` as seconds or an
//! HTTP date), 5xx → `Unavailable`, other 4xx → `Rejected`, timeouts →
//! `Timeout`, connection failures → `Unavailable`, undecodable bodies or
//! streams → `InvalidResponse`. Error texts never contain the prompt.

use crate::config::{LlmConfigError, OpenAiConfig};
use async_trait::async_trait;
use heartrule_domain::llm::{
    LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream, TokenUsage,
};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Called on the headers of every outgoing request, after the configured
/// ones; telemetry uses it to add the W3C `traceparent` of the current span.
pub type HeaderInjector = Arc<dyn Fn(&mut HeaderMap) + Send + Sync>;

/// Error bodies are read up to this size for the error message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Provider error messages are cut to this many characters.
const MAX_ERROR_DETAIL_CHARS: usize = 300;

pub struct OpenAiProvider {
    client: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
    model: String,
    default_temperature: Option<f32>,
    default_max_tokens: Option<u32>,
    timeout: Duration,
    provider_name: String,
    header_injector: Option<HeaderInjector>,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("endpoint", &self.endpoint.as_str())
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("provider_name", &self.provider_name)
            .field("header_injector", &self.header_injector.is_some())
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// Builds the provider from `llm.openai`; errors name the offending key.
    pub fn new(config: &OpenAiConfig) -> Result<Self, LlmConfigError> {
        Self::from_config(config, "llm.openai")
    }

    /// As [`Self::new`], with `key_prefix` (e.g. `llm.fallback.openai`) used in error keys.
    pub fn from_config(config: &OpenAiConfig, key_prefix: &str) -> Result<Self, LlmConfigError> {
        let key = |field: &str| format!("{key_prefix}.{field}");
        let api_key = config
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|api_key| !api_key.is_empty())
            .ok_or_else(|| LlmConfigError::Missing {
                key: key("api_key"),
            })?;
        let endpoint =
            chat_completions_url(&config.base_url).map_err(|reason| LlmConfigError::Invalid {
                key: key("base_url"),
                reason,
            })?;
        if config.model.trim().is_empty() {
            return Err(LlmConfigError::Missing { key: key("model") });
        }
        if let Some(temperature) = config.temperature {
            if !(0.0..=2.0).contains(&temperature) {
                return Err(LlmConfigError::Invalid {
                    key: key("temperature"),
                    reason: format!("{temperature} is outside 0.0..=2.0"),
                });
            }
        }
        if config.timeout.is_zero() {
            return Err(LlmConfigError::Invalid {
                key: key("timeout"),
                reason: "must be greater than zero".to_owned(),
            });
        }
        if config.provider_name.trim().is_empty() {
            return Err(LlmConfigError::Missing {
                key: key("provider_name"),
            });
        }

        let mut headers = HeaderMap::new();
        for (name, value) in &config.extra_headers {
            let header_key = key(&format!("extra_headers.{name}"));
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|error| {
                LlmConfigError::Invalid {
                    key: header_key.clone(),
                    reason: error.to_string(),
                }
            })?;
            let mut header_value =
                HeaderValue::from_str(value).map_err(|error| LlmConfigError::Invalid {
                    key: header_key,
                    reason: error.to_string(),
                })?;
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| {
                LlmConfigError::Invalid {
                    key: key("api_key"),
                    reason: "contains characters that cannot be sent in an HTTP header".to_owned(),
                }
            })?;
        authorization.set_sensitive(true);
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));

        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .build()
            .map_err(|error| LlmConfigError::HttpClient {
                key: key_prefix.to_owned(),
                reason: error_chain(&error),
            })?;

        Ok(Self {
            client,
            endpoint,
            headers,
            model: config.model.trim().to_owned(),
            default_temperature: config.temperature,
            default_max_tokens: config.max_tokens,
            timeout: config.timeout,
            provider_name: config.provider_name.trim().to_owned(),
            header_injector: None,
        })
    }

    /// Adds a hook that may edit each request's headers (e.g. `traceparent`).
    #[must_use]
    pub fn with_header_injector(mut self, injector: HeaderInjector) -> Self {
        self.header_injector = Some(injector);
        self
    }

    /// The configured model (`gen_ai.request.model`).
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn body<'a>(&'a self, request: &'a LlmRequest, stream: bool) -> ChatRequest<'a> {
        let temperature = Some(request.temperature)
            .filter(|temperature| temperature.is_finite() && *temperature >= 0.0)
            .or(self.default_temperature);
        let max_tokens = Some(request.max_tokens)
            .filter(|max_tokens| *max_tokens > 0)
            .or(self.default_max_tokens);
        ChatRequest {
            model: &self.model,
            messages: [ChatMessage {
                role: "user",
                content: &request.prompt,
            }],
            temperature,
            max_tokens,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }

    fn request_builder(&self, body: &ChatRequest<'_>) -> Result<reqwest::RequestBuilder, LlmError> {
        let encoded = serde_json::to_vec(body).map_err(|error| {
            LlmError::Rejected(format!("the request could not be encoded: {error}"))
        })?;
        let mut headers = self.headers.clone();
        if let Some(inject) = &self.header_injector {
            inject(&mut headers);
        }
        Ok(self
            .client
            .post(self.endpoint.clone())
            .headers(headers)
            .body(encoded))
    }

    /// Turns a non-2xx response into the matching error.
    async fn status_error(&self, response: reqwest::Response) -> LlmError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let body = read_error_body(response, self.timeout).await;
        let detail = error_detail(&body);
        error_for_status(status, retry_after, &detail)
    }

    fn map_transport_error(&self, error: &reqwest::Error) -> LlmError {
        map_transport_error(error, self.timeout)
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.provider_name
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let body = self.body(request, false);
        let response = self
            .request_builder(&body)?
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|error| self.map_transport_error(&error))?;
        if !response.status().is_success() {
            return Err(self.status_error(response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.map_transport_error(&error))?;
        parse_completion(&bytes, &self.model, &self.provider_name)
    }

    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let body = self.body(request, true);
        let builder = self.request_builder(&body)?;
        let response = tokio::time::timeout(self.timeout, builder.send())
            .await
            .map_err(|_| LlmError::Timeout(self.timeout))?
            .map_err(|error| self.map_transport_error(&error))?;
        if !response.status().is_success() {
            return Err(self.status_error(response).await);
        }
        let state = StreamState {
            response,
            decoder: SseDecoder::default(),
            assembly: StreamAssembly::new(&self.model, &self.provider_name),
            pending: VecDeque::new(),
            finished: false,
            idle_timeout: self.timeout,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_stream_item)))
    }
}

fn chat_completions_url(base_url: &str) -> Result<Url, String> {
    let trimmed = base_url.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let url = Url::parse(&format!("{trimmed}/chat/completions"))
        .map_err(|error| format!("`{trimmed}` is not a URL: {error}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("scheme `{other}` is not http or https")),
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [ChatMessage<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatCompletion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<CompletionMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: Option<u32>,
}

impl From<WireUsage> for TokenUsage {
    fn from(usage: WireUsage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage
                .total_tokens
                .unwrap_or_else(|| usage.prompt_tokens.saturating_add(usage.completion_tokens)),
        }
    }
}

#[derive(Deserialize)]
struct StreamEvent {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<StreamChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Option<StreamDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct StreamDelta {
    #[serde(default)]
    content: Option<String>,
}

/// Parses a non-streaming chat completion. Missing `usage` counts as zero tokens.
fn parse_completion(
    bytes: &[u8],
    request_model: &str,
    provider: &str,
) -> Result<LlmResponse, LlmError> {
    let completion: ChatCompletion = serde_json::from_slice(bytes).map_err(|error| {
        LlmError::InvalidResponse(format!("the completion is not valid JSON: {error}"))
    })?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::InvalidResponse("the completion has no choices".to_owned()))?;
    let text = choice
        .message
        .and_then(|message| message.content)
        .ok_or_else(|| {
            LlmError::InvalidResponse(format!(
                "the completion has no message content (finish_reason {})",
                choice.finish_reason.as_deref().unwrap_or("absent")
            ))
        })?;
    Ok(LlmResponse {
        text,
        model: completion.model.unwrap_or_else(|| request_model.to_owned()),
        provider: provider.to_owned(),
        finish_reason: choice.finish_reason,
        usage: completion.usage.map(TokenUsage::from).unwrap_or_default(),
    })
}

/// `Retry-After` as delta-seconds or an HTTP date (a past date means "now").
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn error_for_status(status: StatusCode, retry_after: Option<Duration>, detail: &str) -> LlmError {
    let described = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        LlmError::RateLimited { retry_after }
    } else if status.is_server_error() {
        LlmError::Unavailable(described)
    } else if status.is_client_error() {
        LlmError::Rejected(described)
    } else {
        LlmError::InvalidResponse(format!("unexpected {described}"))
    }
}

async fn read_error_body(mut response: reqwest::Response, limit: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while body.len() < MAX_ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(piece)) => body.extend_from_slice(&piece),
                // The status already tells what went wrong; a body that cannot be
                // read only loses the provider's explanation.
                Ok(None) | Err(_) => break,
            }
        }
    };
    // A stalled error body must not hold the caller beyond the timeout.
    let _ = tokio::time::timeout(limit, read).await;
    body
}

/// The provider's `error.message` (OpenAI shape) or the start of the body text.
fn error_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| api_error_message(&value))
        .unwrap_or_else(|| text.trim().to_owned());
    truncate_chars(&message, MAX_ERROR_DETAIL_CHARS)
}

fn api_error_message(value: &serde_json::Value) -> Option<String> {
    let error = value.get("error")?;
    match error {
        serde_json::Value::String(message) => Some(message.clone()),
        other => other
            .get("message")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(other.to_string())),
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn map_transport_error(error: &reqwest::Error, timeout: Duration) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout(timeout)
    } else if error.is_decode() {
        LlmError::InvalidResponse(error_chain(error))
    } else {
        // Connection refused/reset, DNS and TLS failures, interrupted bodies.
        LlmError::Unavailable(error_chain(error))
    }
}

/// The error and its sources, e.g. "error sending request: connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Splits a byte stream into server-sent events and returns each event's `data`.
#[derive(Default)]
struct SseDecoder {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, LlmError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(newline) = self.buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=newline).collect();
            let line = std::str::from_utf8(&line[..line.len() - 1])
                .map_err(|_| LlmError::InvalidResponse("the stream is not UTF-8".to_owned()))?;
            self.line(line.strip_suffix('\r').unwrap_or(line), &mut events);
        }
        Ok(events)
    }

    /// Flushes an unterminated last line and event at the end of the body.
    fn finish(&mut self) -> Result<Vec<String>, LlmError> {
        let mut events = Vec::new();
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            let line = std::str::from_utf8(&rest)
                .map_err(|_| LlmError::InvalidResponse("the stream is not UTF-8".to_owned()))?;
            self.line(line.strip_suffix('\r').unwrap_or(line), &mut events);
        }
        self.line("", &mut events);
        Ok(events)
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(data);
            }
            return;
        }
        // Comments (`:`) and the other fields (`event`, `id`, `retry`) carry nothing we use.
        let Some(value) = line.strip_prefix("data:") else {
            return;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match &mut self.data {
            Some(data) => {
                data.push('\n');
                data.push_str(value);
            }
            None => self.data = Some(value.to_owned()),
        }
    }
}

/// What a stream has delivered so far, turned into the final response at `[DONE]`.
struct StreamAssembly {
    text: String,
    model: Option<String>,
    request_model: String,
    provider: String,
    finish_reason: Option<String>,
    usage: Option<TokenUsage>,
}

impl StreamAssembly {
    fn new(request_model: &str, provider: &str) -> Self {
        Self {
            text: String::new(),
            model: None,
            request_model: request_model.to_owned(),
            provider: provider.to_owned(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Handles one event's data; `Ok(true)` at `[DONE]`.
    fn event(
        &mut self,
        data: &str,
        out: &mut VecDeque<Result<LlmChunk, LlmError>>,
    ) -> Result<bool, LlmError> {
        if data.trim() == "[DONE]" {
            out.push_back(Ok(LlmChunk::Done(self.response())));
            return Ok(true);
        }
        let event: StreamEvent = serde_json::from_str(data).map_err(|error| {
            LlmError::InvalidResponse(format!("a stream event is not valid JSON: {error}"))
        })?;
        if let Some(error) = event.error {
            let message =
                api_error_message(&serde_json::json!({ "error": error })).unwrap_or_default();
            return Err(LlmError::Unavailable(format!(
                "the provider reported an error mid-stream: {}",
                truncate_chars(&message, MAX_ERROR_DETAIL_CHARS)
            )));
        }
        if let Some(model) = event.model.filter(|model| !model.is_empty()) {
            self.model = Some(model);
        }
        if let Some(usage) = event.usage {
            self.usage = Some(usage.into());
        }
        for choice in event.choices {
            if let Some(content) = choice.delta.and_then(|delta| delta.content) {
                if !content.is_empty() {
                    self.text.push_str(&content);
                    out.push_back(Ok(LlmChunk::Delta(content)));
                }
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
        Ok(false)
    }

    fn response(&mut self) -> LlmResponse {
        LlmResponse {
            text: std::mem::take(&mut self.text),
            model: self
                .model
                .clone()
                .unwrap_or_else(|| self.request_model.clone()),
            provider: self.provider.clone(),
            finish_reason: self.finish_reason.clone(),
            usage: self.usage.unwrap_or_default(),
        }
    }
}

struct StreamState {
    response: reqwest::Response,
    decoder: SseDecoder,
    assembly: StreamAssembly,
    pending: VecDeque<Result<LlmChunk, LlmError>>,
    finished: bool,
    idle_timeout: Duration,
}

impl StreamState {
    /// Feeds decoded events to the assembly; any error ends the stream.
    fn handle(&mut self, events: Result<Vec<String>, LlmError>) {
        let result = events.and_then(|events| {
            for data in events {
                if self.assembly.event(&data, &mut self.pending)? {
                    self.finished = true;
                    break;
                }
            }
            Ok(())
        });
        if let Err(error) = result {
            self.fail(error);
        }
    }

    fn fail(&mut self, error: LlmError) {
        self.pending.push_back(Err(error));
        self.finished = true;
    }
}

async fn next_stream_item(
    mut state: StreamState,
) -> Option<(Result<LlmChunk, LlmError>, StreamState)> {
    loop {
        if let Some(item) = state.pending.pop_front() {
            return Some((item, state));
        }
        if state.finished {
            return None;
        }
        match tokio::time::timeout(state.idle_timeout, state.response.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                let events = state.decoder.push(&bytes);
                state.handle(events);
            }
            Ok(Ok(None)) => {
                let events = state.decoder.finish();
                state.handle(events);
                if !state.finished {
                    state.fail(LlmError::InvalidResponse(
                        "the stream ended before `data: [DONE]`".to_owned(),
                    ));
                }
            }
            Ok(Err(error)) => {
                let error = map_transport_error(&error, state.idle_timeout);
                state.fail(error);
            }
            Err(_) => {
                let error = LlmError::Timeout(state.idle_timeout);
                state.fail(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OpenAiConfig {
        OpenAiConfig {
            api_key: Some("sk-test".to_owned()),
            ..OpenAiConfig::default()
        }
    }

    fn request() -> LlmRequest {
        LlmRequest {
            prompt: "hello".to_owned(),
            temperature: 0.3,
            max_tokens: 500,
            purpose: "ai_ask".to_owned(),
            sensitive: heartrule_domain::SensitiveValues::none(),
        }
    }

    #[test]
    fn missing_or_blank_api_key_names_the_setting() {
        let mut config = config();
        config.api_key = None;
        assert_eq!(
            OpenAiProvider::new(&config).unwrap_err(),
            LlmConfigError::Missing {
                key: "llm.openai.api_key".to_owned()
            }
        );
        config.api_key = Some("  ".to_owned());
        let error = OpenAiProvider::from_config(&config, "llm.fallback.openai").unwrap_err();
        assert_eq!(
            error.to_string(),
            "missing required setting `llm.fallback.openai.api_key`"
        );
    }

    #[test]
    fn invalid_settings_are_reported_by_key() {
        let mut bad_url = config();
        bad_url.base_url = "ftp://example.test/v1".to_owned();
        assert!(matches!(
            OpenAiProvider::new(&bad_url),
            Err(LlmConfigError::Invalid { key, .. }) if key == "llm.openai.base_url"
        ));
        let mut bad_header = config();
        bad_header
            .extra_headers
            .insert("bad header".to_owned(), "x".to_owned());
        assert!(matches!(
            OpenAiProvider::new(&bad_header),
            Err(LlmConfigError::Invalid { key, .. }) if key == "llm.openai.extra_headers.bad header"
        ));
        let mut bad_temperature = config();
        bad_temperature.temperature = Some(3.5);
        assert!(matches!(
            OpenAiProvider::new(&bad_temperature),
            Err(LlmConfigError::Invalid { key, .. }) if key == "llm.openai.temperature"
        ));
    }

    #[test]
    fn endpoint_appends_chat_completions_once() {
        assert_eq!(
            chat_completions_url("https://api.example.test/v1/")
                .unwrap()
                .as_str(),
            "https://api.example.test/v1/chat/completions"
        );
        assert!(chat_completions_url("   ").is_err());
    }

    #[test]
    fn request_values_override_config_defaults() {
        let mut config = config();
        config.temperature = Some(0.9);
        config.max_tokens = Some(1000);
        let provider = OpenAiProvider::new(&config).unwrap();
        let body = serde_json::to_value(provider.body(&request(), false)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hello"}],
                "temperature": 0.30000001192092896,
                "max_tokens": 500
            })
        );
        let mut unset = request();
        unset.temperature = f32::NAN;
        unset.max_tokens = 0;
        let body = serde_json::to_value(provider.body(&unset, true)).unwrap();
        assert_eq!(body["max_tokens"], 1000);
        assert!((body["temperature"].as_f64().unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(body["stream"], true);
        assert_eq!(
            body["stream_options"],
            serde_json::json!({"include_usage": true})
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let retry = Some(Duration::from_secs(2));
        assert_eq!(
            error_for_status(StatusCode::TOO_MANY_REQUESTS, retry, ""),
            LlmError::RateLimited { retry_after: retry }
        );
        assert!(matches!(
            error_for_status(StatusCode::BAD_GATEWAY, None, "upstream"),
            LlmError::Unavailable(text) if text.contains("502") && text.contains("upstream")
        ));
        assert!(matches!(
            error_for_status(StatusCode::UNAUTHORIZED, None, ""),
            LlmError::Rejected(text) if text.contains("401")
        ));
        assert!(matches!(
            error_for_status(StatusCode::NOT_MODIFIED, None, ""),
            LlmError::InvalidResponse(_)
        ));
    }

    #[test]
    fn error_detail_prefers_the_api_message_and_truncates() {
        assert_eq!(
            error_detail(br#"{"error":{"message":"bad key","type":"auth"}}"#),
            "bad key"
        );
        assert_eq!(error_detail(b"  plain failure \n"), "plain failure");
        let long = "x".repeat(MAX_ERROR_DETAIL_CHARS + 50);
        assert_eq!(
            error_detail(long.as_bytes()).chars().count(),
            MAX_ERROR_DETAIL_CHARS + 1
        );
    }

    #[test]
    fn completion_parsing_reads_text_model_and_usage() {
        let body = br#"{"model":"gpt-4o-mini-2024","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let response = parse_completion(body, "gpt-4o-mini", "openai").unwrap();
        assert_eq!(response.text, "hi");
        assert_eq!(response.model, "gpt-4o-mini-2024");
        assert_eq!(response.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            response.usage,
            TokenUsage {
                prompt_tokens: 3,
                completion_tokens: 1,
                total_tokens: 4
            }
        );

        let no_usage = br#"{"choices":[{"message":{"content":"ok"}}]}"#;
        let response = parse_completion(no_usage, "m", "p").unwrap();
        assert_eq!(
            (response.model.as_str(), response.usage),
            ("m", TokenUsage::default())
        );

        for bad in [
            &b"not json"[..],
            br#"{"choices":[]}"#,
            br#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#,
        ] {
            assert!(matches!(
                parse_completion(bad, "m", "p"),
                Err(LlmError::InvalidResponse(_))
            ));
        }
    }

    #[test]
    fn sse_decoder_handles_split_lines_crlf_comments_and_multiline_data() {
        let mut decoder = SseDecoder::default();
        let mut events = decoder.push(b": keep-alive\n\nda").unwrap();
        assert!(events.is_empty());
        events.extend(
            decoder
                .push(b"ta: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata:line2\n")
                .unwrap(),
        );
        events.extend(decoder.push(b"\ndata: [DONE]").unwrap());
        events.extend(decoder.finish().unwrap());
        assert_eq!(events, ["{\"a\":1}", "line1\nline2", "[DONE]"]);
    }

    #[test]
    fn sse_decoder_keeps_multibyte_characters_split_across_pushes() {
        let bytes = "data: 你好\n\n".as_bytes();
        let mut decoder = SseDecoder::default();
        let mut events = decoder.push(&bytes[..8]).unwrap();
        events.extend(decoder.push(&bytes[8..]).unwrap());
        assert_eq!(events, ["你好"]);
        assert!(matches!(
            SseDecoder::default().push(b"data: \xff\n"),
            Err(LlmError::InvalidResponse(_))
        ));
    }

    #[test]
    fn stream_assembly_collects_deltas_usage_and_errors() {
        let mut assembly = StreamAssembly::new("gpt-4o-mini", "openai");
        let mut out = VecDeque::new();
        let events = [
            r#"{"model":"gpt-4o-mini-x","choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
        ];
        for event in events {
            assert!(!assembly.event(event, &mut out).unwrap());
        }
        assert!(assembly.event("[DONE]", &mut out).unwrap());
        let items: Vec<LlmChunk> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(items[0], LlmChunk::Delta("Hel".to_owned()));
        assert_eq!(items[1], LlmChunk::Delta("lo".to_owned()));
        let LlmChunk::Done(response) = &items[2] else {
            panic!("expected Done")
        };
        assert_eq!(response.text, "Hello");
        assert_eq!(response.model, "gpt-4o-mini-x");
        assert_eq!(response.usage.total_tokens, 7);

        let mut broken = StreamAssembly::new("m", "p");
        assert!(matches!(
            broken.event("{oops", &mut VecDeque::new()),
            Err(LlmError::InvalidResponse(_))
        ));
        assert!(matches!(
            broken.event(r#"{"error":{"message":"overloaded"}}"#, &mut VecDeque::new()),
            Err(LlmError::Unavailable(text)) if text.contains("overloaded")
        ));
    }

    #[test]
    fn debug_never_prints_the_api_key() {
        let provider = OpenAiProvider::new(&config()).unwrap();
        let printed = format!("{provider:?}");
        assert!(!printed.contains("sk-test"));
        assert!(printed.contains("gpt-4o-mini"));
    }
}
