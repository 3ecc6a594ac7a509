//! `/ready`: PostgreSQL and the LLM are critical, Redis is not (the server
//! serves from PostgreSQL without it, so its loss only degrades). With
//! `llm.degraded_mode: scripted` an unavailable LLM only degrades too:
//! conversations go on with the script's own texts.

use crate::wiring::Store;
use async_trait::async_trait;
use heartrule_cache::RedisCache;
use heartrule_http_adapter::{ComponentState, ComponentStatus, Readiness, ReadinessProbe};
use heartrule_llm::{BreakerState, DegradedMode, LlmStatus};
use std::sync::Arc;

pub(crate) struct ServerReadiness {
    store: Store,
    cache: Option<Arc<RedisCache>>,
    llm: Arc<dyn LlmStatus>,
    degraded_mode: DegradedMode,
}

impl ServerReadiness {
    pub(crate) fn new(
        store: Store,
        cache: Option<Arc<RedisCache>>,
        llm: Arc<dyn LlmStatus>,
        degraded_mode: DegradedMode,
    ) -> Self {
        Self {
            store,
            cache,
            llm,
            degraded_mode,
        }
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
        components.push(llm_status(self.llm.as_ref(), self.degraded_mode));
        Readiness { components }
    }
}

/// Open primary breaker: down, unless a fallback with a closed breaker
/// still answers (then degraded), or degraded mode carries the
/// conversations on scripted texts (degraded, and the detail says so).
fn llm_status(llm: &dyn LlmStatus, degraded_mode: DegradedMode) -> ComponentStatus {
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
    if state == ComponentState::Down && degraded_mode == DegradedMode::Scripted {
        return ComponentStatus::new("llm", ComponentState::Degraded, true).with_detail(format!(
            "{detail}; degraded mode: conversations continue with scripted texts"
        ));
    }
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
        let off = DegradedMode::Off;
        assert_eq!(
            llm_status(&Fixed(BreakerState::Closed, None), off).status,
            ComponentState::Up
        );
        assert_eq!(
            llm_status(&Fixed(BreakerState::Open, None), off).status,
            ComponentState::Down
        );
        assert_eq!(
            llm_status(&Fixed(BreakerState::Open, Some(BreakerState::Closed)), off).status,
            ComponentState::Degraded
        );
        assert_eq!(
            llm_status(&Fixed(BreakerState::Open, Some(BreakerState::Open)), off).status,
            ComponentState::Down
        );
    }

    #[test]
    fn scripted_degraded_mode_turns_down_into_degraded_and_says_why() {
        let scripted = DegradedMode::Scripted;
        for fixed in [
            Fixed(BreakerState::Open, None),
            Fixed(BreakerState::Open, Some(BreakerState::Open)),
        ] {
            let status = llm_status(&fixed, scripted);
            assert_eq!(status.status, ComponentState::Degraded);
            assert!(
                status
                    .detail
                    .as_deref()
                    .unwrap_or_default()
                    .contains("degraded mode"),
                "{status:?}"
            );
            assert!(status.critical);
        }
        let up = llm_status(&Fixed(BreakerState::Closed, None), scripted);
        assert_eq!(up.status, ComponentState::Up);
        assert!(!up.detail.unwrap_or_default().contains("degraded mode"));
    }
}
