//! The TTL sweeper: deletes expired artifacts, object first, then row, in batches. Its only
//! state is the database, so it survives restarts, and every replica may run it: a batch is
//! claimed with a conditional update (a lease), so two sweepers never work on the same rows,
//! and a crashed sweeper's claim lapses for another to take over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use easel_runtime::Shutdown;

use crate::db;
use crate::error::Result;
use crate::service::Storage;

/// One sweeper (one per replica).
#[derive(Clone, Debug)]
pub struct Sweeper {
    storage: Storage,
    batch: u64,
    lease: Duration,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Artifacts deleted.
    pub deleted: u64,
    /// Artifacts whose deletion failed (retried after their claim lapses).
    pub failed: u64,
}

impl Sweeper {
    /// A sweeper claiming `batch` rows at a time for `lease`.
    pub fn new(storage: Storage, batch: u64, lease: Duration) -> Sweeper {
        Sweeper {
            storage,
            batch,
            lease,
        }
    }

    /// Deletes everything expired at `now`, batch after batch, until nothing is left to claim.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        loop {
            let token = uuid::Uuid::now_v7().simple().to_string();
            let claimed =
                db::claim_expired(self.storage.db(), &token, now, self.lease, self.batch).await?;
            if claimed.is_empty() {
                return Ok(report);
            }
            for (id, key) in claimed {
                let deleted = match self.storage.backend().delete(&key).await {
                    Ok(()) => db::delete_claimed(self.storage.db(), &id, &token).await,
                    Err(error) => Err(error),
                };
                match deleted {
                    Ok(true) => report.deleted += 1,
                    // The claim lapsed and another sweeper finished the row.
                    Ok(false) => {}
                    Err(error) => {
                        report.failed += 1;
                        crate::metrics::error("sweeper");
                        tracing::warn!(artifact_id = %id, error = %error, "sweeping an artifact failed");
                    }
                }
            }
            metrics::counter!(crate::metrics::SWEEPER_DELETED).increment(report.deleted);
            if report.failed > 0 {
                // Failed rows stay claimed until their lease lapses; don't spin on them.
                return Ok(report);
            }
        }
    }

    /// Sweeps every `interval` until `shutdown`, and refreshes the stored-bytes gauges.
    pub async fn run(self, interval: Duration, shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                _ = ticker.tick() => {}
            }
            let now = Utc::now();
            match self.sweep(now).await {
                Ok(report) if report.deleted > 0 || report.failed > 0 => {
                    tracing::info!(
                        deleted = report.deleted,
                        failed = report.failed,
                        "swept expired artifacts"
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    crate::metrics::error("sweeper");
                    tracing::warn!(error = %error, "sweep failed; retrying next interval");
                }
            }
            match db::totals(self.storage.db(), now).await {
                Ok((count, bytes)) => {
                    metrics::gauge!(crate::metrics::STORED_ARTIFACTS).set(count as f64);
                    metrics::gauge!(crate::metrics::STORED_BYTES).set(bytes as f64);
                }
                Err(error) => tracing::warn!(error = %error, "cannot total the stored artifacts"),
            }
        }
    }
}
