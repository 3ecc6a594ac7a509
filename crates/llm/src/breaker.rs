//! A consecutive-failure circuit breaker.
//!
//! Closed: every attempt passes; `failure_threshold` failed attempts in a row
//! open it. Open: attempts are refused with `LlmError::CircuitOpen` until
//! `open_for` has passed, then it is half-open. Half-open: up to
//! `half_open_max_calls` probe attempts at once; a probe that succeeds closes
//! it, a probe that fails opens it again.
//!
//! Failures are attempts ending in timeouts, rate limiting, unavailability or
//! invalid responses; a rejection (4xx) proves the provider is answering and
//! counts as a success.

use crate::config::BreakerConfig;
use crate::telemetry;
use heartrule_domain::llm::LlmError;
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What `/ready` and the `heartrule_llm_breaker_state` gauge report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 half-open, 2 open.
    #[must_use]
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

impl State {
    fn public(self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Whether an attempt's error says the provider is unhealthy.
#[must_use]
pub fn counts_as_failure(error: &LlmError) -> bool {
    matches!(
        error,
        LlmError::Timeout(_)
            | LlmError::RateLimited { .. }
            | LlmError::Unavailable(_)
            | LlmError::InvalidResponse(_)
    )
}

#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    provider: String,
    config: BreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub(crate) fn new(provider: &str, config: &BreakerConfig) -> Self {
        telemetry::record_breaker_state(provider, BreakerState::Closed.gauge_value());
        Self {
            provider: provider.to_owned(),
            config: config.clone(),
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value that is never left half-updated, so a
        // panic elsewhere while holding the lock cannot corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    pub(crate) fn state_at(&self, now: Instant) -> BreakerState {
        let mut state = self.lock();
        self.half_open_if_due(&mut state, now);
        state.public()
    }

    /// Asks to start an attempt; the ticket must be settled with its result.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<BreakerTicket, LlmError> {
        let probe = self.acquire_at(Instant::now())?;
        Ok(BreakerTicket {
            breaker: Arc::clone(self),
            probe,
            settled: false,
        })
    }

    /// `Ok(true)` for a half-open probe, `Ok(false)` for a normal attempt.
    pub(crate) fn acquire_at(&self, now: Instant) -> Result<bool, LlmError> {
        let mut state = self.lock();
        self.half_open_if_due(&mut state, now);
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { .. } => Err(LlmError::CircuitOpen),
            State::HalfOpen { probes_in_flight } => {
                if probes_in_flight < self.config.half_open_max_calls {
                    *state = State::HalfOpen {
                        probes_in_flight: probes_in_flight + 1,
                    };
                    Ok(true)
                } else {
                    Err(LlmError::CircuitOpen)
                }
            }
        }
    }

    pub(crate) fn record_at(&self, probe: bool, failed: bool, now: Instant) {
        let mut state = self.lock();
        let next = match (*state, failed) {
            (State::Closed { .. }, false) => State::Closed {
                consecutive_failures: 0,
            },
            (
                State::Closed {
                    consecutive_failures,
                },
                true,
            ) => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    State::Open {
                        until: now + self.config.open_for,
                    }
                } else {
                    State::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            (State::HalfOpen { .. }, false) if probe => State::Closed {
                consecutive_failures: 0,
            },
            (State::HalfOpen { .. }, true) if probe => State::Open {
                until: now + self.config.open_for,
            },
            // Attempts that began before the breaker opened say nothing about
            // the probes that decide now.
            (current, _) => current,
        };
        self.transition(&mut state, next);
    }

    /// An attempt that ended without a result (cancelled) frees its probe slot.
    pub(crate) fn release(&self, probe: bool) {
        if !probe {
            return;
        }
        let mut state = self.lock();
        if let State::HalfOpen { probes_in_flight } = *state {
            *state = State::HalfOpen {
                probes_in_flight: probes_in_flight.saturating_sub(1),
            };
        }
    }

    fn half_open_if_due(&self, state: &mut MutexGuard<'_, State>, now: Instant) {
        if let State::Open { until } = **state {
            if now >= until {
                self.transition(
                    state,
                    State::HalfOpen {
                        probes_in_flight: 0,
                    },
                );
            }
        }
    }

    fn transition(&self, state: &mut MutexGuard<'_, State>, next: State) {
        let before = state.public();
        **state = next;
        let after = next.public();
        if before != after {
            telemetry::record_breaker_state(&self.provider, after.gauge_value());
            match after {
                BreakerState::Open => tracing::warn!(
                    provider = %self.provider,
                    from = before.as_str(),
                    "LLM circuit breaker opened"
                ),
                BreakerState::HalfOpen | BreakerState::Closed => tracing::info!(
                    provider = %self.provider,
                    from = before.as_str(),
                    to = after.as_str(),
                    "LLM circuit breaker changed state"
                ),
            }
        }
    }
}

/// Permission for one attempt. Settle it with the attempt's result; if it
/// is dropped unsettled (the caller went away) it only frees its probe slot.
#[derive(Debug)]
pub(crate) struct BreakerTicket {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    settled: bool,
}

impl BreakerTicket {
    pub(crate) fn settle(mut self, error: Option<&LlmError>) {
        self.settled = true;
        let failed = error.is_some_and(counts_as_failure);
        self.breaker.record_at(self.probe, failed, Instant::now());
    }
}

impl Drop for BreakerTicket {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.release(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker(threshold: u32, probes: u32) -> CircuitBreaker {
        CircuitBreaker::new(
            "breaker-unit",
            &BreakerConfig {
                failure_threshold: threshold,
                open_for: Duration::from_secs(10),
                half_open_max_calls: probes,
            },
        )
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let breaker = breaker(3, 1);
        let now = Instant::now();
        breaker.record_at(false, true, now);
        breaker.record_at(false, true, now);
        breaker.record_at(false, false, now);
        breaker.record_at(false, true, now);
        breaker.record_at(false, true, now);
        assert_eq!(breaker.state_at(now), BreakerState::Closed);
        breaker.record_at(false, true, now);
        assert_eq!(breaker.state_at(now), BreakerState::Open);
        assert_eq!(breaker.acquire_at(now), Err(LlmError::CircuitOpen));
    }

    #[test]
    fn half_opens_after_open_for_and_limits_probes() {
        let breaker = breaker(1, 2);
        let now = Instant::now();
        breaker.record_at(false, true, now);
        let later = now + Duration::from_secs(10);
        assert_eq!(
            breaker.state_at(later - Duration::from_millis(1)),
            BreakerState::Open
        );
        assert_eq!(breaker.state_at(later), BreakerState::HalfOpen);
        assert_eq!(breaker.acquire_at(later), Ok(true));
        assert_eq!(breaker.acquire_at(later), Ok(true));
        assert_eq!(breaker.acquire_at(later), Err(LlmError::CircuitOpen));
        breaker.release(true);
        assert_eq!(breaker.acquire_at(later), Ok(true));
    }

    #[test]
    fn probe_success_closes_and_probe_failure_reopens() {
        let breaker = breaker(1, 1);
        let start = Instant::now();
        breaker.record_at(false, true, start);
        let probe_time = start + Duration::from_secs(10);
        assert_eq!(breaker.acquire_at(probe_time), Ok(true));
        breaker.record_at(true, true, probe_time);
        assert_eq!(breaker.state_at(probe_time), BreakerState::Open);
        let retry_time = probe_time + Duration::from_secs(10);
        assert_eq!(breaker.acquire_at(retry_time), Ok(true));
        // A late result of an attempt that started before the opening changes nothing.
        breaker.record_at(false, false, retry_time);
        assert_eq!(breaker.state_at(retry_time), BreakerState::HalfOpen);
        breaker.record_at(true, false, retry_time);
        assert_eq!(breaker.state_at(retry_time), BreakerState::Closed);
        assert_eq!(breaker.acquire_at(retry_time), Ok(false));
    }

    #[test]
    fn dropped_ticket_frees_the_probe_slot() {
        let breaker = Arc::new(CircuitBreaker::new(
            "breaker-unit",
            &BreakerConfig {
                failure_threshold: 1,
                open_for: Duration::ZERO,
                half_open_max_calls: 1,
            },
        ));
        breaker.record_at(false, true, Instant::now());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let ticket = breaker.try_acquire().unwrap();
        assert!(matches!(breaker.try_acquire(), Err(LlmError::CircuitOpen)));
        drop(ticket);
        let ticket = breaker.try_acquire().unwrap();
        ticket.settle(Some(&LlmError::Rejected("400".to_owned())));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn only_provider_health_errors_count_as_failures() {
        assert!(counts_as_failure(&LlmError::Timeout(Duration::from_secs(
            1
        ))));
        assert!(counts_as_failure(&LlmError::RateLimited {
            retry_after: None
        }));
        assert!(counts_as_failure(&LlmError::Unavailable(String::new())));
        assert!(counts_as_failure(&LlmError::InvalidResponse(String::new())));
        assert!(!counts_as_failure(&LlmError::Rejected(String::new())));
        assert!(!counts_as_failure(&LlmError::NotConfigured(String::new())));
        assert!(!counts_as_failure(&LlmError::CircuitOpen));
    }

    #[test]
    fn gauge_values_follow_the_documented_encoding() {
        assert_eq!(BreakerState::Closed.gauge_value(), 0.0);
        assert_eq!(BreakerState::HalfOpen.gauge_value(), 1.0);
        assert_eq!(BreakerState::Open.gauge_value(), 2.0);
        assert_eq!(
            serde_json::to_string(&BreakerState::HalfOpen).unwrap(),
            "\"half_open\""
        );
    }
}
