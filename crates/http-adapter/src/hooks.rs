//! Hooks the server implements: dependency readiness and trace propagation.
//! They keep this crate free of database, cache and telemetry dependencies.

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;

/// Health of one dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComponentState {
    Up,
    Degraded,
    Down,
}

/// One dependency as seen by `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ComponentStatus {
    /// `postgres`, `redis`, `llm`, …
    pub name: String,
    pub status: ComponentState,
    /// A critical component that is down makes the service not ready (503);
    /// a non-critical one only makes it `degraded`.
    pub critical: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ComponentStatus {
    #[must_use]
    pub fn new(name: impl Into<String>, status: ComponentState, critical: bool) -> Self {
        Self {
            name: name.into(),
            status,
            critical,
            detail: None,
        }
    }

    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Overall readiness of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadinessLevel {
    /// Every component is up.
    Ok,
    /// Serving, but some component is degraded or a non-critical one is down.
    Degraded,
    /// A critical component is down: not ready.
    Down,
}

/// What a [`ReadinessProbe`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub components: Vec<ComponentStatus>,
}

impl Readiness {
    /// `Down` when a critical component is down, `Degraded` when anything
    /// else is not up, `Ok` otherwise.
    #[must_use]
    pub fn level(&self) -> ReadinessLevel {
        let critical_down = self
            .components
            .iter()
            .any(|c| c.critical && c.status == ComponentState::Down);
        if critical_down {
            ReadinessLevel::Down
        } else if self
            .components
            .iter()
            .any(|c| c.status != ComponentState::Up)
        {
            ReadinessLevel::Degraded
        } else {
            ReadinessLevel::Ok
        }
    }
}

/// Readiness of the dependencies, implemented by the server.
#[async_trait]
pub trait ReadinessProbe: Send + Sync {
    async fn check(&self) -> Readiness;
}

/// A probe that reports the given components, unchanged. Useful when the
/// server has nothing to check (and in tests).
#[derive(Debug, Clone, Default)]
pub struct StaticReadiness(pub Readiness);

#[async_trait]
impl ReadinessProbe for StaticReadiness {
    async fn check(&self) -> Readiness {
        self.0.clone()
    }
}

/// Trace hooks, implemented by the server with the telemetry crate. They are
/// transport-agnostic: the adapter hands over a header getter and its root span.
pub trait RequestTracing: Send + Sync {
    /// Makes `span` a child of the trace named by the incoming headers
    /// (W3C `traceparent`/`tracestate`), when there is one.
    fn continue_trace(&self, header: &dyn Fn(&str) -> Option<String>, span: &tracing::Span);
    /// The trace id of `span`, for error bodies.
    fn trace_id(&self, span: &tracing::Span) -> Option<String>;
}

/// Tracing hooks that do nothing: no trace is continued and no trace id is reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTracing;

impl RequestTracing for NoTracing {
    fn continue_trace(&self, _header: &dyn Fn(&str) -> Option<String>, _span: &tracing::Span) {}

    fn trace_id(&self, _span: &tracing::Span) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, status: ComponentState, critical: bool) -> ComponentStatus {
        ComponentStatus::new(name, status, critical)
    }

    #[test]
    fn critical_down_means_down() {
        let readiness = Readiness {
            components: vec![
                component("postgres", ComponentState::Down, true),
                component("redis", ComponentState::Up, false),
            ],
        };
        assert_eq!(readiness.level(), ReadinessLevel::Down);
    }

    #[test]
    fn non_critical_down_or_any_degraded_means_degraded() {
        let redis_down = Readiness {
            components: vec![
                component("postgres", ComponentState::Up, true),
                component("redis", ComponentState::Down, false),
            ],
        };
        assert_eq!(redis_down.level(), ReadinessLevel::Degraded);
        let llm_degraded = Readiness {
            components: vec![component("llm", ComponentState::Degraded, true)],
        };
        assert_eq!(llm_degraded.level(), ReadinessLevel::Degraded);
    }

    #[test]
    fn all_up_or_nothing_to_check_means_ok() {
        assert_eq!(Readiness::default().level(), ReadinessLevel::Ok);
        let all_up = Readiness {
            components: vec![component("postgres", ComponentState::Up, true)],
        };
        assert_eq!(all_up.level(), ReadinessLevel::Ok);
    }
}
