//! What the handlers share.

use crate::auth::{AuthenticationOff, Authenticator};
use crate::config::HttpConfig;
use crate::hooks::{NoTracing, ReadinessProbe, RequestTracing, StaticReadiness};
use crate::rate_limit::{RateLimitPolicy, RateLimiting};
use heartrule_domain::{Administration, Conversations, RateLimiter, ScriptLibrary};
use std::sync::Arc;
use std::time::Instant;

/// Renders the metrics registry in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The use cases and hooks behind the routes. Cloned once per worker.
///
/// The routes see the domain only through its inbound ports, so the adapter's
/// tests can run them against mocks.
#[derive(Clone)]
pub struct AppState {
    /// Sessions and turns (the domain's `SessionManager`).
    pub conversations: Arc<dyn Conversations>,
    /// Scripts (the domain's `ScriptCatalog`).
    pub scripts: Arc<dyn ScriptLibrary>,
    /// The audit log and the privacy operations (the domain's `AdminService`).
    pub admin: Arc<dyn Administration>,
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

impl AppState {
    /// A state with no dependency checks, no trace propagation, no
    /// authentication and no metrics renderer; the `with_*` methods add them.
    #[must_use]
    pub fn new(
        conversations: Arc<dyn Conversations>,
        scripts: Arc<dyn ScriptLibrary>,
        admin: Arc<dyn Administration>,
        config: HttpConfig,
    ) -> Self {
        Self {
            conversations,
            scripts,
            admin,
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
