//! Graceful shutdown: one token, cancelled by SIGTERM/SIGINT (or by a test), and the grace
//! period a drain may take.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A shutdown signal shared by every part of a service, passed explicitly.
#[derive(Clone, Debug)]
pub struct Shutdown {
    token: CancellationToken,
    grace: Duration,
}

impl Shutdown {
    /// A signal that only [`Shutdown::trigger`] fires (tests, embedding).
    pub fn new(grace: Duration) -> Self {
        Shutdown {
            token: CancellationToken::new(),
            grace,
        }
    }

    /// A signal fired by SIGTERM or SIGINT. Must be called inside a Tokio runtime.
    pub fn on_signals(grace: Duration) -> Self {
        let shutdown = Shutdown::new(grace);
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            let signal = wait_for_signal().await;
            tracing::info!(signal, "shutdown requested");
            token.cancel();
        });
        shutdown
    }

    /// A child signal: fired with its parent, or on its own without affecting the parent.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            grace: self.grace,
        }
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the shutdown starts.
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// The token, for APIs that take one.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// How long a drain may take.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Runs `drain` after shutdown has started, giving up when the grace period ends. Returns
    /// whether the drain finished in time.
    pub async fn drain_within<F: Future>(&self, drain: F) -> bool {
        tokio::time::timeout(self.grace, drain).await.is_ok()
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        },
        _ => {
            tracing::warn!("could not install signal handlers; falling back to ctrl-c");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_follow_their_parent_but_not_the_reverse() {
        let parent = Shutdown::new(Duration::from_secs(1));
        let child = parent.child();
        child.trigger();
        assert!(!parent.is_triggered());
        let other = parent.child();
        parent.trigger();
        other.triggered().await;
        assert!(other.is_triggered());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_is_bounded_by_the_grace_period() {
        let shutdown = Shutdown::new(Duration::from_secs(2));
        assert!(shutdown.drain_within(async {}).await);
        assert!(!shutdown.drain_within(std::future::pending::<()>()).await);
    }
}
