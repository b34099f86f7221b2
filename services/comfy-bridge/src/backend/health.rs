//! The periodic `/system_stats` check of one backend.
//!
//! A failed check marks the backend unhealthy (no new runs) and counts against its breaker; a
//! passing check makes it eligible again and turns an open breaker half-open at once, so a
//! backend that comes back takes runs within one check interval, not a whole cool-down.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use easel_runtime::Shutdown;
use tokio::time::MissedTickBehavior;

use super::Backend;
use crate::breaker::BreakerState;
use crate::metrics;

/// Checks the backend every `interval` until shutdown, the first time at once.
pub async fn run(backend: Arc<Backend>, interval: Duration, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.triggered() => return,
        }
        check(&backend).await;
    }
}

/// One check.
pub async fn check(backend: &Backend) {
    let result = backend.client.system_stats().await;
    let healthy = result.is_ok();
    let was_healthy = {
        let mut state = backend.lock();
        let was = state.healthy;
        state.healthy = healthy;
        state.last_check_time = Some(SystemTime::now());
        if let Ok(stats) = &result {
            state.vram = (stats.vram_total, stats.vram_free);
        }
        was
    };
    metrics::health(
        &backend.name,
        healthy,
        result
            .as_ref()
            .ok()
            .map(|stats| (stats.vram_total, stats.vram_free)),
    );
    match result {
        Ok(_) => {
            // A passing check ends an open breaker's cool-down (the next run is the probe) and
            // closes a half-open one that has no probe in flight.
            backend.with_breaker(|breaker, now| breaker.on_healthy(now));
            if !was_healthy {
                tracing::info!(backend = %backend.name, "backend healthy");
            }
        }
        Err(error) => {
            if was_healthy {
                tracing::warn!(backend = %backend.name, error = %error, "backend unhealthy");
            }
            backend.with_breaker(|breaker, now: Instant| {
                if breaker.state(now) != BreakerState::Open {
                    breaker.on_failure(now);
                }
            });
        }
    }
    // Eligibility may have changed either way (and a cool-down may have ended).
    backend.notify();
}
