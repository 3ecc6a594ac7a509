//! The rate-limiter port: token buckets keyed by who is asking.
//!
//! A bucket holds at most [`RateLimit::burst`] tokens and refills
//! continuously at [`RateLimit::per_second`]; a request takes `cost` tokens
//! or is refused with the time until it would succeed. The HTTP adapter asks;
//! adapters answer (a Redis bucket shared by every instance, an in-process
//! one when Redis is unreachable).

use async_trait::async_trait;
use std::time::Duration;

/// The shape of one token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second (the sustained request rate).
    pub per_second: f64,
    /// Most tokens the bucket holds (the largest burst let through at once).
    pub burst: u32,
}

impl RateLimit {
    /// Whether a bucket of this shape can work: a positive, finite refill
    /// rate and room for at least one token.
    ///
    /// # Errors
    /// [`RateLimitError::InvalidLimit`] naming the bad value.
    pub fn validate(&self) -> Result<(), RateLimitError> {
        if self.burst == 0 {
            return Err(RateLimitError::InvalidLimit(
                "burst must be at least 1".to_owned(),
            ));
        }
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(RateLimitError::InvalidLimit(format!(
                "the rate must be a positive number of requests per second, got {}",
                self.per_second
            )));
        }
        Ok(())
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// The tokens were taken; the request may proceed.
    pub allowed: bool,
    /// Whole tokens left in the bucket after this request.
    pub remaining: u32,
    /// When a refused request would succeed (`None` when allowed).
    pub retry_after: Option<Duration>,
}

/// Why a limiter gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// The limit or cost can never be honoured (no burst, no refill, a cost
    /// above the burst).
    #[error("invalid rate limit: {0}")]
    InvalidLimit(String),
    /// The limiter's store did not answer; the caller decides whether the
    /// unchecked request may pass.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

/// Token buckets keyed by an opaque string (a subject or a client address,
/// with the bucket's name). Implementations are shared by every request.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes `cost` tokens from the bucket `key`, shaped by `limit`, if it
    /// has them. Two calls with the same key must use the same limit.
    async fn try_acquire(
        &self,
        key: &str,
        cost: u32,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_workable_limits_validate() {
        assert!(RateLimit {
            per_second: 0.5,
            burst: 1
        }
        .validate()
        .is_ok());
        for (per_second, burst) in [
            (1.0, 0),
            (0.0, 5),
            (-1.0, 5),
            (f64::NAN, 5),
            (f64::INFINITY, 5),
        ] {
            assert!(
                matches!(
                    RateLimit { per_second, burst }.validate(),
                    Err(RateLimitError::InvalidLimit(_))
                ),
                "{per_second} {burst}"
            );
        }
    }
}
