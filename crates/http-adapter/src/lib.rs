//! HeartRule's HTTP API on actix-web, with its traces, metrics and logs.
//!
//! [`configure`] registers every route **inside one scope that carries the
//! middleware stack** (outermost first: security headers; request id, root
//! span continuing the caller's trace, HTTP metrics, access log and JSON
//! error rendering; CORS; authentication; rate limits), so the server only does
//!
//! ```text
//! HttpServer::new(move || App::new().configure(heartrule_http_adapter::configure(state.clone())))
//! ```
//!
//! and tests `actix_web::test::init_service(App::new().configure(configure(state)))` — the
//! same app. Authentication runs inside this stack (see [`auth`]). The scope matches every path (unknown ones get the
//! JSON 404), so a server that adds routes of its own registers them
//! *before* `configure`.
//!
//! Routes keep the original paths and camelCase shapes, with the old
//! bugs fixed; `GET /openapi.json` lists them all and `GET /docs` serves
//! Swagger UI from assets compiled into the binary.
//!
//! Streaming turns (SSE and WebSocket) run in their own task: a client that
//! disconnects never cancels a turn halfway; it commits whole and can be read
//! back with `GET /api/sessions/{id}/messages`.

pub mod auth;
mod config;
mod context;
pub mod dto;
pub mod error;
pub mod headers;
mod hooks;
mod idempotency;
mod middleware;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
mod state;

pub use config::{CorsConfig, HttpConfig};
pub use context::{RequestContext, REQUEST_ID_HEADER};
pub use error::{ApiError, ErrorBody};
pub use hooks::{
    ComponentState, ComponentStatus, NoTracing, Readiness, ReadinessLevel, ReadinessProbe,
    RequestTracing, StaticReadiness,
};
pub use idempotency::{request_hash, IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER};
pub use middleware::{
    ACCESS_LOG_TARGET, ACTIVE_REQUESTS_METRIC, METRICS, RATE_LIMITED_METRIC,
    REQUEST_DURATION_METRIC, UNMATCHED_ROUTE,
};
pub use openapi::{openapi_document, openapi_json, ApiDoc};
pub use rate_limit::{RateLimitKey, RateLimitPolicy};
pub use state::{AppState, MetricsRenderer};

use actix_web::middleware::{from_fn, Condition};
use actix_web::web::{self, ServiceConfig};
use std::sync::Arc;

/// Registers the whole API, wrapped in the adapter's middleware stack.
pub fn configure(state: AppState) -> impl FnOnce(&mut ServiceConfig) + Clone {
    move |cfg: &mut ServiceConfig| {
        let body_limit = state.config.body_limit_bytes;
        let tracing_hooks = Arc::clone(&state.tracing);
        let authenticator = Arc::clone(&state.authenticator);
        let rate_limiting = state.rate_limiting.clone();
        let cors = &state.config.cors;
        let security_headers = headers::SecurityHeaders::new(state.config.hsts_max_age);
        // The last `wrap` is the outermost layer. Authentication runs before
        // the rate limits (they key by its subject); CORS outside both, so a
        // preflight is neither authenticated nor counted and a 429 still
        // carries the CORS headers a page needs to read it.
        cfg.service(
            web::scope("")
                .wrap(from_fn(move |request, next| {
                    rate_limit::limit(rate_limiting.clone(), request, next)
                }))
                .wrap(from_fn(move |request, next| {
                    auth::authenticate(Arc::clone(&authenticator), request, next)
                }))
                .wrap(Condition::new(cors.enabled(), cors.middleware()))
                .wrap(from_fn(move |request, next| {
                    middleware::observe(Arc::clone(&tracing_hooks), request, next)
                }))
                .wrap(from_fn(move |request, next| {
                    headers::secure(security_headers.clone(), request, next)
                }))
                .app_data(web::Data::new(state))
                .app_data(
                    web::JsonConfig::default()
                        .limit(body_limit)
                        .error_handler(error::json_error),
                )
                .app_data(web::PayloadConfig::new(body_limit))
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .configure(routes::register)
                .default_service(web::to(routes::system::unmatched)),
        );
    }
}
