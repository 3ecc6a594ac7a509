//! Typed LLM configuration (the `llm:` section of the server config).
//!
//! Durations are written either as humantime strings (`"200ms"`, `"5s"`,
//! `"1m 30s"`) or as plain integers meaning **milliseconds** (`200`, `"200"`;
//! the quoted form is what environment variables produce).
//!
//! ```yaml
//! llm:
//!   provider: openai            # mock (default) | openai
//!   openai:
//!     base_url: https://api.deepseek.com/v1
//!     api_key: sk-…             # required for openai
//!     model: deepseek-chat
//!     timeout: 60s
//!     provider_name: deepseek   # metrics/span label, default "openai"
//!   resilience:
//!     max_retries: 3
//!     initial_backoff: 200ms
//!     max_backoff: 5s
//!     concurrency_limit: 256
//!     breaker: { failure_threshold: 5, open_for: 30s, half_open_max_calls: 1 }
//!   fallback:                   # optional; same shape without its own fallback
//!     provider: mock
//!   degraded_mode: off          # off (default) | scripted
//! ```

pub use heartrule_domain::DegradedMode;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Which provider serves the requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Deterministic offline replies (no network, no API key).
    #[default]
    Mock,
    /// Any OpenAI-compatible chat-completions endpoint.
    OpenAi,
}

impl ProviderKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mock => "mock",
            Self::OpenAi => "openai",
        }
    }
}

/// The whole `llm:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: ProviderKind,
    pub openai: OpenAiConfig,
    pub resilience: ResilienceConfig,
    /// A second provider used when the primary fails after its retries or
    /// its circuit breaker is open.
    pub fallback: Option<FallbackConfig>,
    /// What conversations do when no provider can answer (the breakers
    /// open, or transient failures outlasting the retries and the
    /// fallback): `off` fails the turn with 503, `scripted` continues on
    /// the script's own texts.
    pub degraded_mode: DegradedMode,
    /// The model's context window in tokens (prompt and reply together):
    /// the engine drops the oldest history from a prompt that would not
    /// leave room for the call's `max_tokens`.
    pub context_window_tokens: u32,
}

/// `llm.context_window_tokens` when not configured: the window of the
/// default model (`gpt-4o-mini`, 128k tokens).
pub const DEFAULT_CONTEXT_WINDOW_TOKENS: u32 = 128_000;

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::default(),
            openai: OpenAiConfig::default(),
            resilience: ResilienceConfig::default(),
            fallback: None,
            degraded_mode: DegradedMode::default(),
            context_window_tokens: DEFAULT_CONTEXT_WINDOW_TOKENS,
        }
    }
}

/// The fallback provider: a provider kind with its own settings and its own
/// resilience (breaker, retries). It has no fallback of its own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    pub provider: ProviderKind,
    pub openai: OpenAiConfig,
    pub resilience: ResilienceConfig,
}

/// Settings of the OpenAI-compatible provider. `Debug` never prints the API key.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL up to and including the API version, e.g.
    /// `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// Used when a request carries no usable temperature (see [`crate::OpenAiProvider`]).
    pub temperature: Option<f32>,
    /// Used when a request carries `max_tokens == 0`.
    pub max_tokens: Option<u32>,
    /// Per-attempt limit: the whole non-streaming exchange, or for streaming
    /// the wait for the response head and for each further piece of the body.
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Sent with every request (e.g. an organisation or project header).
    pub extra_headers: BTreeMap<String, String>,
    /// `gen_ai.provider.name` for metrics and spans (e.g. `deepseek`); must
    /// differ between a primary and a fallback so their series stay apart.
    pub provider_name: String,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: None,
            model: "gpt-4o-mini".to_owned(),
            temperature: None,
            max_tokens: None,
            timeout: Duration::from_secs(60),
            extra_headers: BTreeMap::new(),
            provider_name: "openai".to_owned(),
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may carry credentials too, so only their names are shown.
        let header_names: Vec<&String> = self.extra_headers.keys().collect();
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("extra_headers", &header_names)
            .field("provider_name", &self.provider_name)
            .finish()
    }
}

/// Retries, concurrency limit and circuit breaker around one provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Retries after the first attempt for transient errors (429, 5xx, timeouts).
    pub max_retries: u32,
    #[serde(deserialize_with = "deserialize_duration")]
    pub initial_backoff: Duration,
    /// Upper bound of one backoff, also caps a server's `Retry-After`.
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_backoff: Duration,
    /// Attempts in flight at once against this provider. By Little's law
    /// an instance makes at most `concurrency_limit ÷ call latency` calls a
    /// second, so size it by the turns per second wanted times the calls per
    /// turn times the model's latency, within the provider's rate limit.
    pub concurrency_limit: usize,
    pub breaker: BreakerConfig,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            concurrency_limit: 256,
            breaker: BreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before letting probes through.
    #[serde(deserialize_with = "deserialize_duration")]
    pub open_for: Duration,
    /// Probe attempts allowed at once while half-open.
    pub half_open_max_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            half_open_max_calls: 1,
        }
    }
}

/// A configuration the stack cannot be built from. `key` is the dotted
/// path of the offending setting (e.g. `llm.openai.api_key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmConfigError {
    #[error("missing required setting `{key}`")]
    Missing { key: String },
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("cannot build the HTTP client for `{key}`: {reason}")]
    HttpClient { key: String, reason: String },
}

/// Parses a duration written as humantime (`"250ms"`, `"2s"`) or as integer
/// milliseconds (`250` or `"250"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|error| format!("`{trimmed}` is not a number of milliseconds: {error}"));
    }
    humantime::parse_duration(trimmed).map_err(|error| {
        format!(
            "`{trimmed}` is not a duration (use e.g. \"500ms\", \"5s\" or milliseconds): {error}"
        )
    })
}

fn deserialize_duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    struct DurationVisitor;

    impl serde::de::Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a duration such as \"500ms\" or \"5s\", or an integer number of milliseconds",
            )
        }

        fn visit_u64<E: serde::de::Error>(self, millis: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(millis))
        }

        fn visit_i64<E: serde::de::Error>(self, millis: i64) -> Result<Duration, E> {
            u64::try_from(millis)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("a duration cannot be negative ({millis} ms)")))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let config = LlmConfig::default();
        assert_eq!(config.provider, ProviderKind::Mock);
        assert_eq!(config.openai.base_url, "https://api.openai.com/v1");
        assert_eq!(config.openai.model, "gpt-4o-mini");
        assert_eq!(config.openai.timeout, Duration::from_secs(60));
        assert_eq!(config.resilience.max_retries, 3);
        assert_eq!(
            config.resilience.initial_backoff,
            Duration::from_millis(200)
        );
        assert_eq!(config.resilience.max_backoff, Duration::from_secs(5));
        assert_eq!(config.resilience.concurrency_limit, 256);
        assert_eq!(config.resilience.breaker.failure_threshold, 5);
        assert_eq!(config.resilience.breaker.open_for, Duration::from_secs(30));
        assert_eq!(config.resilience.breaker.half_open_max_calls, 1);
        assert!(config.fallback.is_none());
    }

    #[test]
    fn yaml_with_humantime_and_millisecond_durations_parses() {
        let yaml = r#"
provider: openai
openai:
  base_url: http://127.0.0.1:9000/v1
  api_key: sk-test
  model: deepseek-chat
  temperature: 0.2
  max_tokens: 512
  timeout: 30s
  extra_headers:
    X-Project: heartrule
  provider_name: deepseek
resilience:
  max_retries: 2
  initial_backoff: 100
  max_backoff: "2500"
  concurrency_limit: 4
  breaker:
    failure_threshold: 3
    open_for: 1m 30s
    half_open_max_calls: 2
fallback:
  provider: mock
"#;
        let config: LlmConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(config.provider, ProviderKind::OpenAi);
        assert_eq!(config.openai.api_key.as_deref(), Some("sk-test"));
        assert_eq!(config.openai.timeout, Duration::from_secs(30));
        assert_eq!(config.openai.temperature, Some(0.2));
        assert_eq!(config.openai.max_tokens, Some(512));
        assert_eq!(config.openai.extra_headers["X-Project"], "heartrule");
        assert_eq!(
            config.resilience.initial_backoff,
            Duration::from_millis(100)
        );
        assert_eq!(config.resilience.max_backoff, Duration::from_millis(2500));
        assert_eq!(config.resilience.breaker.open_for, Duration::from_secs(90));
        assert_eq!(config.resilience.breaker.half_open_max_calls, 2);
        let fallback = config.fallback.unwrap();
        assert_eq!(fallback.provider, ProviderKind::Mock);
        assert_eq!(fallback.resilience, ResilienceConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        let typo = serde_yaml::from_str::<LlmConfig>("resilience:\n  max_retrys: 2\n");
        assert!(typo.unwrap_err().to_string().contains("max_retrys"));
        let bad = serde_yaml::from_str::<LlmConfig>("openai:\n  timeout: soon\n");
        assert!(bad.unwrap_err().to_string().contains("soon"));
        let negative = serde_yaml::from_str::<LlmConfig>("openai:\n  timeout: -5\n");
        assert!(negative.is_err());
    }

    #[test]
    fn debug_output_never_contains_the_api_key_or_header_values() {
        let mut config = LlmConfig::default();
        config.openai.api_key = Some("sk-very-secret".to_owned());
        config
            .openai
            .extra_headers
            .insert("X-Api-Token".to_owned(), "header-secret".to_owned());
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("sk-very-secret"));
        assert!(!printed.contains("header-secret"));
        assert!(printed.contains("<redacted>"));
        assert!(printed.contains("X-Api-Token"));
    }

    #[test]
    fn parse_duration_accepts_both_forms() {
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("2 parsecs").is_err());
    }
}
