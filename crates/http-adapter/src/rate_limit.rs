//! Request rate limits at the edge: every `/api` request takes a token from
//! a bucket of its caller, LLM-calling routes from a stricter bucket of
//! their own; an empty bucket answers `429 RATE_LIMITED` with `Retry-After`.
//!
//! The caller is the authenticated subject, or the client address when the
//! request proved no subject (or authentication is off, where everyone is
//! the local operator and a shared bucket would let one client starve the
//! rest). The address is the peer's, unless the peer is a configured
//! trusted proxy: then `X-Forwarded-For` is read from the right, skipping
//! trusted hops, so a client cannot pick its own address by sending the
//! header. IPv6 clients are keyed by their /64, the block one host gets.
//!
//! The buckets are the domain's [`RateLimiter`] port. A limiter that fails
//! lets the request through (logged): losing the limiter must not take the
//! API down; the server's limiter falls back to local buckets before that.

use crate::error::ApiError;
use crate::middleware::RATE_LIMITED_METRIC;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use heartrule_domain::{Actor, RateLimit, RateLimiter, LOCAL_OPERATOR_SUBJECT};
use ipnet::{IpNet, Ipv6Net};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the buckets are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKey {
    /// The authenticated subject; the client address when there is none.
    Subject,
    /// Always the client address.
    Ip,
}

/// The limits and how callers are told apart.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    /// General bucket of an authenticated subject.
    pub per_subject: RateLimit,
    /// General bucket of a client address.
    pub per_ip: RateLimit,
    /// Bucket of the LLM-calling routes (creating a session, sending a
    /// message, chat, its stream, the WebSocket), per subject or address.
    pub llm: RateLimit,
    pub key: RateLimitKey,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or networks).
    pub trusted_proxies: Vec<IpNet>,
}

/// A limiter and its policy, as the middleware uses them.
#[derive(Clone)]
pub(crate) struct RateLimiting {
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) policy: Arc<RateLimitPolicy>,
}

/// Routes whose turn calls the LLM, by method and route template.
const LLM_ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/api/sessions"),
    (Method::POST, "/api/sessions/{id}/messages"),
    (Method::POST, "/api/chat"),
    (Method::POST, "/api/chat/stream"),
    (Method::GET, "/api/sessions/{id}/ws"),
];

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    General,
    Llm,
}

impl Bucket {
    fn label(self) -> &'static str {
        match self {
            Self::General => "api",
            Self::Llm => "llm",
        }
    }
}

/// The bucket's key, e.g. `api:sub:alice` or `llm:ip:203.0.113.9`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Caller {
    kind: &'static str,
    id: String,
}

fn is_limited(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

fn bucket_of(method: &Method, route: Option<&str>) -> Bucket {
    match route {
        Some(route) if LLM_ROUTES.iter().any(|(m, r)| m == method && *r == route) => Bucket::Llm,
        _ => Bucket::General,
    }
}

/// The client's address: the peer, or — behind trusted proxies — the
/// right-most `X-Forwarded-For` hop that is not a trusted proxy.
fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: &[&str],
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let trusts = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer?;
    if !trusts(&client) {
        return Some(client);
    }
    let hops = forwarded_for
        .iter()
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        // A malformed hop ends the walk: what lies beyond it is unverifiable.
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusts(&ip) {
            break;
        }
    }
    Some(client)
}

/// IPv4 addresses as they are; IPv6 by their /64 network.
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                Ipv6Net::new(v6, 64).map_or_else(|_| v6.to_string(), |net| net.trunc().to_string())
            }
        },
    }
}

fn caller(request: &ServiceRequest, policy: &RateLimitPolicy) -> Caller {
    if policy.key == RateLimitKey::Subject {
        if let Some(actor) = request.extensions().get::<Actor>() {
            if actor.subject() != LOCAL_OPERATOR_SUBJECT {
                return Caller {
                    kind: "sub",
                    id: actor.subject().to_owned(),
                };
            }
        }
    }
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .collect();
    let peer = request.peer_addr().map(|addr| addr.ip());
    Caller {
        kind: "ip",
        id: client_address(peer, &forwarded, &policy.trusted_proxies)
            .map_or_else(|| "unknown".to_owned(), address_key),
    }
}

/// Takes a token for every `/api` request; answers `429` when the caller's
/// bucket is empty. Public routes (`/`, `/health`, `/ready`, `/metrics`, the
/// document and the docs) are never limited.
pub(crate) async fn limit<B>(
    limiting: Option<RateLimiting>,
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let Some(limiting) = limiting.filter(|_| is_limited(request.path())) else {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let policy = &limiting.policy;
    let bucket = bucket_of(request.method(), request.match_pattern().as_deref());
    let caller = caller(&request, policy);
    let limit = match (bucket, caller.kind) {
        (Bucket::Llm, _) => policy.llm,
        (Bucket::General, "sub") => policy.per_subject,
        (Bucket::General, _) => policy.per_ip,
    };
    let key = format!("{}:{}:{}", bucket.label(), caller.kind, caller.id);
    match limiting.limiter.try_acquire(&key, 1, limit).await {
        Ok(decision) if decision.allowed => {}
        Ok(decision) => {
            metrics::counter!(
                RATE_LIMITED_METRIC,
                "bucket" => bucket.label(),
                "key" => caller.kind,
            )
            .increment(1);
            let retry_after = decision.retry_after.unwrap_or(Duration::from_secs(1));
            let response = request.error_response(ApiError::rate_limited(retry_after));
            return Ok(response.map_into_right_body());
        }
        Err(error) => {
            tracing::error!(
                error = %error,
                bucket = bucket.label(),
                "rate limiter failed; letting the request through unchecked"
            );
        }
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        // A direct client: its header is ignored.
        assert_eq!(
            client_address(Some(ip("203.0.113.7")), &["1.2.3.4"], &trusted),
            Some(ip("203.0.113.7"))
        );
        // Behind two trusted proxies: the right-most untrusted hop.
        assert_eq!(
            client_address(
                Some(ip("10.1.2.3")),
                &["6.6.6.6, 198.51.100.4", "192.168.1.1"],
                &trusted
            ),
            Some(ip("198.51.100.4")),
            "a spoofed left-most entry is not believed"
        );
        // No header, or nothing but proxies: the last proxy.
        assert_eq!(
            client_address(Some(ip("10.1.2.3")), &[], &trusted),
            Some(ip("10.1.2.3"))
        );
        assert_eq!(
            client_address(Some(ip("10.1.2.3")), &["10.9.9.9"], &trusted),
            Some(ip("10.9.9.9"))
        );
        // Garbage stops the walk at the last verified hop.
        assert_eq!(
            client_address(Some(ip("10.1.2.3")), &["7.7.7.7, junk"], &trusted),
            Some(ip("10.1.2.3"))
        );
        // No proxies configured: never believed.
        assert_eq!(
            client_address(Some(ip("10.1.2.3")), &["7.7.7.7"], &[]),
            Some(ip("10.1.2.3"))
        );
        assert_eq!(client_address(None, &["7.7.7.7"], &trusted), None);
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            address_key(ip("2001:db8:1:2:bbbb::9")),
            address_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_eq!(address_key(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(address_key(ip("203.0.113.7")), "203.0.113.7");
    }

    #[test]
    fn llm_routes_draw_from_their_own_bucket() {
        for (method, route) in LLM_ROUTES {
            assert_eq!(bucket_of(method, Some(route)), Bucket::Llm, "{route}");
        }
        assert_eq!(
            bucket_of(&Method::GET, Some("/api/sessions/{id}/messages")),
            Bucket::General
        );
        assert_eq!(
            bucket_of(&Method::GET, Some("/api/scripts")),
            Bucket::General
        );
        assert_eq!(bucket_of(&Method::POST, None), Bucket::General);
        assert!(is_limited("/api/sessions"));
        assert!(!is_limited("/apis"));
        for public in [
            "/",
            "/health",
            "/ready",
            "/metrics",
            "/openapi.json",
            "/docs/",
        ] {
            assert!(!is_limited(public), "{public}");
        }
    }
}
