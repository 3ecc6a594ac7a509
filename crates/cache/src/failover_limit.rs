//! The Redis bucket, with the in-process one standing in while Redis fails.

use crate::local_limit::LocalRateLimiter;
use crate::metrics::record_rate_limit_fallback;
use crate::rate_limit::RedisRateLimiter;
use crate::warn_limiter::WarnLimiter;
use async_trait::async_trait;
use heartrule_domain::{RateDecision, RateLimit, RateLimitError, RateLimiter};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate limits shared by every instance through Redis, **failing open on
/// Redis but never unlimited**: when Redis errors or times out, the request
/// is decided by a [`LocalRateLimiter`] of this process instead (counted in
/// `heartrule_rate_limit_fallback_total`, logged at most once per
/// `warn_interval`). After a failure Redis is left alone for `redis_pause`,
/// so an outage does not add Redis's timeout to every request.
///
/// While the local buckets decide, each instance allows its own burst: the
/// limit over the whole fleet is looser for the length of the outage.
#[derive(Debug)]
pub struct FailoverRateLimiter {
    redis: RedisRateLimiter,
    local: LocalRateLimiter,
    redis_pause: Duration,
    paused_until: Mutex<Option<Instant>>,
    warn_limiter: WarnLimiter,
}

impl FailoverRateLimiter {
    /// How long Redis is skipped after it failed, by default.
    pub const DEFAULT_REDIS_PAUSE: Duration = Duration::from_secs(1);

    /// `redis` first, `local` while it fails; warnings at most once per
    /// `warn_interval`.
    #[must_use]
    pub fn new(redis: RedisRateLimiter, local: LocalRateLimiter, warn_interval: Duration) -> Self {
        Self {
            redis,
            local,
            redis_pause: Self::DEFAULT_REDIS_PAUSE,
            paused_until: Mutex::new(None),
            warn_limiter: WarnLimiter::new(warn_interval),
        }
    }

    /// Another pause after a Redis failure (zero: ask Redis every time).
    #[must_use]
    pub fn with_redis_pause(mut self, pause: Duration) -> Self {
        self.redis_pause = pause;
        self
    }

    fn redis_paused(&self, now: Instant) -> bool {
        let paused = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        paused.is_some_and(|until| now < until)
    }

    fn pause_redis(&self, now: Instant) {
        *self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now + self.redis_pause);
    }
}

#[async_trait]
impl RateLimiter for FailoverRateLimiter {
    async fn try_acquire(
        &self,
        key: &str,
        cost: u32,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError> {
        if !self.redis_paused(Instant::now()) {
            match RateLimiter::try_acquire(&self.redis, key, cost, limit).await {
                Err(RateLimitError::Unavailable(reason)) => {
                    self.pause_redis(Instant::now());
                    if let Some(suppressed) = self.warn_limiter.permit(Instant::now()) {
                        tracing::warn!(
                            error = %reason,
                            suppressed,
                            "Redis rate limiter failed; limiting with this instance's own buckets"
                        );
                    }
                }
                decided => return decided,
            }
        }
        record_rate_limit_fallback();
        self.local.acquire_at(key, cost, limit, Instant::now())
    }
}
