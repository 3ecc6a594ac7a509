//! The middleware every request goes through: request id, root span
//! (continuing the caller's trace), HTTP metrics, one access-log line, and
//! rendering of every error in the API's JSON shape.

use crate::context::{
    new_request_id, sane_request_id, RequestContext, RequestUser, REQUEST_ID_HEADER,
};
use crate::error::ApiError;
use crate::hooks::RequestTracing;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use heartrule_domain::metric::DURATION_BUCKETS;
use heartrule_domain::{MetricDecl, MetricSet};
use metrics::Unit;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Histogram of request durations, labelled `method`, `route`, `status`.
pub const REQUEST_DURATION_METRIC: &str = "http_server_request_duration_seconds";
/// Gauge of requests in flight, labelled `method`, `route`.
pub const ACTIVE_REQUESTS_METRIC: &str = "http_server_active_requests";
/// Counter of requests refused by a rate limit, labelled `bucket` (`api` |
/// `llm`) and `key` (`sub` | `ip`).
pub const RATE_LIMITED_METRIC: &str = "heartrule_http_rate_limited_total";

/// The metrics this crate records.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::histogram(
            REQUEST_DURATION_METRIC,
            Unit::Seconds,
            &["method", "route", "status"],
            DURATION_BUCKETS,
            "Duration of HTTP server requests, by method, route template and status code.",
        ),
        MetricDecl::gauge(
            ACTIVE_REQUESTS_METRIC,
            Some(Unit::Count),
            &["method", "route"],
            "HTTP server requests in flight, by method and route template.",
        ),
        MetricDecl::counter(
            RATE_LIMITED_METRIC,
            &["bucket", "key"],
            "Requests refused with 429 by a rate limit, by bucket (api or llm) and key kind (sub or ip).",
        ),
    ],
};
/// Target of the access log.
pub const ACCESS_LOG_TARGET: &str = "heartrule::access";
/// `route` label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Method label: the standard methods as is, anything else `_OTHER`
/// (OpenTelemetry convention, bounds the label's cardinality).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Decrements the in-flight gauge however the request ends (including a
/// dropped future when the client goes away).
struct ActiveRequest {
    labels: [(&'static str, String); 2],
}

impl ActiveRequest {
    fn start(method: &'static str, route: &str) -> Self {
        let labels = [("method", method.to_owned()), ("route", route.to_owned())];
        metrics::gauge!(ACTIVE_REQUESTS_METRIC, &labels).increment(1.0);
        Self { labels }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        metrics::gauge!(ACTIVE_REQUESTS_METRIC, &self.labels).decrement(1.0);
    }
}

pub(crate) async fn observe<B>(
    tracing_hooks: Arc<dyn RequestTracing>,
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let started = Instant::now();
    let request_id = sane_request_id(
        request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or_else(new_request_id);
    let method = method_label(request.method());
    // The route template, never the raw path: ids must not become labels.
    let route = request
        .match_pattern()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let client_ip = request
        .connection_info()
        .realip_remote_addr()
        .unwrap_or("unknown")
        .to_owned();

    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format!("HTTP {method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
        client.address = %client_ip,
        user.id = tracing::field::Empty,
    );
    {
        let headers = request.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        tracing_hooks.continue_trace(&header, &span);
    }
    let context = RequestContext {
        request_id,
        trace_id: tracing_hooks.trace_id(&span),
    };
    request.extensions_mut().insert(context.clone());

    let active = ActiveRequest::start(method, &route);
    let outcome = next.call(request).instrument(span.clone()).await;
    drop(active);

    let outcome: Result<_, actix_web::Error> = match outcome {
        Ok(response) => {
            let mut response = normalize(response, &context, &span);
            insert_request_id(response.headers_mut(), &context);
            Ok(response)
        }
        // The inner services render their errors as responses, so this is a
        // failure of actix itself; the request is gone, but the response
        // still gets our shape and id.
        Err(error) => {
            let api = api_error_of(&error);
            span.in_scope(|| api.log(&context));
            let mut response = api.render(&context);
            insert_request_id(response.headers_mut(), &context);
            Err(InternalError::from_response(api, response).into())
        }
    };

    let status = match &outcome {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let latency = started.elapsed();
    let user_id = outcome.as_ref().ok().and_then(|response| {
        response
            .request()
            .extensions()
            .get::<RequestUser>()
            .map(|u| u.0.clone())
    });
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(user) = &user_id {
        span.record("user.id", user.as_str());
    }
    metrics::histogram!(
        REQUEST_DURATION_METRIC,
        "method" => method,
        "route" => route.clone(),
        "status" => status.as_u16().to_string(),
    )
    .record(latency.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method,
            route = %route,
            status = status.as_u16(),
            latency_ms = latency.as_secs_f64() * 1000.0,
            client_ip = %client_ip,
            request_id = %context.request_id,
            user_id = user_id.as_deref(),
            "request completed"
        );
    });
    outcome
}

fn insert_request_id(headers: &mut HeaderMap, context: &RequestContext) {
    if let Ok(value) = HeaderValue::from_str(&context.request_id) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
}

fn api_error_of(error: &actix_web::Error) -> ApiError {
    match error.as_error::<ApiError>() {
        Some(api) => api.clone(),
        None => ApiError::from_status(
            error.as_response_error().status_code(),
            Some(error.to_string()),
        ),
    }
}

/// Renders errors (from handlers, extractors, the router or embedded
/// services) in the API's JSON shape with the request's context.
fn normalize<B>(
    response: ServiceResponse<B>,
    context: &RequestContext,
    span: &tracing::Span,
) -> ServiceResponse<EitherBody<B, BoxBody>>
where
    B: MessageBody + 'static,
{
    let status = response.status();
    let api = if let Some(error) = response.response().error() {
        Some(api_error_of(error))
    } else if (status.is_client_error() || status.is_server_error()) && !is_json(&response) {
        Some(ApiError::from_status(status, None))
    } else {
        None
    };
    match api {
        Some(api) => {
            span.in_scope(|| api.log(context));
            let (request, original) = response.into_parts();
            let mut rendered = api.render(context);
            keep_headers(original.headers(), rendered.headers_mut());
            ServiceResponse::new(request, rendered).map_into_right_body()
        }
        None => response.map_into_left_body(),
    }
}

/// Carries the headers the inner layers set on an error response (CORS,
/// `Allow`, …) over to its re-rendered form; the body's own headers and
/// those the rendering set itself win.
fn keep_headers(original: &HeaderMap, rendered: &mut HeaderMap) {
    for name in original.keys() {
        if *name == CONTENT_TYPE || *name == CONTENT_LENGTH || rendered.contains_key(name) {
            continue;
        }
        for value in original.get_all(name) {
            rendered.append(name.clone(), value.clone());
        }
    }
}

fn is_json<B>(response: &ServiceResponse<B>) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }
}
