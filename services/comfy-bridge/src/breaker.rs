//! A per-backend circuit breaker: closed → open after N consecutive failures → half-open
//! after a cool-down, or as soon as a health check passes, where one probe decides → closed
//! (or open again).
//!
//! The cool-down alone is too slow when a backend restarts: it would refuse runs for a whole
//! cool-down after the backend answers again, and jobs would wait that long for nothing. So a
//! passing health check ends the cool-down at once (see [`Breaker::on_healthy`]).
//!
//! A small state machine rather than `tower-resilience`'s layer: the scheduler must ask "may
//! this backend take a run?" without making a call, and outcomes arrive from several places
//! that are not one request/response (a run's verdict from the WebSocket, a prompt POST, a
//! health check). Time is passed in, so the tests need no clock.

use std::time::{Duration, Instant};

/// The breaker's state, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe decides.
    HalfOpen,
}

impl BreakerState {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    opened_at: Option<Instant>,
    half_open: bool,
    probe_in_flight: bool,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            opened_at: None,
            half_open: false,
            probe_in_flight: false,
        }
    }

    /// The state at `now`; an open breaker whose cool-down is over becomes half-open.
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let Some(opened_at) = self.opened_at
            && now.saturating_duration_since(opened_at) >= self.cooldown
        {
            self.opened_at = None;
            self.half_open = true;
            self.probe_in_flight = false;
        }
        if self.opened_at.is_some() {
            BreakerState::Open
        } else if self.half_open {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        }
    }

    /// Whether a call may go through now, without taking the probe.
    pub fn would_allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.probe_in_flight,
        }
    }

    /// Admits a call: always when closed, the single probe when half-open.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probe_in_flight => false,
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                true
            }
        }
    }

    /// A call succeeded: the breaker closes.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.half_open = false;
        self.probe_in_flight = false;
    }

    /// A call failed: a half-open breaker reopens, a closed one opens at the threshold.
    pub fn on_failure(&mut self, now: Instant) {
        if self.half_open {
            self.half_open = false;
            self.probe_in_flight = false;
            self.opened_at = Some(now);
            return;
        }
        if self.opened_at.is_some() {
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.threshold {
            self.opened_at = Some(now);
        }
    }

    /// A health check passed: an open breaker turns half-open at once (the next call is the
    /// probe), and a half-open one with no probe in flight closes. A health check answers
    /// only `/system_stats`, so it does not close an open breaker by itself: one real call
    /// still decides, which keeps a backend that answers checks but fails runs from flapping.
    pub fn on_healthy(&mut self, now: Instant) {
        match self.state(now) {
            BreakerState::Closed => {}
            BreakerState::Open => {
                self.opened_at = None;
                self.half_open = true;
                self.probe_in_flight = false;
            }
            BreakerState::HalfOpen if self.probe_in_flight => {}
            BreakerState::HalfOpen => self.on_success(),
        }
    }

    /// A probe ended without a verdict about the backend (e.g. the graph was invalid).
    pub fn release_probe(&mut self) {
        self.probe_in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, COOLDOWN);
        breaker.on_failure(start);
        breaker.on_failure(start);
        breaker.on_success();
        breaker.on_failure(start);
        breaker.on_failure(start);
        assert_eq!(breaker.state(start), BreakerState::Closed);
        breaker.on_failure(start);
        assert_eq!(breaker.state(start), BreakerState::Open);
        assert!(!breaker.try_acquire(start + Duration::from_secs(9)));
    }

    #[test]
    fn half_open_admits_one_probe_that_closes_or_reopens() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure(start);
        let later = start + COOLDOWN;
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert!(breaker.try_acquire(later));
        assert!(!breaker.try_acquire(later), "a single probe");
        breaker.on_failure(later);
        assert_eq!(breaker.state(later), BreakerState::Open);
        let again = later + COOLDOWN;
        assert!(breaker.try_acquire(again));
        breaker.on_success();
        assert_eq!(breaker.state(again), BreakerState::Closed);
        assert!(breaker.try_acquire(again) && breaker.try_acquire(again));
    }

    #[test]
    fn a_released_probe_lets_the_next_one_through() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure(start);
        let later = start + COOLDOWN;
        assert!(breaker.try_acquire(later));
        breaker.release_probe();
        assert!(breaker.would_allow(later));
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
    }

    #[test]
    fn a_healthy_check_ends_the_cooldown_at_once() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure(start);
        let soon = start + Duration::from_millis(1);
        assert_eq!(breaker.state(soon), BreakerState::Open);
        breaker.on_healthy(soon);
        assert_eq!(breaker.state(soon), BreakerState::HalfOpen);
        assert!(breaker.try_acquire(soon), "the next call is the probe");
        assert!(!breaker.try_acquire(soon), "a single probe");
        // A second check while the probe runs leaves the verdict to the probe.
        breaker.on_healthy(soon);
        assert_eq!(breaker.state(soon), BreakerState::HalfOpen);
        breaker.on_success();
        assert_eq!(breaker.state(soon), BreakerState::Closed);
    }

    #[test]
    fn a_healthy_check_closes_a_half_open_breaker_without_a_probe() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure(start);
        breaker.on_healthy(start);
        breaker.on_healthy(start);
        assert_eq!(breaker.state(start), BreakerState::Closed);
        assert!(breaker.try_acquire(start) && breaker.try_acquire(start));
    }

    #[test]
    fn a_failed_probe_after_a_healthy_check_reopens_until_the_next_check() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure(start);
        breaker.on_healthy(start);
        assert!(breaker.try_acquire(start));
        breaker.on_failure(start);
        assert_eq!(breaker.state(start), BreakerState::Open);
        let later = start + Duration::from_secs(1);
        breaker.on_healthy(later);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
    }

    #[test]
    fn failures_while_open_do_not_extend_the_cooldown() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure(start);
        breaker.on_failure(start + Duration::from_secs(5));
        assert_eq!(breaker.state(start + COOLDOWN), BreakerState::HalfOpen);
    }
}
