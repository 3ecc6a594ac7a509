//! What the handlers share.

use crate::auth::{AuthenticationOff, Authenticator};
use crate::config::HttpConfig;
use crate::hooks::{NoTracing, ReadinessProbe, RequestTracing, StaticReadiness};
use crate::rate_limit::{RateLimitPolicy, RateLimiting};
use heartrule_domain::{Ports, RateLimiter, ScriptCatalog, SessionManager};
use std::sync::Arc;
use std::time::Instant;

/// Renders the metrics registry in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The services and hooks behind the routes. Cloned once per worker.
pub struct AppState<P: Ports> {
    pub manager: SessionManager<P>,
    pub catalog: ScriptCatalog<P>,
    pub readiness: Arc<dyn ReadinessProbe>,
    pub tracing: Arc<dyn RequestTracing>,
    /// Proves who a request is; [`AuthenticationOff`] unless the server sets one.
    pub authenticator: Arc<dyn Authenticator>,
    /// `GET /metrics` answers 404 when there is no renderer.
    pub metrics_renderer: Option<MetricsRenderer>,
    /// Request rate limits; none unless the server sets them.
    pub(crate) rate_limiting: Option<RateLimiting>,
    pub config: HttpConfig,
    /// Start of the process, for `uptime`.
    pub started_at: Instant,
}

impl<P: Ports> AppState<P> {
    /// A state with no dependency checks, no trace propagation, no
    /// authentication and no metrics renderer; the `with_*` methods add them.
    #[must_use]
    pub fn new(manager: SessionManager<P>, catalog: ScriptCatalog<P>, config: HttpConfig) -> Self {
        Self {
            manager,
            catalog,
            readiness: Arc::new(StaticReadiness::default()),
            tracing: Arc::new(NoTracing),
            authenticator: Arc::new(AuthenticationOff),
            metrics_renderer: None,
            rate_limiting: None,
            config,
            started_at: Instant::now(),
        }
    }

    #[must_use]
    pub fn with_readiness(mut self, readiness: Arc<dyn ReadinessProbe>) -> Self {
        self.readiness = readiness;
        self
    }

    #[must_use]
    pub fn with_tracing(mut self, tracing: Arc<dyn RequestTracing>) -> Self {
        self.tracing = tracing;
        self
    }

    #[must_use]
    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = authenticator;
        self
    }

    #[must_use]
    pub fn with_metrics_renderer(mut self, renderer: MetricsRenderer) -> Self {
        self.metrics_renderer = Some(renderer);
        self
    }

    /// Limits `/api` requests with `limiter`'s buckets, shaped and keyed by
    /// `policy` (see [`crate::rate_limit`]).
    #[must_use]
    pub fn with_rate_limiter(
        mut self,
        limiter: Arc<dyn RateLimiter>,
        policy: RateLimitPolicy,
    ) -> Self {
        self.rate_limiting = Some(RateLimiting {
            limiter,
            policy: Arc::new(policy),
        });
        self
    }

    #[must_use]
    pub fn with_started_at(mut self, started_at: Instant) -> Self {
        self.started_at = started_at;
        self
    }
}

impl<P: Ports> Clone for AppState<P> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            catalog: self.catalog.clone(),
            readiness: Arc::clone(&self.readiness),
            tracing: Arc::clone(&self.tracing),
            authenticator: Arc::clone(&self.authenticator),
            metrics_renderer: self.metrics_renderer.clone(),
            rate_limiting: self.rate_limiting.clone(),
            config: self.config.clone(),
            started_at: self.started_at,
        }
    }
}
