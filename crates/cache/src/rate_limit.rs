//! Token-bucket rate limiting shared by every server instance.

use crate::cache::{Inner, RedisCache};
use crate::error::CacheError;
use crate::metrics::record_redis_error;
use async_trait::async_trait;
use heartrule_domain::{RateDecision, RateLimit, RateLimitError, RateLimiter};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tracing::field::Empty;
use tracing::{Instrument, Span};

const OPERATION: &str = "rate_limit";

/// One atomic take from a token bucket. Redis' own clock (`TIME`) is used so
/// server instances with skewed clocks agree. A missing key is a full bucket:
/// the key expires once the bucket would be full again.
///
/// KEYS[1] = bucket key; ARGV = capacity, refill per second, cost.
/// Returns {allowed (0|1), tokens left (string), retry after in µs (-1 when allowed)}.
static TAKE_TOKENS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local capacity = tonumber(ARGV[1])
local refill_per_us = tonumber(ARGV[2]) / 1000000
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(stored[1])
local at = tonumber(stored[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
-- A clock that went backwards (failover) refills nothing until it catches up.
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * refill_per_us)
  at = now
end
local allowed = 0
local retry_after_us = -1
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_after_us = math.ceil((cost - tokens) / refill_per_us)
end
local full_in_ms = math.ceil((capacity - tokens) / refill_per_us / 1000)
if full_in_ms <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.0f', at))
  redis.call('PEXPIRE', KEYS[1], full_in_ms)
end
return {allowed, string.format('%.17g', tokens), retry_after_us}
",
    )
});

/// Atomic token buckets in Redis, shared by every server instance. Cheap to
/// clone; shares the connection of the [`RedisCache`] it came from.
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("key_prefix", &self.inner.config.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// A rate limiter on this cache's connection and key prefix.
    #[must_use]
    pub fn rate_limiter(&self) -> RedisRateLimiter {
        RedisRateLimiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl RedisRateLimiter {
    /// The Redis key of a bucket.
    #[must_use]
    pub fn bucket_key(&self, key: &str) -> String {
        format!("{}:ratelimit:{key}", self.inner.config.key_prefix)
    }

    /// Takes `cost` tokens from the bucket `key` (holding at most `capacity`
    /// tokens, refilled continuously at `refill_per_sec`) if it has them.
    ///
    /// Unlike the caches this reports Redis failures: the caller decides
    /// whether an unchecked request may pass. Failures are still counted in
    /// `heartrule_redis_errors_total{operation="rate_limit"}`.
    ///
    /// # Errors
    /// [`CacheError::InvalidArgument`] when `capacity` is 0, `refill_per_sec`
    /// is not a positive finite number or `cost` exceeds `capacity` (such a
    /// request could never pass); [`CacheError::Redis`] / [`CacheError::Timeout`]
    /// / [`CacheError::UnexpectedReply`] when Redis fails.
    pub async fn try_acquire(
        &self,
        key: &str,
        capacity: u32,
        refill_per_sec: f64,
        cost: u32,
    ) -> Result<RateDecision, CacheError> {
        validate(capacity, refill_per_sec, cost)?;
        let span = tracing::info_span!(
            "cache.rate_limit",
            db.system = "redis",
            rate_limit.allowed = Empty,
            error = Empty,
        );
        async {
            let mut connection = self.inner.connection.clone();
            let mut take = TAKE_TOKENS.prepare_invoke();
            take.key(self.bucket_key(key))
                .arg(capacity)
                .arg(refill_per_sec)
                .arg(cost);
            let decision = self
                .inner
                .bounded(
                    OPERATION,
                    take.invoke_async::<(i64, String, i64)>(&mut connection),
                )
                .await
                .and_then(|(allowed, tokens, retry_after_us)| {
                    decode_decision(allowed, &tokens, retry_after_us)
                });
            match &decision {
                Ok(decision) => {
                    Span::current().record("rate_limit.allowed", decision.allowed);
                }
                Err(error) => {
                    Span::current().record("error", tracing::field::display(error));
                    record_redis_error(OPERATION);
                }
            }
            decision
        }
        .instrument(span)
        .await
    }
}

/// The domain port on the shared Redis bucket. Redis failures come back as
/// [`RateLimitError::Unavailable`]: whether an unchecked request passes is
/// the caller's choice (see [`crate::FailoverRateLimiter`]).
#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn try_acquire(
        &self,
        key: &str,
        cost: u32,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError> {
        RedisRateLimiter::try_acquire(self, key, limit.burst, limit.per_second, cost)
            .await
            .map_err(|error| match error {
                CacheError::InvalidArgument { reason, .. } => RateLimitError::InvalidLimit(reason),
                other => RateLimitError::Unavailable(other.to_string()),
            })
    }
}

fn validate(capacity: u32, refill_per_sec: f64, cost: u32) -> Result<(), CacheError> {
    let reason = if capacity == 0 {
        "capacity must be positive".to_owned()
    } else if !(refill_per_sec.is_finite() && refill_per_sec > 0.0) {
        format!("refill_per_sec must be a positive number, got {refill_per_sec}")
    } else if cost > capacity {
        format!("cost {cost} exceeds the capacity {capacity} and could never be granted")
    } else {
        return Ok(());
    };
    Err(CacheError::InvalidArgument {
        operation: OPERATION,
        reason,
    })
}

fn decode_decision(
    allowed: i64,
    tokens: &str,
    retry_after_us: i64,
) -> Result<RateDecision, CacheError> {
    let unexpected = |reason: String| CacheError::UnexpectedReply {
        operation: OPERATION,
        reason,
    };
    let tokens: f64 = tokens
        .parse()
        .map_err(|_| unexpected(format!("token count `{tokens}` is not a number")))?;
    if !tokens.is_finite() || tokens < 0.0 {
        return Err(unexpected(format!("token count {tokens} is out of range")));
    }
    // Whole tokens; the bucket never holds more than a u32 capacity.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let remaining = tokens.floor().min(f64::from(u32::MAX)) as u32;
    let allowed = match allowed {
        1 => true,
        0 => false,
        other => return Err(unexpected(format!("allowed flag {other}"))),
    };
    let retry_after = match (allowed, u64::try_from(retry_after_us)) {
        (true, _) => None,
        (false, Ok(micros)) => Some(Duration::from_micros(micros)),
        (false, Err(_)) => {
            return Err(unexpected(format!(
                "refused without a retry time ({retry_after_us} µs)"
            )))
        }
    };
    Ok(RateDecision {
        allowed,
        remaining,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_that_can_never_pass_are_rejected() {
        assert!(validate(10, 1.5, 10).is_ok());
        assert!(validate(10, 1.5, 0).is_ok());
        for (capacity, refill, cost) in [
            (0, 1.0, 0),
            (10, 0.0, 1),
            (10, -1.0, 1),
            (10, f64::NAN, 1),
            (10, f64::INFINITY, 1),
            (10, 1.0, 11),
        ] {
            assert!(
                matches!(
                    validate(capacity, refill, cost),
                    Err(CacheError::InvalidArgument { .. })
                ),
                "{capacity} {refill} {cost}"
            );
        }
    }

    #[test]
    fn replies_decode_into_decisions() {
        assert_eq!(
            decode_decision(1, "3.75", -1).unwrap(),
            RateDecision {
                allowed: true,
                remaining: 3,
                retry_after: None
            }
        );
        assert_eq!(
            decode_decision(0, "0.25", 1_500_000).unwrap(),
            RateDecision {
                allowed: false,
                remaining: 0,
                retry_after: Some(Duration::from_millis(1_500))
            }
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        for (allowed, tokens, retry) in [(1, "many", -1), (2, "1", -1), (0, "1", -1), (1, "-3", -1)]
        {
            assert!(matches!(
                decode_decision(allowed, tokens, retry),
                Err(CacheError::UnexpectedReply { .. })
            ));
        }
    }
}
