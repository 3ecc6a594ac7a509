//! Rate limit of the "Redis failed" warning: while Redis is down every
//! request fails over, and one log line per request would drown the logs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one warning through per interval and counts the ones it holds back.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    interval: Duration,
    state: Mutex<WarnState>,
}

#[derive(Debug, Default)]
struct WarnState {
    last_emitted: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(WarnState::default()),
        }
    }

    /// `Some(n)` when a warning should be logged now, `n` being the number of
    /// warnings suppressed since the previous one; `None` when this one is
    /// suppressed (and counted).
    pub(crate) fn permit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-update of two
        // plain counters; the data is still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = state
            .last_emitted
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            state.last_emitted = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_warning_passes_then_suppressed_ones_are_counted() {
        let limiter = WarnLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limiter.permit(start), Some(0));
        for offset_ms in [1, 500, 9_999] {
            assert_eq!(
                limiter.permit(start + Duration::from_millis(offset_ms)),
                None
            );
        }
        assert_eq!(limiter.permit(start + Duration::from_secs(10)), Some(3));
        assert_eq!(limiter.permit(start + Duration::from_secs(11)), None);
        assert_eq!(limiter.permit(start + Duration::from_secs(25)), Some(1));
        assert_eq!(limiter.permit(start + Duration::from_secs(40)), Some(0));
    }

    #[test]
    fn zero_interval_lets_every_warning_through() {
        let limiter = WarnLimiter::new(Duration::ZERO);
        let now = Instant::now();
        assert_eq!(limiter.permit(now), Some(0));
        assert_eq!(limiter.permit(now), Some(0));
    }

    #[test]
    fn an_earlier_instant_than_the_last_warning_is_suppressed() {
        // Instants taken on other threads may arrive slightly out of order.
        let limiter = WarnLimiter::new(Duration::from_secs(1));
        let now = Instant::now() + Duration::from_secs(5);
        assert_eq!(limiter.permit(now), Some(0));
        assert_eq!(limiter.permit(now - Duration::from_millis(1)), None);
    }
}
