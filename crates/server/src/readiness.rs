//! `/ready`: PostgreSQL and the LLM are critical, Redis is not (the server
//! serves from PostgreSQL without it, so its loss only degrades).

use crate::wiring::Store;
use async_trait::async_trait;
use heartrule_cache::RedisCache;
use heartrule_http_adapter::{ComponentState, ComponentStatus, Readiness, ReadinessProbe};
use heartrule_llm::{BreakerState, LlmStatus};
use std::sync::Arc;

pub(crate) struct ServerReadiness {
    store: Store,
    cache: Option<Arc<RedisCache>>,
    llm: Arc<dyn LlmStatus>,
}

impl ServerReadiness {
    pub(crate) fn new(
        store: Store,
        cache: Option<Arc<RedisCache>>,
        llm: Arc<dyn LlmStatus>,
    ) -> Self {
        Self { store, cache, llm }
    }
}

#[async_trait]
impl ReadinessProbe for ServerReadiness {
    async fn check(&self) -> Readiness {
        let mut components = Vec::with_capacity(3);
        components.push(match &self.store {
            Store::Memory(_) => ComponentStatus::new("store", ComponentState::Up, true)
                .with_detail("in-memory (ephemeral)"),
            Store::Postgres(pg) => match pg.ping().await {
                Ok(()) => ComponentStatus::new("postgres", ComponentState::Up, true),
                Err(e) => ComponentStatus::new("postgres", ComponentState::Down, true)
                    .with_detail(e.to_string()),
            },
        });
        if let Some(cache) = &self.cache {
            let health = cache.health().await;
            let status = if health.reachable {
                ComponentStatus::new("redis", ComponentState::Up, false)
            } else {
                ComponentStatus::new("redis", ComponentState::Down, false).with_detail(
                    health
                        .last_error
                        .unwrap_or_else(|| "unreachable".to_owned()),
                )
            };
            components.push(status);
        }
        components.push(llm_status(self.llm.as_ref()));
        Readiness { components }
    }
}

/// Open primary breaker: down, unless a fallback with a closed breaker
/// still answers (then degraded).
fn llm_status(llm: &dyn LlmStatus) -> ComponentStatus {
    let primary = llm.breaker_state();
    let fallback = llm.fallback_breaker_state();
    let detail = match fallback {
        Some(f) => format!("breaker {primary:?}, fallback breaker {f:?}"),
        None => format!("breaker {primary:?}"),
    };
    let state = match (primary, fallback) {
        (BreakerState::Closed, _) => ComponentState::Up,
        (BreakerState::HalfOpen, _) => ComponentState::Degraded,
        (BreakerState::Open, Some(BreakerState::Closed | BreakerState::HalfOpen)) => {
            ComponentState::Degraded
        }
        (BreakerState::Open, _) => ComponentState::Down,
    };
    ComponentStatus::new("llm", state, true).with_detail(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(BreakerState, Option<BreakerState>);
    impl LlmStatus for Fixed {
        fn breaker_state(&self) -> BreakerState {
            self.0
        }
        fn fallback_breaker_state(&self) -> Option<BreakerState> {
            self.1
        }
    }

    #[test]
    fn open_breaker_is_down_unless_a_fallback_answers() {
        assert_eq!(
            llm_status(&Fixed(BreakerState::Closed, None)).status,
            ComponentState::Up
        );
        assert_eq!(
            llm_status(&Fixed(BreakerState::Open, None)).status,
            ComponentState::Down
        );
        assert_eq!(
            llm_status(&Fixed(BreakerState::Open, Some(BreakerState::Closed))).status,
            ComponentState::Degraded
        );
        assert_eq!(
            llm_status(&Fixed(BreakerState::Open, Some(BreakerState::Open))).status,
            ComponentState::Down
        );
    }
}
