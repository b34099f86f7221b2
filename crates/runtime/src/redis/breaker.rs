//! The circuit breaker in front of Redis: closed → open after N consecutive failures → after a
//! cool-down one probe decides → closed (or open for another cool-down).
//!
//! A plain state machine with time passed in, so its tests need no clock. It only decides; its
//! owner ([`super::Redis`]) runs the calls and the probes and reports their outcomes.

use std::time::{Duration, Instant};

/// The breaker's state, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// A probe is out; calls still fail at once until it answers.
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
    state: BreakerState,
    opened_at: Option<Instant>,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures and probes every
    /// `cooldown` while open.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            state: BreakerState::Closed,
            opened_at: None,
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go out: only while closed (open and half-open fail fast).
    pub fn admits(&self) -> bool {
        self.state == BreakerState::Closed
    }

    /// Whether the prober may probe at `now`: an open breaker past its cool-down turns
    /// half-open, and the probe's outcome decides.
    pub fn begin_probe(&mut self, now: Instant) -> bool {
        let cooled = self
            .opened_at
            .is_none_or(|opened| now.duration_since(opened) >= self.cooldown);
        if self.state == BreakerState::Open && cooled {
            self.state = BreakerState::HalfOpen;
            return true;
        }
        false
    }

    /// Redis answered: the breaker closes. Returns the new state if it changed.
    pub fn success(&mut self) -> Option<BreakerState> {
        self.failures = 0;
        self.opened_at = None;
        self.transition(BreakerState::Closed)
    }

    /// Redis did not answer (in time). Returns the new state if it changed.
    pub fn failure(&mut self, now: Instant) -> Option<BreakerState> {
        match self.state {
            BreakerState::Closed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures < self.threshold {
                    return None;
                }
                self.opened_at = Some(now);
                self.transition(BreakerState::Open)
            }
            BreakerState::HalfOpen => {
                self.opened_at = Some(now);
                self.transition(BreakerState::Open)
            }
            // A late failure of a call let through before the breaker opened changes nothing.
            BreakerState::Open => None,
        }
    }

    fn transition(&mut self, to: BreakerState) -> Option<BreakerState> {
        if self.state == to {
            return None;
        }
        self.state = to;
        Some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(1);

    #[test]
    fn it_opens_after_the_threshold_of_consecutive_failures() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, COOLDOWN);
        assert!(breaker.admits());
        assert_eq!(breaker.failure(start), None);
        assert_eq!(breaker.failure(start), None);
        // A success in between resets the count.
        assert_eq!(breaker.success(), None);
        assert_eq!(breaker.failure(start), None);
        assert_eq!(breaker.failure(start), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.failure(start), Some(BreakerState::Open));
        assert!(!breaker.admits());
        assert!(!breaker.begin_probe(start + COOLDOWN - Duration::from_millis(1)));
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        assert_eq!(breaker.failure(start), Some(BreakerState::Open));
        let later = start + COOLDOWN;
        assert!(breaker.begin_probe(later));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // Calls keep failing fast while the probe is out, and no second probe starts.
        assert!(!breaker.admits());
        assert!(!breaker.begin_probe(later));
        // The probe fails: open for another cool-down.
        assert_eq!(breaker.failure(later), Some(BreakerState::Open));
        assert!(!breaker.begin_probe(later));
        let again = later + COOLDOWN;
        assert!(breaker.begin_probe(again));
        // The probe succeeds: closed, calls flow.
        assert_eq!(breaker.success(), Some(BreakerState::Closed));
        assert!(breaker.admits());
        assert!(!breaker.begin_probe(again + COOLDOWN));
    }

    #[test]
    fn late_failures_while_open_do_not_extend_the_cooldown() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, COOLDOWN);
        breaker.failure(start);
        assert_eq!(breaker.failure(start + COOLDOWN / 2), None);
        assert!(breaker.begin_probe(start + COOLDOWN));
    }

    #[test]
    fn a_zero_threshold_still_needs_one_failure() {
        let mut breaker = Breaker::new(0, COOLDOWN);
        assert!(breaker.admits());
        assert_eq!(breaker.failure(Instant::now()), Some(BreakerState::Open));
        assert_eq!(BreakerState::Open.gauge(), 1.0);
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
    }
}
