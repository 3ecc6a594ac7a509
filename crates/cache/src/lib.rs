//! HeartRule's Redis adapter.
//!
//! * [`RedisCache`] implements the domain's [`ScriptCache`] and
//!   [`SessionCache`] ports. It **fails open**: a Redis error, a timeout or a
//!   corrupt value is a miss (for reads) or a no-op (for writes), counted in
//!   `heartrule_redis_errors_total{operation}` and logged at most once per
//!   `warn_interval`, so PostgreSQL keeps serving requests while Redis is down.
//! * [`RedisRateLimiter`] is an atomic token bucket shared by every server
//!   instance, implementing the domain's [`RateLimiter`] port. Unlike the
//!   caches it reports Redis failures, so the caller decides whether to let
//!   the request through. [`FailoverRateLimiter`] decides: while Redis fails,
//!   a [`LocalRateLimiter`] of this process limits instead (fail open on
//!   Redis, never unlimited).
//! * [`RedisCache`] also implements the domain's [`CacheJanitor`]: the cache
//!   side of the retention cleanup (evicting snapshots of deleted sessions,
//!   removing keys left without an expiry), which reports its failures.
//!
//! [`METRICS`] declares the metrics this crate records; the server hands it
//! to the telemetry catalogue.
//!
//! [`ScriptCache`]: heartrule_domain::ScriptCache
//! [`SessionCache`]: heartrule_domain::SessionCache
//! [`CacheJanitor`]: heartrule_domain::CacheJanitor
//! [`RateLimiter`]: heartrule_domain::RateLimiter

mod cache;
mod config;
mod error;
mod failover_limit;
mod janitor;
mod local_limit;
mod metrics;
mod rate_limit;
mod warn_limiter;

pub use cache::{CacheHealth, RedisCache};
pub use config::RedisCacheConfig;
pub use error::CacheError;
pub use failover_limit::FailoverRateLimiter;
pub use local_limit::LocalRateLimiter;
pub use metrics::{CACHE_REQUESTS_TOTAL, METRICS, RATE_LIMIT_FALLBACK_TOTAL, REDIS_ERRORS_TOTAL};
pub use rate_limit::RedisRateLimiter;
