//! Service routes: info, health, readiness, metrics, OpenAPI and Swagger UI.

use crate::dto::{HealthBody, InfoBody, ReadyBody};
use crate::error::{ApiError, ErrorBody};
use crate::hooks::ReadinessLevel;
use crate::openapi::openapi_json;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Service name and where the documentation is.
#[utoipa::path(
    get,
    path = "/",
    tag = "system",
    responses((status = 200, description = "Service information", body = InfoBody))
)]
pub async fn info() -> HttpResponse {
    HttpResponse::Ok().json(InfoBody {
        name: "HeartRule Engine API".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        status: "running".into(),
        docs: "/docs".into(),
        openapi: "/openapi.json".into(),
    })
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    responses((status = 200, description = "The process is alive", body = HealthBody))
)]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(HealthBody {
        status: "ok".into(),
        timestamp: Utc::now(),
        uptime: state.started_at.elapsed().as_secs_f64(),
    })
}

/// Readiness of the dependencies (PostgreSQL, Redis, the LLM breaker).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "system",
    responses(
        (status = 200, description = "Ready: `ok`, or `degraded` when only a non-critical component (Redis) is down or a component is degraded (the LLM answering through its fallback or half-open breaker, or unavailable while `llm.degraded_mode: scripted` carries conversations on scripted texts; the `llm` component's `detail` says which)", body = ReadyBody),
        (status = 503, description = "Not ready: a critical component is down", body = ReadyBody)
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let readiness = state.readiness.check().await;
    let level = readiness.level();
    let body = ReadyBody {
        status: level,
        components: readiness.components,
        timestamp: Utc::now(),
    };
    match level {
        ReadinessLevel::Down => HttpResponse::ServiceUnavailable().json(body),
        ReadinessLevel::Ok | ReadinessLevel::Degraded => HttpResponse::Ok().json(body),
    }
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4", body = String),
        (status = 404, description = "This server exposes no metrics", body = ErrorBody)
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let renderer = state
        .metrics_renderer
        .as_ref()
        .ok_or_else(|| ApiError::not_found("Metrics are not enabled on this server"))?;
    Ok(HttpResponse::Ok()
        .content_type(PROMETHEUS_CONTENT_TYPE)
        .body(renderer()))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object))
)]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(openapi_json())
}

/// Swagger UI (assets served from the binary; works offline). Redirects to `/docs/`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "system",
    responses((status = 308, description = "Redirect to the Swagger UI at `/docs/`"))
)]
pub async fn docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// The Swagger UI under `/docs/`, reading `/openapi.json`.
pub(crate) fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").config(Config::new(["/openapi.json"]))
}

/// No route matches.
pub(crate) async fn unmatched() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("No route matches this path"))
}
