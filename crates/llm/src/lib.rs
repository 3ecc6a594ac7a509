//! HeartRule's LLM adapters: the offline `mock` provider, an
//! OpenAI-compatible `openai` provider, and the resilience wrapper every
//! configured provider runs behind (timeouts, retries, concurrency limit,
//! circuit breaker, fallback, `gen_ai` spans and metrics).
//!
//! The server builds everything from its `llm:` config section:
//!
//! ```
//! let config: heartrule_llm::LlmConfig = Default::default(); // provider: mock
//! let stack = heartrule_llm::build(&config)?;
//! assert_eq!(stack.provider.name(), "mock");
//! assert_eq!(stack.status.breaker_state(), heartrule_llm::BreakerState::Closed);
//! # Ok::<(), heartrule_llm::LlmConfigError>(())
//! ```

mod breaker;
pub mod config;
pub mod mock;
pub mod openai;
pub mod resilience;
pub mod telemetry;

pub use breaker::{counts_as_failure, BreakerState};
pub use config::{
    BreakerConfig, DegradedMode, FallbackConfig, LlmConfig, LlmConfigError, OpenAiConfig,
    ProviderKind, ResilienceConfig, DEFAULT_CONTEXT_WINDOW_TOKENS,
};
pub use mock::MockProvider;
pub use openai::{HeaderInjector, OpenAiProvider};
pub use resilience::ResilientProvider;
pub use telemetry::METRICS;

use heartrule_domain::llm::LlmProvider;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Health of the configured providers, for `/ready` and metrics.
pub trait LlmStatus: Send + Sync {
    /// The primary provider's circuit breaker.
    fn breaker_state(&self) -> BreakerState;
    /// The fallback provider's circuit breaker, when one is configured.
    fn fallback_breaker_state(&self) -> Option<BreakerState>;
}

/// What [`build`] returns: the provider the engine calls and its status.
#[derive(Clone)]
pub struct LlmStack {
    pub provider: Arc<dyn LlmProvider>,
    pub status: Arc<dyn LlmStatus>,
}

impl std::fmt::Debug for LlmStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmStack")
            .field("provider", &self.provider.name())
            .field("breaker_state", &self.status.breaker_state())
            .field(
                "fallback_breaker_state",
                &self.status.fallback_breaker_state(),
            )
            .finish()
    }
}

/// Extra wiring that config files cannot express.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// Added to every `openai` provider (primary and fallback), e.g. to
    /// send the W3C `traceparent` of the current span.
    pub header_injector: Option<HeaderInjector>,
    /// Record prompt and completion text as the `gen_ai.prompt` /
    /// `gen_ai.completion` fields of every call's span (the server's
    /// `telemetry.capture_content`). Off by default.
    pub capture_content: bool,
}

/// Builds the provider stack from the `llm:` config section.
pub fn build(config: &LlmConfig) -> Result<LlmStack, LlmConfigError> {
    build_with(config, &BuildOptions::default())
}

/// [`build`] with extra wiring. The per-attempt timeout of every provider,
/// the mock included, is its `openai.timeout`.
pub fn build_with(config: &LlmConfig, options: &BuildOptions) -> Result<LlmStack, LlmConfigError> {
    validate_resilience(&config.resilience, "llm.resilience")?;
    let fallback = match &config.fallback {
        Some(fallback) => {
            validate_resilience(&fallback.resilience, "llm.fallback.resilience")?;
            let provider = resilient(
                fallback.provider,
                &fallback.openai,
                &fallback.resilience,
                "llm.fallback.openai",
                options,
            )?;
            Some(Arc::new(provider))
        }
        None => None,
    };
    let mut primary = resilient(
        config.provider,
        &config.openai,
        &config.resilience,
        "llm.openai",
        options,
    )?;
    if let Some(fallback) = &fallback {
        if fallback.name() == primary.name() {
            let key = match config.fallback.as_ref().map(|fallback| fallback.provider) {
                Some(ProviderKind::OpenAi) => "llm.fallback.openai.provider_name",
                _ => "llm.fallback.provider",
            };
            return Err(LlmConfigError::Invalid {
                key: key.to_owned(),
                reason: format!(
                    "the fallback is named `{}` like the primary; give it another provider_name so their metrics stay apart",
                    fallback.name()
                ),
            });
        }
        primary = primary.with_fallback(Arc::clone(fallback) as Arc<dyn LlmProvider>);
    }
    let primary = Arc::new(primary);
    let status = StackStatus {
        primary: Arc::clone(&primary),
        fallback,
    };
    Ok(LlmStack {
        provider: primary,
        status: Arc::new(status),
    })
}

fn resilient(
    kind: ProviderKind,
    openai: &config::OpenAiConfig,
    resilience: &ResilienceConfig,
    key_prefix: &str,
    options: &BuildOptions,
) -> Result<ResilientProvider, LlmConfigError> {
    let (inner, model, timeout): (Arc<dyn LlmProvider>, String, Duration) = match kind {
        ProviderKind::Mock => (
            Arc::new(MockProvider::new()),
            MockProvider::MODEL.to_owned(),
            openai.timeout,
        ),
        ProviderKind::OpenAi => {
            let mut provider = OpenAiProvider::from_config(openai, key_prefix)?;
            if let Some(injector) = &options.header_injector {
                provider = provider.with_header_injector(Arc::clone(injector));
            }
            let model = provider.model().to_owned();
            let timeout = provider.timeout();
            (Arc::new(provider), model, timeout)
        }
    };
    if timeout.is_zero() {
        return Err(LlmConfigError::Invalid {
            key: format!("{key_prefix}.timeout"),
            reason: "must be greater than zero".to_owned(),
        });
    }
    Ok(ResilientProvider::new(inner, &model, resilience, timeout)
        .with_content_capture(options.capture_content))
}

fn validate_resilience(config: &ResilienceConfig, prefix: &str) -> Result<(), LlmConfigError> {
    let invalid = |field: &str, reason: String| LlmConfigError::Invalid {
        key: format!("{prefix}.{field}"),
        reason,
    };
    if config.concurrency_limit == 0 || config.concurrency_limit > Semaphore::MAX_PERMITS {
        return Err(invalid(
            "concurrency_limit",
            format!("must be between 1 and {}", Semaphore::MAX_PERMITS),
        ));
    }
    if config.breaker.failure_threshold == 0 {
        return Err(invalid(
            "breaker.failure_threshold",
            "must be at least 1".to_owned(),
        ));
    }
    if config.breaker.half_open_max_calls == 0 {
        return Err(invalid(
            "breaker.half_open_max_calls",
            "must be at least 1".to_owned(),
        ));
    }
    Ok(())
}

struct StackStatus {
    primary: Arc<ResilientProvider>,
    fallback: Option<Arc<ResilientProvider>>,
}

impl LlmStatus for StackStatus {
    fn breaker_state(&self) -> BreakerState {
        self.primary.breaker_state()
    }

    fn fallback_breaker_state(&self) -> Option<BreakerState> {
        self.fallback
            .as_ref()
            .map(|fallback| fallback.breaker_state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai_config() -> LlmConfig {
        LlmConfig {
            provider: ProviderKind::OpenAi,
            openai: OpenAiConfig {
                api_key: Some("sk-test".to_owned()),
                ..OpenAiConfig::default()
            },
            ..LlmConfig::default()
        }
    }

    #[test]
    fn the_default_config_builds_the_mock() {
        let stack = build(&LlmConfig::default()).unwrap();
        assert_eq!(stack.provider.name(), "mock");
        assert_eq!(stack.status.breaker_state(), BreakerState::Closed);
        assert_eq!(stack.status.fallback_breaker_state(), None);
    }

    #[test]
    fn openai_without_an_api_key_is_a_config_error_naming_the_key() {
        let mut config = openai_config();
        config.openai.api_key = None;
        let error = build(&config).unwrap_err();
        assert_eq!(
            error,
            LlmConfigError::Missing {
                key: "llm.openai.api_key".to_owned()
            }
        );
        assert!(error.to_string().contains("llm.openai.api_key"));

        let fallback_without_key = LlmConfig {
            fallback: Some(FallbackConfig {
                provider: ProviderKind::OpenAi,
                ..FallbackConfig::default()
            }),
            ..LlmConfig::default()
        };
        assert_eq!(
            build(&fallback_without_key).unwrap_err(),
            LlmConfigError::Missing {
                key: "llm.fallback.openai.api_key".to_owned()
            }
        );
    }

    #[test]
    fn openai_with_a_mock_fallback_reports_both_breakers() {
        let mut config = openai_config();
        config.fallback = Some(FallbackConfig::default());
        let stack = build(&config).unwrap();
        assert_eq!(stack.provider.name(), "openai");
        assert_eq!(
            stack.status.fallback_breaker_state(),
            Some(BreakerState::Closed)
        );
        assert!(format!("{stack:?}").contains("openai"));
    }

    #[test]
    fn a_fallback_with_the_primary_name_is_rejected() {
        let mut config = openai_config();
        config.fallback = Some(FallbackConfig {
            provider: ProviderKind::OpenAi,
            openai: config.openai.clone(),
            ..FallbackConfig::default()
        });
        assert!(matches!(
            build(&config),
            Err(LlmConfigError::Invalid { key, .. }) if key == "llm.fallback.openai.provider_name"
        ));
        if let Some(fallback) = config.fallback.as_mut() {
            fallback.openai.provider_name = "openai-backup".to_owned();
        }
        assert!(build(&config).is_ok());
    }

    #[test]
    fn invalid_resilience_settings_name_their_keys() {
        let mut config = LlmConfig::default();
        config.resilience.concurrency_limit = 0;
        assert!(matches!(
            build(&config),
            Err(LlmConfigError::Invalid { key, .. }) if key == "llm.resilience.concurrency_limit"
        ));
        let mut config = LlmConfig::default();
        config.resilience.breaker.failure_threshold = 0;
        assert!(matches!(
            build(&config),
            Err(LlmConfigError::Invalid { key, .. }) if key == "llm.resilience.breaker.failure_threshold"
        ));
        let mut config = LlmConfig::default();
        config.openai.timeout = Duration::ZERO;
        assert!(matches!(
            build(&config),
            Err(LlmConfigError::Invalid { key, .. }) if key == "llm.openai.timeout"
        ));
    }
}
