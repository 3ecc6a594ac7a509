//! In-process token buckets: the limiter of a server without Redis, and the
//! fallback of [`crate::FailoverRateLimiter`] while Redis is unreachable.
//!
//! Hand-written rather than `governor`: governor's keyed limiters hold one
//! quota each, while our buckets (general, LLM) take their shape per call,
//! exactly as the Redis bucket does; and its keyed store needs the same
//! housekeeping to stay bounded. The arithmetic here is the Redis script's.

use heartrule_domain::{RateDecision, RateLimit, RateLimitError, RateLimiter};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One bucket: its tokens as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens at `now`, refilled since `at` and capped at the burst.
    fn refilled(self, now: Instant, limit: RateLimit) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst))
    }
}

/// Token buckets in this process, keyed like the Redis ones, in bounded
/// memory: at most `max_keys` buckets are kept. A full bucket is not stored
/// at all (a missing key is a full bucket), and when the map is full the
/// buckets that refilled are dropped first, then arbitrary ones — under a
/// flood of distinct keys, forgetting a partly used bucket is the price of
/// bounded memory.
#[derive(Debug)]
pub struct LocalRateLimiter {
    max_keys: usize,
    buckets: Mutex<HashMap<String, (Bucket, RateLimit)>>,
}

impl LocalRateLimiter {
    /// The default bound on buckets kept (about 10 MB at most).
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// A limiter keeping at most `max_keys` buckets (at least one).
    #[must_use]
    pub fn new(max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Buckets currently held (full buckets are not held).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no bucket is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Bucket, RateLimit)>> {
        // A poisoned lock only means another thread panicked between two
        // plain field updates; the buckets are still usable.
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`RateLimiter::try_acquire`] at the instant `now`.
    ///
    /// # Errors
    /// [`RateLimitError::InvalidLimit`] for an unworkable limit or a cost
    /// above the burst (such a request could never pass).
    pub fn acquire_at(
        &self,
        key: &str,
        cost: u32,
        limit: RateLimit,
        now: Instant,
    ) -> Result<RateDecision, RateLimitError> {
        limit.validate()?;
        if cost > limit.burst {
            return Err(RateLimitError::InvalidLimit(format!(
                "cost {cost} exceeds the burst {} and could never be granted",
                limit.burst
            )));
        }
        let mut buckets = self.lock();
        let tokens = buckets
            .get(key)
            .map_or(f64::from(limit.burst), |(bucket, _)| {
                bucket.refilled(now, limit)
            });
        let (allowed, tokens, retry_after) = if tokens >= f64::from(cost) {
            (true, tokens - f64::from(cost), None)
        } else {
            let wait = (f64::from(cost) - tokens) / limit.per_second;
            (false, tokens, Some(Duration::from_secs_f64(wait)))
        };
        if tokens >= f64::from(limit.burst) {
            buckets.remove(key);
        } else {
            if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
                self.make_room(&mut buckets, now);
            }
            buckets.insert(key.to_owned(), (Bucket { tokens, at: now }, limit));
        }
        // Whole tokens; never more than the u32 burst.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let remaining = tokens.floor().max(0.0) as u32;
        Ok(RateDecision {
            allowed,
            remaining,
            retry_after,
        })
    }

    /// Drops the refilled buckets, then arbitrary ones down to 90% of the
    /// bound, so the next sweeps are a tenth of the bound apart.
    fn make_room(&self, buckets: &mut HashMap<String, (Bucket, RateLimit)>, now: Instant) {
        buckets.retain(|_, (bucket, limit)| bucket.refilled(now, *limit) < f64::from(limit.burst));
        let target = self.max_keys - self.max_keys / 10 - 1;
        if buckets.len() > target {
            let excess = buckets.len() - target;
            let victims: Vec<String> = buckets.keys().take(excess).cloned().collect();
            for key in victims {
                buckets.remove(&key);
            }
        }
    }
}

impl Default for LocalRateLimiter {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_KEYS)
    }
}

#[async_trait::async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn try_acquire(
        &self,
        key: &str,
        cost: u32,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError> {
        self.acquire_at(key, cost, limit, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_SLOW: RateLimit = RateLimit {
        per_second: 0.5,
        burst: 5,
    };

    #[test]
    fn grants_the_burst_then_refuses_with_the_refill_time() {
        let limiter = LocalRateLimiter::default();
        let now = Instant::now();
        for expected in (0..5).rev() {
            let decision = limiter.acquire_at("a", 1, FIVE_SLOW, now).unwrap();
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected);
            assert_eq!(decision.retry_after, None);
        }
        let refused = limiter.acquire_at("a", 1, FIVE_SLOW, now).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(2)));
        // Another key has its own bucket.
        assert!(limiter.acquire_at("b", 3, FIVE_SLOW, now).unwrap().allowed);
    }

    #[test]
    fn refills_continuously_up_to_the_burst() {
        let limiter = LocalRateLimiter::default();
        let start = Instant::now();
        assert!(
            limiter
                .acquire_at("a", 5, FIVE_SLOW, start)
                .unwrap()
                .allowed
        );
        let later = start + Duration::from_millis(2_500);
        let decision = limiter.acquire_at("a", 1, FIVE_SLOW, later).unwrap();
        assert!(decision.allowed, "1.25 tokens came back");
        assert_eq!(decision.remaining, 0);
        let refused = limiter.acquire_at("a", 1, FIVE_SLOW, later).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(1_500)));
        // Long after, the bucket is full again and no longer stored.
        let much_later = later + Duration::from_secs(60);
        let peek = limiter.acquire_at("a", 0, FIVE_SLOW, much_later).unwrap();
        assert_eq!(peek.remaining, 5);
        assert!(limiter.is_empty());
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let limiter = LocalRateLimiter::default();
        let now = Instant::now() + Duration::from_secs(10);
        limiter.acquire_at("a", 5, FIVE_SLOW, now).unwrap();
        let earlier = now - Duration::from_secs(5);
        assert!(
            !limiter
                .acquire_at("a", 1, FIVE_SLOW, earlier)
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn impossible_requests_are_invalid() {
        let limiter = LocalRateLimiter::default();
        let now = Instant::now();
        for (cost, limit) in [
            (6, FIVE_SLOW),
            (
                1,
                RateLimit {
                    per_second: 0.0,
                    burst: 5,
                },
            ),
            (
                0,
                RateLimit {
                    per_second: 1.0,
                    burst: 0,
                },
            ),
        ] {
            assert!(matches!(
                limiter.acquire_at("a", cost, limit, now),
                Err(RateLimitError::InvalidLimit(_))
            ));
        }
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let limiter = LocalRateLimiter::new(100);
        let now = Instant::now();
        for i in 0..10_000 {
            limiter
                .acquire_at(&format!("ip:{i}"), 1, FIVE_SLOW, now)
                .unwrap();
            assert!(limiter.len() <= 100, "{} buckets after {i}", limiter.len());
        }
        // A key being limited right now keeps being limited while it is recent.
        for _ in 0..5 {
            limiter.acquire_at("hot", 1, FIVE_SLOW, now).unwrap();
        }
        assert!(
            !limiter
                .acquire_at("hot", 1, FIVE_SLOW, now)
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn refilled_buckets_are_dropped_before_used_ones() {
        let limiter = LocalRateLimiter::new(10);
        let start = Instant::now();
        for i in 0..9 {
            limiter
                .acquire_at(&format!("old:{i}"), 1, FIVE_SLOW, start)
                .unwrap();
        }
        let later = start + Duration::from_secs(3);
        limiter.acquire_at("busy", 5, FIVE_SLOW, later).unwrap();
        // Full: the next new key sweeps, and the old buckets refilled by now.
        let now = start + Duration::from_secs(4);
        limiter.acquire_at("new", 1, FIVE_SLOW, now).unwrap();
        assert_eq!(limiter.len(), 2, "busy and new remain");
        assert!(
            !limiter
                .acquire_at("busy", 1, FIVE_SLOW, now)
                .unwrap()
                .allowed
        );
    }
}
